"""The distribution landing page and the families a team publishes. Thin: parse, call one service, render.

Every role reads; members, approvers and admins declare, archive and scan (REQUEST_SHARE, as for a
share request: a family sends nothing until an approver signs its standing approval)."""

from django import forms
from django.conf import settings
from django.contrib import messages
from django.core.exceptions import ValidationError
from django.shortcuts import redirect, render
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from accounts.decorators import team_view
from accounts.roles import Capability
from distribution.models import Family
from distribution.selectors import families as selectors
from distribution.services import discovery, families
from transfers.rate_limits import IMAGE_LIST, rate_limited

DECLARED = "Family {name} declared: its versions already in {account} appear after the first scan, in a moment."
ARCHIVED = "Family {name} archived: no more versions are looked for or shared."
SCANNED_NEW = "{n} new version{s} of the families of {account} found."
SCANNED_NONE = "No new version in {account}: the images matching each family are all known already."

class FamilyForm(forms.Form):
    name = forms.CharField(max_length=64, help_text="Letters, digits, . _ - : it becomes the value of the "
                                                    "omiportal:family tag on every copy, and starts the copies' names.")
    description = forms.CharField(max_length=255, required=False)
    source_account = forms.ModelChoiceField(queryset=None, to_field_name="public_id", empty_label=None,
                                            help_text="The account where your team makes the images.")
    match = forms.ChoiceField(choices=Family.Match.choices, widget=forms.RadioSelect, initial=Family.Match.NAME,
                              label="Find its versions by")
    name_pattern = forms.CharField(max_length=128, required=False, label="Image name pattern",
                                   help_text="Shell-style: * any text, ? one character, [abc] one of. "
                                             "e.g. golden-web-*")
    tag_key = forms.CharField(max_length=128, required=False, label="Tag key", help_text="e.g. release")
    tag_value = forms.CharField(max_length=255, required=False, label="Tag value",
                                help_text="Empty: any value of the key.")

    def __init__(self, *args, team, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["source_account"].queryset = selectors.source_account_choices(team=team)


@team_view()
@require_GET
def distribution_home(request, access):
    return render(request, "distribution/families_home.html", {
        "families": selectors.families_for_team(team=access.team),
        "subscriptions": selectors.subscriptions_for_team(team=access.team),
        "scan_minutes": round(discovery.scan_seconds() / 60, 1)})


@team_view(Capability.REQUEST_SHARE)
@require_http_methods(["GET", "POST"])
def family_create(request, access):
    form = FamilyForm(request.POST or None, team=access.team)
    if request.method == "POST" and form.is_valid():
        data = form.cleaned_data
        try:
            family = families.family_declare(access=access, **data)
        except ValidationError as exc:
            form.add_error(None, exc)
        else:
            messages.success(request, DECLARED.format(name=family.name, account=family.source_account.label))
            return redirect("distribution:family-detail", team_id=access.team.public_id, family_id=family.public_id)
    return render(request, "distribution/families_form.html", {"form": form}, status=400 if form.errors else 200)


@team_view()
@require_GET
def family_detail(request, access, family_id):
    family = selectors.family_get_for_team(access=access, public_id=family_id)
    return render(request, "distribution/families_detail.html", {
        "family": family, "versions": selectors.versions_for_family(family=family),
        "subscriptions": selectors.subscriptions_for_family(family=family),
        "scan_minutes": round(discovery.scan_seconds() / 60, 1),
        "scan_rate": settings.OMIPORTAL_IMAGE_LIST_RATE})


@team_view(Capability.REQUEST_SHARE)
@require_POST
def family_archive(request, access, family_id):
    family = selectors.family_get_for_team(access=access, public_id=family_id)
    try:
        families.family_archive(access=access, family=family)
    except ValidationError as exc:
        messages.error(request, " ".join(exc.messages))
    else:
        messages.success(request, ARCHIVED.format(name=family.name))
    return redirect("distribution:family-detail", team_id=access.team.public_id, family_id=family.public_id)


@team_view(Capability.REQUEST_SHARE)
@require_POST
@rate_limited(IMAGE_LIST)  # one ReadImages with the team's keys, like the share form's image list
def family_scan(request, access, family_id):
    family = selectors.family_get_for_team(access=access, public_id=family_id)
    outcome = discovery.family_scan_now(access=access, family=family)
    account = family.source_account.label
    if outcome.error:
        messages.error(request, outcome.error)
    elif outcome.found:
        n = len(outcome.found)
        messages.success(request, SCANNED_NEW.format(n=n, s="" if n == 1 else "s", account=account))
    else:
        messages.info(request, SCANNED_NONE.format(account=account))
    return redirect("distribution:family-detail", team_id=access.team.public_id, family_id=family.public_id)
