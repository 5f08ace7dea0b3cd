"""Discovery of a family's new versions against the sandbox (issue 18, D1): one ReadImages per source account
whatever its number of families, new versions made there by copying an image under a new name with the source
account's keys, numbered once even when two scans run at the same time, each release enqueued on commit; the
sweep's pace, a scan that fails, "Scan now" rate-limited like the share form's image list."""

import threading
from datetime import timedelta

import pytest
from django.db import connection
from django.urls import reverse
from django.utils import timezone
from rq import SimpleWorker
from rq.serializers import JSONSerializer

import outscale
from accounts import vault
from audit.models import AuditEvent
from audit.verify import verify_chain
from distribution.models import Family, FamilyVersion
from distribution.services import discovery, families
from tests import factories, rates, workers
from tests.fixtures_sandbox import read_image
from tests.transfer_world import access, image_id, sandbox_account
from transfers import scheduling

pytestmark = pytest.mark.django_db(transaction=True)

ALPHA, BETA = "111122223333", "222233334444"


def _declare(flow, name, account=None, **rule):
    rule = rule or {"match": "name", "name_pattern": f"{name}-*"}
    return families.family_declare(access=access(flow.src_member, flow.source), source_account=account or flow.alpha,
                                   name=name, **rule)


def _run_scans():
    """Work the poll queue only (the scans): the releases they enqueue stay queued, to be looked at."""
    workers.release_scheduled()
    queue = scheduling.get_queue("poll")
    SimpleWorker([queue], connection=queue.connection, serializer=JSONSerializer).work(burst=True,
                                                                                        logging_level="WARNING")


def _release_jobs() -> set[str]:
    return {job_id for job_id in scheduling.get_queue("default").job_ids if job_id.startswith("family-version-")}


def _copy(cloud, oapi, wait_for, account, source_name, new_name, tags=None) -> str:
    """A new version, as a release engineer makes one: a copy of an image under a new name, with the
    source account's own keys, then (optionally) tagged."""
    gw = oapi(account)
    new_id = gw.CreateImage(SourceImageId=image_id(cloud, account, source_name), SourceRegionName="eu-west-2",
                            ImageName=new_name)["Image"]["ImageId"]
    wait_for(lambda: read_image(gw, new_id)["State"], lambda state: state == "available")
    if tags:
        gw.CreateTags(ResourceIds=[new_id], Tags=[{"Key": k, "Value": v} for k, v in tags.items()])
    return new_id


def _versions(family):
    return list(FamilyVersion.objects.filter(family=family).order_by("number").values_list("number", "image_name"))


def test_one_read_images_per_source_account_finds_every_familys_versions(flow, cloud, oapi, wait_for, settings):
    beta = sandbox_account(cloud, flow.source, "beta", incoming=False)
    web, db, tagged = _declare(flow, "alpha-web"), _declare(flow, "alpha-db"), \
        _declare(flow, "tagged", match="tag", tag_key="release", tag_value="web")
    app = _declare(flow, "beta-app", account=beta)
    # Four declarations queued four first looks, and the sweep one per account: two reads in all.
    assert discovery.discovery_sweep(now=timezone.now()) == 2
    _run_scans()
    assert cloud.counters(ALPHA).get("ReadImages") == 1 and cloud.counters(BETA).get("ReadImages") == 1
    assert _versions(web) == [(1, "alpha-web-2025.01")] and _versions(db) == [(1, "alpha-db-base")]
    assert _versions(tagged) == [] and _versions(app) == [(1, "beta-app-1.0")]
    found = AuditEvent.objects.filter(action="family_version.found")
    assert found.count() == 3 and {e.actor_id for e in found} == {None}
    assert _release_jobs() == {f"family-version-release-{v.public_id}" for v in FamilyVersion.objects.all()}

    # Three new images in alpha: two of the web family (in the order they were made), one tagged.
    _copy(cloud, oapi, wait_for, "alpha", "alpha-web-2025.01", "alpha-web-2025.02")
    _copy(cloud, oapi, wait_for, "alpha", "alpha-web-2025.01", "alpha-web-2025.03")
    _copy(cloud, oapi, wait_for, "alpha", "alpha-db-base", "db-build-7", tags={"release": "web"})
    reads = cloud.counters(ALPHA)["ReadImages"]  # the copies' own reads (waiting for them) counted apart
    # Not due yet: the accounts were just looked at.
    assert discovery.discovery_sweep(now=timezone.now()) == 0
    # The period passes.
    Family.objects.update(last_scanned_at=timezone.now() - timedelta(seconds=settings.OMIPORTAL_FAMILY_SCAN_SECONDS))
    assert discovery.discovery_sweep(now=timezone.now()) == 2
    _run_scans()
    assert cloud.counters(ALPHA)["ReadImages"] == reads + 1 and cloud.counters(BETA)["ReadImages"] == 2
    assert _versions(web) == [(1, "alpha-web-2025.01"), (2, "alpha-web-2025.02"), (3, "alpha-web-2025.03")]
    assert _versions(tagged) == [(1, "db-build-7")] and len(_versions(db)) == 1 and len(_versions(app)) == 1
    event = AuditEvent.objects.get(action="family_version.found", details__number=3, details__family="alpha-web")
    assert event.details["image_name"] == "alpha-web-2025.03" and event.details["source_account_id"] == ALPHA
    assert len(_release_jobs()) == 6
    assert verify_chain().ok


