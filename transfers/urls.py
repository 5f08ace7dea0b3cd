from django.urls import path

from transfers import views

app_name = "transfers"

T = "t/<uuid:team_id>/"
SHARE = T + "shares/<uuid:share_id>/"
RECIPIENT = T + "incoming/<uuid:recipient_id>/"

urlpatterns = [
    path(T, views.dashboard, name="dashboard"),
    path(T + "shares/", views.share_list, name="share-list"),
    path(T + "shares/new/", views.share_new, name="share-new"),
    path(T + "shares/launch-permissions/", views.grant_list, name="grant-list"),
    path(T + "shares/launch-permissions/<uuid:grant_id>/revoke/", views.grant_revoke, name="grant-revoke"),
    path(T + "approvals/", views.approval_list, name="approval-list"),
    path(T + "incoming/", views.inbox, name="inbox"),
    path(T + "incoming/import-link/", views.link_import, name="link-import"),
    path(SHARE, views.share_detail, name="share-detail"),
    path(SHARE + "progress.json", views.share_progress, name="share-progress"),
    path(SHARE + "approve/", views.share_approve, name="share-approve"),
    path(SHARE + "reject/", views.share_reject, name="share-reject"),
    path(SHARE + "cancel/", views.share_cancel, name="share-cancel"),
    path(SHARE + "reexport/", views.share_reexport, name="share-reexport"),
    path(SHARE + "recipients/<uuid:recipient_id>/reveal-link/", views.share_reveal_link, name="share-reveal-link"),
    path(RECIPIENT + "accept/", views.recipient_accept, name="recipient-accept"),
    path(RECIPIENT + "decline/", views.recipient_decline, name="recipient-decline"),
    path(RECIPIENT + "retry/", views.recipient_retry, name="recipient-retry"),
]
