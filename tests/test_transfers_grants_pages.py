"""The pages of the same-Region fast path: the share form's "launch permission only", each
recipient's method and why on the share page, the grant events on its timeline, and the source
team's page of open launch permissions with its revoke button. Real sandbox, real jobs."""

import pytest
from django.urls import reverse
from django.utils.html import escape

from accounts.models import Role
from audit.models import AuditEvent
from tests import factories, workers
from tests.transfer_world import access, approve, image_id, request_share
from transfers import errors
from transfers.models import LaunchGrant, Recipient, Share
from transfers.services import import_offers, methods
from transfers.views.grants import REVOKED

pytestmark = pytest.mark.django_db(transaction=True)

GAMMA = "333344445555"


def _url(name, team, **kwargs):
    return reverse(f"transfers:{name}", kwargs={"team_id": team.public_id, **kwargs})


def _permitted(oapi, image):
    return oapi("alpha").ReadImages(Filters={"ImageIds": [image]})["Images"][0]["PermissionsToLaunch"]["AccountIds"]


def _kept_grant(flow, cloud, client):
    """A share "launch permission only" to gamma, asked on the form and approved: its grant is in place."""
    client.force_login(flow.src_member)
    response = client.post(_url("share-new", flow.source) + f"?account={flow.alpha.public_id}", {
        "image_id": image_id(cloud, "alpha", "alpha-web-2025.01"), "recipients": [str(flow.gamma.public_id)],
        "copy_name": "web-launch", "reason": "run it in gamma", "licence_confirmed": "on",
        "launch_permission_only": "on"})
    assert response.status_code == 302, response.content.decode()[:2000]
    share = Share.objects.get(copy_name="web-launch")
    approve(flow, share)
    workers.run_jobs(until=lambda: LaunchGrant.objects.filter(share=share, state="granted").exists())
    return share, LaunchGrant.objects.get(share=share)


def test_the_share_form_offers_launch_permission_only(flow, cloud, client):
    client.force_login(flow.src_member)
    page = client.get(_url("share-new", flow.source) + f"?account={flow.alpha.public_id}").content.decode()
    assert 'name="launch_permission_only"' in page and "Launch permission only (no copy)" in page


def test_a_share_asked_for_launch_permission_only_grants_and_copies_nothing(flow, cloud, client, oapi):
    share, grant = _kept_grant(flow, cloud, client)
    assert share.launch_permission_only and grant.keep
    recipient = Recipient.objects.get(share=share)
    assert (recipient.method, recipient.state) == (Recipient.Method.PERMISSION_ONLY, Recipient.State.COMPLETED)
    assert _permitted(oapi, share.source_image_id) == [GAMMA]
    assert not cloud.counters(GAMMA).get("CreateImage")


def test_the_share_page_says_how_each_recipient_gets_its_copy_and_shows_the_grant_events(flow, cloud, client):
    flow.dest.auto_accept_incoming = True
    flow.dest.save()
    share = request_share(flow, cloud, accounts=[flow.delta, flow.gamma])
    approve(flow, share)
    workers.run_jobs(until=lambda: Share.objects.get(pk=share.pk).state == Share.State.COMPLETED
                     and LaunchGrant.objects.get(share=share).state == LaunchGrant.State.REVOKED)
    client.force_login(flow.src_member)
    page = client.get(_url("share-detail", flow.source, share_id=share.public_id)).content.decode()
    assert escape(Recipient.Method.LAUNCH_PERMISSION.label) in page
    assert escape(methods.REASON_LAUNCH_PERMISSION) in page
    assert escape(Recipient.Method.EXPORT.label) in page and "us-east-2" in page
    assert "grant.added" in page and "grant.removed" in page
    # The recipient team sees its own rows' methods too.
    client.force_login(flow.dst_member)
    page = client.get(_url("share-detail", flow.dest, share_id=share.public_id)).content.decode()
    assert escape(methods.REASON_LAUNCH_PERMISSION) in page


def test_a_share_with_no_export_says_so(flow, cloud, client):
    share = request_share(flow, cloud, accounts=[flow.gamma])
    client.force_login(flow.src_member)
    page = client.get(_url("share-detail", flow.source, share_id=share.public_id)).content.decode()
    assert "No export: every recipient copies in the source's Region." in page


