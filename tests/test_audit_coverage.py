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
from axes.models import AccessAttempt, AccessFailureLog, AccessLog
from django.contrib import admin
from django.contrib.auth.models import Group, Permission
from django.db import transaction
from django.forms.models import model_to_dict
from django.urls import reverse
from django.utils import timezone
from django_otp.oath import TOTP
from django_otp.plugins.otp_totp import models as totp_models
from django_otp.plugins.otp_totp.models import TOTPDevice

from accounts.models import CloudAccount, Membership, Team, User
from api.models import ApiToken
from audit.models import AuditEvent
from audit.recorder import record
from audit.verify import verify_chain
from distribution.jobs.releases import release_job
from distribution.models import Family, FamilyVersion, GroupMember, RecipientGroup, StandingApproval, Subscription
from tests import factories, workers
from tests.retention_world import RETENTION_TRACKED, walk_retention
from tests.test_authz import MATRIX
from tests.transfer_world import image_id, make_transfer_world
from transfers import events, jobs
from transfers.models import Export, LaunchGrant, Recipient, Share
from webhooks.models import WebhookDelivery, WebhookEndpoint

pytestmark = pytest.mark.django_db(transaction=True)

TRACKED = {
    User: ["email", "password", "is_active"],
    Team: ["name", "require_approval_for_own_accounts", "request_expiry_days", "auto_accept_incoming",
           "cleanup_exports", "require_two_factor_for_privileged"],
    TOTPDevice: ["user_id", "confirmed", "last_t", "throttling_failure_count"],
    Membership: ["team_id", "user_id", "role"],
    CloudAccount: ["label", "region", "access_key_sealed", "secret_key_sealed", "export_bucket",
                   "accepts_incoming_shares", "validation_status", "account_id", "ownership_confirmed_at"],
    Share: ["state", "decided_by_id", "export_id"],
    Export: ["state", "task_id", "copy_image_id", "cleaned_at"],
    Recipient: ["state", "image_id", "attempt"],
    WebhookEndpoint: ["url", "description", "events", "secret_sealed", "previous_secret_sealed"],
    WebhookDelivery: ["state", "tries"],
    ApiToken: ["kind", "role", "expires_at", "revoked_at"],
    RecipientGroup: ["name", "description"],
    GroupMember: ["group_id", "account_id", "state", "answered_by_id"],
    **RETENTION_TRACKED,
    StandingApproval: ["state", "versions_used", "stopped_by_id"],
    FamilyVersion: ["state", "share_id", "approval_id", "end_of_life"],
    Family: ["name", "source_account_id", "match", "name_pattern", "tag_key", "tag_value", "archived_at"],
    Subscription: ["family_id", "team_id", "changed_at", "ended_at"],
}
AUTH_POSTS = {"login", "logout", "password_change", "password_reset", "password_reset_confirm",
              "accounts:team-list", "accounts:member-list", "accounts:twofactor-confirm", "accounts:twofactor-verify",
              "accounts:twofactor-remove"}


def _snapshot(tracked=TRACKED):
    return {(model.__name__, row[0]): row[1:] for model, fields in tracked.items()
            for row in model.objects.values_list("pk", *fields)}


@contextlib.contextmanager
def audited(label: str, tracked=TRACKED):
    before, events = _snapshot(tracked), AuditEvent.objects.count()
    yield
    after = _snapshot(tracked)
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


