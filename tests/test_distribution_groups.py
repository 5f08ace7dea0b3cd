"""Recipient groups: an account joins only with its own team's consent; the group's accounts are read
once, when a request is made (or a standing approval signed), and a later joiner is not included."""

import re
from datetime import timedelta

import pytest
from django.core.exceptions import PermissionDenied, ValidationError
from django.urls import reverse
from django.utils import timezone

from accounts.models import Role
from audit.models import AuditEvent
from distribution.models import Family, GroupMember, RecipientGroup, StandingApproval
from distribution.services import groups as services
from distribution.services.groups import group_accounts_joined
from tests import factories
from tests.transfer_world import access, image_id, make_transfer_world
from transfers.models import Share

_ids = iter(range(100_000_000_000, 999_999_999_999))


def _account(team, label, **extra):
    extra = {"validation_status": "valid", "accepts_incoming_shares": True, "account_id": str(next(_ids)), **extra}
    return factories.make_cloud_account(team, label=label, **extra)


def _url(name, team, **kwargs):
    return reverse(f"distribution:{name}", kwargs={"team_id": team.public_id, **kwargs})


def _messages(response):
    return [str(m) for m in response.context["messages"]]


def _events(action, **filters):
    return AuditEvent.objects.filter(action=action, **filters)


@pytest.fixture
def g(world):
    """Alpha's group "production"; Beta (admin: world.outsider, plus a member and an approver) owns beta-prod."""
    world.beta_member = factories.add_member(world.beta, factories.make_user("member@beta.test"), Role.MEMBER).user
    world.beta_approver = factories.add_member(world.beta, factories.make_user("approver@beta.test"),
                                               Role.APPROVER).user
    world.alpha_prod = _account(world.alpha, "alpha-prod")
    world.beta_prod = _account(world.beta, "beta-prod", region="us-east-2")
    world.group = services.group_create(access=access(world.approver, world.alpha), name="production",
                                        description="all production accounts")
    return world


def _invite(g, *accounts, by=None):
    return services.group_member_invite(access=access(by or g.approver, g.alpha), group=g.group,
                                        accounts=list(accounts))


# --- Making a group ------------------------------------------------------------------------------


def test_approvers_and_admins_make_groups_members_cannot(g, client):
    assert _events("recipient_group.created", team=g.alpha, actor=g.approver).exists()
    client.force_login(g.member)
    response = client.post(_url("group-create", g.alpha), {"name": "staging"})
    assert response.status_code == 403
    assert not RecipientGroup.objects.filter(name="staging").exists()
    assert _events("access.denied", actor=g.member, details__reason="missing_role").exists()
    client.force_login(g.admin)
    response = client.post(_url("group-create", g.alpha), {"name": "staging", "description": ""})
    staging = RecipientGroup.objects.get(name="staging", team=g.alpha)
    assert response.status_code == 302 and response["Location"] == _url("group-detail", g.alpha,
                                                                         group_id=staging.public_id)


def test_a_name_is_unique_in_the_team(g, client):
    client.force_login(g.approver)
    response = client.post(_url("group-create", g.alpha), {"name": "production"})
    assert response.status_code == 400
    assert services.NAME_TAKEN.format(name="production") in response.content.decode()
    # Another team may use the name.
    services.group_create(access=access(g.outsider, g.beta), name="production")


def test_it_renames_and_records_before_and_after(g, client):
    client.force_login(g.admin)
    client.post(_url("group-edit", g.alpha, group_id=g.group.public_id), {"name": "prod", "description": "x"})
    g.group.refresh_from_db()
    assert g.group.name == "prod"
    event = _events("recipient_group.changed").get()
    assert event.details["before"]["name"] == "production" and event.details["after"]["name"] == "prod"


# --- Consent ------------------------------------------------------------------------------------


