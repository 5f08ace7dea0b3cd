"""The inventory of copies (issue 18): every copy the portal made, confirmed in the cloud by one
tag-filtered ReadImages per recipient account on a schedule; copies deleted or failed behind the
portal's back, orphans, pinned copies, accounts behind the latest version; the pages (the team's
copies, its shares' copies in other teams' accounts), filters, CSV, keyset pages, at most 12
queries per page at 10k copies.
"""

import csv
import io
import uuid
from datetime import timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

import outscale
from accounts import vault
from accounts.models import CloudAccount, Role
from audit.models import AuditEvent
from audit.verify import verify_chain
from distribution.models import Family, FamilyVersion, InventoryCheck, InventoryEntry
from distribution.selectors import inventory as selectors
from distribution.services import inventory, inventory_refresh
from outscale import marks
from tests import factories, workers
from tests.inventory_world import cloud_copy, copy_completes, make_family, version
from transfers.models import Recipient

State = InventoryEntry.CloudState


def _events(action):
    return list(AuditEvent.objects.filter(action=action).order_by("seq"))


def _reads(cloud, account) -> int:
    return cloud.counters(account.account_id).get("ReadImages", 0)


def _calls(cloud, account) -> dict:
    return dict(cloud.counters(account.account_id))


def _due(now=None):
    """The reconciler's tick one refresh interval from now: every account is due."""
    return (now or timezone.now()) + inventory.refresh_interval() + timedelta(seconds=1)


# --- Rows, and the proof: a copy deleted behind the portal's back, one call per account ---------------


@pytest.mark.django_db(transaction=True)
def test_a_completed_import_becomes_a_row_in_its_own_transaction(flow, cloud):
    family = make_family(flow)
    recipient = copy_completes(flow, cloud, version(family, 1), flow.delta)
    entry = InventoryEntry.objects.get(recipient=recipient)
    assert (entry.team, entry.account, entry.image_id, entry.family, entry.version.number, entry.cloud_state,
            entry.orphan) == (flow.dest, flow.delta, recipient.image_id, family, 1, State.AVAILABLE, False)
    assert entry.source_image_id == recipient.share.source_image_id
    check = InventoryCheck.objects.get(account=flow.delta)
    assert check.due_at > timezone.now() + inventory.refresh_interval() - timedelta(minutes=1)


@pytest.mark.django_db(transaction=True)
def test_a_copy_deleted_behind_the_portals_back_is_flagged_within_one_refresh_at_one_call_per_account(
        flow, cloud, oapi):
    delta_copies = [copy_completes(flow, cloud, None, flow.delta) for _ in range(3)]
    gamma_copies = [copy_completes(flow, cloud, None, flow.gamma) for _ in range(2)]
    workers.run_jobs()
    gone = delta_copies[1]
    oapi("delta").DeleteImage(ImageId=gone.image_id)  # the recipient's own keys, not the portal
    with cloud.world.lock:  # and another copy failed in the cloud
        cloud.world.images[gamma_copies[0].image_id].state = "failed"
    before = {a: _calls(cloud, a) for a in (flow.delta, flow.gamma)}

    assert inventory.inventory_sweep(now=_due()) == 2  # one refresh job per account
    workers.run_jobs()

    states = dict(InventoryEntry.objects.values_list("image_id", "cloud_state"))
    assert states[gone.image_id] == State.DELETED and states[gamma_copies[0].image_id] == State.FAILED
    assert {states[r.image_id] for r in (delta_copies[0], delta_copies[2], gamma_copies[1])} == {State.AVAILABLE}
    for account in (flow.delta, flow.gamma):  # one ReadImages per account, and nothing else
        after = _calls(cloud, account)
        assert {k: n - before[account].get(k, 0) for k, n in after.items() if n != before[account].get(k, 0)} \
            == {"ReadImages": 1}
    lost = _events("inventory.copy_lost")
    assert sorted(e.details["image_id"] for e in lost) == sorted([gone.image_id, gamma_copies[0].image_id])
    refreshed = _events("inventory.refreshed")
    assert len(refreshed) == 2 and all(e.cloud_request_ids and e.outcome == "success" for e in refreshed)

    # The next refresh changes nothing and records no second loss.
    inventory.inventory_sweep(now=_due(_due()))
    workers.run_jobs()
    assert len(_events("inventory.copy_lost")) == 2 and len(_events("inventory.refreshed")) == 4
    assert verify_chain().ok


