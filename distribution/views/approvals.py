"""A family's standing approvals: the list (every role reads), signing and stopping (approvers).

Signing is two steps on one page: the terms (whom: the subscribers or a recipient group; until when;
how many versions) are reviewed with GET, which shows exactly the accounts a signature covers now
and the digest of that page; the POST signs that digest, and the service refuses it when the list
changed meanwhile. Thin: parse, call one service, render."""

from datetime import UTC, datetime, time, timedelta

from django import forms
from django.contrib import messages
from django.core.exceptions import ValidationError
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils import timezone
from django.utils.http import urlencode
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from accounts.decorators import team_view
from accounts.roles import Capability
from accounts.twofactor.enforcement import step_up_url, verified_at
from distribution.models import RecipientGroup, StandingApproval
from distribution.selectors import approvals as selectors
from distribution.selectors.families import family_get_for_team
from distribution.services import approval_binding, approvals
from transfers.errors import StepUpRequired

SIGNED = "Standing approval {number} signed: the next versions of {family} go to the {n} account{s} listed."
RELEASING = " Version {version}, which was waiting, is being released now."
STOPPED = "Standing approval {number} stopped: the next versions of {family} wait for a new signature."
FORM_STALE = "The sign form was incomplete; review the list again and sign."
STEP_UP = "Enter a fresh code from your authenticator app, then sign again."
DEFAULT_DAYS, DEFAULT_VERSIONS = 90, 10


def expiry_of(day) -> datetime:
    """An approval signed "until <day>" runs to the end of that day (UTC)."""
    return datetime.combine(day + timedelta(days=1), time.min, tzinfo=UTC)


class TermsForm(forms.Form):
    group = forms.ModelChoiceField(queryset=RecipientGroup.objects.none(), to_field_name="public_id", required=False,
                                   empty_label="The family's subscribers (their accounts as they are now)",
                                   label="Recipients")
    expires_on = forms.DateField(label="Valid until (end of the day, UTC)",
                                 widget=forms.DateInput(attrs={"type": "date"}))
    max_versions = forms.IntegerField(min_value=1, label="At most this many versions")

    def __init__(self, *args, team, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["group"].queryset = RecipientGroup.objects.filter(team=team).order_by("name")
        self.fields["max_versions"].max_value = approvals.max_versions_allowed()
        self.fields["max_versions"].widget.attrs["max"] = approvals.max_versions_allowed()
        self.fields["max_versions"].help_text = f"1 to {approvals.max_versions_allowed()}."
        self.fields["expires_on"].help_text = f"At most {approvals.max_days()} days from today."

    def terms(self) -> dict:
        data = self.cleaned_data
        return {"group": data["group"], "expires_at": expiry_of(data["expires_on"]),
                "max_versions": data["max_versions"]}


class SignForm(forms.Form):
    digest = forms.CharField(max_length=64, widget=forms.HiddenInput)
    licence_confirmed = forms.BooleanField(label="The third-party licences of this family's images allow their "
                                                 "export to these accounts.")


def _list(access, family):
    return redirect("distribution:approval-list", team_id=access.team.public_id, family_id=family.public_id)


@team_view()
@require_GET
def approval_list(request, access, family_id):
    family = family_get_for_team(access=access, public_id=family_id)
    rows = list(selectors.approvals_for_family(family=family))
    active = next((a for a in rows if a.state == StandingApproval.State.ACTIVE), None)
    # Said before the next version comes: what it covers changed, so the next release will wait.
    drift = approval_binding.drift(active) if active is not None else ""
    return render(request, "distribution/approvals_list.html", {
        "family": family, "approvals": rows, "active": active, "drift": drift,
        "waiting": selectors.versions_waiting(family=family).first(), "now": timezone.now()})


@team_view(Capability.APPROVE)
@require_http_methods(["GET", "POST"])
def approval_sign(request, access, family_id):
    family = family_get_for_team(access=access, public_id=family_id)
    data = request.POST if request.method == "POST" else (request.GET if "expires_on" in request.GET else None)
    initial = {"expires_on": timezone.now().date() + timedelta(days=min(DEFAULT_DAYS, approvals.max_days() - 1)),
               "max_versions": min(DEFAULT_VERSIONS, approvals.max_versions_allowed())}
    form = TermsForm(data, team=access.team, initial=initial)
    sign_form = SignForm(request.POST if request.method == "POST" else None)
    proposal = refusal = None
    if data is not None and form.is_valid():
        terms = form.terms()
        if request.method == "POST":
            done = _sign(request, access, family, terms, sign_form)
            if done is not None:
                return done
        try:
            approvals.check_terms(expires_at=terms["expires_at"], max_versions=terms["max_versions"])
        except ValidationError as exc:
            form.add_error(None, exc)
        else:
            proposal = approvals.standing_approval_preview(family=family, **terms)
            sign_form.initial["digest"] = proposal.digest
            # Four eyes, said before the button rather than after it.
            refused = approval_binding.signing_refusal(membership=access.membership, family=family,
                                                       group=terms["group"])
            refusal = refused[1] if refused else ""
    status = 400 if request.method == "POST" else 200
    return render(request, "distribution/approvals_sign.html", {
        "family": family, "form": form, "sign_form": sign_form, "proposal": proposal, "refusal": refusal,
        "terms": form.cleaned_data if proposal else None}, status=status)


def _sign(request, access, family, terms, sign_form):
    """The POST: a response when it is done (signed, or off to a fresh code); None to show the page again."""
    if not sign_form.is_valid():
        if "digest" in sign_form.errors:
            messages.error(request, FORM_STALE)
        return None
    try:
        approval = approvals.standing_approval_sign(
            access=access, family=family, digest=sign_form.cleaned_data["digest"],
            licence_confirmed=sign_form.cleaned_data["licence_confirmed"], verified_at=verified_at(request), **terms)
    except StepUpRequired:
        messages.info(request, STEP_UP)
        review = {name: request.POST.get(name, "") for name in ("group", "expires_on", "max_versions")}
        back = reverse("distribution:approval-sign", kwargs={"team_id": access.team.public_id,
                                                             "family_id": family.public_id})
        return redirect(step_up_url(enrolled=True, next_url=f"{back}?{urlencode(review)}"))
    except ValidationError as exc:
        messages.error(request, " ".join(exc.messages))
        return None
    n = approval.recipients.count()
    text = SIGNED.format(number=approval.pk, family=family.name, n=n, s="" if n == 1 else "s")
    waiting = selectors.versions_waiting(family=family).first()
    if waiting is not None:
        text += RELEASING.format(version=waiting.number)
    messages.success(request, text)
    return _list(access, family)


@team_view(Capability.APPROVE)
@require_POST
def approval_stop(request, access, approval_id):
    approval = selectors.approval_get_for_team(access=access, public_id=approval_id)
    try:
        approvals.standing_approval_stop(access=access, approval=approval)
    except ValidationError as exc:
        messages.error(request, " ".join(exc.messages))
    else:
        messages.success(request, STOPPED.format(number=approval.pk, family=approval.family.name))
    return _list(access, approval.family)
