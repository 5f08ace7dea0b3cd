"""A team's home page: its accounts, what waits for someone, the latest shares and the weekly chart."""

from django.shortcuts import render
from django.views.decorators.http import require_GET

from accounts import selectors as account_selectors
from accounts.decorators import team_view
from transfers.charts import weekly_chart
from transfers.selectors import copies_per_week, dashboard_for_team


@team_view()
@require_GET
def dashboard(request, access):
    accounts = list(account_selectors.cloud_account_summaries_for_team(team=access.team))
    return render(request, "transfers/dashboard.html", {
        "accounts": accounts,
        "valid_accounts": [a for a in accounts if a.is_valid],
        "role_counts": account_selectors.team_role_counts(team=access.team),
        **dashboard_for_team(access=access),
        "chart": weekly_chart(copies_per_week(team=access.team)),
    })
