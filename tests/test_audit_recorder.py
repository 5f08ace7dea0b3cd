"""record(): what it stores, what it refuses, and that it fails closed with its caller (AUD-11, 15, 16)."""

import contextlib
import hashlib
import threading

import pytest
from django.db import DatabaseError, connection, transaction

from accounts.models import Membership, Team
from audit import actions, hashing, recorder
from audit.context import AuditContext, _current, job_context
from audit.errors import AuditError
from audit.models import AuditChainHead, AuditEvent
from audit.recorder import AuditTarget, record
from audit.verify import verify_chain
from tests import factories

pytestmark = pytest.mark.usefixtures("test_only_actions")  # made-up actions (tests/fixtures_audit.py)


@pytest.fixture
def user(db):
    return factories.make_user("ada@example.com", full_name="Ada Lovelace")


@pytest.fixture
def team(db):
    return factories.make_team("Alpha")


def test_it_starts_the_chain_at_one_from_64_zeros(db):
    event = record(action="system.started", actor=None)
    assert (event.seq, event.prev_hash) == (1, "0" * 64)
    fields = {name: getattr(event, name) for name in hashing.HASHED_FIELDS}
    expected = hashlib.sha256(("0" * 64).encode() + hashing.canonical_bytes(fields)).hexdigest()
    assert event.hash == expected
    assert AuditChainHead.objects.values_list("seq", "hash").get() == (1, event.hash)


def test_it_links_each_event_to_the_previous_one(db):
    first, second = record(action="a.created", actor=None), record(action="a.changed", actor=None)
    assert (second.seq, second.prev_hash) == (2, first.hash)


def test_it_copies_actor_team_and_target(user, team):
    membership = factories.add_member(team, user)
    event = record(action="membership.role_changed", actor=user, team=team, target=membership,
                   details={"before": "member", "after": "admin"}, cloud_request_ids=["0a1b-req"])
    event = AuditEvent.objects.get(seq=event.seq)
    assert (event.actor_id, event.actor_name) == (user.pk, "Ada Lovelace")
    assert (event.team_id, event.team_name) == (team.pk, "Alpha")
    assert (event.target_type, event.target_id, event.target_label) == (
        "accounts.membership", str(membership.public_id), str(membership))
    assert event.details == {"before": "member", "after": "admin"}
    assert event.cloud_request_ids == ["0a1b-req"]
    assert event.occurred_at.utcoffset().total_seconds() == 0


def test_it_uses_the_primary_key_of_targets_without_a_public_id(user):
    event = record(action="user.password_changed", actor=user, target=user)
    assert (event.target_type, event.target_id, event.target_label) == ("accounts.user", str(user.pk), "Ada Lovelace")


def test_it_accepts_an_explicit_target(db):
    event = record(action="access.denied", outcome="denied", actor=None, target=AuditTarget("accounts.team", "t-1"))
    assert (event.target_type, event.target_id, event.target_label, event.outcome) == (
        "accounts.team", "t-1", "", "denied")


def test_it_refuses_an_unknown_kind_of_target(db):
    with pytest.raises(AuditError, match="model instance, an AuditTarget"):
        record(action="a.created", actor=None, target=("accounts.team", "1", ""))


def test_it_records_the_system_when_the_actor_is_none(user):
    with job_context(job_id="job-1", actor=user):
        event = record(action="credential.rotated", actor=None)
    assert (event.actor_id, event.actor_name, event.request_id) == (None, "", "job-1")


def test_it_takes_actor_and_request_id_from_a_job_context(user):
    with job_context(job_id="share-export-42", actor=user):
        event = record(action="share.exported")
    assert (event.actor_id, event.request_id, event.ip) == (user.pk, "share-export-42", None)
    with job_context() as context:
        command_event = record(action="credential.rotated")
    assert command_event.request_id == context.request_id and context.request_id.startswith("cmd-")
    assert command_event.actor_id is None


def test_an_explicit_request_id_wins(db):
    with job_context(job_id="job-1"):
        assert record(action="a.created", request_id="given").request_id == "given"


@pytest.mark.parametrize(
    "action", ["Share.Approved", "share.approve", "share", "share approved", "", ".approved", "share..approved",
               "share.approved.", "x" * 60 + ".approved"],
)
def test_it_refuses_actions_that_are_not_dotted_past_tense(db, action):
    with pytest.raises(AuditError, match="past tense"):
        record(action=action, actor=None)


@pytest.mark.parametrize(
    "action", ["share.approved", "membership.role_changed", "auth.locked_out", "audit.read", "link.sent",
               "audit.exported", "cloud_account.created", "auth.login_failed"],
)
def test_it_accepts_dotted_past_tense_actions(db, action):
    outcome = "denied" if actions.ACTIONS[action].denial else "success"  # a denial is refused otherwise
    assert record(action=action, actor=None, outcome=outcome).action == action


