"""The team's cloud accounts (read only: keys are managed on the pages)."""

from drf_spectacular.utils import extend_schema
from rest_framework.response import Response

from accounts import selectors
from api.pagination import NewestFirst
from api.serializers.accounts import CloudAccountSerializer
from api.views.base import TeamAPIView


class AccountList(TeamAPIView):
    @extend_schema(operation_id="accounts_list", responses=CloudAccountSerializer(many=True))
    def get(self, request):
        paginator = NewestFirst()
        page = paginator.paginate_queryset(selectors.cloud_account_list_for_team(team=self.access.team), request,
                                           view=self)
        return paginator.get_paginated_response(CloudAccountSerializer(page, many=True).data)


class AccountDetail(TeamAPIView):
    @extend_schema(operation_id="accounts_retrieve", responses=CloudAccountSerializer)
    def get(self, request, account_id):
        account = selectors.cloud_account_get_for_team(access=self.access, public_id=account_id)
        return Response(CloudAccountSerializer(account).data)
