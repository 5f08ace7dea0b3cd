"""Every state change leaves an audit event: a walk through every action URL and every job.

Each request and each job runs inside `audited()`, which snapshots the business state
before and after; a change with no new audit event fails the test. The walk must cover
every POST URL the portal has and every job in transfers/jobs.py, so a new action or job
that nobody walked through fails here too.
"""

import contextlib
import inspect
from datetime import timedelta

import pytest
from django.urls import reverse
from django.utils import timezone
from django_otp.oath import TOTP
from django_otp.plugins.otp_totp import models as totp_models
from django_otp.plugins.otp_totp.models import TOTPDevice

from accounts.models import CloudAccount, Membership, Team, User
from omiportal.audit.models import AuditEvent
from omiportal.audit.verify import verify_chain
from tests import factories, workers
from tests.test_authz import MATRIX
from tests.transfer_world import image_id, make_transfer_world
from transfers import jobs
from transfers.models import Export, Recipient, Share

pytestmark = pytest.mark.django_db(transaction=True)

TRACKED = {
    User: ["email", "password", "is_active"],
    Team: ["name", "require_approval_for_own_accounts", "request_expiry_days", "auto_accept_incoming",
           "cleanup_exports", "require_two_factor_for_privileged"],
    TOTPDevice: ["user_id", "confirmed", "last_t", "throttling_failure_count"],
    Membership: ["team_id", "user_id", "role"],
    CloudAccount: ["label", "region", "access_key_sealed", "secret_key_sealed", "export_bucket",
                   "accepts_incoming_shares", "validation_status", "account_id"],
    Share: ["state", "decided_by_id", "export_id"],
    Export: ["state", "task_id", "copy_image_id", "cleaned_at"],
    Recipient: ["state", "image_id", "attempt"],
}
AUTH_POSTS = {"login", "logout", "password_change", "password_reset", "password_reset_confirm",
              "accounts:team-list", "accounts:member-list", "accounts:twofactor-confirm", "accounts:twofactor-verify",
              "accounts:twofactor-remove"}


def _snapshot():
    return {(model.__name__, row[0]): row[1:] for model, fields in TRACKED.items()
            for row in model.objects.values_list("pk", *fields)}


@contextlib.contextmanager
def audited(label: str):
    before, events = _snapshot(), AuditEvent.objects.count()
    yield
    after = _snapshot()
    changed = sorted({key[0] for key in set(before) ^ set(after)} |
                     {key[0] for key in before.keys() & after.keys() if before[key] != after[key]})
    if changed:
        assert AuditEvent.objects.count() > events, f"{label} changed {changed} without recording an audit event"


@pytest.fixture
def walk(cloud, settings, client, monkeypatch):
    settings.OMIPORTAL_SWEEP_MIN_SECONDS = 0.05
    settings.OMIPORTAL_SWEEP_MAX_SECONDS = 0.2
    settings.OMIPORTAL_SWEEP_BUDGET_SECONDS = 0  # every hand-off goes on in import_handoff_job
    workers.flush()
    exercised_jobs = set()
    for name, func in inspect.getmembers(jobs, inspect.isfunction):
        if name.endswith("_job"):
            def wrapped(*args, _func=func, _name=name):
                exercised_jobs.add(_name)
                with audited(f"job {_name}{args}"):
                    return _func(*args)
            monkeypatch.setattr(jobs, name, wrapped)
    posted = set()

    def post(name, data=None, *, follow=False, **kwargs):
        posted.add(name)
        with audited(f"POST {name}"):
            return client.post(reverse(name, kwargs=kwargs), data or {}, follow=follow)

    w = make_transfer_world(cloud)
    yield w, client, post, posted, exercised_jobs
    workers.flush()


def _team(w, team):
    return {"team_id": team.public_id}


def _totp_code(device, at):
    device.refresh_from_db()
    totp = TOTP(device.bin_key, device.step, device.t0, device.digits, device.drift)
    totp.time = at
    return f"{totp.token():06d}"


