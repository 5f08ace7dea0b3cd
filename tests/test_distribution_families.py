"""Families and subscriptions (issue 18, D1): who declares, what is refused (with a clear message, nothing
saved), archiving, the directory other teams subscribe from, subscriptions made, changed (changed_at moves,
the standing approval stops) and ended; another team's family or subscription is not found (recorded), a
missing role is a 403. Discovery against the sandbox: tests/test_distribution_discovery.py."""

from datetime import timedelta
from types import SimpleNamespace

import pytest
from django.core.exceptions import ValidationError
from django.urls import reverse
from django.utils import timezone

from accounts.models import CloudAccount
from audit.models import AuditEvent
from distribution.models import FAMILY_TAG, Family, StandingApproval, Subscription
from distribution.services import discovery, families, subscriptions
from outscale.results import ImageFacts, ImageSummary, Relation
from tests import factories
from tests.transfer_world import access

pytestmark = pytest.mark.django_db


def _account(team, label, account_id, *, incoming=True, **extra):
    extra = {"validation_status": "valid"} | extra
    return factories.make_cloud_account(team, label=label, account_id=account_id, accepts_incoming_shares=incoming,
                                        **extra)


@pytest.fixture
def d(world):
    """alpha publishes from alpha-src; beta (world.outsider is its admin) receives in beta-prod."""
    return SimpleNamespace(src=_account(world.alpha, "alpha-src", "111122223333", incoming=False),
                           alpha_prod=_account(world.alpha, "alpha-prod", "111100001111"),
                           beta_prod=_account(world.beta, "beta-prod", "222233334444"),
                           beta_closed=_account(world.beta, "beta-closed", "222200002222", incoming=False))


def _declare(world, d, user=None, **fields):
    data = {"name": "golden-web", "description": "hardened web", "match": "name", "name_pattern": "golden-web-*",
            "source_account": d.src} | fields
    return families.family_declare(access=access(user or world.member, world.alpha), **data)


def _url(name, team, **kwargs):
    return reverse(name, kwargs={"team_id": team.public_id, **kwargs})


# --- Declaring ------------------------------------------------------------------------------------------


