"""Recipient groups' pages. Thin: parse, call one service, render.

Every role reads the team's groups and the invitations to its accounts; approvers and admins draw
groups up and answer for the team's accounts (distribution/services/groups.py says why).
"""

from django import forms
from django.contrib import messages
from django.core.exceptions import ValidationError
from django.shortcuts import redirect, render
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from accounts.decorators import team_view
from accounts.roles import Capability
from distribution.selectors import groups as selectors
from distribution.services import groups as services

CREATED = "Group {name} made: invite the accounts it should hold."
SAVED = "Group {name} saved."
DELETED = "Group {name} deleted."
INVITED = "{n} account{s} invited to {name}: each joins when its own team accepts."
NOTHING_NEW = "Every account chosen was already invited to {name} or in it."
JOINED = "{account} joined {name}."
DECLINED = "You declined for {account} to join {name}."
LEFT = "{account} left {name}."
REMOVED = "{account} is no longer in {name}."
CHOOSE_ACCOUNTS = "Choose the accounts to invite."


class GroupForm(forms.Form):
    name = forms.CharField(max_length=80, strip=True, help_text="e.g. all production accounts")
    description = forms.CharField(max_length=255, strip=True, required=False)


class InviteForm(forms.Form):
    accounts = forms.MultipleChoiceField(widget=forms.CheckboxSelectMultiple,
                                         error_messages={"required": CHOOSE_ACCOUNTS})

    def __init__(self, *args, candidates, **kwargs):
        super().__init__(*args, **kwargs)
        self.candidates = {str(a.public_id): a for a in candidates}
        self.fields["accounts"].choices = [(key, a.label) for key, a in self.candidates.items()]

    def chosen(self):
        return [self.candidates[key] for key in self.cleaned_data["accounts"]]


def _refused(form, exc: ValidationError) -> None:
    for message in exc.messages:
        form.add_error(None, message)


def _back(access, group=None):
    if group is None:
        return redirect("distribution:group-list", team_id=access.team.public_id)
    return redirect("distribution:group-detail", team_id=access.team.public_id, group_id=group.public_id)


@team_view()
@require_GET
def group_list(request, access):
    mine = list(selectors.memberships_for_account_team(team=access.team))
    return render(request, "distribution/groups_list.html", {
        "groups": selectors.group_list_for_team(team=access.team),
        "invitations": [m for m in mine if m.state == m.State.INVITED],
        "memberships": [m for m in mine if m.state == m.State.JOINED],
    })


@team_view(Capability.APPROVE)
@require_http_methods(["GET", "POST"])
def group_create(request, access):
    form = GroupForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        try:
            group = services.group_create(access=access, **form.cleaned_data)
        except ValidationError as exc:
            _refused(form, exc)
        else:
            messages.success(request, CREATED.format(name=group.name))
            return _back(access, group)
    return render(request, "distribution/groups_form.html", {"form": form, "group": None},
                  status=400 if form.errors else 200)


def _detail(request, access, group, invite_form=None, status=200):
    candidates = list(selectors.invite_candidates(group=group)) if access.can_approve else []
    return render(request, "distribution/groups_detail.html", {
        "group": group,
        "members": selectors.group_members(group=group),
        "joined": selectors.group_accounts_joined(group),
        "invite_form": invite_form or InviteForm(candidates=candidates),
    }, status=status)


@team_view()
@require_GET
def group_detail(request, access, group_id):
    return _detail(request, access, selectors.group_get_for_team(access=access, public_id=group_id))


@team_view(Capability.APPROVE)
@require_http_methods(["GET", "POST"])
def group_edit(request, access, group_id):
    group = selectors.group_get_for_team(access=access, public_id=group_id)
    form = GroupForm(request.POST or None, initial={"name": group.name, "description": group.description})
    if request.method == "POST" and form.is_valid():
        try:
            group = services.group_change(access=access, group=group, **form.cleaned_data)
        except ValidationError as exc:
            _refused(form, exc)
        else:
            messages.success(request, SAVED.format(name=group.name))
            return _back(access, group)
    return render(request, "distribution/groups_form.html", {"form": form, "group": group},
                  status=400 if form.errors else 200)


@team_view(Capability.APPROVE)
@require_POST
def group_delete(request, access, group_id):
    group = selectors.group_get_for_team(access=access, public_id=group_id)
    try:
        services.group_delete(access=access, group=group)
    except ValidationError as exc:
        messages.error(request, " ".join(exc.messages))
        return _back(access, group)
    messages.success(request, DELETED.format(name=group.name))
    return _back(access)


@team_view(Capability.APPROVE)
@require_POST
def group_invite(request, access, group_id):
    group = selectors.group_get_for_team(access=access, public_id=group_id)
    form = InviteForm(request.POST, candidates=selectors.invite_candidates(group=group))
    if form.is_valid():
        try:
            invited = services.group_member_invite(access=access, group=group, accounts=form.chosen())
        except ValidationError as exc:
            _refused(form, exc)
        else:
            n = len(invited)
            messages.success(request, INVITED.format(n=n, s="s" * (n != 1), name=group.name) if n
                             else NOTHING_NEW.format(name=group.name))
            return _back(access, group)
    return _detail(request, access, group, invite_form=form, status=400)


@team_view(Capability.APPROVE)
@require_POST
def group_member_remove(request, access, group_id, member_id):
    group = selectors.group_get_for_team(access=access, public_id=group_id)
    member = selectors.group_member_get_for_group(access=access, group=group, public_id=member_id)
    try:
        services.group_member_remove(access=access, member=member)
    except ValidationError as exc:
        messages.error(request, " ".join(exc.messages))
    else:
        messages.success(request, REMOVED.format(account=member.account.label, name=group.name))
    return _back(access, group)


def _answer(request, access, member_id, *, accept: bool):
    member = selectors.membership_get_for_account_team(access=access, public_id=member_id)
    try:
        services.group_member_answer(access=access, member=member, accept=accept)
    except ValidationError as exc:
        messages.error(request, " ".join(exc.messages))
    else:
        text = JOINED if accept else DECLINED
        messages.success(request, text.format(account=member.account.label, name=member.group.name))
    return _back(access)


@team_view(Capability.APPROVE)
@require_POST
def group_membership_accept(request, access, member_id):
    return _answer(request, access, member_id, accept=True)


@team_view(Capability.APPROVE)
@require_POST
def group_membership_decline(request, access, member_id):
    return _answer(request, access, member_id, accept=False)


@team_view(Capability.APPROVE)
@require_POST
def group_membership_leave(request, access, member_id):
    member = selectors.membership_get_for_account_team(access=access, public_id=member_id)
    try:
        services.group_member_leave(access=access, member=member)
    except ValidationError as exc:
        messages.error(request, " ".join(exc.messages))
    else:
        messages.success(request, LEFT.format(account=member.account.label, name=member.group.name))
    return _back(access)
