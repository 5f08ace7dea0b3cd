from django.urls import path

from accounts import views
from accounts.twofactor import views as twofactor_views

app_name = "accounts"

urlpatterns = [
    path("", views.home, name="home"),
    path("teams/", views.team_list, name="team-list"),
    path("two-factor/", twofactor_views.twofactor, name="twofactor"),
    path("two-factor/confirm/", twofactor_views.twofactor_confirm, name="twofactor-confirm"),
    path("two-factor/verify/", twofactor_views.twofactor_verify, name="twofactor-verify"),
    path("two-factor/remove/", twofactor_views.twofactor_remove, name="twofactor-remove"),
    path("t/<uuid:team_id>/settings/", views.team_settings, name="team-settings"),
    path("t/<uuid:team_id>/members/", views.member_list, name="member-list"),
    path("t/<uuid:team_id>/members/<uuid:membership_id>/role/", views.member_role, name="member-role"),
    path("t/<uuid:team_id>/members/<uuid:membership_id>/remove/", views.member_remove, name="member-remove"),
    path("t/<uuid:team_id>/members/<uuid:membership_id>/reinvite/", views.member_reinvite, name="member-reinvite"),
    path("t/<uuid:team_id>/accounts/", views.account_list, name="account-list"),
    path("t/<uuid:team_id>/accounts/new/", views.account_create, name="account-create"),
    path("t/<uuid:team_id>/accounts/<uuid:account_id>/edit/", views.account_edit, name="account-edit"),
    path("t/<uuid:team_id>/accounts/<uuid:account_id>/validate/", views.account_validate, name="account-validate"),
    path("t/<uuid:team_id>/accounts/<uuid:account_id>/create-bucket/", views.account_create_bucket,
         name="account-create-bucket"),
    path("t/<uuid:team_id>/accounts/<uuid:account_id>/confirm-ownership/", views.account_confirm_ownership,
         name="account-confirm-ownership"),
    path("t/<uuid:team_id>/accounts/<uuid:account_id>/delete/", views.account_delete, name="account-delete"),
]
