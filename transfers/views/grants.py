"""The source team's launch permissions: every grant still in place (those "launch permission
only" stay until revoked here), and revoking one."""

from django.contrib import messages
from django.core.exceptions import ValidationError
from django.core.paginator import Paginator
from django.shortcuts import redirect, render
from django.views.decorators.http import require_GET, require_POST

from accounts.decorators import team_view
from accounts.roles import Capability
from transfers import rules, selectors
from transfers.services import grant_releases

GRANTS_PER_PAGE = 50
REVOKED = "Launch permission on {image} taken back from account {account}."
REVOKE_PENDING = ("OUTSCALE has not taken the launch permission on {image} back from account {account} yet: "
                  "OMI Portal tries again shortly.")


@team_view()
@require_GET
def grant_list(request, access):
    page = Paginator(selectors.launch_grants_open_for_team(team=access.team), GRANTS_PER_PAGE) \
        .get_page(request.GET.get("page"))
    rows = [{"grant": grant, "can_revoke": rules.may_revoke_grant(access=access, grant=grant),
             "why_not": rules.grant_revoke_refusal(access=access, grant=grant)} for grant in page.object_list]
    return render(request, "transfers/grant_list.html", {"page": page, "rows": rows})


@team_view(Capability.REQUEST_SHARE)
@require_POST
def grant_revoke(request, access, grant_id):
    grant = selectors.launch_grant_get_for_source_team(access=access, public_id=grant_id)
    try:
        grant = grant_releases.grant_revoke(access=access, grant=grant)
    except ValidationError as exc:
        messages.error(request, " ".join(exc.messages))
    else:
        text = REVOKED if grant.state == grant.State.REVOKED else REVOKE_PENDING
        messages.success(request, text.format(image=grant.share.source_image_name, account=grant.grantee_account_id))
    return redirect("transfers:grant-list", team_id=access.team.public_id)
