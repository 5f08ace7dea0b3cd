"""The source team's decisions: approve or reject (four eyes), cancel, export again."""

from collections.abc import Callable

from django.contrib import messages
from django.core.exceptions import ValidationError
from django.core.paginator import Paginator
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views.decorators.http import require_GET, require_POST

from accounts.decorators import team_view
from accounts.roles import Capability
from accounts.twofactor.enforcement import step_up_url, verified_at
from transfers import errors, presentation, rules, selectors
from transfers.forms import DecisionForm
from transfers.models import Share
from transfers.services import methods, reconcile
from transfers.services import requests as share_requests

APPROVALS_PER_PAGE = 25
APPROVED = "Approved: the export of {image} starts now."
# A share whose recipients are all in the source's Region makes no export (services/methods.py).
APPROVED_IN_REGION = "Approved: {image} goes to its recipients in its Region now, without an export."
APPROVED_BOTH = "Approved: the export of {image} starts now; the recipients in its Region get it without one."
REJECTED = "Rejected: {image} will not be copied."
CANCELLED = "Cancelled: {image} will not be copied."
REEXPORTING = "{image} is being exported again; recipients get a fresh link when it is ready."
FORM_STALE = "The decision form was incomplete; reload the page and try again."
STEP_UP = "Enter a fresh code from your authenticator app, then decide again."


def _back(access, share):
    return redirect("transfers:share-detail", team_id=access.team.public_id, share_id=share.public_id)


def _error(request, exc: ValidationError) -> None:
    messages.error(request, " ".join(exc.messages))


@team_view(Capability.APPROVE)
@require_GET
def approval_list(request, access):
    page = Paginator(selectors.approvals_for_team(team=access.team), APPROVALS_PER_PAGE) \
        .get_page(request.GET.get("page"))
    history = selectors.copy_history()  # read once: each row's expected durations come from it
    for share in page.object_list:  # say why a button would fail rather than offer it
        blocker = rules.decision_blocker(membership=access.membership, share=share)
        share.cannot_decide = blocker[1] if blocker else ""
        share.decision_panel = presentation.decision_panel(share, history=history)
    return render(request, "transfers/approval_list.html", {"page": page})


def _decide(request, access, share_id, *, service, done: str | Callable[[Share], str]):
    share = selectors.share_get_for_source_team(access=access, public_id=share_id)
    form = DecisionForm(request.POST)
    if not form.is_valid():
        messages.error(request, FORM_STALE)
        return _back(access, share)
    try:
        service(access=access, share=share, digest=form.cleaned_data["digest"], comment=form.cleaned_data["comment"],
                verified_at=verified_at(request))
    except errors.StepUpRequired:
        # Back to the share after a fresh code: a decision is not replayed by a redirect.
        messages.info(request, STEP_UP)
        back = reverse("transfers:share-detail", kwargs={"team_id": access.team.public_id, "share_id": share.public_id})
        return redirect(step_up_url(enrolled=True, next_url=back))
    except ValidationError as exc:
        _error(request, exc)
    else:
        messages.success(request, (done(share) if callable(done) else done).format(image=share.source_image_name))
    return _back(access, share)


def approved_message(share: Share) -> str:
    """What the approval starts: an export, copies within the Region, or both."""
    recipients = list(share.recipients.all())
    if not methods.needs_export(recipients):
        return APPROVED_IN_REGION
    return APPROVED if all(methods.needs_export([r]) for r in recipients) else APPROVED_BOTH


@team_view(Capability.APPROVE)
@require_POST
def share_approve(request, access, share_id):
    return _decide(request, access, share_id, service=share_requests.share_approve, done=approved_message)


@team_view(Capability.APPROVE)
@require_POST
def share_reject(request, access, share_id):
    return _decide(request, access, share_id, service=share_requests.share_reject, done=REJECTED)


@team_view(Capability.REQUEST_SHARE)
@require_POST
def share_cancel(request, access, share_id):
    share = selectors.share_get_for_source_team(access=access, public_id=share_id)
    try:
        share_requests.share_cancel(access=access, share=share)
    except ValidationError as exc:
        _error(request, exc)
    else:
        messages.success(request, CANCELLED.format(image=share.source_image_name))
    return _back(access, share)


@team_view(Capability.REQUEST_SHARE)
@require_POST
def share_reexport(request, access, share_id):
    share = selectors.share_get_for_source_team(access=access, public_id=share_id)
    try:
        reconcile.share_reexport(access=access, share=share)
    except ValidationError as exc:
        _error(request, exc)
    else:
        messages.success(request, REEXPORTING.format(image=share.source_image_name))
    return _back(access, share)