@pytest.mark.parametrize(
    "kwargs",
    [
        {"outcome": "ok"},
        {"details": ["not", "a", "dict"]},
        {"details": {"ratio": 0.5}},
        {"cloud_request_ids": "req-1"},
        {"cloud_request_ids": [""]},
        {"cloud_request_ids": [1]},
        {"target": AuditTarget("t", "x" * 65, "")},
        {"request_id": "r" * 101},
        {"details": {"big": "x" * (64 * 1024)}},
    ],
)
def test_it_refuses_invalid_input_before_writing(db, kwargs):
    with pytest.raises(AuditError):
        record(action="a.created", actor=None, **kwargs)
    assert not AuditEvent.objects.exists()
    assert AuditChainHead.objects.get().seq == 0


def test_it_clips_long_labels_and_replaces_nul(db):
    event = record(action="a.created", actor=None, target=AuditTarget("t", "1", "x\x00" + "y" * 300))
    assert len(event.target_label) == 200
    assert event.target_label.startswith("x\ufffdy") and event.target_label.endswith("y…")
    assert verify_chain().ok


# --- AUD-15 ----------------------------------------------------------------------------

CANARY_SECRET = "canary-secret-7f3a9c"


@pytest.mark.parametrize(
    "kwargs",
    [
        {"details": {"secret_key": CANARY_SECRET}},
        {"details": {"account": {"password": CANARY_SECRET}}},
        {"details": {"url": f"https://oos.eu-west-2.outscale.com/b/o?X-Amz-Signature={CANARY_SECRET}"}},
        {"target": AuditTarget("transfers.link", "1", f"https://h/o?X-Amz-Credential=a&X-Amz-Signature={CANARY_SECRET}")},
    ],
)
def test_it_never_stores_an_obvious_secret(db, kwargs):
    with pytest.raises(AuditError, match="secret"):
        record(action="link.revealed", actor=None, **kwargs)
    assert not any(CANARY_SECRET in str(row) for row in AuditEvent.objects.values_list())


# --- AUD-11: fail closed ---------------------------------------------------------------

def _failing_audit_insert(execute, sql, params, many, context):
    if sql.startswith(f'INSERT INTO "{AuditEvent._meta.db_table}"'):
        raise DatabaseError("injected: audit insert failed")
    return execute(sql, params, many, context)


@pytest.mark.parametrize("batched", [False, True])
def test_a_failing_audit_write_rolls_back_the_business_change(db, batched):
    block = recorder.atomic() if batched else contextlib.nullcontext()
    with pytest.raises(DatabaseError, match="injected"), connection.execute_wrapper(_failing_audit_insert), \
            transaction.atomic(), block:
        Team.objects.create(name="Never committed")
        record(action="team.created", actor=None)
    assert not Team.objects.filter(name="Never committed").exists()
    assert AuditChainHead.objects.get().seq == 0


def test_an_invalid_audit_event_rolls_back_the_business_change(team):
    with pytest.raises(AuditError), transaction.atomic():
        Membership.objects.create(team=team, user=factories.make_user("new@example.com"))
        record(action="membership.added", actor=None, team=team, details={"password": "hunter2"})
    assert not Membership.objects.filter(team=team).exists()


def test_a_failing_business_write_takes_its_audit_event_with_it(team):
    with pytest.raises(RuntimeError), transaction.atomic():
        record(action="team.renamed", actor=None, team=team)
        raise RuntimeError("business rule failed after the event was recorded")
    assert not AuditEvent.objects.exists()
    # No hole either: the next event still gets seq 1.
    assert record(action="team.renamed", actor=None, team=team).seq == 1
    assert verify_chain().ok


def test_it_refuses_to_start_a_new_chain_when_the_head_row_is_gone(db, audit_tamper):
    record(action="a.created", actor=None)
    with audit_tamper.lifted():
        AuditChainHead._base_manager.all().delete()
    with pytest.raises(AuditError, match="head is missing"):
        record(action="a.changed", actor=None)


def test_it_creates_the_head_row_on_a_fresh_database(db, audit_tamper):
    with audit_tamper.lifted():
        AuditChainHead._base_manager.all().delete()
    assert record(action="a.created", actor=None).seq == 1
    assert AuditChainHead.objects.get().seq == 1


# --- outliving users and teams -----------------------------------------------------------

def test_deleting_a_user_or_team_leaves_their_events_untouched(user, team):
    event = record(action="team.created", actor=user, team=team, target=team)
    user.delete()
    team.delete()
    stored = AuditEvent.objects.get(seq=event.seq)
    assert (stored.actor_id, stored.actor_name, stored.team_id, stored.team_name) == (
        event.actor_id, "Ada Lovelace", event.team_id, "Alpha")
    assert verify_chain().ok


# --- AUD-16: stored verbatim, verified fine ------------------------------------------------

INJECTION = "x\nFAKE INFO admin logged in\r\x1b[2J\x1b[31m<script>alert(1)</script>\u202e"