def test_every_action_and_job_records_what_it_changed(walk, cloud, monkeypatch, settings):
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
    CloudAccount.objects.filter(pk=eps.pk).update(export_bucket="eps-new-exports")  # missing: offered, created
    post("accounts:account-create-bucket", account_id=eps.public_id, **src)
    post("accounts:account-confirm-ownership", account_id=eps.public_id, **src)  # its registrant: refused
    client.force_login(w.src_approver)  # a second person confirms it is the team's own (INS-02)
    post("accounts:account-confirm-ownership", account_id=eps.public_id, **src)
    assert CloudAccount.objects.get(pk=eps.pk).ownership_confirmed_by_id == w.src_approver.pk
    client.force_login(w.src_admin)
    post("accounts:account-delete", account_id=eps.public_id, **src)
    # API tokens: the team's service token made, then revoked.
    post("api:token-create", {"name": "ci", "kind": "service", "role": "member", "days": 30, "once": "walk"}, **src)
    post("api:token-revoke", token_id=ApiToken.objects.get(name="ci").public_id, **src)

    # Shares: request three (one cancelled, one rejected, one approved with an external recipient).
    def request(copy_name, externals=(), accounts=None, image="alpha-web-2025.01", **extra):
        accounts = accounts or [w.delta]
        data = {"image_id": image_id(cloud, "alpha", image),
                "recipients": [str(a.public_id) for a in accounts],
                "copy_name": copy_name, "reason": "walk", "licence_confirmed": "on", **extra}
        for n, (account_id, region, *oos_user_id) in enumerate(externals, start=1):
            data |= {f"external_account_{n}": account_id, f"external_region_{n}": region,
                     f"external_oos_user_{n}": "".join(oos_user_id)}
        client.force_login(w.src_member)
        posted.add("transfers:share-new")
        with audited("POST transfers:share-new"):
            client.post(reverse("transfers:share-new", kwargs=src) + f"?account={w.alpha.public_id}", data)
        return Share.objects.get(copy_name=copy_name)

    cancelled, rejected = request("walk-cancel"), request("walk-reject")
    # beta, in alpha's Region with its OOS user ID, is granted read (object_grant_job), taken back at expiry.
    main = request("walk-main", externals=[("999988887777", "us-west-1"),
                                           ("222233334444", "eu-west-2", cloud.account("beta")["canonical_id"])])
    post("transfers:share-cancel", share_id=cancelled.public_id, **src)
    client.force_login(w.src_approver)
    post("transfers:share-reject", {"digest": rejected.digest, "comment": "no"}, share_id=rejected.public_id, **src)
    post("transfers:share-approve", {"digest": main.digest, "comment": "yes"}, share_id=main.public_id, **src)
    withdrawn = request("walk-withdrawn", image="alpha-db-base")  # withdrawn while exporting: its export too
    client.force_login(w.src_approver)
    post("transfers:share-approve", {"digest": withdrawn.digest}, share_id=withdrawn.public_id, **src)
    client.force_login(w.src_member)
    post("transfers:share-cancel", share_id=withdrawn.public_id, **src)
    workers.run_jobs(until=lambda: Share.objects.get(pk=main.pk).state == "ready"
                     and Export.objects.get(shares=withdrawn).state == "failed")

    # The recipient team: accept, then a failed import retried; the source team reveals the link.
    delta_in = Recipient.objects.get(share=main, kind="team")
    external = Recipient.objects.get(share=main, kind="external", external_account_id="999988887777")
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

    # An auto-accepting team and two imports: with no sweep budget, a hand-off job starts one. Two
    # shares of one new export (gamma, in alpha's Region, copies by launch permission and grants).
    Team.objects.filter(pk=w.dest.pk).update(auto_accept_incoming=True)
    auto = request("walk-auto", accounts=[w.delta, w.gamma], image="alpha-db-base")  # a new export
    auto_too = request("walk-auto-2", image="alpha-db-base")  # the same export
    client.force_login(w.src_approver)
    for share in (auto, auto_too):
        post("transfers:share-approve", {"digest": share.digest}, share_id=share.public_id, **src)
    workers.run_jobs(until=lambda: Share.objects.filter(pk__in=[auto.pk, auto_too.pk], state="completed").count() == 2)
    Team.objects.filter(pk=w.dest.pk).update(auto_accept_incoming=False)

    # Launch permission only: granted, kept, then revoked by the source team on its page.
    kept = request("walk-permission", accounts=[w.gamma], launch_permission_only="on")
    client.force_login(w.src_approver)
    post("transfers:share-approve", {"digest": kept.digest}, share_id=kept.public_id, **src)
    workers.run_jobs(until=lambda: LaunchGrant.objects.filter(share=kept, state="granted").exists())
    client.force_login(w.src_member)
    post("transfers:grant-revoke", grant_id=LaunchGrant.objects.get(share=kept).public_id, **src)
    workers.run_jobs(until=lambda: LaunchGrant.objects.get(share=kept).state == "revoked")

    # Expiry, one-click re-export, the reconciler and cleanup jobs.
    Export.objects.filter(shares__in=[other, main]).update(manifest_deadline=timezone.now() - timedelta(seconds=1))
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

    # Webhooks: an endpoint added, changed, its secret rotated, a message sent again, the endpoint deleted.
    settings.OMIPORTAL_WEBHOOK_ALLOW_HOSTS = ["127.0.0.1"]
    settings.OMIPORTAL_WEBHOOK_RETRY_SECONDS = []  # nothing listens on port 9: the first attempt fails for good
    client.force_login(w.src_admin)
    hook = {"url": "http://127.0.0.1:9/hooks", "description": "ci", "events": ["share.requested"]}
    post("webhooks:endpoint-create", hook, **src)
    endpoint = WebhookEndpoint.objects.get(team=w.source)
    post("webhooks:endpoint-edit", {**hook, "events": ["share.requested", "share.approved"]},
         endpoint_id=endpoint.public_id, **src)
    post("webhooks:endpoint-rotate", endpoint_id=endpoint.public_id, **src)
    with transaction.atomic():
        events.emit("share.requested", [stale.pk])
    workers.run_jobs(until=lambda: WebhookDelivery.objects.filter(endpoint=endpoint, state="failed").exists())
    delivery = WebhookDelivery.objects.get(endpoint=endpoint)
    post("webhooks:delivery-redeliver", endpoint_id=endpoint.public_id, delivery_id=delivery.public_id, **src)
    assert WebhookDelivery.objects.get(pk=delivery.pk).state == "pending"
    post("webhooks:endpoint-delete", endpoint_id=endpoint.public_id, **src)
    client.force_login(w.src_member)

    # Retention (tests/retention_world.py): a rule, runs proposed, cancelled, confirmed; the delete job; an end of life.
    walk_retention(w, cloud, client, post, audited)
    client.force_login(w.src_member)

    # Recipient groups: made and renamed by the source team, which invites the destination team's two accounts;
    # that team accepts one, declines the other, then takes the first out; the source team removes and deletes.
    client.force_login(w.src_approver)
    post("distribution:group-create", {"name": "walk"}, **src)
    group = {"group_id": RecipientGroup.objects.get(team=w.source, name="walk").public_id, **src}
    post("distribution:group-edit", {"name": "walk-prod", "description": "all"}, **group)
    post("distribution:group-invite", {"accounts": [str(w.delta.public_id), str(w.gamma.public_id)]}, **group)
    delta_member, gamma_member = (GroupMember.objects.get(account=account) for account in (w.delta, w.gamma))
    client.force_login(w.dst_approver)
    post("distribution:group-membership-accept", member_id=delta_member.public_id, **dst)
    post("distribution:group-membership-decline", member_id=gamma_member.public_id, **dst)
    post("distribution:group-membership-leave", member_id=delta_member.public_id, **dst)
    client.force_login(w.src_approver)
    post("distribution:group-member-remove", member_id=gamma_member.public_id, **group)
    post("distribution:group-delete", **group)
    assert not RecipientGroup.objects.exists() and not GroupMember.objects.exists()
    client.force_login(w.src_member)

    # Standing approvals: the source team's family (declared by its member) that the destination team subscribes
    # with delta; an approver signs what the page showed, the version's release job shares it, the approver stops.
    family = Family.objects.create(team=w.source, source_account=w.alpha, name="walk-web", match="name",
                                   name_pattern="walk-web-*", created_by=w.src_member)
    Subscription.objects.create(family=family, team=w.dest, created_by=w.dst_member).accounts.set([w.delta])
    client.force_login(w.src_approver)
    terms = {"group": "", "expires_on": (timezone.now() + timedelta(days=30)).date().isoformat(), "max_versions": 3}
    shown = client.get(reverse("distribution:approval-sign", kwargs={"family_id": family.public_id, **src}), terms)
    post("distribution:approval-sign", {**terms, "digest": shown.context["proposal"].digest, "licence_confirmed": "on"},
         family_id=family.public_id, **src)
    approval = StandingApproval.objects.get(family=family, state="active")
    version = FamilyVersion.objects.create(family=family, number=1, image_name="alpha-web-2025.01",
                                           image_id=image_id(cloud, "alpha", "alpha-web-2025.01"))
    with audited("job distribution release_job"):
        release_job(str(version.public_id))
    assert FamilyVersion.objects.get(pk=version.pk).state == "shared"
    post("distribution:approval-stop", approval_id=approval.public_id, **src)
    assert StandingApproval.objects.get(pk=approval.pk).state == "stopped"
    client.force_login(w.src_member)

    # Families and subscriptions: the source team declares a family of alpha's images and scans it now (version 1
    # found); the destination team subscribes with gamma, adds delta, ends; the source team archives the family.
    client.force_login(w.src_member)
    post("distribution:family-create", {"name": "walk-family", "source_account": str(w.alpha.public_id),
                                        "match": "name", "name_pattern": "alpha-web-*"}, **src)
    walked = {"family_id": Family.objects.get(name="walk-family").public_id, **src}
    post("distribution:family-scan", **walked)
    assert FamilyVersion.objects.filter(family__name="walk-family").count() == 1
    client.force_login(w.dst_member)
    post("distribution:subscription-create", {"family": str(walked["family_id"]),
                                              "accounts": [str(w.gamma.public_id)]}, **dst)
    subscribed = {"subscription_id": Subscription.objects.get(family__name="walk-family").public_id, **dst}
    post("distribution:subscription-edit", {"accounts": [str(w.gamma.public_id), str(w.delta.public_id)]},
         **subscribed)
    post("distribution:subscription-end", **subscribed)
    client.force_login(w.src_member)
    post("distribution:family-archive", **walked)
    assert Family.objects.get(name="walk-family").archived_at is not None

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
    # copy_watch_job is only queued by an earlier version (the rest of a watch): it hands the copies to
    # the watcher, whose looks are import_sweep's, walked above (its tests: test_transfers_first_look.py).
    assert all_jobs - exercised_jobs <= {"reconcile_job", "copy_watch_job"}, \
        f"jobs never exercised: {all_jobs - exercised_jobs}"
    assert verify_chain().ok
    for event in AuditEvent.objects.all():
        assert event.action and event.outcome and event.occurred_at.utcoffset() == timedelta(0)


