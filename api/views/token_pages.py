"""The API token pages: the team's tokens, making one (shown once), revoking one.

A new token exists in plain text only in the response that creates it: not in a URL, not in the
session (no message carries it), not in a log (``sensitive_variables``), not in any cache
(``secret_page``: never cached, no referrer).
"""

from django.contrib import messages
from django.core.exceptions import PermissionDenied, ValidationError
from django.core.paginator import Paginator
from django.shortcuts import redirect, render
from django.utils import timezone
from django.views.decorators.debug import sensitive_variables
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from accounts.access import require
from accounts.decorators import secret_page, team_view
from accounts.roles import Capability
from api import tokens
from api.forms import TokenCreateForm
from api.models import ApiToken

PER_PAGE = 50
# The hidden "once" values of forms that already made a token (a reload posts the form again).
ONCE_SESSION_KEY = "api_token_forms_used"
ONCE_KEPT = 20
ALREADY_SHOWN = ("That form already made a token, which is not shown again. If you did not copy it, revoke it "
                 "and make a new one.")
REVOKED = "Token {name} ({prefix}…) revoked: it no longer works."


def _form(access, data=None) -> TokenCreateForm:
    kinds = [ApiToken.Kind.PERSONAL] + ([ApiToken.Kind.SERVICE] if access.can_manage else [])
    return TokenCreateForm(data, kinds=kinds, roles=tokens.roles_offered(access=access, kind=ApiToken.Kind.PERSONAL),
                           service_roles=tokens.roles_offered(access=access, kind=ApiToken.Kind.SERVICE))


def _list_page(request, access, form, *, status=200):
    page = Paginator(tokens.token_list_for_viewer(access=access), PER_PAGE).get_page(request.GET.get("page"))
    now = timezone.now()
    rows = []
    for token in page.object_list:
        state = tokens.token_state(token, now)
        rows.append({"token": token, "state": state,
                     "can_revoke": state == "active" and tokens.may_revoke(access=access, token=token)})
    return render(request, "api/token_list.html", {
        "rows": rows, "page": page, "form": form, "prefix": tokens.PREFIX,
    }, status=status)


@team_view()
@require_GET
def token_list(request, access):
    return _list_page(request, access, _form(access))


@secret_page
@sensitive_variables("raw")
@team_view()
@require_POST
def token_create(request, access):
    form = _form(access, request.POST)
    if form.is_valid():
        data = form.cleaned_data
        used = request.session.get(ONCE_SESSION_KEY, [])
        if data["once"] in used:
            messages.info(request, ALREADY_SHOWN)
            return redirect("api:token-list", team_id=access.team.public_id)
        try:
            token, raw = tokens.token_create(access=access, kind=data["kind"], name=data["name"], role=data["role"],
                                             days=data["days"])
        except ValidationError as exc:
            for message in exc.messages:
                form.add_error(None, message)
        else:
            request.session[ONCE_SESSION_KEY] = (used + [data["once"]])[-ONCE_KEPT:]
            return render(request, "api/token_created.html", {
                "token": token, "raw": raw, "prefix": tokens.PREFIX,
                "example_url": request.build_absolute_uri("/api/v1/accounts/"),
            })
    return _list_page(request, access, form, status=400)


@team_view()
@require_http_methods(["GET", "POST"])
def token_revoke(request, access, token_id):
    """GET asks to confirm; POST revokes (the token's maker, or an admin of the team)."""
    token = tokens.token_get_for_viewer(access=access, public_id=token_id)
    if not tokens.may_revoke(access=access, token=token):
        require(access, Capability.MANAGE_TEAM, target=token)  # records the refusal, raises 403
        raise PermissionDenied(tokens.NOT_YOURS)
    if request.method == "POST":
        try:
            tokens.token_revoke(access=access, token=token)
        except ValidationError as exc:
            messages.info(request, " ".join(exc.messages))
        else:
            messages.success(request, REVOKED.format(name=token.name, prefix=f"{tokens.PREFIX}{token.prefix}"))
        return redirect("api:token-list", team_id=access.team.public_id)
    return render(request, "api/token_confirm_revoke.html", {
        "token": token, "state": tokens.token_state(token), "prefix": tokens.PREFIX,
    })
