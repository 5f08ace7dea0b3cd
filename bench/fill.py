"""Fill a throwaway database with bench teams, shares and a valid audit chain, fast.

Everything happens in one transaction: a fill either lands whole (events, chain head, shares) or
not at all. The audit tables are append-only (``audit.triggers``), so events are only
ever INSERTed: each row's ``seq``, ``prev_hash`` and ``hash`` are computed here with
``audit.hashing`` exactly as ``recorder.record`` would, and the chain head row is
inserted last, naming the last event. A chain can therefore only be filled from empty (the head
cannot jump forward); ``pages.run`` uses one database per size for that reason.

PostgreSQL gets the rows through ``COPY ... FROM STDIN`` (10,000 per batch); other databases
through ``bulk_create`` in batches of the same size.
"""

from __future__ import annotations

import random
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from django.db import connection, transaction
from django.db.models import F
from django.db.models.sql import UpdateQuery
from django_otp.plugins.otp_totp.models import TOTPDevice

from accounts import vault
from accounts.models import CloudAccount, Membership, Role, Team, User
from audit import actions, hashing
from audit.models import AuditChainHead, AuditEvent
from bench.load import BENCH_DOMAIN, TEAM_PREFIX
from transfers.models import Recipient, Share

BATCH = 10_000
TEAMS = 10
BIG_TEAM_SHARE = 0.5  # the first team owns half the shares and events: the worst case per team
TEAM_NAME = TEAM_PREFIX + "Pages {:02d}"
ROLES = (Role.ADMIN, Role.APPROVER, Role.MEMBER, Role.AUDITOR)
COMPLIANCE_EMAIL = f"pages-compliance@{BENCH_DOMAIN}"
STAFF_EMAIL = f"pages-staff@{BENCH_DOMAIN}"
SEED = 20250101

# (state, weight) of the shares, and the state their recipient is in.
SHARE_STATES = (("completed", 80), ("rejected", 5), ("failed", 4), ("cancelled", 3), ("requested", 2),
                ("expired", 2), ("approved", 1), ("exporting", 1), ("ready", 1), ("importing", 1))
RECIPIENT_STATE = {"requested": "waiting", "approved": "waiting", "exporting": "waiting", "ready": "offered",
                   "importing": "importing", "completed": "completed", "failed": "failed",
                   "rejected": "cancelled", "cancelled": "cancelled", "expired": "expired"}
# (action, outcome, weight) of the events: actions the portal writes (audit.actions), as often as a
# busy trail holds them; what each event is about follows its action's first target type.
EVENT_KINDS = tuple((actions.ACTIONS[name], outcome, weight) for name, outcome, weight in (
    ("share.requested", "success", 14), ("share.approved", "success", 12), ("share.offered", "success", 12),
    ("export.requested", "success", 12), ("import.completed", "success", 12),
    ("cloud_account.validated", "success", 6), ("auth.logged_in", "success", 16), ("access.denied", "denied", 4),
    ("audit.read", "success", 10), ("import.failed", "failed", 2),
))
TARGET_KINDS = {actions.SHARE: "share", actions.ANY: "share", actions.CLOUD_ACCOUNT: "account",
                actions.TRAIL: "trail", actions.USER: "user"}


@dataclass
class World:
    teams: list[Team]
    members: dict[int, dict[str, User]]  # team pk -> role -> user
    accounts: dict[int, list[CloudAccount]]  # team pk -> accounts
    compliance: User
    staff: User
    share_targets: dict[int, list[tuple[str, str]]] = field(default_factory=dict)  # team pk -> (public_id, label)

    @property
    def big(self) -> Team:
        return self.teams[0]


def _user(email: str, **extra) -> User:
    user = User.objects.filter(email=email).first()
    if user is None:
        user = User.objects.create_user(email, password=None, full_name=email.split("@")[0], **extra)
    return user