@pytest.mark.django_db(transaction=True)
def test_two_ticks_at_once_enqueue_one_refresh_per_account(flow, cloud):
    copy_completes(flow, cloud, None, flow.delta)
    workers.flush()
    now = _due()
    assert inventory.inventory_sweep(now=now) == 1
    assert inventory.inventory_sweep(now=now) == 0  # claimed: due a lease later
    assert workers.pending_jobs() == 1
    # A refresh job lost with Redis: due again once its lease ran out.
    workers.flush()
    assert inventory.inventory_sweep(now=now + inventory.LEASE + timedelta(seconds=1)) == 1


@pytest.mark.django_db(transaction=True)
def test_an_image_tagged_by_the_portal_but_unknown_to_it_is_an_orphan_found_once(flow, cloud):
    copy_completes(flow, cloud, None, flow.delta)
    stray = cloud_copy(cloud, flow.delta, "left-behind", tags={"omiportal:recipient": str(uuid.uuid4()),
                                                                "omiportal:source-image": "ami-00000001"})
    untagged = cloud_copy(cloud, flow.delta, "made-by-hand")
    inventory_refresh.inventory_refresh(account_id=flow.delta.public_id)
    orphan = InventoryEntry.objects.get(image_id=stray)
    assert orphan.orphan and orphan.recipient is None and orphan.team == flow.dest
    assert not InventoryEntry.objects.filter(image_id=untagged).exists()  # not the portal's: not its business
    inventory_refresh.inventory_refresh(account_id=flow.delta.public_id)
    assert [e.details["image_id"] for e in _events("inventory.orphan_found")] == [stray]


@pytest.mark.django_db(transaction=True)
def test_an_orphan_names_its_source_from_its_description_or_an_older_copys_tag(flow, cloud):
    """Copies name their source image beside the portal's mark (one CreateTags tags copies of many
    sources); copies made before that carry it as a tag. An orphan takes it from either."""
    recipient = str(uuid.uuid4())
    described = cloud_copy(cloud, flow.delta, "described", tags={"omiportal:recipient": recipient},
                           description=marks.marked("Web tier", subject="recipient:x:1", source="ami-0000abcd"))
    tagged = cloud_copy(cloud, flow.delta, "tagged", tags={"omiportal:recipient": recipient,
                                                           "omiportal:source-image": "ami-0000beef"})
    unnamed = cloud_copy(cloud, flow.delta, "unnamed", tags={"omiportal:recipient": recipient},
                         description="Web tier [from ami-0000abcd]")  # no mark: not the portal's writing
    inventory_refresh.inventory_refresh(account_id=flow.delta.public_id)
    sources = dict(InventoryEntry.objects.filter(orphan=True).values_list("image_id", "source_image_id"))
    assert sources == {described: "ami-0000abcd", tagged: "ami-0000beef", unnamed: ""}


@pytest.mark.django_db(transaction=True)
def test_the_pinned_tag_is_seen_and_so_is_its_removal(flow, cloud, oapi):
    recipient = copy_completes(flow, cloud, None, flow.delta)
    oapi("delta").CreateTags(ResourceIds=[recipient.image_id], Tags=[{"Key": "omiportal:pinned", "Value": ""}])
    inventory_refresh.inventory_refresh(account_id=flow.delta.public_id)
    assert InventoryEntry.objects.get(recipient=recipient).pinned
    oapi("delta").DeleteTags(ResourceIds=[recipient.image_id], Tags=[{"Key": "omiportal:pinned", "Value": ""}])
    inventory_refresh.inventory_refresh(account_id=flow.delta.public_id)
    assert not InventoryEntry.objects.get(recipient=recipient).pinned


@pytest.mark.django_db(transaction=True)
def test_the_first_refresh_backfills_copies_completed_before_the_inventory(flow, cloud):
    old = copy_completes(flow, cloud, None, flow.delta)
    InventoryEntry.objects.all().delete()
    InventoryCheck.objects.all().delete()  # as before the inventory existed
    now = timezone.now()
    assert inventory.inventory_sweep(now=now) == 2  # a schedule for the account, due at once, and its job
    workers.run_jobs()
    entry = InventoryEntry.objects.get(recipient=old)
    assert entry.cloud_state == State.AVAILABLE and entry.checked_at and not entry.orphan
    assert _reads(cloud, flow.delta) == 1 and not _events("inventory.orphan_found")