# --- The admin site (INS-05) -----------------------------------------------------------------------------
# Everything the admin could change that matters to the controls. Sign-in lock-outs count: lifting one
# helps whoever is guessing a password.
ADMIN_TRACKED = {
    **TRACKED,
    User: ["email", "password", "full_name", "is_active", "is_staff", "is_superuser", "is_compliance_officer"],
    Team: [field.name for field in Team._meta.concrete_fields if field.name != "id"],
    Membership: ["team_id", "user_id", "role", "role_granted_by_id", "role_granted_at"],
    TOTPDevice: ["user_id", "key", "confirmed", "last_t", "throttling_failure_count", "drift", "tolerance"],
    Group: ["name"],
    Group.permissions.through: ["group_id", "permission_id"],
    User.groups.through: ["user_id", "group_id"],
    User.user_permissions.through: ["user_id", "permission_id"],
    AccessAttempt: ["username", "failures_since_start"],
    AccessLog: ["username"],
    AccessFailureLog: ["username", "locked_out"],
    WebhookEndpoint: ["url", "description", "events", "secret_sealed"],
    WebhookDelivery: ["state", "payload", "msg_id"],
}


def _tampered(value):
    """What an insider would put in a field instead: every value different, of the same kind."""
    if isinstance(value, bool):
        return "" if value else "on"
    if isinstance(value, int):
        return value + 1
    if isinstance(value, str) and "@" in value:
        return "insider." + value
    if isinstance(value, str):
        return value + "x"
    return value