def ensure_world() -> World:
    """Bench teams, one person per role in each, two valid accounts each, a compliance officer and
    a staff user with a confirmed TOTP device (the admin needs a verified session)."""
    teams, members, accounts = [], {}, {}
    for index in range(TEAMS):
        team, _ = Team.objects.get_or_create(name=TEAM_NAME.format(index))
        teams.append(team)
        members[team.pk] = {}
        for role in ROLES:
            user = _user(f"pages-{role.value}-{index:02d}@{BENCH_DOMAIN}")
            Membership.objects.get_or_create(user=user, team=team, defaults={"role": role})
            members[team.pk][role.value] = user
        accounts[team.pk] = list(CloudAccount.objects.filter(team=team).order_by("pk"))
        for number in range(len(accounts[team.pk]), 2):
            account = CloudAccount(team=team, label=f"pages-{index:02d}-{number}", region="eu-west-2",
                                   export_bucket="bench-exports", accepts_incoming_shares=True,
                                   validation_status=CloudAccount.Validation.VALID,
                                   account_id=f"{index:06d}{number:06d}")
            # Sealed directly, not through the service: the bulk fill needs an empty audit trail.
            ids = {"team_id": team.public_id, "object_id": account.public_id}
            account.access_key_sealed = vault.seal("AKIABENCH0000000001", field="access_key", **ids)
            account.secret_key_sealed = vault.seal("S" * 40, field="secret_key", **ids)
            account.access_key_hint = vault.mask_access_key("AKIABENCH0000000001")
            account.save()
            accounts[team.pk].append(account)
    compliance = _user(COMPLIANCE_EMAIL, is_compliance_officer=True)
    # Only compliance officers read the trail in the admin, superusers included.
    staff = _user(STAFF_EMAIL, is_staff=True, is_superuser=True, is_compliance_officer=True)
    if not staff.is_compliance_officer:  # a bench database filled before that rule
        User.objects.filter(pk=staff.pk).update(is_compliance_officer=True)
        staff.is_compliance_officer = True
    if not TOTPDevice.objects.filter(user=staff, confirmed=True).exists():
        TOTPDevice.objects.create(user=staff, name="bench", confirmed=True)
    world = World(teams=teams, members=members, accounts=accounts, compliance=compliance, staff=staff)
    load_share_targets(world)
    return world


def load_share_targets(world: World, per_team: int = 2000) -> None:
    for team in world.teams:
        rows = Share.objects.filter(team=team).order_by("-pk").values_list("public_id", "source_image_name",
                                                                            "copy_name")[:per_team]
        world.share_targets[team.pk] = [(str(pid), f"{name} → {copy}") for pid, name, copy in rows]


def _pick_team(rng: random.Random, teams: list[Team]) -> Team:
    return teams[0] if rng.random() < BIG_TEAM_SHARE else rng.choice(teams[1:])


# --- Shares ------------------------------------------------------------------------------------------


def fill_shares(world: World, total: int, *, log: Callable[[str], None] = print) -> int:
    """Add shares (one team recipient each) until the bench teams hold ``total``; returns how many were added."""
    have = Share.objects.filter(team__in=world.teams).count()
    rng = random.Random(SEED + have)
    states = [state for state, weight in SHARE_STATES for _ in range(weight)]
    now = datetime.now(UTC)
    added = 0
    while have + added < total:
        count = min(BATCH, total - have - added)
        shares, recipient_specs = [], []
        for _ in range(count):
            team = _pick_team(rng, world.teams)
            other = rng.choice([t for t in world.teams if t.pk != team.pk])
            people = world.members[team.pk]
            state = rng.choice(states)
            requested = now - timedelta(seconds=rng.randrange(365 * 86400))
            decided = state not in ("requested",)
            image = f"ami-{rng.randrange(16**8):08x}"
            shares.append(Share(
                team=team, source_account=world.accounts[team.pk][0], source_image_id=image,
                source_image_name=f"web-{image[4:]}", source_image_relation="owned", copy_name=f"copy-{image[4:]}",
                reason="bench", licence_confirmed_at=requested, requested_by=people["member"],
                requested_at=requested, approval_required=True, approval_deadline=requested + timedelta(days=7),
                digest="0" * 64, decided_by=people["approver"] if decided else None,
                decided_at=requested + timedelta(minutes=5) if decided else None, state=state,
                updated_at=requested + timedelta(hours=1)))
            recipient_specs.append((other, state, requested))
        Share.objects.bulk_create(shares, batch_size=BATCH)
        Recipient.objects.bulk_create([
            Recipient(share=share, kind=Recipient.Kind.TEAM, team=other, target_account=world.accounts[other.pk][1],
                      state=RECIPIENT_STATE[state], image_name=share.copy_name, created_at=requested,
                      updated_at=requested + timedelta(hours=1))
            for share, (other, state, requested) in zip(shares, recipient_specs, strict=True)
        ], batch_size=BATCH)
        added += count
        log(f"  shares: {have + added:,}/{total:,}")
    load_share_targets(world)
    return added