def test_a_member_declares_a_family_from_the_form_and_its_first_look_is_enqueued(world, d, login,
                                                                                django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks() as callbacks:
        response = login(world.member).post(_url("distribution:family-create", world.alpha), {
            "name": "golden-web", "description": "hardened", "source_account": str(d.src.public_id),
            "match": "name", "name_pattern": "golden-web-*"})
    family = Family.objects.get(team=world.alpha)
    assert response.status_code == 302
    assert response["Location"] == _url("distribution:family-detail", world.alpha, family_id=family.public_id)
    assert (family.name, family.match, family.name_pattern, family.created_by) == \
        ("golden-web", "name", "golden-web-*", world.member)
    assert len(callbacks) == 1  # the account's first scan
    event = AuditEvent.objects.get(action="family.declared")
    assert event.actor_id == world.member.pk and event.target_id == str(family.public_id)
    assert event.details["name_pattern"] == "golden-web-*" and event.details["source_account_id"] == "111122223333"
    page = login(world.member).get(response["Location"]).content.decode()
    assert "No version found yet" in page and "No team subscribes yet" in page


def test_a_tag_family_keeps_the_tag_and_drops_the_pattern(world, d):
    family = _declare(world, d, match="tag", tag_key="release", tag_value="web", name_pattern="ignored-*")
    assert (family.tag_key, family.tag_value, family.name_pattern) == ("release", "web", "")


REFUSALS = [
    ({"name": "golden web"}, "name", families.NAME_INVALID),
    ({"name": "-web"}, "name", families.NAME_INVALID),
    ({"name": "x"}, "name", families.NAME_INVALID),
    ({"name_pattern": ""}, "name_pattern", families.PATTERN_MISSING),
    ({"name_pattern": "*"}, "name_pattern", families.PATTERN_TOO_BROAD),
    ({"name_pattern": "a*b?"}, "name_pattern", families.PATTERN_TOO_BROAD),
    ({"name_pattern": "web;rm*"}, "name_pattern", families.PATTERN_INVALID),
    ({"match": "tag", "tag_key": ""}, "tag_key", families.TAG_KEY_MISSING),
    ({"match": "tag", "tag_key": "omiportal:family"}, "tag_key", families.TAG_KEY_PORTAL),
    ({"match": "tag", "tag_key": "OMIPortal:latest"}, "tag_key", families.TAG_KEY_PORTAL),
    ({"match": "other"}, "match", families.MATCH_INVALID),
    ({"description": "x" * 256}, "description", families.DESCRIPTION_INVALID),
]


@pytest.mark.parametrize(("fields", "field", "message"), REFUSALS)
def test_a_declaration_against_the_rules_is_refused_and_nothing_is_saved(world, d, fields, field, message):
    with pytest.raises(ValidationError) as refused:
        _declare(world, d, **fields)
    assert refused.value.message_dict == {field: [message]}
    assert not Family.objects.exists() and not AuditEvent.objects.filter(action="family.declared").exists()


def test_a_source_account_must_be_the_teams_validated_and_live_one(world, d):
    for account, message in (
            (d.beta_prod, families.ACCOUNT_NOT_YOURS),
            (_account(world.alpha, "pending", "", validation_status="pending"),
             families.ACCOUNT_NOT_READY.format(label="pending", reason="its keys are not validated")),
            (_account(world.alpha, "old", "111199999999", retired_at=timezone.now()),
             families.ACCOUNT_NOT_READY.format(label="old", reason="it is retired"))):
        with pytest.raises(ValidationError) as refused:
            _declare(world, d, source_account=account)
        assert refused.value.message_dict == {"source_account": [message]}
    assert not Family.objects.exists()


def test_a_name_is_taken_once_across_the_portal_archived_ones_included(world, d):
    families.family_archive(access=access(world.member, world.alpha), family=_declare(world, d))
    with pytest.raises(ValidationError) as refused:
        _declare(world, d, name_pattern="golden-web-2*")
    assert refused.value.message_dict == {"name": [families.NAME_TAKEN.format(name="golden-web")]}
    # Nor may another team take it: the name is the tag value in recipient accounts, which may receive
    # families of both teams and must tell them apart.
    with pytest.raises(ValidationError):
        families.family_declare(access=access(world.outsider, world.beta), source_account=d.beta_prod,
                                name="golden-web", match="name", name_pattern="golden-web-*")
    assert Family.objects.count() == 1


def test_the_form_shows_the_refusal_on_its_field_and_saves_nothing(world, d, login):
    response = login(world.member).post(_url("distribution:family-create", world.alpha), {
        "name": "golden-web", "source_account": str(d.src.public_id), "match": "name", "name_pattern": "*"})
    assert response.status_code == 400
    assert response.context["form"].errors == {"name_pattern": [families.PATTERN_TOO_BROAD]}
    assert not Family.objects.exists()


def test_the_form_offers_only_the_teams_validated_accounts(world, d, login):
    _account(world.alpha, "pending", "", validation_status="pending")
    form = login(world.member).get(_url("distribution:family-create", world.alpha)).context["form"]
    assert {a.label for a in form.fields["source_account"].queryset} == {"alpha-src", "alpha-prod"}


def test_an_auditor_may_read_but_not_declare(world, d, login):
    client = login(world.auditor)
    assert client.get(_url("distribution:home", world.alpha)).status_code == 200
    response = client.post(_url("distribution:family-create", world.alpha), {
        "name": "golden-web", "source_account": str(d.src.public_id), "match": "name", "name_pattern": "golden-*"})
    assert response.status_code == 403 and not Family.objects.exists()
    assert AuditEvent.objects.filter(action="access.denied", details__reason="missing_role").exists()


def test_another_teams_family_is_not_found_and_the_refusal_is_recorded(world, d, login):
    theirs = families.family_declare(access=access(world.outsider, world.beta), source_account=d.beta_prod,
                                     name="beta-base", match="name", name_pattern="beta-base-*")
    client = login(world.admin)
    for name in ("distribution:family-detail", "distribution:family-archive", "distribution:family-scan"):
        url = _url(name, world.alpha, family_id=theirs.public_id)
        response = client.get(url) if name == "distribution:family-detail" else client.post(url)
        assert response.status_code == 404
    assert AuditEvent.objects.filter(action="access.denied", details__reason="not_found_in_team",
                                     target_id=str(theirs.public_id)).count() == 3
    assert Family.objects.get(pk=theirs.pk).archived_at is None


def test_archiving_stops_the_active_standing_approval_and_the_looks(world, d, login):
    family = _declare(world, d)
    approval = StandingApproval.objects.create(family=family, signed_by=world.approver, max_versions=5,
                                               expires_at=timezone.now() + timedelta(days=30), digest="0" * 64)
    response = login(world.member).post(_url("distribution:family-archive", world.alpha, family_id=family.public_id))
    assert response.status_code == 302
    family.refresh_from_db()
    approval.refresh_from_db()
    assert family.archived_at is not None
    assert approval.state == "stopped" and "archived the family golden-web" in approval.stopped_reason
    assert AuditEvent.objects.filter(action="family.archived", target_id=str(family.public_id)).count() == 1
    assert AuditEvent.objects.filter(action="standing_approval.stopped").count() == 1
    # Archived: no sweep looks at it, and a second archive says so.
    assert discovery.discovery_sweep(now=timezone.now()) == 0
    with pytest.raises(ValidationError, match="already archived"):
        families.family_archive(access=access(world.member, world.alpha), family=family)


# --- Matching ---------------------------------------------------------------------------------------------


def _image(name, tags=()):
    return ImageSummary(image_id="ami-1", name=name, account_id="111122223333", relation=Relation.OWNED,
                        state="available", facts=ImageFacts(tags=tuple(tags)))


def test_a_family_matches_by_shell_pattern_or_by_tag_and_never_a_copy_the_portal_made():
    by_name = Family(match="name", name_pattern="golden-web-202?.*")
    assert discovery.family_matches(by_name, _image("golden-web-2025.02"))
    assert not discovery.family_matches(by_name, _image("golden-web-base"))
    assert not discovery.family_matches(by_name, _image("Golden-web-2025.02"))  # names are case-sensitive
    assert not discovery.family_matches(by_name, _image("golden-web-2025.02", [(FAMILY_TAG, "other")]))
    by_key = Family(match="tag", tag_key="release")
    assert discovery.family_matches(by_key, _image("x", [("release", "anything")]))
    assert not discovery.family_matches(by_key, _image("x", [("build", "1")]))
    by_value = Family(match="tag", tag_key="release", tag_value="web")
    assert discovery.family_matches(by_value, _image("x", [("release", "web")]))
    assert not discovery.family_matches(by_value, _image("x", [("release", "db")]))


# --- The directory and subscriptions ---------------------------------------------------------------------


def _subscribe(world, d, family, accounts=None, user=None):
    return subscriptions.subscription_create(access=access(user or world.outsider, world.beta), family=family,
                                             accounts=accounts or [d.beta_prod])


def test_every_team_finds_the_live_families_in_the_directory(world, d, login):
    live, archived = _declare(world, d), _declare(world, d, name="old-web", name_pattern="old-web-*")
    families.family_archive(access=access(world.member, world.alpha), family=archived)
    page = login(world.outsider).get(_url("distribution:family-directory", world.beta)).content.decode()
    assert f'data-family="{live.public_id}"' in page and f'data-family="{archived.public_id}"' not in page
    assert f"?family={live.public_id}" in page  # its Subscribe link
    _subscribe(world, d, live)
    page = login(world.outsider).get(_url("distribution:family-directory", world.beta)).content.decode()
    assert "subscribed" in page and f"?family={live.public_id}" not in page


def test_a_recipient_team_subscribes_from_the_form(world, d, login):
    family = _declare(world, d)
    client = login(world.outsider)
    form = client.get(_url("distribution:subscription-create", world.beta) + f"?family={family.public_id}") \
        .context["form"]
    assert {a.label for a in form.fields["accounts"].queryset} == {"beta-prod"}  # validated, accepting
    response = client.post(_url("distribution:subscription-create", world.beta),
                           {"family": str(family.public_id), "accounts": [str(d.beta_prod.public_id)]})
    assert response.status_code == 302
    subscription = Subscription.objects.get(family=family, team=world.beta)
    assert list(subscription.accounts.all()) == [d.beta_prod] and subscription.created_by == world.outsider
    event = AuditEvent.objects.get(action="subscription.created")
    assert event.team_id == world.beta.pk and event.details["accounts"] == [
        {"label": "beta-prod", "account_id": "222233334444", "region": "eu-west-2"}]
    home = client.get(_url("distribution:home", world.beta)).content.decode()
    assert f'data-subscription="{subscription.public_id}"' in home
    family_page = login(world.member).get(_url("distribution:family-detail", world.alpha, family_id=family.public_id))
    assert f'data-subscription="{subscription.public_id}"' in family_page.content.decode()


def test_subscription_refusals_say_why_and_save_nothing(world, d):
    family = _declare(world, d)
    cases = [
        ([], subscriptions.NO_ACCOUNTS),
        ([d.beta_closed], subscriptions.ACCOUNT_NOT_READY.format(
            label="beta-closed", reason="it does not accept incoming shares (an admin turns that on for the account)")),
        ([d.alpha_prod], subscriptions.ACCOUNT_NOT_YOURS),
    ]
    for accounts, message in cases:
        with pytest.raises(ValidationError) as refused:
            subscriptions.subscription_create(access=access(world.outsider, world.beta), family=family,
                                              accounts=accounts)
        assert refused.value.message_dict == {"accounts": [message]}
    # The source team may subscribe its own family, never with the source account itself.
    CloudAccount.objects.filter(pk=d.src.pk).update(accepts_incoming_shares=True)
    d.src.refresh_from_db()
    with pytest.raises(ValidationError) as refused:
        subscriptions.subscription_create(access=access(world.member, world.alpha), family=family, accounts=[d.src])
    assert refused.value.message_dict == {"accounts": [subscriptions.ACCOUNT_NOT_READY.format(
        label="alpha-src", reason="it is the family's source account")]}
    assert not Subscription.objects.exists()
    _subscribe(world, d, family)
    with pytest.raises(ValidationError) as refused:
        _subscribe(world, d, family)
    assert refused.value.message_dict == {"family": [subscriptions.ALREADY_SUBSCRIBED.format(name="golden-web")]}
    families.family_archive(access=access(world.member, world.alpha), family=family)
    with pytest.raises(ValidationError) as refused:
        subscriptions.subscription_create(access=access(world.member, world.alpha), family=family,
                                          accounts=[d.alpha_prod])
    assert refused.value.message_dict == {"family": [subscriptions.FAMILY_ARCHIVED.format(name="golden-web")]}
    assert Subscription.objects.count() == 1


def test_changing_the_accounts_sets_changed_at_and_stops_the_standing_approval(world, d, login):
    family = _declare(world, d)
    subscription = _subscribe(world, d, family)
    other = _account(world.beta, "beta-dr", "222255556666", region="us-east-2")
    approval = StandingApproval.objects.create(family=family, signed_by=world.approver, max_versions=5,
                                               expires_at=timezone.now() + timedelta(days=30), digest="0" * 64)
    before = subscription.changed_at
    response = login(world.outsider).post(
        _url("distribution:subscription-edit", world.beta, subscription_id=subscription.public_id),
        {"accounts": [str(d.beta_prod.public_id), str(other.public_id)]})
    assert response.status_code == 302
    subscription.refresh_from_db()
    assert subscription.changed_at > before
    assert {a.label for a in subscription.accounts.all()} == {"beta-prod", "beta-dr"}
    event = AuditEvent.objects.get(action="subscription.changed")
    assert [a["label"] for a in event.details["before"]] == ["beta-prod"]
    assert [a["label"] for a in event.details["after"]] == ["beta-dr", "beta-prod"]
    approval.refresh_from_db()
    assert approval.state == "stopped" and "changed the accounts of its subscription" in approval.stopped_reason
    # The same list again changes nothing.
    with pytest.raises(ValidationError) as refused:
        subscriptions.subscription_change(access=access(world.outsider, world.beta), subscription=subscription,
                                          accounts=[d.beta_prod, other])
    assert refused.value.message_dict == {"accounts": [subscriptions.SAME_ACCOUNTS]}
    assert AuditEvent.objects.filter(action="subscription.changed").count() == 1


def test_ending_a_subscription_stops_it_for_good(world, d, login):
    family = _declare(world, d)
    subscription = _subscribe(world, d, family)
    client = login(world.outsider)
    url = _url("distribution:subscription-end", world.beta, subscription_id=subscription.public_id)
    assert client.post(url).status_code == 302
    subscription.refresh_from_db()
    assert subscription.ended_at is not None and subscription.changed_at == subscription.ended_at
    assert AuditEvent.objects.filter(action="subscription.ended").count() == 1
    client.post(url)  # again: refused with a message, nothing recorded twice
    assert AuditEvent.objects.filter(action="subscription.ended").count() == 1
    with pytest.raises(ValidationError, match="has ended"):
        subscriptions.subscription_change(access=access(world.outsider, world.beta), subscription=subscription,
                                          accounts=[d.beta_prod])
    _subscribe(world, d, family)  # a new one may start
    assert Subscription.objects.filter(family=family, team=world.beta).count() == 2


def test_another_teams_subscription_is_not_found_and_an_auditor_cannot_subscribe(world, d, login):
    family = _declare(world, d)
    theirs = _subscribe(world, d, family)
    client = login(world.admin)
    for name, method in (("distribution:subscription-detail", "get"), ("distribution:subscription-edit", "post"),
                         ("distribution:subscription-end", "post")):
        url = _url(name, world.alpha, subscription_id=theirs.public_id)
        assert getattr(client, method)(url, {"accounts": [str(d.alpha_prod.public_id)]}).status_code == 404
    assert AuditEvent.objects.filter(action="access.denied", target_id=str(theirs.public_id)).count() == 3
    response = login(world.auditor).post(_url("distribution:subscription-create", world.alpha),
                                         {"family": str(family.public_id), "accounts": [str(d.alpha_prod.public_id)]})
    assert response.status_code == 403
    assert Subscription.objects.count() == 1 and Subscription.objects.get().ended_at is None


# --- The landing page ---------------------------------------------------------------------------------------


def test_the_landing_page_explains_what_to_do_and_is_in_the_team_menu(world, d, login):
    home = _url("distribution:home", world.alpha)
    page = login(world.member).get(home).content.decode()
    assert f'href="{home}" aria-current="page">Distribution</a>' in page
    assert "No family yet" in page and "No subscription yet" in page and "Declare a family" in page
    for section in ("group-list", "inventory", "retention-list", "family-directory"):
        assert reverse(f"distribution:{section}", kwargs={"team_id": world.alpha.public_id}) in page
    family = _declare(world, d)
    page = login(world.auditor).get(home).content.decode()
    assert f'data-family="{family.public_id}"' in page and "Declare a family" not in page


def test_the_family_page_shows_each_version_with_its_share_and_approval(world, d, login):
    from transfers.models import Share

    family = _declare(world, d)
    approval = StandingApproval.objects.create(family=family, signed_by=world.approver, max_versions=5,
                                               expires_at=timezone.now() + timedelta(days=30), digest="0" * 64)
    share = Share.objects.create(team=world.alpha, source_account=d.src, source_image_id="ami-00000002",
                                 source_image_name="golden-web-2", source_image_relation="owned",
                                 copy_name="golden-web-v2", reason="family", licence_confirmed_at=timezone.now(),
                                 requested_by=world.member, approval_required=True, digest="0" * 64,
                                 approval_deadline=timezone.now() + timedelta(days=1))
    family.versions.create(number=1, image_id="ami-00000001", image_name="golden-web-1", state="skipped",
                           state_message="A newer version came first.")
    family.versions.create(number=2, image_id="ami-00000002", image_name="golden-web-2", state="shared",
                           share=share, approval=approval)
    page = login(world.auditor).get(_url("distribution:family-detail", world.alpha, family_id=family.public_id))
    html = page.content.decode()
    assert page.status_code == 200 and 'data-version="2" data-state="shared"' in html
    assert _url("transfers:share-detail", world.alpha, share_id=share.public_id) in html
    assert f"under standing approval {approval.pk}" in html and "A newer version came first." in html
    assert "data-scan>" not in html and "Archive golden-web" not in html  # an auditor reads only
