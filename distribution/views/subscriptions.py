"""The family directory and the subscriptions a team holds. Thin: parse, call one service, render.

Every role reads; members, approvers and admins subscribe, change and end (ACCEPT_SHARE, as for
accepting an incoming copy)."""

from django import forms
from django.contrib import messages
from django.core.exceptions import ValidationError
from django.shortcuts import redirect, render
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from accounts.decorators import team_view
from accounts.roles import Capability
from distribution.selectors import families as selectors
from distribution.services import subscriptions

SUBSCRIBED = ("{team} subscribes {family}: its versions reach your accounts once an approver of {owner} signs a "
              "standing approval that covers them.")
CHANGED = ("Accounts of your subscription to {family} changed: its standing approval, if any, stops until an approver "
           "of {owner} signs again.")
ENDED = "Subscription to {family} ended: your accounts receive no more of its versions (the copies made stay)."
CHOOSE_ACCOUNTS = "Choose at least one of your team's accounts to receive the family's versions."


class AccountsField(forms.ModelMultipleChoiceField):
    def label_from_instance(self, account):
        return f"{account.label} ({account.region}, {account.account_id})"


class SubscriptionForm(forms.Form):
    family = forms.ModelChoiceField(queryset=None, to_field_name="public_id", empty_label="Choose a family…",
                                    help_text="Live families of every team (the directory).")
    accounts = AccountsField(queryset=None, to_field_name="public_id", widget=forms.CheckboxSelectMultiple,
                             error_messages={"required": CHOOSE_ACCOUNTS},
                             help_text="Your team's validated accounts that accept incoming shares.")

    def __init__(self, *args, team, with_family=True, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["accounts"].queryset = selectors.subscription_account_choices(team=team)
        if with_family:
            self.fields["family"].queryset = selectors.family_directory(team=team)
        else:
            del self.fields["family"]


@team_view()
@require_GET
def family_directory(request, access):
    return render(request, "distribution/families_directory.html",
                  {"families": selectors.family_directory(team=access.team)})


@team_view(Capability.ACCEPT_SHARE)
@require_http_methods(["GET", "POST"])
def subscription_create(request, access):
    form = SubscriptionForm(request.POST or None, team=access.team,
                            initial={"family": request.GET.get("family", "")[:36]})
    if request.method == "POST" and form.is_valid():
        family = form.cleaned_data["family"]
        try:
            subscriptions.subscription_create(access=access, family=family, accounts=form.cleaned_data["accounts"])
        except ValidationError as exc:
            form.add_error(None, exc)
        else:
            messages.success(request, SUBSCRIBED.format(team=access.team.name, family=family.name,
                                                        owner=family.team.name))
            return redirect("distribution:home", team_id=access.team.public_id)
    return render(request, "distribution/subscriptions_form.html", {"form": form, "subscription": None},
                  status=400 if form.errors else 200)


@team_view()
@require_GET
def subscription_detail(request, access, subscription_id):
    subscription = selectors.subscription_get_for_team(access=access, public_id=subscription_id)
    return render(request, "distribution/subscriptions_detail.html", {
        "subscription": subscription, "family": subscription.family,
        "versions": selectors.versions_for_family(family=subscription.family)})


@team_view(Capability.ACCEPT_SHARE)
@require_http_methods(["GET", "POST"])
def subscription_edit(request, access, subscription_id):
    subscription = selectors.subscription_get_for_team(access=access, public_id=subscription_id)
    initial = {"accounts": [str(a.public_id) for a in subscription.accounts.all()]}
    form = SubscriptionForm(request.POST or None, team=access.team, with_family=False, initial=initial)
    if request.method == "POST" and form.is_valid():
        try:
            subscriptions.subscription_change(access=access, subscription=subscription,
                                              accounts=form.cleaned_data["accounts"])
        except ValidationError as exc:
            form.add_error(None, exc)
        else:
            family = subscription.family
            messages.success(request, CHANGED.format(family=family.name, owner=family.team.name))
            return _back(access, subscription)
    return render(request, "distribution/subscriptions_form.html", {"form": form, "subscription": subscription},
                  status=400 if form.errors else 200)


@team_view(Capability.ACCEPT_SHARE)
@require_POST
def subscription_end(request, access, subscription_id):
    subscription = selectors.subscription_get_for_team(access=access, public_id=subscription_id)
    try:
        subscriptions.subscription_end(access=access, subscription=subscription)
    except ValidationError as exc:
        messages.error(request, " ".join(exc.messages))
    else:
        messages.success(request, ENDED.format(family=subscription.family.name))
    return _back(access, subscription)


def _back(access, subscription):
    return redirect("distribution:subscription-detail", team_id=access.team.public_id,
                    subscription_id=subscription.public_id)