def test_another_teams_account_joins_only_when_its_own_team_accepts(g, client):
    [member] = _invite(g, g.beta_prod)
    assert member.state == GroupMember.State.INVITED
    assert group_accounts_joined(g.group) == []
    assert _events("group_member.invited", team=g.alpha, actor=g.approver).count() == 1

    # The group's own team cannot answer for Beta's account: not found under its own team.
    client.force_login(g.admin)
    response = client.post(_url("group-membership-accept", g.alpha, member_id=member.public_id))
    assert response.status_code == 404
    assert _events("access.denied", actor=g.admin, details__reason="not_found_in_team").exists()
    # Nor can a service call made with the group team's access.
    with pytest.raises(PermissionDenied):
        services.group_member_answer(access=access(g.admin, g.alpha), member=member, accept=True)
    # A plain member of Beta cannot either.
    client.force_login(g.beta_member)
    response = client.post(_url("group-membership-accept", g.beta, member_id=member.public_id))
    assert response.status_code == 403
    assert _events("access.denied", actor=g.beta_member, details__reason="missing_role").exists()
    member.refresh_from_db()
    assert member.state == GroupMember.State.INVITED and group_accounts_joined(g.group) == []

    # Beta's approver answers for Beta.
    client.force_login(g.beta_approver)
    page = client.get(_url("group-list", g.beta)).content.decode()
    assert f'data-invitation="{member.public_id}"' in page
    response = client.post(_url("group-membership-accept", g.beta, member_id=member.public_id), follow=True)
    assert GroupMember.objects.get(pk=member.pk).state == GroupMember.State.JOINED
    assert "beta-prod joined production." in _messages(response)
    assert group_accounts_joined(g.group) == [g.beta_prod]
    event = _events("group_member.joined").get()
    assert (event.team_id, event.actor_id, event.details["group_team"]) == (g.beta.pk, g.beta_approver.pk, "Alpha")


def test_a_declined_invitation_cannot_be_accepted_after(g, client):
    [member] = _invite(g, g.beta_prod)
    client.force_login(g.outsider)  # Beta's admin
    client.post(_url("group-membership-decline", g.beta, member_id=member.public_id))
    assert GroupMember.objects.get(pk=member.pk).state == GroupMember.State.DECLINED
    response = client.post(_url("group-membership-accept", g.beta, member_id=member.public_id), follow=True)
    assert services.NOT_WAITING in _messages(response)
    assert GroupMember.objects.get(pk=member.pk).state == GroupMember.State.DECLINED
    assert _events("group_member.joined", outcome="denied", team=g.beta).exists()
    assert group_accounts_joined(g.group) == []
    # Invited again, its team answers again.
    [again] = _invite(g, g.beta_prod)
    assert (again.pk, again.state, again.answered_by) == (member.pk, GroupMember.State.INVITED, None)
    assert _events("group_member.invited", details__again=True).exists()


def test_two_answers_at_once_one_wins_and_the_other_is_refused(g):
    [member] = _invite(g, g.beta_prod)
    stale = GroupMember.objects.get(pk=member.pk)  # what the second approver's page loaded
    services.group_member_answer(access=access(g.outsider, g.beta), member=member, accept=True)
    with pytest.raises(ValidationError, match=services.NOT_WAITING):
        services.group_member_answer(access=access(g.beta_approver, g.beta), member=stale, accept=False)
    assert GroupMember.objects.get(pk=member.pk).state == GroupMember.State.JOINED
    assert _events("group_member.declined", outcome="denied", actor=g.beta_approver).exists()


def test_an_invitation_withdrawn_while_its_team_accepts_is_not_joined(g):
    [member] = _invite(g, g.beta_prod)
    stale = GroupMember.objects.select_related("group__team", "account__team").get(pk=member.pk)
    services.group_member_remove(access=access(g.approver, g.alpha), member=member)
    with pytest.raises(ValidationError, match=services.NOT_WAITING):
        services.group_member_answer(access=access(g.outsider, g.beta), member=stale, accept=True)
    assert not GroupMember.objects.exists() and group_accounts_joined(g.group) == []
    with pytest.raises(ValidationError, match=services.MEMBER_GONE):
        services.group_member_remove(access=access(g.approver, g.alpha), member=stale)


def test_an_account_of_the_groups_own_team_joins_when_invited(g):
    [member] = _invite(g, g.alpha_prod)
    assert (member.state, member.answered_by) == (GroupMember.State.JOINED, g.approver)
    assert _events("group_member.joined", team=g.alpha, details__own_team=True).exists()
    assert group_accounts_joined(g.group) == [g.alpha_prod]


