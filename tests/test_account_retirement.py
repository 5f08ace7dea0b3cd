"""Retiring a cloud account that was used: its keys wiped, its history kept, never a 500; an unused
account is still deleted. Real sandbox for the share that gives the account its history."""

import pytest
from django.db import connection
from django.urls import reverse

from accounts import selectors as account_selectors
from accounts import services
from accounts.models import CloudAccount
from audit.models import AuditEvent
from tests import factories
from tests.transfer_world import access, request_share
from transfers import errors
from transfers import selectors as transfer_selectors
from transfers.models import Recipient, Share
from transfers.services import requests as share_requests

pytestmark = pytest.mark.django_db(transaction=True)


def _delete_url(team, account):
    return reverse("accounts:account-delete", kwargs={"team_id": team.public_id, "account_id": account.public_id})


def _used(flow, cloud) -> Share:
    """A share from alpha to delta, cancelled: both accounts have history and nothing in flight."""
    share = request_share(flow, cloud)
    return share_requests.share_cancel(access=access(flow.src_member, flow.source), share=share)


def _stored_keys(account) -> tuple:
    table = CloudAccount._meta.db_table
    with connection.cursor() as cursor:
        cursor.execute(f'SELECT access_key_sealed, secret_key_sealed, access_key_hint FROM "{table}" '  # noqa: S608
                       "WHERE id = %s", [account.pk])
        return cursor.fetchone()


def test_a_used_account_is_retired_its_keys_wiped_and_its_history_kept(flow, cloud, client):
    share = _used(flow, cloud)
    hint = flow.delta.access_key_hint
    client.force_login(flow.dst_admin)
    page = client.get(_delete_url(flow.dest, flow.delta))
    assert page.status_code == 200 and b"Retire" in page.content
    listing = client.get(reverse("accounts:account-list", kwargs={"team_id": flow.dest.public_id}))
    assert b">Retire</a>" in listing.content

    response = client.post(_delete_url(flow.dest, flow.delta))
    assert response.status_code == 302
    delta = CloudAccount.objects.get(pk=flow.delta.pk)
    assert delta.is_retired and delta.retired_by == flow.dst_admin
    assert _stored_keys(delta) == ("", "", hint)  # the keys are gone from the database, the mask stays
    assert Recipient.objects.filter(share=share, target_account=delta).exists()  # history kept
    event = AuditEvent.objects.get(action="cloud_account.retired", outcome="success")
    assert event.target_id == str(delta.public_id) and event.details["access_key"] == hint

    # Nobody can pick it again: not in the directory, not as a recipient, not as a source.
    assert delta not in account_selectors.cloud_account_directory()
    assert delta not in transfer_selectors.source_accounts_for_team(team=flow.dest)
    with pytest.raises(errors.ShareError):
        request_share(flow, cloud, accounts=[delta], copy_name="web-copy-2")
    client.force_login(flow.src_admin)
    assert client.post(_delete_url(flow.source, flow.alpha)).status_code == 302
    flow.alpha.refresh_from_db()
    assert flow.alpha.is_retired and flow.alpha not in transfer_selectors.source_accounts_for_team(team=flow.source)
    with pytest.raises(errors.ShareError):
        request_share(flow, cloud, accounts=[flow.gamma], copy_name="web-copy-3")  # from alpha
    # Nor changed or checked again, and a second retirement changes nothing.
    with pytest.raises(services.TeamError):
        services.cloud_account_update(access=access(flow.dst_admin, flow.dest), account=delta,
                                      access_key="AKIANEWKEY0000000001", secret_key="N" * 40,
                                      label=delta.label, region=delta.region, export_bucket=delta.export_bucket,
                                      accepts_incoming_shares=True)
    with pytest.raises(services.TeamError):
        services.cloud_account_validate(access=access(flow.dst_admin, flow.dest), account=delta)
    client.force_login(flow.dst_admin)
    assert client.post(_delete_url(flow.dest, flow.delta)).status_code == 302
    assert AuditEvent.objects.filter(action="cloud_account.retired").count() == 2
    assert _stored_keys(delta) == ("", "", hint)


def test_deleting_a_used_account_is_refused_with_a_message_never_a_500(flow, cloud):
    _used(flow, cloud)
    with pytest.raises(services.TeamError, match="retire it instead"):
        services.cloud_account_delete(access=access(flow.dst_admin, flow.dest), account=flow.delta)
    assert CloudAccount.objects.filter(pk=flow.delta.pk, retired_at__isnull=True).exists()


def test_an_account_with_transfers_in_flight_is_not_retired(flow, cloud, client):
    request_share(flow, cloud)  # waiting for approval: delta is bound by it
    client.force_login(flow.dst_admin)
    response = client.post(_delete_url(flow.dest, flow.delta), follow=True)
    assert response.status_code == 200 and b"in flight" in response.content
    delta = CloudAccount.objects.get(pk=flow.delta.pk)
    assert not delta.is_retired and delta.secret_key_sealed
    assert AuditEvent.objects.filter(action="cloud_account.retired", outcome="denied").exists()


def test_an_unused_account_is_still_deleted(world, client):
    account = factories.make_cloud_account(world.alpha)
    client.force_login(world.admin)
    page = client.get(_delete_url(world.alpha, account))
    assert b"Delete account" in page.content
    assert client.post(_delete_url(world.alpha, account)).status_code == 302
    assert not CloudAccount.objects.filter(pk=account.pk).exists()
    assert AuditEvent.objects.filter(action="cloud_account.deleted").exists()


def test_only_an_admin_retires(flow, cloud):
    _used(flow, cloud)
    from django.core.exceptions import PermissionDenied

    with pytest.raises(PermissionDenied):
        services.cloud_account_retire(access=access(flow.dst_member, flow.dest), account=flow.delta)
