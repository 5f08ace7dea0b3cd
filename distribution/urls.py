"""Distribution pages: under the team's URL, like the rest of the portal."""

from django.urls import path  # noqa: F401 - each part adds its routes below

from distribution.views import approvals as approval_views
from distribution.views import families, groups, subscriptions
from distribution.views import inventory as inventory_views
from distribution.views import latest as latest_views
from distribution.views import retention as retention_views

app_name = "distribution"

T = "t/<uuid:team_id>/distribution/"

urlpatterns = []

GROUP = T + "groups/<uuid:group_id>/"

# Recipient groups: the group's team (groups/...), the account's team (group-memberships/...).
urlpatterns += [
    path(T + "groups/", groups.group_list, name="group-list"),
    path(T + "groups/new/", groups.group_create, name="group-create"),
    path(GROUP, groups.group_detail, name="group-detail"),
    path(GROUP + "edit/", groups.group_edit, name="group-edit"),
    path(GROUP + "delete/", groups.group_delete, name="group-delete"),
    path(GROUP + "invite/", groups.group_invite, name="group-invite"),
    path(GROUP + "members/<uuid:member_id>/remove/", groups.group_member_remove, name="group-member-remove"),
    path(T + "group-memberships/<uuid:member_id>/accept/", groups.group_membership_accept,
         name="group-membership-accept"),
    path(T + "group-memberships/<uuid:member_id>/decline/", groups.group_membership_decline,
         name="group-membership-decline"),
    path(T + "group-memberships/<uuid:member_id>/leave/", groups.group_membership_leave,
         name="group-membership-leave"),
]


# The inventory of copies (the team's, or its shares' in other teams' accounts) and a family's latest copy per account.
urlpatterns += [
    path(T + "inventory/", inventory_views.inventory_list, name="inventory"),
    path(T + "inventory/export.csv", inventory_views.inventory_export, name="inventory-export"),
    path(T + "families/<uuid:family_id>/latest/", latest_views.family_latest, name="family-latest"),
]

# Retention: the recipient team's rules and runs per family, and the source team's end-of-life dates.
RETENTION = T + "retention/"
urlpatterns += [
    path(RETENTION, retention_views.retention_list, name="retention-list"),
    path(RETENTION + "<uuid:family_id>/", retention_views.retention_family, name="retention-family"),
    path(RETENTION + "<uuid:family_id>/rule/", retention_views.retention_rule, name="retention-rule"),
    path(RETENTION + "<uuid:family_id>/propose/", retention_views.retention_propose, name="retention-propose"),
    path(RETENTION + "runs/<uuid:run_id>/", retention_views.retention_run, name="retention-run"),
    path(RETENTION + "runs/<uuid:run_id>/confirm/", retention_views.retention_confirm, name="retention-confirm"),
    path(RETENTION + "runs/<uuid:run_id>/cancel/", retention_views.retention_cancel, name="retention-cancel"),
    path(RETENTION + "end-of-life/<uuid:family_id>/", retention_views.retention_end_of_life,
         name="retention-end-of-life"),
    path(RETENTION + "end-of-life/versions/<uuid:version_id>/", retention_views.retention_end_of_life_set,
         name="retention-end-of-life-set"),
]

# Standing approvals of a family (the source team's): the list, signing, stopping.
urlpatterns += [
    path(T + "families/<uuid:family_id>/approvals/", approval_views.approval_list, name="approval-list"),
    path(T + "families/<uuid:family_id>/approvals/sign/", approval_views.approval_sign, name="approval-sign"),
    path(T + "approvals/<uuid:approval_id>/stop/", approval_views.approval_stop, name="approval-stop"),
]

# Families (the source team's) and subscriptions (the recipient team's), and the landing page.
FAMILY = T + "families/<uuid:family_id>/"
SUBSCRIPTION = T + "subscriptions/<uuid:subscription_id>/"
urlpatterns += [
    path(T, families.distribution_home, name="home"),
    path(T + "families/new/", families.family_create, name="family-create"),
    path(FAMILY, families.family_detail, name="family-detail"),
    path(FAMILY + "archive/", families.family_archive, name="family-archive"),
    path(FAMILY + "scan/", families.family_scan, name="family-scan"),
    path(T + "directory/", subscriptions.family_directory, name="family-directory"),
    path(T + "subscriptions/new/", subscriptions.subscription_create, name="subscription-create"),
    path(SUBSCRIPTION, subscriptions.subscription_detail, name="subscription-detail"),
    path(SUBSCRIPTION + "edit/", subscriptions.subscription_edit, name="subscription-edit"),
    path(SUBSCRIPTION + "end/", subscriptions.subscription_end, name="subscription-end"),
]