def test_only_directory_accounts_can_be_invited(g):
    closed = _account(g.beta, "beta-closed", accepts_incoming_shares=False)
    with pytest.raises(ValidationError) as refused:
        _invite(g, closed)
    assert refused.value.messages == [services.NOT_IN_DIRECTORY.format(label="beta-closed")]
    with pytest.raises(PermissionDenied):
        _invite(g, g.beta_prod, by=g.member)
    assert not GroupMember.objects.exists()


def test_the_accounts_team_leaves_and_the_groups_team_removes(g, client):
    [member] = _invite(g, g.beta_prod)
    services.group_member_answer(access=access(g.outsider, g.beta), member=member, accept=True)
    client.force_login(g.beta_approver)
    response = client.post(_url("group-membership-leave", g.beta, member_id=member.public_id), follow=True)
    assert "beta-prod left production." in _messages(response)
    assert GroupMember.objects.get(pk=member.pk).state == GroupMember.State.LEFT
    assert group_accounts_joined(g.group) == []
    assert _events("group_member.left", team=g.beta).exists()
    # The group's team can see it left, and take it out.
    client.force_login(g.approver)
    page = client.get(_url("group-detail", g.alpha, group_id=g.group.public_id)).content.decode()
    assert f'data-member="{member.public_id}" data-state="left"' in page
    client.post(_url("group-member-remove", g.alpha, group_id=g.group.public_id, member_id=member.public_id))
    assert not GroupMember.objects.filter(pk=member.pk).exists()
    assert _events("group_member.removed", team=g.alpha, target_id=str(member.public_id)).exists()


def test_leaving_needs_the_accounts_team_and_a_joined_account(g, client):
    [member] = _invite(g, g.beta_prod)
    client.force_login(g.admin)  # Alpha owns the group, not the account
    assert client.post(_url("group-membership-leave", g.alpha, member_id=member.public_id)).status_code == 404
    client.force_login(g.outsider)
    response = client.post(_url("group-membership-leave", g.beta, member_id=member.public_id), follow=True)
    assert services.NOT_JOINED in _messages(response)
    assert _events("group_member.left", outcome="denied").exists()


def test_joined_accounts_are_those_joined_valid_open_and_not_retired_now(g):
    gamma = factories.make_team("Gamma")
    admin = factories.add_member(gamma, factories.make_user("admin@gamma.test"), Role.ADMIN).user
    accounts = {name: _account(gamma, name) for name in ("joined", "invited", "declined", "left", "retired",
                                                          "invalid", "closed")}
    members = {m.account.label: m for m in _invite(g, *accounts.values())}
    gamma_access = access(admin, gamma)
    for name in ("joined", "left", "retired", "invalid", "closed"):
        services.group_member_answer(access=gamma_access, member=members[name], accept=True)
    services.group_member_answer(access=gamma_access, member=members["declined"], accept=False)
    services.group_member_leave(access=gamma_access, member=members["left"])
    type(accounts["joined"]).objects.filter(pk=accounts["retired"].pk).update(retired_at=timezone.now())
    type(accounts["joined"]).objects.filter(pk=accounts["invalid"].pk).update(validation_status="invalid")
    type(accounts["joined"]).objects.filter(pk=accounts["closed"].pk).update(accepts_incoming_shares=False)
    assert group_accounts_joined(g.group) == [accounts["joined"]]


# --- Tenancy -------------------------------------------------------------------------------------


def test_another_teams_group_and_memberships_are_not_found(g, client):
    beta_group = services.group_create(access=access(g.outsider, g.beta), name="beta-only")
    [member] = services.group_member_invite(access=access(g.outsider, g.beta), group=beta_group,
                                            accounts=[g.beta_prod])
    client.force_login(g.admin)
    for url in (_url("group-detail", g.alpha, group_id=beta_group.public_id),
                _url("group-edit", g.alpha, group_id=beta_group.public_id)):
        assert client.get(url).status_code == 404
    for url in (_url("group-delete", g.alpha, group_id=beta_group.public_id),
                _url("group-invite", g.alpha, group_id=beta_group.public_id),
                _url("group-member-remove", g.alpha, group_id=beta_group.public_id, member_id=member.public_id),
                _url("group-member-remove", g.alpha, group_id=g.group.public_id, member_id=member.public_id)):
        assert client.post(url, {"accounts": [str(g.alpha_prod.public_id)]}).status_code == 404
    assert RecipientGroup.objects.filter(pk=beta_group.pk).exists() and GroupMember.objects.filter(pk=member.pk)
    # Beta's people do not see Alpha's group, nor its list.
    client.force_login(g.outsider)
    assert client.get(_url("group-detail", g.beta, group_id=g.group.public_id)).status_code == 404
    assert str(g.group.public_id) not in client.get(_url("group-list", g.beta)).content.decode()