def _admin_objects(world):
    seen = {"ip_address": "198.51.100.9", "user_agent": "t", "http_accept": "*/*", "path_info": "/login/"}
    endpoint = WebhookEndpoint.objects.create(team=world.alpha, url="https://hooks.example.com/omi",
                                              events=["share.approved"], secret_sealed="never opened here")
    return {
        User: world.approver, Team: world.alpha, CloudAccount: factories.make_cloud_account(world.alpha),
        Group: Group.objects.create(name="ops"), TOTPDevice: TOTPDevice.objects.create(user=world.approver),
        AccessAttempt: AccessAttempt.objects.create(username=world.approver.email, failures_since_start=5, **seen),
        AccessLog: AccessLog.objects.create(username=world.approver.email, **seen),
        AccessFailureLog: AccessFailureLog.objects.create(username=world.approver.email, locked_out=True, **seen),
        AuditEvent: record(action="share.requested", actor=world.member, team=world.alpha),
        WebhookEndpoint: endpoint,
        WebhookDelivery: WebhookDelivery.objects.create(endpoint=endpoint, event_type="share.approved", event_key="k",
                                                        subject_id=endpoint.public_id, msg_id="msg_admin",
                                                        payload="{}"),
    }


def _everything_changed(obj, model_admin, request):
    data = {name: _tampered(value) for name, value in model_to_dict(obj).items() if value is not None}
    data |= {"password1": "an insider's passphrase", "password2": "an insider's passphrase",
             "groups": list(Group.objects.values_list("pk", flat=True)),
             "user_permissions": list(Permission.objects.values_list("pk", flat=True)),
             "permissions": list(Permission.objects.values_list("pk", flat=True))}
    for inline in model_admin.get_inline_instances(request, obj):
        formset = inline.get_formset(request, obj)
        prefix = formset.get_default_prefix()
        rows = list(formset.model.objects.filter(**{formset.fk.name: obj}))
        data |= {f"{prefix}-TOTAL_FORMS": len(rows), f"{prefix}-INITIAL_FORMS": len(rows),
                 f"{prefix}-MIN_NUM_FORMS": 0, f"{prefix}-MAX_NUM_FORMS": 1000}
        for n, row in enumerate(rows):
            data |= {f"{prefix}-{n}-{name}": _tampered(value) for name, value in model_to_dict(row).items()
                     if value is not None}
            data |= {f"{prefix}-{n}-id": row.pk, f"{prefix}-{n}-role": "admin"}
    return data


