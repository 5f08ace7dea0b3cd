"""The team's audit trail and the chain's integrity, for team admins, auditors and compliance officers.

The review pages' own pieces, not copies: the filter form (``review.forms.AuditFilterForm``), the
team's scope (``review.selectors.event_list_for_team``) and its keyset pages
(``review.selectors.event_page``). The same query string therefore gives the same events as the
team's trail page, ``before``/``after`` included, and a text or actor search scans the same bounded
window per request. Every read is recorded as ``audit.read`` with the page's details (the token's
``via`` is added by the recorder). A token reads its own team's trail only, a compliance officer's
token included (the site-wide trail stays on the pages).
"""

import re
from datetime import date

from django import forms
from django.core.validators import MaxValueValidator, RegexValidator
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import exceptions
from rest_framework.response import Response
from rest_framework.utils.urls import remove_query_param, replace_query_param

from accounts.roles import Capability
from api.pagination import page_size_from
from api.problems import CONTENT_TYPE, Problem
from api.schema import ProblemSerializer
from api.serializers.audit import AuditEventPageSerializer, AuditEventSerializer, AuditIntegritySerializer
from api.views.base import TeamAPIView
from audit.integrity import latest_status
from audit.recorder import AuditTarget, record
from review import selectors
from review.forms import BOTH_CURSORS, DATES_INVERTED, AuditFilterForm
from review.views import recordable, trail_target

MAX_PAGE_SIZE = 100
MAX_SEQ = 2**63 - 1  # seq is a bigint, and the audit.read event records the cursor as one
DAY_FORMAT = "Enter a date as YYYY-MM-DD."
WHOLE_NUMBER = "Enter a whole number."
_DAY = re.compile(r"\d{4}-\d{2}-\d{2}")
_INTEGER = re.compile(r"\d{1,19}")
TEXT_FIELDS = ("actor", "action", "target_type", "target_id", "q")
# What a request the schema allows can still break: refused as a 422, not as malformed.
RULES = {DATES_INVERTED, BOTH_CURSORS}


class TrailFilterForm(AuditFilterForm):
    """The page's form, exactly as strict as the published schema says (Schemathesis holds it to it).

    - Text is taken as sent: the page trims what a search box adds, a script sends what it means,
      and a length or pattern in the schema is then the form's own. ``filters()`` still trims.
    - Dates are YYYY-MM-DD, and whole numbers only digits (Django also takes 2025-3-1 and 5.0).
    - Cursors fit a bigint, and date_to 9999-12-31 means no end (the day after it does not exist).
      The page's form lacks both bounds (a 500 there): to move into AuditFilterForm.
    """

    def __init__(self, data=None):
        super().__init__(data, site_wide=False)
        for name in TEXT_FIELDS:
            field = self.fields[name]
            field.strip = False
            for validator in [v for v in field.validators if isinstance(v, RegexValidator)]:
                # "$" also matches before a final newline in Python; the schema's pattern does not.
                field.validators.append(RegexValidator(validator.regex.pattern.removesuffix("$") + r"\Z",
                                                       validator.message))
        for name in ("before", "after"):
            self.fields[name].validators.append(MaxValueValidator(MAX_SEQ))

    def _as_sent(self, name, pattern: re.Pattern, message: str, *, empty: bool):
        """The value as sent must match ``pattern`` (or be empty, where the page's own links send it so)."""
        raw = self.data.get(name)
        if raw is not None and not (empty and raw == "") and not pattern.fullmatch(raw):
            raise forms.ValidationError(message)
        return self.cleaned_data.get(name)

    def clean_date_from(self):
        return self._as_sent("date_from", _DAY, DAY_FORMAT, empty=True)

    def clean_date_to(self):
        day = self._as_sent("date_to", _DAY, DAY_FORMAT, empty=True)
        return None if day == date.max else day

    # The page never sends an empty cursor; a script that does has a bug worth hearing about.
    def clean_before(self):
        return self._as_sent("before", _INTEGER, WHOLE_NUMBER, empty=False)

    def clean_after(self):
        return self._as_sent("after", _INTEGER, WHOLE_NUMBER, empty=False)