def test_a_group_a_standing_approval_names_is_not_deleted(g, client):
    family = Family.objects.create(team=g.alpha, source_account=g.alpha_prod, name="web", match="name",
                                   name_pattern="web-*", created_by=g.member)
    StandingApproval.objects.create(family=family, group=g.group, signed_by=g.approver, max_versions=3,
                                    expires_at=timezone.now() + timedelta(days=30), digest="0" * 64)
    client.force_login(g.admin)
    response = client.post(_url("group-delete", g.alpha, group_id=g.group.public_id), follow=True)
    assert services.GROUP_IN_USE.format(name="production") in _messages(response)
    assert RecipientGroup.objects.filter(pk=g.group.pk).exists()
    assert _events("recipient_group.deleted", outcome="denied").exists()


def test_deleting_a_group_takes_its_members_and_invitations_with_it(g, client):
    _invite(g, g.alpha_prod, g.beta_prod)
    client.force_login(g.admin)
    client.post(_url("group-delete", g.alpha, group_id=g.group.public_id))
    assert not RecipientGroup.objects.exists() and not GroupMember.objects.exists()
    assert _events("recipient_group.deleted", outcome="success").get().details == {
        "name": "production", "members": 1, "invited": 1}


# --- Pages ---------------------------------------------------------------------------------------


def test_the_pages_say_what_to_do_next_when_empty(world, client):
    client.force_login(world.member)
    page = client.get(_url("group-list", world.alpha)).content.decode()
    assert "No group yet" in page and "An approver or admin of Alpha can make one." in page
    assert "No invitation is waiting." in page
    client.force_login(world.approver)
    group = services.group_create(access=access(world.approver, world.alpha), name="empty")
    page = client.get(_url("group-detail", world.alpha, group_id=group.public_id)).content.decode()
    assert "No account yet. Invite accounts below" in page
    assert "Every account that accepts incoming shares is invited or in the group already." in page
    assert "data-share-to-group" not in page  # nothing to share to yet


def test_the_invite_form_lists_the_directory_but_not_accounts_already_asked(g, client):
    _invite(g, g.beta_prod)
    client.force_login(g.approver)
    page = client.get(_url("group-detail", g.alpha, group_id=g.group.public_id)).content.decode()
    assert f'name="accounts" value="{g.alpha_prod.public_id}"' in page
    assert f'name="accounts" value="{g.beta_prod.public_id}"' not in page
    response = client.post(_url("group-invite", g.alpha, group_id=g.group.public_id),
                           {"accounts": [str(g.beta_prod.public_id)]})
    assert response.status_code == 400  # not a choice any more: already invited


# --- Groups in share requests -------------------------------------------------------------------

_TICKED = re.compile(r'name="recipients" value="([0-9a-f-]{36})"[^>]*\bchecked\b')


@pytest.fixture
def sw(cloud, db):
    """The transfer world (Platform shares from alpha; Research has delta and gamma) and Platform's group
    holding delta (joined) and gamma (invited, not answered yet)."""
    w = make_transfer_world(cloud)
    w.group = services.group_create(access=access(w.src_approver, w.source), name="production")
    delta, gamma = services.group_member_invite(access=access(w.src_approver, w.source), group=w.group,
                                                accounts=[w.delta, w.gamma])
    services.group_member_answer(access=access(w.dst_admin, w.dest), member=delta, accept=True)
    w.gamma_invitation = gamma
    return w


def _form_url(w, key=None):
    url = reverse("transfers:share-new", kwargs={"team_id": w.source.public_id}) + f"?account={w.alpha.public_id}"
    return url + (f"&group={key}" if key else "")