@pytest.mark.django_db(transaction=True)
def test_an_account_whose_copies_are_still_to_come_is_first_refreshed_an_interval_later(flow, cloud):
    """A release into 1,000 new accounts gave each a refresh the moment it was requested: 1,000
    jobs of a second each, finding nothing, while the release's imports waited to be looked at."""
    from tests.transfer_world import imports_started

    (importing,) = imports_started(flow, cloud, 1)
    InventoryCheck.objects.all().delete()
    now = timezone.now()
    assert inventory.inventory_sweep(now=now) == 1  # its schedule, and no job: nothing to take in yet
    assert InventoryCheck.objects.get(account=flow.delta).due_at == now + inventory.refresh_interval()
    InventoryCheck.objects.all().delete()
    Recipient.objects.filter(pk=importing.pk).update(state=Recipient.State.COMPLETED)  # a copy it holds now
    assert inventory.inventory_sweep(now=now) == 2  # its schedule, due at once, and its job


@pytest.mark.django_db(transaction=True)
def test_keys_that_do_not_open_the_account_are_recorded_and_tried_again_only_an_interval_later(flow, cloud):
    copy_completes(flow, cloud, None, flow.delta)
    workers.flush()
    # The right access key with a wrong secret: OUTSCALE refuses the signature (never retried in a loop).
    ids = {"team_id": flow.dest.public_id, "object_id": flow.delta.public_id}
    CloudAccount.objects.filter(pk=flow.delta.pk).update(
        secret_key_sealed=vault.seal("X" * 40, field="secret_key", **ids))
    now = _due()
    inventory.inventory_sweep(now=now)
    workers.run_jobs()
    check = InventoryCheck.objects.get(account=flow.delta)
    assert check.message and check.due_at > timezone.now() + inventory.refresh_interval() - timedelta(minutes=1)
    event = _events("inventory.refreshed")[-1]
    assert event.outcome == "failed" and event.details["reason"]
    # Not soon again (four bad signatures lock an account): one interval later.
    assert inventory.inventory_sweep(now=timezone.now() + inventory_refresh.RETRY_SOON + timedelta(minutes=1)) == 0
    assert InventoryEntry.objects.get(account=flow.delta).cloud_state == State.AVAILABLE  # nothing guessed


@pytest.mark.django_db(transaction=True)
def test_a_busy_cloud_is_tried_again_soon(flow, cloud, monkeypatch):
    copy_completes(flow, cloud, None, flow.delta)

    def busy(**kwargs):
        raise outscale.RetryLater("busy", kind="throttled", may_have_run=False)

    monkeypatch.setattr(outscale, "read_tagged_images", busy)
    assert inventory_refresh.inventory_refresh(account_id=flow.delta.public_id) is None
    check = InventoryCheck.objects.get(account=flow.delta)
    assert check.due_at < timezone.now() + inventory_refresh.RETRY_SOON + timedelta(seconds=5)
    assert check.message and check.checked_at is None


# --- Behind the latest version, scopes, filters, CSV, pages ---------------------------------------


@pytest.mark.django_db(transaction=True)
def test_accounts_behind_the_newest_released_version_are_flagged(flow, cloud, oapi):
    family = make_family(flow)
    v1, v2, v3 = (version(family, n) for n in (1, 2, 3))
    copy_completes(flow, cloud, v1, flow.gamma)
    copy_completes(flow, cloud, v1, flow.delta)
    newest = copy_completes(flow, cloud, v3, flow.delta)
    copy_completes(flow, cloud, v2, flow.delta)
    rows = selectors.inventory_page(team=flow.dest, filters=selectors.Filters(behind=True)).rows
    assert {r.account_id for r in rows} == {flow.gamma.pk} and rows[0].released_number == 3
    # The newest copy deleted behind the portal's back: delta is behind too (it holds version 2).
    oapi("delta").DeleteImage(ImageId=newest.image_id)
    inventory_refresh.inventory_refresh(account_id=flow.delta.public_id)
    behind = selectors.inventory_page(team=flow.dest, filters=selectors.Filters(behind=True)).rows
    assert {r.account_id for r in behind} == {flow.gamma.pk, flow.delta.pk}
    assert {(r.account_id, r.held_number) for r in behind} == {(flow.gamma.pk, 1), (flow.delta.pk, 2)}


