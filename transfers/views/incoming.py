"""The receiving side: the inbox, answering an offer, importing from a pasted link, and revealing
a manifest link to the source team for an external account. Links are bearer secrets: pages that
show or take one are never cached and send no referrer."""


from django.contrib import messages
from django.core.exceptions import ValidationError
from django.core.paginator import Paginator
from django.shortcuts import redirect, render
from django.utils import timezone
from django.views.decorators.debug import sensitive_post_parameters
from django.views.decorators.http import require_GET, require_http_methods, require_POST

import outscale
from accounts.decorators import secret_page, team_view
from accounts.roles import Capability
from transfers import delivery, rules, selectors
from transfers.forms import DeclineForm, LinkImportForm
from transfers.rate_limits import LINK_REVEAL, rate_limited
from transfers.services import external_links, import_offers

INBOX_PER_PAGE = 25
ACCEPTED = "Accepted: {name} is being imported into {account}."
DECLINED = "Declined: {name} will not be imported."
RETRIED = "Import of {name} started again."
LINK_IMPORT_STARTED = "Import of {name} into {account} started."



def _back(request, access, recipient):
    if request.POST.get("next") == "detail" and recipient.share_id:
        return redirect("transfers:share-detail", team_id=access.team.public_id, share_id=recipient.share.public_id)
    return redirect("transfers:inbox", team_id=access.team.public_id)


def _name(recipient) -> str:
    return recipient.share.copy_name if recipient.share_id else recipient.image_name


@team_view()
@require_GET
def inbox(request, access):
    page = Paginator(selectors.inbox_for_team(team=access.team), INBOX_PER_PAGE).get_page(request.GET.get("page"))
    now = timezone.now()
    for r in page.object_list:  # the buttons the services would honour
        r.can_answer = rules.may_answer(access=access, recipient=r)
        r.can_retry = rules.may_retry(access=access, recipient=r, now=now)
    return render(request, "transfers/recipient_inbox.html", {
        **selectors.inbox_sections(page.object_list),
        "page": page,
        "can_accept": access.can(Capability.ACCEPT_SHARE),
        "decline_form": DeclineForm(),
    })


def _answer(request, access, recipient_id, *, act, done: str):
    recipient = selectors.recipient_get_for_team(access=access, public_id=recipient_id)
    try:
        act(recipient)
    except ValidationError as exc:
        messages.error(request, " ".join(exc.messages))
    else:
        messages.success(request, done.format(name=_name(recipient), account=recipient.target_account.label))
    return _back(request, access, recipient)


@team_view(Capability.ACCEPT_SHARE)
@require_POST
def recipient_accept(request, access, recipient_id):
    return _answer(request, access, recipient_id, done=ACCEPTED,
                   act=lambda r: import_offers.recipient_accept(access=access, recipient=r))


@team_view(Capability.ACCEPT_SHARE)
@require_POST
def recipient_decline(request, access, recipient_id):
    form = DeclineForm(request.POST)
    reason = form.cleaned_data["reason"] if form.is_valid() else ""
    return _answer(request, access, recipient_id, done=DECLINED,
                   act=lambda r: import_offers.recipient_decline(access=access, recipient=r, reason=reason))


@team_view(Capability.ACCEPT_SHARE)
@require_POST
def recipient_retry(request, access, recipient_id):
    return _answer(request, access, recipient_id, done=RETRIED,
                   act=lambda r: import_offers.recipient_retry(access=access, recipient=r))


@secret_page
@sensitive_post_parameters("url")
@team_view(Capability.ACCEPT_SHARE)
@require_http_methods(["GET", "POST"])
def link_import(request, access):
    form = LinkImportForm(request.POST or None, accounts=selectors.source_accounts_for_team(team=access.team))
    if request.method == "POST" and form.is_valid():
        data = form.cleaned_data
        try:
            recipient = external_links.link_import_create(access=access, account=data["account"], url=data["url"],
                                                 image_name=data["image_name"], description=data["description"])
        except ValidationError as exc:
            for message in exc.messages:
                form.add_error(None, message)
        except outscale.CloudError as exc:
            form.add_error(None, exc.user_message)
        else:
            messages.success(request, LINK_IMPORT_STARTED.format(name=recipient.image_name,
                                                                 account=recipient.target_account.label))
            return redirect("transfers:inbox", team_id=access.team.public_id)
    return render(request, "transfers/link_import.html", {"form": form}, status=400 if form.errors else 200)


@secret_page
@team_view(Capability.REQUEST_SHARE)
@require_POST
@rate_limited(LINK_REVEAL)
def share_reveal_link(request, access, share_id, recipient_id):
    share = selectors.share_get_for_source_team(access=access, public_id=share_id)
    recipient = selectors.recipient_get_for_share(access=access, share=share, public_id=recipient_id)
    try:
        link = external_links.link_reveal(access=access, share=share, recipient=recipient)
    except ValidationError as exc:
        messages.error(request, " ".join(exc.messages))
    except outscale.CloudError as exc:
        messages.error(request, exc.user_message)
    else:
        commands = delivery.link_delivery(share=share, recipient=recipient, url=link.url, expires_at=link.expires_at)
        return render(request, "transfers/link_reveal.html", {"share": share, "recipient": recipient, "link": link,
                                                              "deliveries": [commands]})
    return redirect("transfers:share-detail", team_id=access.team.public_id, share_id=share.public_id)
