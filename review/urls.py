from django.urls import path

from review import views

app_name = "audit"

T = "t/<uuid:team_id>/audit/"
SITE = "audit/"

urlpatterns = [
    path(T, views.event_list, name="event-list"),
    path(T + "events/<uuid:event_id>/", views.event_detail, name="event-detail"),
    path(T + "export/", views.event_download, name="event-download"),
    path(SITE, views.site_event_list, name="site-event-list"),
    path(SITE + "events/<uuid:event_id>/", views.site_event_detail, name="site-event-detail"),
    path(SITE + "export/", views.site_event_download, name="site-event-download"),
]