@pytest.mark.django_db(transaction=True)
def test_the_pages_show_each_team_what_it_may_see(flow, cloud, client):
    family = make_family(flow)
    made = copy_completes(flow, cloud, version(family, 1), flow.delta)
    stray = cloud_copy(cloud, flow.delta, "stray", tags={"omiportal:recipient": str(uuid.uuid4())})
    inventory_refresh.inventory_refresh(account_id=flow.delta.public_id)
    outsider = factories.make_team("Elsewhere")
    other = factories.add_member(outsider, factories.make_user("member@elsewhere.test"), Role.MEMBER).user

    def page(user, team, **query):
        client.force_login(user)
        response = client.get(reverse("distribution:inventory", kwargs={"team_id": team.public_id}), query)
        assert response.status_code == 200
        return response

    mine = page(flow.dst_member, flow.dest)
    assert {e.image_id for e in mine.context["page"].rows} == {made.image_id, stray}
    assert made.image_id in mine.content.decode() and "orphan" in mine.content.decode()
    outgoing = page(flow.src_member, flow.source, scope="outgoing")
    assert [e.image_id for e in outgoing.context["page"].rows] == [made.image_id]  # never the other team's orphan
    assert not page(flow.src_member, flow.source).context["page"].rows  # nothing in its own accounts
    assert "No copy in Platform" in page(flow.src_member, flow.source).content.decode()
    assert not page(other, outsider, scope="outgoing").context["page"].rows
    assert [e.image_id for e in page(flow.dst_member, flow.dest, orphan="yes").context["page"].rows] == [stray]
    assert [e.image_id for e in page(flow.dst_member, flow.dest, family=str(family.public_id)).context["page"].rows] \
        == [made.image_id]
    assert not page(flow.dst_member, flow.dest, state="deleted").context["page"].rows
    assert "No copy matches these filters" in page(flow.dst_member, flow.dest, state="deleted").content.decode()


@pytest.fixture
def many(db):
    """A recipient team with 3 accounts and a source team whose family's copies fill them."""
    source, dest = factories.make_team("Source"), factories.make_team("Dest")
    admin = factories.add_member(source, factories.make_user("admin@source.test"), Role.ADMIN).user
    reader = factories.add_member(dest, factories.make_user("member@dest.test"), Role.MEMBER).user
    source_account = factories.make_cloud_account(source, label="src", account_id="111100001111")
    accounts = [factories.make_cloud_account(dest, label=f"dest-{i}", account_id=f"22220000{i:04d}")
                for i in range(3)]
    family = Family.objects.create(team=source, source_account=source_account, name="golden", match="name",
                                   name_pattern="golden-*", created_by=admin)
    return source, dest, admin, reader, accounts, family


def _fill(many, count: int, *, start: int = 0):
    source, dest, admin, reader, accounts, family = many
    from tests.inventory_world import plain_share

    shares = {}
    now = timezone.now()
    rows = []
    for n in range(start, start + count):
        number = n % 5 + 1
        if n % 3 == 2:  # the third account never got version 5: it is behind
            number = min(number, 4)
        if number not in shares:
            made = FamilyVersion.objects.filter(family=family, number=number).first()
            if made is None:
                fake = type("W", (), {"source": source, "alpha": family.source_account, "src_member": admin,
                                      "src_approver": reader})
                made = FamilyVersion.objects.create(family=family, number=number, image_id=f"ami-f{number:07x}",
                                                    image_name=f"golden-{number}", share=plain_share(fake))
            shares[number] = made
        made, account = shares[number], accounts[n % 3]
        recipient = Recipient(share=made.share, kind=Recipient.Kind.TEAM, team=dest, target_account=account,
                              state=Recipient.State.COMPLETED, image_name=f"c{n}", image_id=f"ami-{n:08x}")
        rows.append((recipient, InventoryEntry(team=dest, account=account, image_id=f"ami-{n:08x}",
                                               image_name=f"=cmd{n}" if n == 0 else f"copy-{n}", family=family,
                                               version=made, cloud_state=State.AVAILABLE,
                                               first_seen_at=now - timedelta(seconds=n), orphan=n % 97 == 0)))
    Recipient.objects.bulk_create([r for r, _ in rows], batch_size=5000)
    for recipient, entry in rows:
        entry.recipient = recipient
    InventoryEntry.objects.bulk_create([e for _, e in rows], batch_size=5000)