def test_share_to_this_group_ticks_exactly_the_joined_accounts_and_a_later_joiner_is_no_recipient(sw, cloud, client):
    w = sw
    client.force_login(w.src_member)
    detail = client.get(_url("group-detail", w.source, group_id=w.group.public_id)).content.decode()
    link = reverse("transfers:share-new", kwargs={"team_id": w.source.public_id}) + f"?group=group:{w.group.public_id}"
    assert f'href="{link}"' in detail
    # Step 1 keeps the group chosen; step 2 ticks its joined accounts, and only them.
    step1 = client.get(link).content.decode()
    assert f'<option value="group:{w.group.public_id}" selected>production (1 account)</option>' in step1
    form = client.get(_form_url(w, f"group:{w.group.public_id}"))
    assert form.status_code == 200
    assert set(_TICKED.findall(form.content.decode())) == {str(w.delta.public_id)}
    assert 'data-group-ticked="1"' in form.content.decode()
    # Sent as ticked: the request names delta; its digest is what the approver signs.
    response = client.post(_form_url(w, f"group:{w.group.public_id}"), {
        "image_id": image_id(cloud, "alpha", "alpha-web-2025.01"), "recipients": _TICKED.findall(form.content.decode()),
        "copy_name": "web-copy", "description": "", "reason": "release", "licence_confirmed": "on"})
    assert response.status_code == 302
    share = Share.objects.get()
    assert [r.target_account for r in share.recipients.all()] == [w.delta]
    digest = share.digest
    # gamma's team accepts later: the request made before does not gain it; the next form ticks it.
    services.group_member_answer(access=access(w.dst_admin, w.dest), member=w.gamma_invitation, accept=True)
    share.refresh_from_db()
    assert [r.target_account for r in share.recipients.all()] == [w.delta] and share.digest == digest
    later = client.get(_form_url(w, f"group:{w.group.public_id}")).content.decode()
    assert set(_TICKED.findall(later)) == {str(w.delta.public_id), str(w.gamma.public_id)}


def test_the_share_form_refuses_another_teams_group(sw, client):
    w = sw
    other = services.group_create(access=access(w.dst_admin, w.dest), name="research")
    client.force_login(w.src_member)
    assert client.get(_form_url(w, f"group:{other.public_id}")).status_code == 404
    assert _events("access.denied", actor=w.src_member, target_id=str(other.public_id)).exists()
    assert client.get(_form_url(w, "nothing:1")).status_code == 404
    assert client.get(_form_url(w, "group:not-a-uuid")).status_code == 404
    # The chooser lists the team's own groups only.
    page = client.get(reverse("transfers:share-new", kwargs={"team_id": w.source.public_id})).content.decode()
    assert "production (1 account)" in page and "research" not in page


def test_a_standing_approval_naming_the_group_shares_a_version_to_the_accounts_signed_not_a_later_joiner(sw, cloud):
    from distribution.models import FamilyVersion
    from distribution.services import approvals, releases

    w = sw
    family = Family.objects.create(team=w.source, source_account=w.alpha, name="golden-web", match="name",
                                   name_pattern="alpha-web-*", created_by=w.src_member)
    terms = {"expires_at": (timezone.now() + timedelta(days=30)).replace(microsecond=0), "max_versions": 3}
    shown = approvals.standing_approval_preview(family=family, group=w.group, **terms)
    assert shown.accounts == [w.delta]  # gamma is only invited
    approval = approvals.standing_approval_sign(access=access(w.src_admin, w.source), family=family, group=w.group,
                                                digest=shown.digest, licence_confirmed=True, **terms)
    assert [r.account for r in approval.recipients.all()] == [w.delta]
    # gamma's team accepts after the signature: the group now holds both, the approval still one.
    services.group_member_answer(access=access(w.dst_admin, w.dest), member=w.gamma_invitation, accept=True)
    assert set(group_accounts_joined(w.group)) == {w.delta, w.gamma}
    version = FamilyVersion.objects.create(family=family, number=1, image_name="alpha-web-2025.01",
                                           image_id=image_id(cloud, "alpha", "alpha-web-2025.01"))
    assert releases.version_release(version_id=version.pk) == "shared"
    share = Share.objects.get(family_version=version)
    assert [r.target_account for r in share.recipients.all()] == [w.delta]
    assert share.decided_by == w.src_admin  # signed by the standing approval's signer, asked of nobody