def _param_schema(name: str) -> dict:
    """A filter's schema, read from the form's field. An empty value means "no filter", as the page's
    filter form sends it, so it is allowed beside the field's own bounds."""
    field = AuditFilterForm.base_fields[name]
    if isinstance(field, forms.IntegerField):
        return {"type": "integer", "minimum": field.min_value, "maximum": MAX_SEQ}
    if isinstance(field, forms.DateField):
        return {"anyOf": [{"type": "string", "format": "date"}, {"type": "string", "maxLength": 0}]}
    if isinstance(field, forms.ChoiceField):
        return {"type": "string", "enum": [value for value, _label in field.choices]}
    schema = {"type": "string", "maxLength": field.max_length}
    patterns = [v.regex.pattern for v in field.validators if isinstance(v, RegexValidator)]
    if field.min_length:
        patterns.append(f"^[\\s\\S]{{{field.min_length},}}$")
    if patterns:
        (pattern,) = patterns
        schema["pattern"] = f"^$|{pattern}"
    return schema


_DESCRIPTIONS = {
    "actor": "Email or name contains.",
    "action": "Exact (share.approved), or a prefix ending with a dot (share.).",
    "outcome": "Empty: any outcome.",
    "target_type": "Such as transfers.share or accounts.cloudaccount.",
    "date_from": "UTC day, included.",
    "date_to": "UTC day, included.",
    "q": "Contains, in the target, the actor's name or the action.",
    "before": "Events below this seq (the \"next\" link sets it).",
    "after": "Events above this seq (the \"previous\" link sets it); not with before.",
}
FILTERS = [
    *(OpenApiParameter(name, _param_schema(name), description=_DESCRIPTIONS.get(name, ""))
      for name in (*AuditFilterForm.FILTER_FIELDS, "before", "after") if name != "team"),
    OpenApiParameter("page_size", {"type": "integer", "minimum": 1, "maximum": MAX_PAGE_SIZE},
                     description=f"{selectors.PAGE_SIZE} by default, as on the page."),
]
REFUSED_422 = {(422, CONTENT_TYPE): OpenApiResponse(
    ProblemSerializer, description="Filters that are each valid but not together: a start date after the end "
                                   "date, or both before and after (code refused, with errors per field).")}


def _form_problem(form) -> exceptions.APIException:
    errors = {("non_field_errors" if name == "__all__" else name): list(messages)
              for name, messages in form.errors.items()}
    messages = [message for field_messages in errors.values() for message in field_messages]
    if set(messages) <= RULES:
        return Problem(status_code=422, code="refused", detail=" ".join(messages), errors=errors,
                       title="The request cannot be carried out")
    return exceptions.ValidationError(errors)


def _links(request, page) -> tuple[str | None, str | None]:
    """The page's "Older" and "Newer" links, with every other parameter kept."""
    url = request.build_absolute_uri()
    older = replace_query_param(remove_query_param(url, "after"), "before", page.older) if page.older else None
    newer = (replace_query_param(remove_query_param(url, "before"), "after", page.newer)
             if page.newer is not None else None)
    return older, newer


class AuditEventList(TeamAPIView):
    capability = Capability.VIEW_AUDIT

    @extend_schema(operation_id="audit_events_list", parameters=FILTERS,
                   responses={200: AuditEventPageSerializer, **REFUSED_422},
                   description="The token's team's audit trail, newest first, with the review page's filters: the "
                               "same query string gives the same events as the team's Audit trail page. Needs "
                               "the admin or auditor role (or a compliance officer's token). Each read is itself "
                               "recorded (audit.read).")
    def get(self, request):
        form = TrailFilterForm(request.query_params)
        if not form.is_valid():  # nothing read, nothing recorded: as the page
            raise _form_problem(form)
        size = page_size_from(request, default=selectors.PAGE_SIZE, maximum=MAX_PAGE_SIZE)
        filters = form.filters()
        cursor = {key: form.cleaned_data[key] for key in ("before", "after") if form.cleaned_data.get(key) is not None}
        team = self.access.team
        page = selectors.event_page(selectors.event_list_for_team(team=team, filters=filters),
                                    bounded=filters.bounded, size=size, window=selectors.SCAN_WINDOW,
                                    **cursor)
        record(action="audit.read", team=team, target=trail_target(self.access),
               details={"view": "list", "filters": recordable(filters.as_params()), "cursor": cursor})
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