def _count(client, url, query):
    client.get(url, query)
    with CaptureQueriesContext(connection) as captured:
        response = client.get(url, query)
    assert response.status_code == 200
    return len(captured), response


PAGES = [("mine", {}), ("mine behind", {"behind": "yes"}), ("mine family", {"family": None}),
         ("mine orphans", {"orphan": "yes"}), ("mine deep", {"after": None}), ("outgoing", {"scope": "outgoing"}),
         ("outgoing behind", {"scope": "outgoing", "behind": "no"})]


def _counts(many, client) -> dict:
    source, dest, admin, reader, accounts, family = many
    counts = {}
    for label, query in PAGES:
        user, team = (admin, source) if label.startswith("outgoing") else (reader, dest)
        client.force_login(user)
        url = reverse("distribution:inventory", kwargs={"team_id": team.public_id})
        query = dict(query)
        if "family" in query:
            query["family"] = str(family.public_id)
        if "after" in query:  # a cursor a few pages in
            query["after"] = client.get(url).context["page"].next_cursor
        counts[label], response = _count(client, url, query)
        assert response.context["page"].rows, label
    return counts


def test_each_page_stays_within_twelve_queries_flat_at_ten_thousand_copies(many, client):
    _fill(many, 1000)
    small = _counts(many, client)
    assert {label: n for label, n in small.items() if n > 12} == {}
    _fill(many, 9000, start=1000)
    assert InventoryEntry.objects.count() == 10_000
    assert _counts(many, client) == small


def test_the_cursor_walks_every_copy_once_newest_first(many, client, monkeypatch):
    monkeypatch.setattr(selectors, "PAGE_SIZE", 7)
    _fill(many, 40)
    source, dest, admin, reader, accounts, family = many
    client.force_login(reader)
    url = reverse("distribution:inventory", kwargs={"team_id": dest.public_id})
    seen, query = [], {}
    for _ in range(20):
        context = client.get(url, query).context
        seen += [e.image_id for e in context["page"].rows]
        if not context["page"].next_cursor:
            break
        query = {"after": context["page"].next_cursor}
    assert seen == [f"ami-{n:08x}" for n in range(40)]
    assert client.get(url, {"after": "not-a-cursor"}).status_code == 200  # the first page, not a 500


def test_the_csv_export_streams_the_filtered_copies_with_cells_escaped(many, client):
    _fill(many, 30)
    source, dest, admin, reader, accounts, family = many
    client.force_login(reader)
    url = reverse("distribution:inventory-export", kwargs={"team_id": dest.public_id})
    response = client.get(url, {"account": str(accounts[0].public_id)})
    assert response.status_code == 200 and response.streaming
    assert response["Content-Type"].startswith("text/csv")
    table = list(csv.reader(io.StringIO(b"".join(response.streaming_content).decode())))
    assert tuple(table[0]) == selectors.CSV_COLUMNS
    assert len(table) - 1 == 10 and {row[1] for row in table[1:]} == {"dest-0"}
    assert "'=cmd0" in [row[5] for row in table[1:]]  # a spreadsheet never runs a cell
    client.force_login(admin)  # the source team's export of its shares' copies
    outgoing = client.get(reverse("distribution:inventory-export", kwargs={"team_id": source.public_id}),
                          {"scope": "outgoing"})
    assert len(list(csv.reader(io.StringIO(b"".join(outgoing.streaming_content).decode())))) == 31


def test_an_empty_inventory_says_what_to_do_next(many, client):
    source, dest, admin, reader, accounts, family = many
    client.force_login(reader)
    body = client.get(reverse("distribution:inventory", kwargs={"team_id": dest.public_id})).content.decode()
    assert "No copy in Dest" in body and "Incoming shares" in body