@pytest.mark.parametrize("kind", ["staff", "superuser"])
def test_every_admin_change_view_records_what_it_changed(kind, world, rf, client):
    """An insider in the admin, with every permission, tries to change and delete every object it lists."""
    from django_otp import DEVICE_ID_SESSION_KEY

    insider = factories.make_user(f"{kind}@ops.test", is_staff=True, is_superuser=kind == "superuser")
    insider.user_permissions.set(Permission.objects.all())
    client.force_login(insider)
    session = client.session
    session[DEVICE_ID_SESSION_KEY] = TOTPDevice.objects.create(user=insider, name="ops", confirmed=True).persistent_id
    session.save()
    request = rf.get("/admin/")
    request.user = insider
    objects = _admin_objects(world)
    walked = set()
    for model, model_admin in admin.site._registry.items():
        if not model._meta.managed:
            continue  # django-rq's dashboard: a page, no rows
        obj, info = objects[model], (model._meta.app_label, model._meta.model_name)
        walked.add(model)
        data = _everything_changed(obj, model_admin, request)
        for view, args, payload in (("add", [], data), ("change", [obj.pk], data),
                                    ("delete", [obj.pk], {"post": "yes"}),
                                    ("changelist", [], {"action": "delete_selected", "_selected_action": [obj.pk],
                                                        "post": "yes"})):
            url = reverse("admin:{}_{}_{}".format(*info, view), args=args)
            with audited(f"admin POST {url}", tracked=ADMIN_TRACKED):
                client.post(url, payload)
    missing = {m for m in admin.site._registry if m._meta.managed} - walked
    assert not missing, f"the admin walk never tried {sorted(m._meta.label for m in missing)}"
    assert verify_chain().ok
