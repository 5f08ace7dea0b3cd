"""/api/v1/: the JSON API, its OpenAPI schema and its reference page."""

from django.urls import path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerSplitView

from api.views import accounts, decisions, incoming, latest, shares, token_pages
from api.views import audit as audit_views

app_name = "api"

V1 = "api/v1/"

urlpatterns = [
    path(V1 + "schema/", SpectacularAPIView.as_view(api_version="v1"), name="schema"),
    path(V1 + "docs/", SpectacularSwaggerSplitView.as_view(url_name="api:schema"), name="docs"),
    path(V1 + "accounts/", accounts.AccountList.as_view(), name="account-list"),
    path(V1 + "accounts/<uuid:account_id>/", accounts.AccountDetail.as_view(), name="account-detail"),
    path(V1 + "accounts/<uuid:account_id>/images/", shares.AccountImages.as_view(), name="account-images"),
    path(V1 + "shares/", shares.ShareList.as_view(), name="share-list"),
    path(V1 + "shares/<uuid:share_id>/", shares.ShareDetail.as_view(), name="share-detail"),
    path(V1 + "shares/<uuid:share_id>/approve/", decisions.ShareApprove.as_view(), name="share-approve"),
    path(V1 + "shares/<uuid:share_id>/reject/", decisions.ShareReject.as_view(), name="share-reject"),
    path(V1 + "shares/<uuid:share_id>/cancel/", decisions.ShareCancel.as_view(), name="share-cancel"),
    path(V1 + "shares/<uuid:share_id>/reexport/", decisions.ShareReexport.as_view(), name="share-reexport"),
    path(V1 + "incoming/", incoming.IncomingList.as_view(), name="incoming-list"),
    path(V1 + "incoming/<uuid:recipient_id>/", incoming.IncomingDetail.as_view(), name="incoming-detail"),
    path(V1 + "incoming/<uuid:recipient_id>/accept/", incoming.IncomingAccept.as_view(), name="incoming-accept"),
    path(V1 + "incoming/<uuid:recipient_id>/decline/", incoming.IncomingDecline.as_view(), name="incoming-decline"),
    path(V1 + "incoming/<uuid:recipient_id>/retry/", incoming.IncomingRetry.as_view(), name="incoming-retry"),
    path(V1 + "link-imports/", incoming.LinkImportCreate.as_view(), name="link-import-create"),
    path(V1 + "families/<uuid:family_id>/latest/", latest.FamilyLatest.as_view(), name="family-latest"),
    path(V1 + "audit/events/", audit_views.AuditEventList.as_view(), name="audit-event-list"),
    path(V1 + "audit/events/<uuid:event_id>/", audit_views.AuditEventDetail.as_view(), name="audit-event-detail"),
    path(V1 + "audit/integrity/", audit_views.AuditIntegrity.as_view(), name="audit-integrity"),
    # The token pages (server-rendered, signed-in people; not part of /api/v1/).
    path("t/<uuid:team_id>/api-tokens/", token_pages.token_list, name="token-list"),
    path("t/<uuid:team_id>/api-tokens/new/", token_pages.token_create, name="token-create"),
    path("t/<uuid:team_id>/api-tokens/<uuid:token_id>/revoke/", token_pages.token_revoke, name="token-revoke"),
]