def test_a_sweep_enqueues_each_account_once_and_a_scan_claims_it(flow, cloud, settings):
    family = _declare(flow, "alpha-web")
    workers.flush()
    now = timezone.now()
    assert discovery.discovery_sweep(now=now) == 1
    assert discovery.discovery_sweep(now=now) == 1  # another worker's tick: the same job id
    assert [j for j in scheduling.get_queue("poll").job_ids if j.startswith("family-scan-")] == \
        [f"family-scan-{flow.alpha.public_id}-{int(now.timestamp() // settings.OMIPORTAL_FAMILY_SCAN_SECONDS)}"]
    first = discovery.family_scan_account(account_id=str(flow.alpha.public_id))
    second = discovery.family_scan_account(account_id=str(flow.alpha.public_id))  # a duplicate job
    assert first.scanned and [v.number for v in first.found] == [1]
    assert not second.scanned and cloud.counters(ALPHA).get("ReadImages") == 1
    assert Family.objects.get(pk=family.pk).last_scanned_at is not None


def test_two_scans_at_once_record_each_version_once(flow, cloud, monkeypatch):
    families_ = [_declare(flow, "alpha-web"), _declare(flow, "alpha", match="name", name_pattern="alpha-*")]
    workers.flush()
    both_read = threading.Barrier(2, timeout=10)
    real = outscale.list_own_images

    def read_then_wait(**kwargs):
        images = real(**kwargs)
        both_read.wait()  # both scans hold the same answer before either records a version
        return images

    monkeypatch.setattr(outscale, "list_own_images", read_then_wait)
    outcomes, errors = [], []

    def scan():
        try:
            outcomes.append(discovery.family_scan_account(account_id=str(flow.alpha.public_id), force=True))
        except Exception as exc:  # noqa: BLE001 - reported below
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=scan) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors and cloud.counters(ALPHA).get("ReadImages") == 2
    assert _versions(families_[0]) == [(1, "alpha-web-2025.01")]
    assert [number for number, _ in _versions(families_[1])] == [1, 2, 3]  # alpha-web, alpha-db, alpha-legacy
    # Each version recorded by one scan or the other, never both (the family's row lock, then the constraints).
    assert sum(len(o.found) for o in outcomes) == 4
    assert AuditEvent.objects.filter(action="family_version.found").count() == 4
    assert len(_release_jobs()) == 4


