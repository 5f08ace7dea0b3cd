from django.urls import path

from webhooks import views

app_name = "webhooks"

T = "t/<uuid:team_id>/webhooks/"
ENDPOINT = T + "<uuid:endpoint_id>/"

urlpatterns = [
    path(T, views.endpoint_list, name="endpoint-list"),
    path(T + "new/", views.endpoint_create, name="endpoint-create"),
    path(ENDPOINT, views.endpoint_detail, name="endpoint-detail"),
    path(ENDPOINT + "edit/", views.endpoint_edit, name="endpoint-edit"),
    path(ENDPOINT + "delete/", views.endpoint_delete, name="endpoint-delete"),
    path(ENDPOINT + "rotate-secret/", views.endpoint_rotate, name="endpoint-rotate"),
    path(ENDPOINT + "deliveries/<uuid:delivery_id>/redeliver/", views.delivery_redeliver,
         name="delivery-redeliver"),
]