# --- Audit events -------------------------------------------------------------------------------------


def _columns() -> list[tuple[str, str]]:
    """(attribute, column) of every stored event field, in insert order."""
    by_attname = {f.attname: f.column for f in AuditEvent._meta.concrete_fields}
    return [(name, by_attname[name]) for name in (*hashing.HASHED_FIELDS, "prev_hash", "hash")]


class EventMaker:
    """Realistic events, each with ``seq``, ``prev_hash`` and ``hash`` chained on from the last one."""

    def __init__(self, world: World, *, start_seq: int, prev_hash: str, start_at: datetime, step: timedelta):
        self.world, self.seq, self.prev_hash = world, start_seq, prev_hash
        self.at, self.step = start_at, step
        self.rng = random.Random(SEED + start_seq)
        self.kinds = [kind for kind in EVENT_KINDS for _ in range(kind[2])]

    def _target(self, kind: str, team: Team | None, actor: User | None) -> tuple[str, str, str, dict]:
        rng = self.rng
        if kind == "share" and team is not None and self.world.share_targets.get(team.pk):
            public_id, label = rng.choice(self.world.share_targets[team.pk])
            return "transfers.share", public_id, label, {"share": public_id, "image_id": "ami-0000bench"}
        if kind == "account" and team is not None:
            account = self.world.accounts[team.pk][0]
            return "accounts.cloudaccount", str(account.public_id), str(account), {"changes": {
                "validation_status": {"before": "pending", "after": "valid"}}}
        if kind == "trail":
            ident = str(team.public_id) if team else "all"
            return "audit.trail", ident, f"Audit trail of {team.name if team else 'every team'}", {
                "view": "list", "filters": {}, "cursor": {}}
        if actor is not None:
            return "accounts.user", str(actor.pk), actor.display_name, {}
        return "", "", "", {}

    def next(self) -> dict:
        rng = self.rng
        action, outcome, _ = rng.choice(self.kinds)
        kind = TARGET_KINDS[action.targets[0]]
        team = None if kind == "user" or rng.random() < 0.05 else _pick_team(rng, self.world.teams)
        home = team or _pick_team(rng, self.world.teams)
        actor = None if rng.random() < 0.1 else self.world.members[home.pk][rng.choice(ROLES).value]
        target_type, target_id, label, details = self._target(kind, team, actor)
        fields = {
            "seq": self.seq, "public_id": uuid.UUID(int=rng.getrandbits(128), version=4), "occurred_at": self.at,
            "actor_id": actor.pk if actor else None, "actor_name": actor.display_name if actor else "",
            "team_id": team.pk if team else None, "team_name": team.name if team else "",
            "action": action.name, "target_type": target_type, "target_id": target_id, "target_label": label,
            "outcome": outcome, "details": details, "request_id": f"{rng.getrandbits(64):016x}",
            "ip": f"10.{rng.randrange(256)}.{rng.randrange(256)}.{rng.randrange(1, 255)}",
            "user_agent": "Mozilla/5.0 (bench)",
            "cloud_request_ids": [str(uuid.UUID(int=rng.getrandbits(128), version=4))] if kind == "share" else [],
        }
        fields["prev_hash"] = self.prev_hash
        fields["hash"] = hashing.event_hash(prev_hash=self.prev_hash, fields=fields)
        self.prev_hash = fields["hash"]
        self.seq += 1
        self.at += self.step
        return fields


def _copy_rows(rows: list[dict], columns: list[tuple[str, str]]) -> None:
    table = connection.ops.quote_name(AuditEvent._meta.db_table)
    names = ", ".join(connection.ops.quote_name(column) for _, column in columns)
    json_fields = {"details", "cloud_request_ids"}
    with connection.cursor() as cursor, cursor.cursor.copy(f"COPY {table} ({names}) FROM STDIN") as copy:
        for row in rows:
            copy.write_row([hashing.dumps(row[name]) if name in json_fields else row[name] for name, _ in columns])


