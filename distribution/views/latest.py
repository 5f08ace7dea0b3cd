"""A family's latest copy in each account: the answer the API and ReadImages by tag give too."""

from django.shortcuts import render
from django.views.decorators.http import require_GET

from accounts.decorators import team_view
from distribution.models import FAMILY_TAG, LATEST_TAG
from distribution.selectors import latest as selectors


@team_view()
@require_GET
def family_latest(request, access, family_id):
    family = selectors.family_get_for_latest(access=access, public_id=family_id)
    rows = list(selectors.latest_per_account(team=access.team, family=family))
    return render(request, "distribution/latest_detail.html", {
        "family": family, "rows": rows, "is_source": family.team_id == access.team.pk,
        "latest_filter": f"{LATEST_TAG}={family.name}", "family_tag": FAMILY_TAG})
