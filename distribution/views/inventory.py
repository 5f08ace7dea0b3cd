"""The inventory's pages: the team's copies (in its accounts, or made by its shares in other teams'
accounts), with filters, keyset pages and a streamed CSV export. Thin: parse, read, render."""

import csv
import itertools
from urllib.parse import urlencode

from django import forms
from django.conf import settings
from django.http import StreamingHttpResponse
from django.shortcuts import render
from django.utils import timezone
from django.views.decorators.http import require_GET

from accounts.decorators import team_view
from audit.download_format import escape_cell
from distribution.models import InventoryEntry
from distribution.selectors import inventory as selectors

YES_NO = [("", "Any"), ("yes", "Yes"), ("no", "No")]
CSV_CHUNK = 2000


class InventoryFilterForm(forms.Form):
    scope = forms.ChoiceField(choices=[("mine", "In our accounts"), ("outgoing", "Made by our shares")],
                              required=False)
    family = forms.UUIDField(required=False)
    account = forms.UUIDField(required=False)
    state = forms.ChoiceField(choices=[("", "Any"), *InventoryEntry.CloudState.choices], required=False)
    behind = forms.ChoiceField(choices=YES_NO, required=False, label="Behind the latest version")
    orphan = forms.ChoiceField(choices=YES_NO, required=False, label="Orphan")
    after = forms.CharField(required=False, max_length=64)

    def filters(self) -> selectors.Filters:
        data = self.cleaned_data if self.is_valid() else {}
        yes_no = {"yes": True, "no": False}
        return selectors.Filters(scope=data.get("scope") or "mine", family=data.get("family"),
                                 account=data.get("account"), state=data.get("state") or "",
                                 behind=yes_no.get(data.get("behind") or ""),
                                 orphan=yes_no.get(data.get("orphan") or ""))


def _query(form, **changes) -> str:
    """The filters as a query string (for the next page and the export links)."""
    data = form.cleaned_data if form.is_valid() else {}
    params = {key: str(value) for key, value in data.items() if value not in (None, "") and key != "after"}
    params.update({key: value for key, value in changes.items() if value})
    return urlencode(params)


@team_view()
@require_GET
def inventory_list(request, access):
    form = InventoryFilterForm(request.GET or None)
    filters = form.filters()
    cursor = form.cleaned_data.get("after", "") if form.is_valid() else ""
    page = selectors.inventory_page(team=access.team, filters=filters, cursor=cursor)
    return render(request, "distribution/inventory_list.html", {
        "form": form, "filters": filters, "page": page,
        "choices": selectors.filter_choices(team=access.team, scope=filters.scope),
        "checks": selectors.checks_for_team(team=access.team) if filters.scope == "mine" else [],
        "filtered": any((filters.family, filters.account, filters.state, filters.behind is not None,
                         filters.orphan is not None)),
        "query": _query(form), "next_query": _query(form, after=page.next_cursor), "refresh_hint": _every()})


def _every() -> str:
    seconds = int(settings.OMIPORTAL_INVENTORY_REFRESH_SECONDS)
    if seconds % 3600 == 0:
        return "hour" if seconds == 3600 else f"{seconds // 3600} hours"
    return f"{max(1, seconds // 60)} minutes"


def _csv_lines(rows):
    sink = _Echo()
    writer = csv.writer(sink, lineterminator="\r\n")
    yield writer.writerow(selectors.CSV_COLUMNS)
    rows = iter(rows)
    while chunk := list(itertools.islice(rows, CSV_CHUNK)):
        yield "".join(writer.writerow([_cell(value) for value in row]) for row in chunk)


class _Echo:
    def write(self, text):
        return text


def _cell(value):
    if value is None:
        return ""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if hasattr(value, "isoformat"):
        return value.isoformat()
    return escape_cell(str(value))


@team_view()
@require_GET
def inventory_export(request, access):
    """Every copy the filters select, as CSV, streamed (no page)."""
    form = InventoryFilterForm(request.GET or None)
    filters = form.filters()
    rows = selectors.inventory_csv_rows(team=access.team, filters=filters)
    response = StreamingHttpResponse(_csv_lines(rows), content_type="text/csv; charset=utf-8")
    stamp = timezone.now().strftime("%Y%m%d-%H%M%S")
    response["Content-Disposition"] = f'attachment; filename="inventory-{filters.scope}-{stamp}.csv"'
    return response