def test_log_injection_strings_are_stored_verbatim_and_still_verify(db):
    user = factories.make_user("evil@example.com", full_name=INJECTION)
    team = factories.make_team(("T" + INJECTION)[:80])
    token = _current.set(AuditContext(request_id="r", ip="10.0.0.1", user_agent="ua", request=None, actor=user))
    try:
        event = record(action="team.created", team=team, target=AuditTarget("t", "1", INJECTION),
                       details={INJECTION: [INJECTION]})
    finally:
        _current.reset(token)
    stored = AuditEvent.objects.get(seq=event.seq)
    assert stored.actor_name == INJECTION
    assert stored.team_name == team.name
    assert stored.target_label == INJECTION
    assert stored.details == {INJECTION: [INJECTION]}
    assert verify_chain().ok


# --- the ORM refuses before the database has to -----------------------------------------

def test_the_orm_refuses_to_change_or_delete_events(db):
    event = record(action="a.created", actor=None)
    event.action = "a.changed"
    with pytest.raises(AuditError, match="append-only"):
        event.save()
    with pytest.raises(AuditError, match="append-only"):
        event.delete()
    with pytest.raises(AuditError, match="append-only"):
        AuditEvent.objects.filter(seq=event.seq).update(action="a.changed")
    with pytest.raises(AuditError, match="append-only"):
        AuditEvent.objects.all().delete()
    assert AuditEvent.objects.get().action == "a.created"


# --- Batches: many events, one lock ------------------------------------------------------

def test_a_batch_writes_its_events_in_order_when_it_ends(team):
    with recorder.atomic():
        events = [record(action="team.created", actor=None, team=team, details={"n": n}) for n in range(5)]
        assert AuditChainHead.objects.get().seq == 0  # nothing written, no lock taken yet
        assert not AuditEvent.objects.exists()
    assert [e.seq for e in events] == [1, 2, 3, 4, 5]
    stored = list(AuditEvent.objects.order_by("seq"))
    assert [e.details["n"] for e in stored] == [0, 1, 2, 3, 4]
    assert [e.hash for e in stored] == [e.hash for e in events]
    assert AuditChainHead.objects.get().hash == events[-1].hash
    assert verify_chain().ok


def test_a_batch_follows_events_recorded_before_it_and_nested_batches_join_it(team):
    with transaction.atomic():
        record(action="team.created", actor=None, team=team)
        with recorder.atomic():
            record(action="team.renamed", actor=None, team=team)
            with recorder.atomic():
                record(action="team.renamed", actor=None, team=team, details={"inner": True})
            assert AuditEvent.objects.count() == 1
        record(action="team.deleted", actor=None, team=team)
    assert list(AuditEvent.objects.order_by("seq").values_list("action", flat=True)) == [
        "team.created", "team.renamed", "team.renamed", "team.deleted"]
    assert verify_chain().ok


def test_a_batch_that_raises_writes_nothing(team):
    with pytest.raises(RuntimeError), recorder.atomic():
        Membership.objects.create(team=team, user=factories.make_user("batch@example.com"))
        record(action="membership.added", actor=None, team=team)
        raise RuntimeError("the service failed")
    assert not AuditEvent.objects.exists() and not Membership.objects.filter(team=team).exists()
    assert AuditChainHead.objects.get().seq == 0


def test_an_invalid_event_is_refused_when_recorded_not_when_the_batch_ends(team):
    with recorder.atomic():
        with pytest.raises(AuditError):
            record(action="team.created", actor=None, details={"password": "hunter2"})
        record(action="team.created", actor=None, team=team)
    assert AuditEvent.objects.count() == 1


@pytest.mark.django_db(transaction=True)
def test_another_thread_inside_a_batch_records_on_its_own(team):
    # The threads of a sweep have their own connections and transactions: their events must
    # not join a batch of the thread that started them.
    if connection.vendor == "sqlite":
        pytest.skip("SQLite takes its write lock when a transaction begins: sweeps run one at a time there")
    seen = []

    def in_thread():
        try:
            record(action="team.renamed", actor=None, team=team)
            seen.append(AuditEvent.objects.count())
        finally:
            connection.close()

    with recorder.atomic():
        record(action="team.created", actor=None, team=team)
        worker = threading.Thread(target=in_thread)
        worker.start()
        worker.join()
    assert seen == [1]
    assert list(AuditEvent.objects.order_by("seq").values_list("action", flat=True)) == [
        "team.renamed", "team.created"]
    assert verify_chain().ok


def test_a_nested_block_that_fails_is_a_savepoint_its_events_go_with_it(team):
    # The API's idempotent POSTs run a service's recorder.atomic() inside their own and answer
    # its refusal: the refused block's writes and events must go, the outer block's stay.
    with recorder.atomic():
        record(action="team.created", team=team, target=team, details={"step": "outer"})
        with contextlib.suppress(ValueError), recorder.atomic():
            Team.objects.filter(pk=team.pk).update(name="renamed inside")
            record(action="team.created", team=team, target=team, details={"step": "inner"})
            raise ValueError("refused")
        record(action="team.created", team=team, target=team, details={"step": "after"})
    team.refresh_from_db()
    assert team.name != "renamed inside"
    steps = [e.details["step"] for e in AuditEvent.objects.filter(action="team.created").order_by("seq")]
    assert steps == ["outer", "after"]
    assert verify_chain().ok