def test_the_team_page_lists_open_grants_and_a_member_revokes_one(flow, cloud, client, oapi):
    share, grant = _kept_grant(flow, cloud, client)
    client.force_login(flow.src_member)
    page = client.get(_url("grant-list", flow.source)).content.decode()
    assert f'data-grant="{grant.public_id}"' in page and GAMMA in page and "Launch permission only" in page
    revoke = _url("grant-revoke", flow.source, grant_id=grant.public_id)
    assert f'action="{revoke}"' in page
    response = client.post(revoke, follow=True)
    assert REVOKED.format(image=share.source_image_name, account=GAMMA) in [str(m) for m in
                                                                            response.context["messages"]]
    grant.refresh_from_db()
    assert grant.state == LaunchGrant.State.REVOKED and grant.revoked_by == flow.src_member
    assert _permitted(oapi, share.source_image_id) == []
    assert f'data-grant="{grant.public_id}"' not in client.get(_url("grant-list", flow.source)).content.decode()
    events = AuditEvent.objects.filter(target_id=str(share.public_id))
    assert events.filter(action="grant.revoke_requested", actor_id=flow.src_member.pk).exists()
    assert events.filter(action="grant.removed", actor_id=flow.src_member.pk).get().cloud_request_ids


def test_an_auditor_sees_the_grants_without_a_revoke_button(flow, cloud, client):
    _share, grant = _kept_grant(flow, cloud, client)
    auditor = factories.add_member(flow.source, factories.make_user("auditor@src.test"), Role.AUDITOR).user
    client.force_login(auditor)
    page = client.get(_url("grant-list", flow.source)).content.decode()
    assert f'data-grant="{grant.public_id}"' in page
    assert _url("grant-revoke", flow.source, grant_id=grant.public_id) not in page


def test_a_grant_whose_copy_is_under_way_is_not_revoked(flow, cloud, client):
    cloud.set_durations(copy_seconds=1000)  # the copy stays pending
    share = request_share(flow, cloud, accounts=[flow.gamma])
    approve(flow, share)
    workers.run_jobs(until=lambda: Share.objects.get(pk=share.pk).state == Share.State.READY)
    recipient = Recipient.objects.get(share=share)
    import_offers.recipient_accept(access=access(flow.dst_member, flow.dest), recipient=recipient)
    workers.run_jobs(until=lambda: Recipient.objects.get(pk=recipient.pk).image_id)
    grant = LaunchGrant.objects.get(share=share)
    client.force_login(flow.src_member)
    page = client.get(_url("grant-list", flow.source)).content.decode()
    revoke = _url("grant-revoke", flow.source, grant_id=grant.public_id)
    assert revoke not in page and escape(errors.GRANT_IN_USE) in page  # no button, and why
    calls = cloud.counters("111122223333").get("UpdateImage")
    response = client.post(revoke, follow=True)
    assert errors.GRANT_IN_USE in [str(m) for m in response.context["messages"]]
    assert LaunchGrant.objects.get(pk=grant.pk).state == LaunchGrant.State.GRANTED
    assert cloud.counters("111122223333").get("UpdateImage") == calls
    assert AuditEvent.objects.filter(action="grant.revoke_requested", outcome="denied").exists()


def test_the_inbox_shows_a_same_region_offer_until_the_approval_ends_not_the_links_deadline(flow, cloud, client):
    share = request_share(flow, cloud, accounts=[flow.delta, flow.gamma])
    approve(flow, share)
    workers.run_jobs(until=lambda: Share.objects.get(pk=share.pk).state == Share.State.READY
                     and not share.recipients.filter(state="waiting").exists())
    share.refresh_from_db()
    client.force_login(flow.dst_member)
    page = client.get(_url("inbox", flow.dest)).content.decode()
    rows = page.split("<tr>")[1:]
    gamma_row = next(row for row in rows if "gamma" in row)
    delta_row = next(row for row in rows if "delta" in row)
    assert f'until {share.approval_expires_at:%Y-%m-%d %H:%M} UTC' in gamma_row and "no link" in gamma_row
    assert "left" not in gamma_row
    assert f'until {share.export.manifest_deadline:%Y-%m-%d %H:%M} UTC' in delta_row and "left" in delta_row
