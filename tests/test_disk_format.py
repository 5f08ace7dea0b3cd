"""The team chooses its exports' disk format (qcow2 or raw): set on the settings page, recorded on each
share at request time, bound in the digest, used by the export, and an export in the other format is
never reused (real sandbox over HTTP, real jobs)."""

import pytest
from django.urls import reverse

from accounts.models import Team
from audit.models import AuditEvent
from tests import workers
from tests.transfer_world import approve, request_share
from transfers.models import Export, Share
from transfers.services import binding

pytestmark = pytest.mark.django_db(transaction=True)


def _settings_form(team, **changes):
    return {"require_approval_for_own_accounts": "on", "request_expiry_days": team.request_expiry_days,
            "approval_lifetime_days": team.approval_lifetime_days, "auto_accept_incoming": "",
            "cleanup_exports": "on", "require_two_factor_for_privileged": "", "copy_tag_allowlist": "",
            "export_disk_format": team.export_disk_format, **changes}


def _raw(flow):
    Team.objects.filter(pk=flow.source.pk).update(export_disk_format="raw")
    flow.source.refresh_from_db()


def test_an_admin_chooses_raw_on_the_settings_page_and_it_is_audited(flow, client):
    client.force_login(flow.src_admin)
    url = reverse("accounts:team-settings", kwargs={"team_id": flow.source.public_id})
    page = client.get(url).content.decode()
    assert 'name="export_disk_format"' in page and "raw (no conversion on import)" in page
    response = client.post(url, _settings_form(flow.source, export_disk_format="raw"))
    assert response.status_code == 302
    assert Team.objects.get(pk=flow.source.pk).export_disk_format == "raw"
    event = AuditEvent.objects.get(action="team.settings_changed")
    assert event.details == {"before": {"export_disk_format": "qcow2"}, "after": {"export_disk_format": "raw"}}

    response = client.post(url, _settings_form(flow.source, export_disk_format="vmdk"))
    assert response.status_code == 400 and Team.objects.get(pk=flow.source.pk).export_disk_format == "raw"

    client.force_login(flow.src_approver)  # only admins change settings
    assert client.post(url, _settings_form(flow.source, export_disk_format="qcow2")).status_code == 403


def test_a_share_records_the_format_at_request_time_and_its_digest_binds_it(flow, cloud):
    _raw(flow)
    share = request_share(flow, cloud)
    assert share.disk_format == "raw"
    assert AuditEvent.objects.get(action="share.requested").details["disk_format"] == "raw"
    Team.objects.filter(pk=flow.source.pk).update(export_disk_format="qcow2")  # later changes do not apply
    assert Share.objects.get(pk=share.pk).disk_format == "raw"

    recipients = list(share.recipients.all())
    as_qcow2 = Share.objects.get(pk=share.pk)
    as_qcow2.disk_format = "qcow2"
    assert binding.bound_digest(as_qcow2, recipients) != share.digest
    # A request made before teams chose keeps the digest it was approved on.
    legacy = Share.objects.get(pk=share.pk)
    legacy.disk_format = ""
    digest = binding.bound_digest(legacy, recipients)
    content_without = binding.digest_of(share=legacy, recipients=recipients, source=share.source_account,
                                        bucket=share.export_bucket,
                                        bound={r.target_account_id: (r.bound_account_id, r.bound_region)
                                               for r in recipients if r.target_account_id})
    assert digest == content_without and digest != share.digest


def test_the_export_is_written_in_the_shares_format(flow, cloud):
    _raw(flow)
    share = request_share(flow, cloud)
    approve(flow, share)
    workers.run_jobs(until=lambda: Share.objects.get(pk=share.pk).state == Share.State.READY)
    export = Export.objects.get(shares=share)
    task = cloud.world.tasks[export.task_id]
    assert task.disk_image_format == "raw"
    keys = cloud.world.bucket("eu-west-2", "alpha-exports").objects
    snapshots = [key for key in keys if key.startswith(export.prefix) and not key.endswith("manifest.json")]
    assert snapshots and all(key.endswith(".raw") for key in snapshots)
    assert AuditEvent.objects.get(action="export.requested").details["disk_format"] == "raw"


def test_an_export_in_another_format_is_not_reused(flow, cloud):
    cloud.set_durations(export_seconds=60)
    first = request_share(flow, cloud)  # qcow2, the default
    approve(flow, first)
    workers.run_jobs(until=lambda: Export.objects.get(shares=first).state == Export.State.RUNNING)

    _raw(flow)
    raw = request_share(flow, cloud, copy_name="web-raw")
    approve(flow, raw)
    raw_export = Export.objects.get(shares=raw)
    assert raw_export.pk != Export.objects.get(shares=first).pk
    assert AuditEvent.objects.filter(action="export.requested").count() == 2

    again = request_share(flow, cloud, copy_name="web-raw-2")
    approve(flow, again)
    assert Export.objects.get(shares=again).pk == raw_export.pk  # the same format: reused
    assert AuditEvent.objects.filter(action="export.reused").count() == 1
