"""/api/v1/: the JSON API, its OpenAPI schema and its reference page."""

from django.urls import path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerSplitView

from api.views import accounts

app_name = "api"

V1 = "api/v1/"

urlpatterns = [
    path(V1 + "schema/", SpectacularAPIView.as_view(api_version="v1"), name="schema"),
    path(V1 + "docs/", SpectacularSwaggerSplitView.as_view(url_name="api:schema"), name="docs"),
    path(V1 + "accounts/", accounts.AccountList.as_view(), name="account-list"),
    path(V1 + "accounts/<uuid:account_id>/", accounts.AccountDetail.as_view(), name="account-detail"),
]
