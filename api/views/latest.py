"""A family's latest copy in each account (read only): the same answer as the family's latest page
and as ReadImages with the latest tag in each account."""

from drf_spectacular.utils import extend_schema
from rest_framework.response import Response

from api.serializers.latest import FamilyLatestOut
from api.views.base import TeamAPIView
from distribution.models import LATEST_TAG
from distribution.selectors import latest as selectors


class FamilyLatest(TeamAPIView):
    @extend_schema(operation_id="families_latest_retrieve", responses=FamilyLatestOut)
    def get(self, request, family_id):
        """Per account, the image that carries the family's latest tag."""
        family = selectors.family_get_for_latest(access=self.access, public_id=family_id)
        rows = list(selectors.latest_per_account(team=self.access.team, family=family))
        return Response(FamilyLatestOut({"family": family, "tag_filter": f"{LATEST_TAG}={family.name}",
                                         "accounts": rows}).data)
