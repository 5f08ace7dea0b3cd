"""The team's audit trail and the chain's integrity, for team admins, auditors and compliance officers.

The review pages' own pieces, not copies: the filter form (``review.forms.AuditFilterForm``), the
team's scope (``review.selectors.event_list_for_team``) and its keyset pages
(``review.selectors.event_page``). The same query string therefore gives the same events as the
team's trail page, ``before``/``after`` included, and a text or actor search scans the same bounded
window per request. Every read is recorded as ``audit.read`` with the page's details (the token's
``via`` is added by the recorder). A token reads its own team's trail only, a compliance officer's
token included (the site-wide trail stays on the pages).
"""

from datetime import date, timedelta

from django import forms
from django.core.validators import MaxValueValidator
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import exceptions, serializers
from rest_framework.response import Response
from rest_framework.utils.urls import remove_query_param, replace_query_param

from accounts.roles import Capability
from api.serializers.audit import AuditEventPageSerializer, AuditEventSerializer, AuditIntegritySerializer
from api.views.base import TeamAPIView
from audit.integrity import latest_status
from audit.models import AuditEvent
from audit.recorder import AuditTarget, record
from review import selectors
from review.forms import AuditFilterForm
from review.views import _recordable, _trail_target

MAX_PAGE_SIZE = 100
MAX_SEQ = 2**63 - 1  # seq is a bigint, and the audit.read event records the cursor as one
LAST_DAY = date.max - timedelta(days=1)  # date_to's search ends at the next midnight, which must exist
DATE_TOO_LATE = f"Enter a date up to {LAST_DAY.isoformat()}."

_TEXT = OpenApiTypes.STR
FILTERS = [
    OpenApiParameter("actor", _TEXT, description="Email or name contains (2 characters or more)."),
    OpenApiParameter("action", _TEXT, description="Exact (share.approved), or a prefix ending with a dot (share.)."),
    OpenApiParameter("outcome", _TEXT, enum=AuditEvent.Outcome.values),
    OpenApiParameter("target_type", _TEXT, description="Such as transfers.share or accounts.cloudaccount."),
    OpenApiParameter("target_id", _TEXT),
    OpenApiParameter("date_from", OpenApiTypes.DATE, description="UTC day, included."),
    OpenApiParameter("date_to", OpenApiTypes.DATE, description="UTC day, included."),
    OpenApiParameter("q", _TEXT, description="Contains, in the target, the actor's name or the action "
                                             "(2 characters or more)."),
    OpenApiParameter("before", OpenApiTypes.INT, description="Events below this seq (the \"next\" link sets it)."),
    OpenApiParameter("after", OpenApiTypes.INT, description="Events above this seq (the \"previous\" link sets it)."),
    OpenApiParameter("page_size", OpenApiTypes.INT, description=f"1 to {MAX_PAGE_SIZE}; "
                                                                f"{selectors.PAGE_SIZE} as on the page."),
]


class TrailFilterForm(AuditFilterForm):
    """The page's form, with the bounds the page's form lacks (there, a cursor past a bigint or
    date_to 9999-12-31 is a 500): a script finds such values first. To move into AuditFilterForm."""

    def __init__(self, data=None):
        super().__init__(data, site_wide=False)
        for name in ("before", "after"):
            self.fields[name].validators.append(MaxValueValidator(MAX_SEQ))

    def clean_date_to(self):
        day = self.cleaned_data.get("date_to")
        if day is not None and day > LAST_DAY:
            raise forms.ValidationError(DATE_TOO_LATE)
        return day


def _form_errors(form) -> dict:
    return {("non_field_errors" if name == "__all__" else name): list(messages)
            for name, messages in form.errors.items()}


def _page_size(request) -> int:
    raw = request.query_params.get("page_size")
    if raw is None:
        return selectors.PAGE_SIZE
    try:
        return serializers.IntegerField(min_value=1, max_value=MAX_PAGE_SIZE).run_validation(raw)
    except exceptions.ValidationError as exc:
        raise exceptions.ValidationError({"page_size": exc.detail}) from None


def _links(request, page) -> tuple[str | None, str | None]:
    """The page's "Older" and "Newer" links, with every other parameter kept."""
    url = request.build_absolute_uri()
    older = replace_query_param(remove_query_param(url, "after"), "before", page.older) if page.older else None
    newer = (replace_query_param(remove_query_param(url, "before"), "after", page.newer)
             if page.newer is not None else None)
    return older, newer


class AuditEventList(TeamAPIView):
    capability = Capability.VIEW_AUDIT

    @extend_schema(operation_id="audit_events_list", parameters=FILTERS, responses=AuditEventPageSerializer,
                   description="The token's team's audit trail, newest first, with the review page's filters: the "
                               "same query string gives the same events as the team's Audit trail page. Needs "
                               "the admin or auditor role (or a compliance officer's token). Each read is itself "
                               "recorded (audit.read).")
    def get(self, request):
        form = TrailFilterForm(request.query_params)
        if not form.is_valid():  # nothing read, nothing recorded: as the page
            raise exceptions.ValidationError(_form_errors(form))
        size = _page_size(request)
        filters = form.filters()
        cursor = {key: form.cleaned_data[key] for key in ("before", "after") if form.cleaned_data.get(key) is not None}
        team = self.access.team
        page = selectors.event_page(selectors.event_list_for_team(team=team, filters=filters),
                                    bounded=filters.bounded, size=size, window=selectors.SCAN_WINDOW,
                                    **cursor)
        record(action="audit.read", team=team, target=_trail_target(self.access),
               details={"view": "list", "filters": _recordable(filters.as_params()), "cursor": cursor})
        older, newer = _links(request, page)
        return Response({"next": older, "previous": newer, "searched": list(page.searched) if page.searched else None,
                         "results": AuditEventSerializer(page.events, many=True).data})


class AuditEventDetail(TeamAPIView):
    capability = Capability.VIEW_AUDIT

    @extend_schema(operation_id="audit_events_retrieve", responses=AuditEventSerializer,
                   description="One event of the token's team's trail (another team's is a 404). Recorded as "
                               "audit.read.")
    def get(self, request, event_id):
        event = selectors.event_get_for_team(access=self.access, public_id=event_id)
        record(action="audit.read", team=self.access.team,
               target=AuditTarget("audit.auditevent", str(event.public_id), f"#{event.seq} {event.action}"),
               details={"view": "event", "seq": event.seq})
        return Response(AuditEventSerializer(event).data)


class AuditIntegrity(TeamAPIView):
    """Not recorded: it tells what the last verification found, no event of any team."""

    capability = Capability.VIEW_AUDIT

    @extend_schema(operation_id="audit_integrity_retrieve", responses=AuditIntegritySerializer,
                   description="What the last verification of the hash chain and its signed checkpoints found "
                               "(audit_verify or the periodic job), as the Audit trail page shows it.")
    def get(self, request):
        return Response(AuditIntegritySerializer(latest_status()).data)