def test_every_action_and_job_records_what_it_changed(walk, cloud, monkeypatch):
    w, client, post, posted, exercised_jobs = walk
    src, dst = _team(w, w.source), _team(w, w.dest)
    epsilon = cloud.account("epsilon")

    # Signing in, teams, members.
    post("login", {"username": "admin@src.test", "password": factories.PASSWORD})
    post("accounts:team-list", {"name": "Gamma"})
    post("accounts:member-list", {"email": "new@src.test", "role": "member"}, **src)
    newcomer = Membership.objects.get(team=w.source, user__email="new@src.test")
    post("accounts:member-role", {"role": "auditor"}, membership_id=newcomer.public_id, **src)
    post("accounts:member-reinvite", membership_id=newcomer.public_id, **src)
    post("accounts:member-remove", membership_id=newcomer.public_id, **src)
    post("accounts:team-settings", {
        "require_approval_for_own_accounts": "on" if w.source.require_approval_for_own_accounts else "",
        "request_expiry_days": w.source.request_expiry_days + 1,
        "auto_accept_incoming": "on" if w.source.auto_accept_incoming else "",
        "cleanup_exports": "on" if w.source.cleanup_exports else "", "require_two_factor_for_privileged": ""}, **src)

    # Two-factor sign-in: enrol (a wrong code, then the right one), verify, remove. The clock is
    # django-otp's, moved a step at a time: each code works once.
    clock = [1_700_000_000.0]
    monkeypatch.setattr(totp_models, "time", type("Clock", (), {"time": staticmethod(lambda: clock[0])}))
    client.get(reverse("accounts:twofactor"))
    device = TOTPDevice.objects.get(user__email="admin@src.test")
    post("accounts:twofactor-confirm", {"code": "000000" if _totp_code(device, clock[0]) != "000000" else "111111"})
    TOTPDevice.objects.filter(pk=device.pk).update(throttling_failure_count=0, throttling_failure_timestamp=None)
    post("accounts:twofactor-confirm", {"code": _totp_code(device, clock[0])})
    clock[0] += 30
    post("accounts:twofactor-verify", {"code": _totp_code(device, clock[0])})
    clock[0] += 30
    post("accounts:twofactor-remove", {"code": _totp_code(device, clock[0])})
    assert not TOTPDevice.objects.filter(user__email="admin@src.test").exists()

    # Cloud accounts: create (validated against the sandbox), edit, check, delete.
    post("accounts:account-create", {"label": "eps", "region": epsilon["region"], "access_key": epsilon["access_key"],
                                     "secret_key": epsilon["secret_key"], "export_bucket": epsilon["bucket"]}, **src)
    eps = CloudAccount.objects.get(label="eps")
    post("accounts:account-edit", {"label": "eps2", "region": eps.region, "access_key": "", "secret_key": "",
                                   "export_bucket": eps.export_bucket}, account_id=eps.public_id, **src)
    post("accounts:account-validate", account_id=eps.public_id, **src)
    post("accounts:account-delete", account_id=eps.public_id, **src)

    # Shares: request three (one cancelled, one rejected, one approved with an external recipient).
    def request(copy_name, externals=(), accounts=None, image="alpha-web-2025.01"):
        accounts = accounts or [w.delta]
        data = {"image_id": image_id(cloud, "alpha", image),
                "recipients": [str(a.public_id) for a in accounts],
                "copy_name": copy_name, "reason": "walk", "licence_confirmed": "on"}
        for n, (account_id, region) in enumerate(externals, start=1):
            data |= {f"external_account_{n}": account_id, f"external_region_{n}": region}
        client.force_login(w.src_member)
        posted.add("transfers:share-new")
        with audited("POST transfers:share-new"):
            client.post(reverse("transfers:share-new", kwargs=src) + f"?account={w.alpha.public_id}", data)
        return Share.objects.get(copy_name=copy_name)

    cancelled, rejected = request("walk-cancel"), request("walk-reject")
    main = request("walk-main", externals=[("999988887777", "us-west-1")])
    post("transfers:share-cancel", share_id=cancelled.public_id, **src)
    client.force_login(w.src_approver)
    post("transfers:share-reject", {"digest": rejected.digest, "comment": "no"}, share_id=rejected.public_id, **src)
    post("transfers:share-approve", {"digest": main.digest, "comment": "yes"}, share_id=main.public_id, **src)
    workers.run_jobs(until=lambda: Share.objects.get(pk=main.pk).state == "ready")

    # The recipient team: accept, then a failed import retried; the source team reveals the link.
    delta_in = Recipient.objects.get(share=main, kind="team")
    external = Recipient.objects.get(share=main, kind="external")
    cloud.faults.fail_import("walk-main", comment="corrupt")
    client.force_login(w.dst_member)
    post("transfers:recipient-accept", recipient_id=delta_in.public_id, **dst)
    workers.run_jobs(until=lambda: Recipient.objects.get(pk=delta_in.pk).state == "failed")
    post("transfers:recipient-retry", recipient_id=delta_in.public_id, **dst)
    workers.run_jobs(until=lambda: Recipient.objects.get(pk=delta_in.pk).state == "completed")
    client.force_login(w.src_member)
    response = post("transfers:share-reveal-link", recipient_id=external.public_id, share_id=main.public_id, **src)
    link = response.context["link"].url

    # A pasted link, and a decline of a second offer.
    client.force_login(w.dst_member)
    post("transfers:link-import", {"url": link, "account": str(w.gamma.public_id), "image_name": "walk-link"}, **dst)
    workers.run_jobs(until=lambda: Recipient.objects.filter(kind="link", state="completed").exists())
    client.force_login(w.src_approver)
    other = request("walk-decline")
    client.force_login(w.src_approver)
    post("transfers:share-approve", {"digest": other.digest}, share_id=other.public_id, **src)
    workers.run_jobs(until=lambda: Share.objects.get(pk=other.pk).state == "ready")
    client.force_login(w.dst_member)
    post("transfers:recipient-decline", {"reason": "not needed"},
         recipient_id=Recipient.objects.get(share=other).public_id, **dst)

    # An auto-accepting team and two imports: with no sweep budget, a hand-off job starts one.
    Team.objects.filter(pk=w.dest.pk).update(auto_accept_incoming=True)
    auto = request("walk-auto", accounts=[w.delta, w.gamma], image="alpha-db-base")  # a new export
    client.force_login(w.src_approver)
    post("transfers:share-approve", {"digest": auto.digest}, share_id=auto.public_id, **src)
    workers.run_jobs(until=lambda: Share.objects.get(pk=auto.pk).state == "completed")
    Team.objects.filter(pk=w.dest.pk).update(auto_accept_incoming=False)

    # Expiry, one-click re-export, the reconciler and cleanup jobs.
    Export.objects.filter(shares=other).update(manifest_deadline=timezone.now() - timedelta(seconds=1))
    stale = request("walk-expire")
    client.force_login(w.src_approver)
    post("transfers:share-approve", {"digest": stale.digest}, share_id=stale.public_id, **src)
    Export.objects.filter(shares=stale).update(manifest_deadline=timezone.now() - timedelta(seconds=1))
    with audited("job reconcile_job"):
        jobs.reconcile_job()
    assert Share.objects.get(pk=stale.pk).state == "expired"
    client.force_login(w.src_member)
    post("transfers:share-reexport", share_id=stale.public_id, **src)
    workers.run_jobs(until=lambda: Share.objects.get(pk=stale.pk).state == "ready")

    # Passwords and signing out.
    post("password_change", {"old_password": factories.PASSWORD, "new_password1": "another long passphrase",
                             "new_password2": "another long passphrase"})
    post("password_reset", {"email": "member@src.test"})
    post("logout")

    wanted = {name for name, (methods, _) in MATRIX.items() if "POST" in methods} | {
        "accounts:twofactor-confirm", "accounts:twofactor-verify", "accounts:twofactor-remove"}
    missing = wanted - posted
    assert not missing, f"the walk never exercised {sorted(missing)}: add them"
    all_jobs = {name for name, _ in inspect.getmembers(jobs, inspect.isfunction) if name.endswith("_job")}
    # reconcile_job is called directly above (the workers only enqueue it on their maintenance tick).
    assert all_jobs - exercised_jobs <= {"reconcile_job"}, f"jobs never exercised: {all_jobs - exercised_jobs}"
    assert verify_chain().ok
    for event in AuditEvent.objects.all():
        assert event.action and event.outcome and event.occurred_at.utcoffset() == timedelta(0)
