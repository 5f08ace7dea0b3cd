"""Asking for a copy, the team's outgoing shares, and one share's page with its live progress."""

import uuid

from django.contrib import messages
from django.core.exceptions import ValidationError
from django.core.paginator import Paginator
from django.http import Http404, JsonResponse
from django.shortcuts import redirect, render
from django.utils import timezone
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET, require_http_methods

import outscale
from accounts.decorators import team_view
from accounts.roles import Capability
from transfers import delivery, presentation, recipient_sources, rules, selectors
from transfers.forms import DecisionForm, DeclineForm, ShareRequestForm
from transfers.models import Recipient, Share
from transfers.rate_limits import IMAGE_LIST, rate_limited
from transfers.services import copy_facts, preflight
from transfers.services import requests as share_requests
from transfers.services.images import shareable_images_list

SHARES_PER_PAGE = 25
SHARE_REQUESTED = "Your request to copy {image} was sent to the team's approvers."
SHARE_STARTED = "Copy of {image} started: no approval is needed between your own accounts."
DESCRIPTION_CUT = ("The description is longer than the {room} characters a copy keeps beside the portal's mark: "
                   "the copies' Description will be \"{kept}\".")


def _source_account(access, raw):
    try:
        public_id = uuid.UUID(raw)
    except ValueError:
        raise Http404("No such account.") from None
    return selectors.source_account_get_for_team(access=access, public_id=public_id)


@team_view(Capability.REQUEST_SHARE)
@require_http_methods(["GET", "POST"])
@rate_limited(IMAGE_LIST, applies=lambda request: bool(request.GET.get("account")))  # the form lists images then
def share_new(request, access):
    raw_account = request.GET.get("account", "")
    # A recipient list chosen (a group of the team, kept by an app above: transfers/recipient_sources.py).
    group = {"sources": recipient_sources.sources_for_team(team=access.team), "key": request.GET.get("group", "")}
    if not raw_account:
        return render(request, "transfers/share_form.html", {
            "source": None, "accounts": selectors.source_accounts_for_team(team=access.team), "group": group})
    source = _source_account(access, raw_account)
    candidates = selectors.recipient_choices_for_share(team=access.team, source=source)
    # Its accounts now are ticked; the request names exactly what is ticked when sent, and the approver
    # signs each one as usual. An account the group gains later is in no request made before.
    listed = recipient_sources.source_accounts(access=access, key=group["key"]) if group["key"] else []
    keys = {str(a.public_id) for a in candidates}
    group |= {"ticked": [a for a in listed if str(a.public_id) in keys],
              "left_out": [a for a in listed if str(a.public_id) not in keys]}
    images = shareable_images_list(account=source)
    form = ShareRequestForm(request.POST or None, images=images.images, source=source, recipient_accounts=candidates,
                            initial={"recipients": [str(a.public_id) for a in group["ticked"]]})
    if request.method == "POST" and form.is_valid():
        data = form.cleaned_data
        try:
            share = share_requests.share_request(
                access=access, source_account=source, image_id=data["image_id"], accounts=data["accounts"],
                externals=data["externals"], copy_name=data["copy_name"], description=data["description"],
                reason=data["reason"], licence_confirmed=data["licence_confirmed"],
                launch_permission_only=data["launch_permission_only"])
        except ValidationError as exc:
            for message in exc.messages:
                form.add_error(None, message)
        except outscale.CloudError as exc:
            form.add_error(None, exc.user_message)
        else:
            text = SHARE_REQUESTED if share.state == Share.State.REQUESTED else SHARE_STARTED
            messages.success(request, text.format(image=share.source_image_name))
            if copy_facts.description_is_cut(share.description):
                messages.warning(request, DESCRIPTION_CUT.format(room=outscale.DESCRIPTION_ROOM,
                                                                 kept=copy_facts.copy_description(share)))
            return redirect("transfers:share-detail", team_id=access.team.public_id, share_id=share.public_id)
    chosen = set(form["recipients"].value() or [])
    own = [a for a in candidates if a.team_id == access.team.pk]
    directory = [a for a in candidates if a.team_id != access.team.pk]
    return render(request, "transfers/share_form.html", {
        "source": source, "form": form, "images": images.images, "images_error": images.error,
        "chosen_image": form["image_id"].value(),
        "own_accounts": [(a, str(a.public_id) in chosen) for a in own],
        "directory": [(a, str(a.public_id) in chosen) for a in directory], "group": group,
    }, status=400 if form.errors else 200)


@team_view()
@require_GET
def share_list(request, access):
    state = request.GET.get("state", "")
    if state not in Share.State.values:
        state = ""
    page = Paginator(selectors.share_list_for_team(team=access.team, state=state), SHARES_PER_PAGE) \
        .get_page(request.GET.get("page"))
    return render(request, "transfers/share_list.html", {
        "page": page, "state": state, "states": Share.State.choices})


def _detail_context(access, share) -> dict:
    is_source = share.team_id == access.team.pk
    is_requester = share.requested_by_id == access.user.pk
    waiting = share.state == Share.State.REQUESTED
    now = timezone.now()
    recipients = selectors.share_recipients_for_user(access=access, share=share)
    progress = presentation.share_progress(share=share, recipients=recipients)
    live = {row["id"]: row for row in progress["recipients"]}
    rows = [{
        "recipient": r,
        "live": live.get(str(r.public_id), {}),
        "can_answer": rules.may_answer(access=access, recipient=r),
        "can_retry": rules.may_retry(access=access, recipient=r, now=now),
        "can_reveal": rules.may_reveal(access=access, share=share, recipient=r, now=now),
    } for r in recipients]
    can_decide = rules.may_decide(access=access, share=share, now=now)
    cannot_decide = ""  # why an approver who could decide cannot decide this one
    if is_source and waiting and access.can_approve and not is_requester:
        refusal = rules.decision_refusal(membership=access.membership, share=share)
        cannot_decide = refusal[1] if refusal else rules.decision_overdue(share, now)
    return {
        "share": share,
        "is_source": is_source,
        "is_requester": is_requester,
        "can_decide": can_decide,
        "decision_panel": presentation.decision_panel(share) if can_decide else None,
        "cannot_decide": cannot_decide,
        "requester_waits": is_source and waiting and is_requester,
        "decision_form": DecisionForm(initial={"digest": share.digest}),
        "can_cancel": rules.may_cancel(access=access, share=share),
        "can_reexport": rules.may_reexport(access=access, share=share, now=now),
        "rows": rows,
        # An export serves some recipient (transfers/services/methods.py); the others copy in the Region.
        "needs_export": share.export_id is not None
        or any(row["recipient"].method in Recipient.EXPORT_METHODS for row in rows),
        "deliveries": delivery.share_deliveries(access=access, share=share, recipients=[r["recipient"] for r in rows]),
        "decline_form": DeclineForm(),
        "progress": progress,
        "timeline": selectors.share_timeline(access=access, share=share),
    }


@team_view()
@require_GET
def share_detail(request, access, share_id):
    share = selectors.share_get_for_user(access=access, public_id=share_id)
    if rules.may_decide(access=access, share=share):
        preflight.preflight_refresh(share=share)  # checks older than a few minutes run again (jobs)
    return render(request, "transfers/share_detail.html", _detail_context(access, share))


@never_cache
@team_view()
@require_GET
def share_progress(request, access, share_id):
    share, recipients = selectors.share_progress_for_user(access=access, public_id=share_id)
    return JsonResponse(presentation.share_progress(share=share, recipients=recipients))
