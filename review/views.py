"""The audit trail's review pages: a team's trail, the site-wide trail, one event, exports.

Read-only: there is no page that changes an event. Every read is itself recorded (``audit.read``,
``audit.exported``) before the response is rendered or streamed.
"""

import json
from functools import wraps
from urllib.parse import urlencode

from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.shortcuts import render
from django.urls import reverse
from django.utils.text import slugify
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET

from accounts.access import deny_access, refusals_recorded
from accounts.decorators import team_view
from accounts.roles import Capability
from accounts.selectors import TeamAccess
from audit import guard
from audit.errors import AuditError
from audit.integrity import latest_status
from audit.recorder import AuditTarget, record
from review import downloads, selectors
from review.forms import AuditFilterForm
from transfers.selectors import share_timeline_recent

NOT_COMPLIANCE = "Only compliance officers read every team's audit trail."
BAD_FORMAT = "Export as csv or jsonl."
WITHHELD = "(withheld: looked like a secret)"
VERIFY_HINT = "python manage.py audit_verify"


def compliance_view(view):
    """Site-wide audit pages: compliance officers only; anyone else gets a 403, recorded."""

    @login_required
    @wraps(view)
    def wrapped(request, *args, **kwargs):
        if not request.user.is_compliance_officer:
            deny_access(user=request.user, team=None, reason="not_compliance_officer",
                        target=AuditTarget("audit.trail", "all", "Audit trail of every team"),
                        details={"needs": "compliance"})
            raise PermissionDenied(NOT_COMPLIANCE)
        with refusals_recorded():
            return view(request, *args, **kwargs)

    return wrapped


# --- Helpers -----------------------------------------------------------------------------------------------


def _integrity():
    """What the last verification run found (owned by the checkpoint work; imported lazily)."""
    return latest_status()


def recordable(params: dict) -> dict:
    """Filters as typed by the reviewer, minus anything the audit guard would refuse to store."""
    out = {}
    for key, value in params.items():
        try:
            guard.check_details({key: value})
            guard.check_strings([(key, value)])
        except AuditError:
            value = WITHHELD
        out[key] = value
    return out


def trail_target(access: TeamAccess | None) -> AuditTarget:
    if access is None:
        return AuditTarget("audit.trail", "all", "Audit trail of every team")
    return AuditTarget("audit.trail", str(access.team.public_id), f"Audit trail of {access.team.name}")


def _scope_qs(access: TeamAccess | None, filters: selectors.AuditFilters):
    if access is None:
        return selectors.event_list_for_site(filters=filters)
    return selectors.event_list_for_team(team=access.team, filters=filters)


def _shown(value) -> str:
    """One line per value: text as is, anything else as JSON (control characters escaped by the
    template's ``safe_text``)."""
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, sort_keys=True)


def _filter_form(request, access):
    return AuditFilterForm(request.GET, site_wide=access is None)


# --- Pages ---------------------------------------------------------------------------------------------------


def _event_list(request, access: TeamAccess | None):
    form = _filter_form(request, access)
    context = {"form": form, "site_wide": access is None, "integrity": _integrity(), "verify_hint": VERIFY_HINT}
    if not form.is_valid():
        return render(request, "audit/event_list.html", context, status=400)
    filters = form.filters()
    cursor = {key: form.cleaned_data[key] for key in ("before", "after") if form.cleaned_data.get(key) is not None}
    page = selectors.event_page(_scope_qs(access, filters), bounded=filters.bounded, **cursor)
    params = filters.as_params()
    record(action="audit.read", team=access.team if access else filters.team, target=trail_target(access),
           details={"view": "list", "filters": recordable(params), "cursor": cursor})
    return render(request, "audit/event_list.html", {**context, "page": page, "filters": filters,
                                                     "params": params})


def _event_detail(request, access: TeamAccess | None, event):
    record(action="audit.read", team=access.team if access else event.team,
           target=AuditTarget("audit.auditevent", str(event.public_id), f"#{event.seq} {event.action}"),
           details={"view": "event", "seq": event.seq})
    trail = reverse("audit:event-list", kwargs={"team_id": access.team.public_id}) if access \
        else reverse("audit:site-event-list")
    shares = []
    for share in selectors.related_shares(event=event, team=access.team if access else None):
        viewer = access or TeamAccess(user=request.user, team=share.team, membership=None)
        shares.append({
            "share": share,
            # Capped: a share's history can be long; the filtered trail below has all of it.
            "timeline": share_timeline_recent(access=viewer, share=share),
            "trail_url": f"{trail}?{urlencode({'target_type': 'transfers.share', 'target_id': share.public_id})}",
            "link_team": viewer.team.public_id if viewer.can(Capability.VIEW) else None,
        })
    return render(request, "audit/event_detail.html", {
        "event": event,
        "site_wide": access is None,
        "changes": [(c.field, _shown(c.before), _shown(c.after)) for c in selectors.event_changes(event)],
        "other_details": [(key, _shown(value)) for key, value in selectors.event_other_details(event)],
        "shares": shares,
    })


def _event_download(request, access: TeamAccess | None):
    form = _filter_form(request, access)
    fmt = request.GET.get("format", "csv")
    if fmt not in downloads.FORMATS:
        form.is_valid()
        form.add_error(None, BAD_FORMAT)
    if not form.is_valid():
        return render(request, "audit/event_list.html", {
            "form": form, "site_wide": access is None, "integrity": _integrity(), "verify_hint": VERIFY_HINT,
        }, status=400)
    filters = form.filters()
    head = selectors.chain_head()  # read first: the export stops here, whatever is appended meanwhile
    params = filters.as_params()
    team = access.team if access else filters.team
    scope = (slugify(team.name) or str(team.public_id)) if team else "all"
    record(action="audit.exported", team=team, target=trail_target(access),
           details={"format": fmt, "filters": recordable(params), "head_seq": head[0]})
    return downloads.download_response(_scope_qs(access, filters), fmt=fmt, head=head, scope=scope)


# --- A team's trail ------------------------------------------------------------------------------------------


@team_view(Capability.VIEW_AUDIT)
@require_GET
@never_cache
def event_list(request, access):
    return _event_list(request, access)


@team_view(Capability.VIEW_AUDIT)
@require_GET
@never_cache
def event_detail(request, access, event_id):
    return _event_detail(request, access, selectors.event_get_for_team(access=access, public_id=event_id))


@team_view(Capability.VIEW_AUDIT)
@require_GET
def event_download(request, access):
    return _event_download(request, access)


# --- Every team's trail (compliance officers) ----------------------------------------------------------------


@compliance_view
@require_GET
@never_cache
def site_event_list(request):
    return _event_list(request, None)


@compliance_view
@require_GET
@never_cache
def site_event_detail(request, event_id):
    return _event_detail(request, None, selectors.event_get_for_site(user=request.user, public_id=event_id))


@compliance_view
@require_GET
def site_event_download(request):
    return _event_download(request, None)
