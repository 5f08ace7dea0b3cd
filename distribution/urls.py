"""Distribution pages: under the team's URL, like the rest of the portal."""

from django.urls import path  # noqa: F401 - each part adds its routes below

app_name = "distribution"

T = "t/<uuid:team_id>/distribution/"

urlpatterns = []
