"""Two teams with sandbox accounts, for workflow tests (real sandbox, real RQ, real database)."""

from types import SimpleNamespace

from django.utils import timezone

from accounts.models import CloudAccount, Role, Team
from accounts.selectors import TeamAccess
from tests import factories
from transfers.models import Share
from transfers.services import requests as share_requests


def access(user, team) -> TeamAccess:
    from accounts.models import Membership

    return TeamAccess(user=user, team=team, membership=Membership.objects.get(user=user, team=team))


def sandbox_account(cloud, team, name, *, incoming=True):
    entry = cloud.account(name)
    return factories.make_cloud_account(
        team, label=name, region=entry["region"], access_key=entry["access_key"], secret_key=entry["secret_key"],
        bucket=entry["bucket"], validation_status="valid", account_id=entry["account_id"],
        accepts_incoming_shares=incoming)


def confirm_own(w, account, *, approval_off=True):
    """Make ``account`` the source team's own, as the portal would: registered by its admin, confirmed by its
    approver (INS-02); with ``approval_off``, the team also lets own-account copies go without an approver."""
    now = timezone.now()
    CloudAccount.objects.filter(pk=account.pk).update(registered_by=w.src_admin, ownership_confirmed_by=w.src_approver,
                                                      ownership_confirmed_at=now)
    account.refresh_from_db()
    if approval_off:
        Team.objects.filter(pk=account.team_id).update(require_approval_for_own_accounts=False)
        w.source.refresh_from_db()
    return account


def seed_images(cloud, account_name: str, names) -> None:
    """More images of the account's own in the sandbox, written straight into its world (ids
    ami-ae000003, ami-ae000004, ...: clear of the sandbox's own)."""
    from sandbox.world import Image, Snapshot, utc_now  # the sandbox runs in the test process

    account = cloud.account(account_name)
    with cloud.world.lock:
        for k, name in enumerate(names):
            ident = f"{0xAE000003 + k:08x}"
            cloud.world.images[f"ami-{ident}"] = Image(
                image_id=f"ami-{ident}", account_id=account["account_id"], region=account["region"], name=name,
                description="seeded by a test", created=utc_now(),
                snapshots=[Snapshot(f"snap-{ident}", "/dev/sda1", 10)])


def image_id(cloud, account_name, image_name):
    return next(i["image_id"] for i in cloud.account(account_name)["images"] if i["name"] == image_name)


def make_transfer_world(cloud):
    source, dest = factories.make_team("Platform"), factories.make_team("Research")
    w = SimpleNamespace(source=source, dest=dest)
    for team, prefix in ((source, "src"), (dest, "dst")):
        for role in (Role.ADMIN, Role.APPROVER, Role.MEMBER):
            user = factories.add_member(team, factories.make_user(f"{role.value}@{prefix}.test"), role).user
            setattr(w, f"{prefix}_{role.value}", user)
    w.alpha = sandbox_account(cloud, source, "alpha", incoming=False)      # eu-west-2, source
    w.delta = sandbox_account(cloud, dest, "delta")                         # us-east-2
    w.gamma = sandbox_account(cloud, dest, "gamma")                         # eu-west-2
    return w


def request_share(w, cloud, *, image="alpha-web-2025.01", accounts=None, externals=(), copy_name="web-copy",
                  requester=None) -> Share:
    return share_requests.share_request(
        access=access(requester or w.src_member, w.source), source_account=w.alpha,
        image_id=image_id(cloud, "alpha", image), accounts=accounts if accounts is not None else [w.delta],
        externals=list(externals), copy_name=copy_name, description="for tests", reason="release 1.2",
        licence_confirmed=True)


def approve(w, share, approver=None) -> Share:
    return share_requests.share_approve(access=access(approver or w.src_approver, w.source), share=share,
                                        digest=share.digest, comment="ok")


def imports_started(w, cloud, n: int, *, images=("alpha-web-2025.01",)) -> list:
    """n shares from alpha to delta (of ``images`` in turn), auto-accepted, their imports started
    (and slow: they stay importing), the queues emptied; the recipients in creation order."""
    from tests import workers
    from transfers.models import Recipient

    w.dest.auto_accept_incoming = True
    w.dest.save()
    cloud.set_durations(export_seconds=0.2, import_seconds=1000)
    shares = [request_share(w, cloud, image=images[k % len(images)], copy_name=f"web-copy-{k}") for k in range(n)]
    for share in shares:
        approve(w, share)
    workers.run_jobs(until=lambda: Recipient.objects.filter(share__in=shares).exclude(image_id="").count() == n)
    workers.flush()
    return list(Recipient.objects.filter(share__in=shares).select_related("share", "target_account").order_by("pk"))