def test_two_sweep_jobs_at_once_read_the_account_once(flow, cloud, monkeypatch):
    _declare(flow, "alpha-web")
    workers.flush()
    both_claim = threading.Barrier(2, timeout=10)
    real = discovery._claim

    def claim_together(*args, **kwargs):
        both_claim.wait()
        return real(*args, **kwargs)

    monkeypatch.setattr(discovery, "_claim", claim_together)

    def scan():
        try:
            discovery.family_scan_account(account_id=str(flow.alpha.public_id))
        finally:
            connection.close()

    threads = [threading.Thread(target=scan) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert cloud.counters(ALPHA).get("ReadImages") == 1
    assert FamilyVersion.objects.count() == 1


def test_a_family_by_tag_alone_narrows_the_call_to_its_keys(flow, cloud, oapi, wait_for, monkeypatch):
    family = _declare(flow, "tagged", match="tag", tag_key="release")
    _copy(cloud, oapi, wait_for, "alpha", "alpha-web-2025.01", "web-build-9", tags={"release": "9"})
    workers.flush()
    seen = []
    real = outscale.images._read_pages
    monkeypatch.setattr(outscale.images, "_read_pages",
                        lambda creds, action, key, **params: seen.append(params["Filters"]) or real(
                            creds, action, key, **params))
    discovery.family_scan_account(account_id=str(flow.alpha.public_id), force=True)
    assert seen == [{"AccountIds": [ALPHA], "States": ["available"], "TagKeys": ["release"]}]
    assert _versions(family) == [(1, "web-build-9")]


def test_a_scan_that_fails_says_why_on_the_family_page_until_one_works(flow, cloud, client):
    entry = cloud.account("alpha")
    account = factories.make_cloud_account(flow.source, label="alpha-bad-keys", region="eu-west-2",
                                           access_key=entry["access_key"], secret_key="W" * 40, bucket=entry["bucket"],
                                           validation_status="valid", account_id=ALPHA)
    family = _declare(flow, "alpha-web", account=account)
    workers.flush()
    outcome = discovery.family_scan_account(account_id=str(account.public_id))
    family.refresh_from_db()
    assert outcome.error and family.scan_error == outcome.error
    assert family.scan_error.startswith("The images of alpha-bad-keys could not be read:")
    assert not FamilyVersion.objects.exists()
    client.force_login(flow.src_member)
    page = client.get(reverse("distribution:family-detail", kwargs={"team_id": flow.source.public_id,
                                                                    "family_id": family.public_id})).content.decode()
    assert "data-scan-error" in page and "W" * 40 not in page
    ids = {"team_id": flow.source.public_id, "object_id": account.public_id}
    account.secret_key_sealed = vault.seal(entry["secret_key"], field="secret_key", **ids)
    account.save(update_fields=["secret_key_sealed"])
    assert discovery.family_scan_account(account_id=str(account.public_id), force=True).found
    family.refresh_from_db()
    assert family.scan_error == ""


def test_scan_now_looks_at_once_and_is_rate_limited_like_the_image_list(flow, cloud, client, settings):
    settings.OMIPORTAL_IMAGE_LIST_RATE = rates.limit(1)
    family = _declare(flow, "alpha-web")
    workers.flush()
    client.force_login(flow.src_member)
    url = reverse("distribution:family-scan", kwargs={"team_id": flow.source.public_id,
                                                      "family_id": family.public_id})
    response = client.post(url, follow=True)
    assert "1 new version of the families of alpha found." in response.content.decode()
    assert _versions(family) == [(1, "alpha-web-2025.01")]
    refused = client.post(url)
    assert refused.status_code == 429 and cloud.counters(ALPHA).get("ReadImages") == 1
    assert AuditEvent.objects.filter(action="access.denied", details__reason="rate_limited").count() == 1
    # An auditor reads the page but may not scan.
    auditor = factories.add_member(flow.source, factories.make_user("auditor@src.test"), "auditor").user
    client.force_login(auditor)
    assert client.post(url).status_code == 403


def test_an_archived_family_is_not_looked_at(flow, cloud):
    family = _declare(flow, "alpha-web")
    families.family_archive(access=access(flow.src_member, flow.source), family=family)
    workers.flush()
    assert discovery.discovery_sweep(now=timezone.now()) == 0
    assert discovery.family_scan_now(access=access(flow.src_member, flow.source), family=family).error == \
        discovery.ARCHIVED.format(name="alpha-web")
    assert discovery.family_scan_account(account_id=str(flow.alpha.public_id), force=True).scanned is False
    assert not cloud.counters(ALPHA).get("ReadImages") and not FamilyVersion.objects.exists()