def fill_events(world: World, total: int, *, log: Callable[[str], None] = print) -> dict:
    """Append events to an empty trail until it holds ``total``, then insert the chain head.

    Returns timings: seconds spent computing hashes and writing rows.
    """
    head = AuditChainHead.objects.filter(pk=AuditChainHead.SINGLETON_ID).first()
    if (head is not None and head.seq) or AuditEvent.objects.exists():
        raise ValueError("fill_events needs an empty audit trail")
    now = datetime.now(UTC)
    start = now - timedelta(days=365)
    maker = EventMaker(world, start_seq=1, prev_hash=hashing.GENESIS_HASH, start_at=start,
                       step=(now - timedelta(minutes=1) - start) / max(total, 1))
    columns = _columns()
    use_copy = connection.vendor == "postgresql"
    hash_seconds = write_seconds = 0.0
    done = 0
    while done < total:
        count = min(BATCH, total - done)
        began = time.perf_counter()
        rows = [maker.next() for _ in range(count)]
        hash_seconds += time.perf_counter() - began
        began = time.perf_counter()
        if use_copy:
            _copy_rows(rows, columns)
        else:
            AuditEvent.objects.bulk_create([AuditEvent(**row) for row in rows], batch_size=1000)
        write_seconds += time.perf_counter() - began
        done += count
        if done % 100_000 == 0 or done == total:
            log(f"  audit events: {done:,}/{total:,}")
    if head is None:  # no migration made it: a fresh head may name the last event at once
        AuditChainHead.objects.create(id=AuditChainHead.SINGLETON_ID, seq=maker.seq - 1, hash=maker.prev_hash)
    return {"events": total, "hash_seconds": round(hash_seconds, 2), "write_seconds": round(write_seconds, 2)}


def advance_head(*, seq: int, hash: str, log: Callable[[str], None] = print) -> float:
    """Move the chain head to ``seq``/``hash`` the only way the triggers allow: one step at a time.

    Migrations create the head at 0, and ``audit_head_forward_only`` refuses any move but
    ``seq = seq + 1``. On PostgreSQL outside a transaction the steps run server-side in a ``DO``
    loop that commits every 100 steps (the ORM's own UPDATE statement, about 40,000 steps a second;
    committing keeps the row's version chain short). Elsewhere, one ORM update per step. The last
    step also sets the hash. Returns the seconds spent.
    """
    began = time.perf_counter()
    heads = AuditChainHead.objects.filter(pk=AuditChainHead.SINGLETON_ID)
    current = heads.values_list("seq", flat=True).get()
    steps = seq - 1 - current
    if steps > 0 and connection.vendor == "postgresql" and not connection.in_atomic_block:
        query = heads.query.chain(UpdateQuery)
        query.add_update_values({"seq": F("seq") + 1})
        sql, params = query.get_compiler(connection.alias).as_sql()
        connection.ensure_connection()
        raw = connection.connection
        autocommit = raw.autocommit
        raw.autocommit = True
        try:
            with raw.cursor() as cursor:
                statement = cursor.mogrify(sql, params)
                cursor.execute("SET synchronous_commit = off")
                cursor.execute(f"DO $$ BEGIN FOR i IN 1..{int(steps)} LOOP {statement}; "
                               "IF i % 100 = 0 THEN COMMIT; END IF; END LOOP; END $$")
                cursor.execute("SET synchronous_commit = on")
        finally:
            raw.autocommit = autocommit
    else:
        for _ in range(max(0, steps)):
            heads.update(seq=F("seq") + 1)
    if seq > current:
        moved = heads.filter(seq=seq - 1).update(seq=seq, hash=hash)
        if moved != 1:
            raise RuntimeError("the chain head did not reach the last filled event")
    seconds = time.perf_counter() - began
    log(f"  chain head moved to #{seq:,} in {seconds:.1f} s")
    return seconds


def fill(*, events: int, shares: int, log: Callable[[str], None] = print) -> tuple[World, dict]:
    """The whole fill, in one transaction. Returns the world and what the fill cost."""
    began = time.perf_counter()
    with transaction.atomic():
        world = ensure_world()
        share_began = time.perf_counter()
        added = fill_shares(world, shares, log=log)
        share_seconds = time.perf_counter() - share_began
        timings = fill_events(world, events, log=log)
        last = AuditEvent.objects.order_by("-seq").values_list("seq", "hash").first()
    if last:
        timings["head_seconds"] = round(advance_head(seq=last[0], hash=last[1], log=log), 2)
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("ANALYZE")
    return world, {"shares_added": added, "share_seconds": round(share_seconds, 2), **timings,
                   "total_seconds": round(time.perf_counter() - began, 2)}
