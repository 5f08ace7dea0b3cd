"""The team's shares: its outgoing list, asking for a copy, one share with its progress, and the
images an account may share. The same pieces as the pages (transfers.views.shares): the share
form validates, ``share_request`` decides, the selectors say what this team may see."""

from django.conf import settings
from django_ratelimit.core import get_usage
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework.response import Response

import outscale
from accounts.access import deny_access
from accounts.roles import Capability
from api.idempotency import idempotent
from api.pagination import NewestShares
from api.problems import Problem, problem_response
from api.schema_responses import created_headers
from api.serializers.shares import (
    ImageListOut,
    ImageOut,
    ShareActionOut,
    ShareListQuery,
    ShareListRecipientsOut,
    ShareOut,
    ShareRequestIn,
    share_out,
)
from api.views.answers import absolute, answered, form_problem
from api.views.base import TeamAPIView
from transfers import selectors
from transfers.forms import EXTERNAL_ROWS, ShareRequestForm
from transfers.models import Share
from transfers.rate_limits import IMAGE_LIST, RATE_LIMITED
from transfers.services import copy_facts
from transfers.services import requests as share_requests
from transfers.services.images import shareable_images_list
from transfers.views.shares import DESCRIPTION_CUT, SHARE_REQUESTED, SHARE_STARTED

TOO_MANY_EXTERNALS = f"At most {EXTERNAL_ROWS} external accounts per request."
# The form's names for what the API calls externals[n].
_FORM_NAMES = {f"external_{part}_{n}": f"externals[{n - 1}].{field}" for n in range(1, EXTERNAL_ROWS + 1)
               for part, field in (("account", "account_id"), ("region", "region"), ("oos_user", "oos_user_id"))}


def _image_list_refused(request, access):
    """The share form's per-person limit on image lists (transfers.rate_limits), counted together
    with the pages: each list opens the account's keys and spends its OUTSCALE quota. A 429, and
    one ``access.denied`` per person and window, as on the page."""
    rate = settings.OMIPORTAL_IMAGE_LIST_RATE
    usage = get_usage(request._request, group=f"omiportal.{IMAGE_LIST}", key="user", rate=rate, increment=True)
    if usage is None or not usage["should_limit"]:
        return None
    seconds = max(1, usage["time_left"])
    if usage["count"] == usage["limit"] + 1:
        deny_access(user=access.user, team=access.team, reason="rate_limited",
                    details={"limit": IMAGE_LIST, "rate": rate, "path": request.path[:500]})
    return problem_response(status_code=429, code="rate_limited", headers={"Retry-After": str(seconds)},
                            detail=RATE_LIMITED.format(what="image lists", rate=rate, seconds=seconds))


def _form_data(body: dict) -> dict:
    """The JSON body as the share form's fields (``transfers.forms.ShareRequestForm``)."""
    externals = body["externals"]
    if len(externals) > EXTERNAL_ROWS:
        raise Problem(status_code=400, code="validation_error", detail=TOO_MANY_EXTERNALS,
                      errors={"externals": [TOO_MANY_EXTERNALS]})
    data = {"image_id": body["image_id"], "recipients": [str(key) for key in body["recipients"]],
            "copy_name": body["copy_name"], "description": body["description"], "reason": body["reason"],
            "licence_confirmed": body["licence_confirmed"], "launch_permission_only": body["launch_permission_only"]}
    for n, external in enumerate(externals, start=1):
        data |= {f"external_account_{n}": external["account_id"], f"external_region_{n}": external["region"],
                 f"external_oos_user_{n}": external["oos_user_id"]}
    return data


class ShareList(TeamAPIView):
    def initial(self, request, *args, **kwargs):
        self.capability = Capability.REQUEST_SHARE if request.method == "POST" else Capability.VIEW
        super().initial(request, *args, **kwargs)

    @extend_schema(operation_id="shares_list", responses=ShareListRecipientsOut(many=True),
                   parameters=[OpenApiParameter("state", str, enum=["", *Share.State.values],
                                                description="Only the shares in this state.")])
    def get(self, request):
        query = ShareListQuery(data=request.query_params)
        query.is_valid(raise_exception=True)
        # The page's list joins only what the page shows; the API's item also names the team and the decider.
        shares = selectors.share_list_for_team(team=self.access.team, state=query.validated_data.get("state", "")) \
            .select_related("team", "decided_by")
        paginator = NewestShares()
        page = paginator.paginate_queryset(shares, request, view=self)
        return paginator.get_paginated_response(ShareListRecipientsOut(page, many=True).data)

    @extend_schema(operation_id="shares_create", request=ShareRequestIn, responses={201: ShareActionOut},
                   parameters=created_headers())
    @idempotent
    @answered
    def post(self, request):
        body = ShareRequestIn(data=request.data)
        body.is_valid(raise_exception=True)
        data = body.validated_data
        access = self.access
        source = selectors.source_account_get_for_team(access=access, public_id=data["source_account"])
        refused = _image_list_refused(request, access)
        if refused:
            return refused
        images = shareable_images_list(account=source)
        if images.error:
            raise Problem(status_code=502, code="cloud_error", detail=images.error,
                          title="OUTSCALE refused or did not answer")
        form = ShareRequestForm(_form_data(data), images=images.images, source=source,
                                recipient_accounts=selectors.recipient_choices_for_share(team=access.team,
                                                                                         source=source))
        if not form.is_valid():
            raise form_problem(form, _FORM_NAMES)
        clean = form.cleaned_data
        share = share_requests.share_request(
            access=access, source_account=source, image_id=clean["image_id"], accounts=clean["accounts"],
            externals=clean["externals"], copy_name=clean["copy_name"], description=clean["description"],
            reason=clean["reason"], licence_confirmed=clean["licence_confirmed"],
            launch_permission_only=clean["launch_permission_only"])
        text = SHARE_REQUESTED if share.state == Share.State.REQUESTED else SHARE_STARTED
        warnings = []
        if copy_facts.description_is_cut(share.description):
            warnings.append(DESCRIPTION_CUT.format(room=outscale.DESCRIPTION_ROOM,
                                                   kept=copy_facts.copy_description(share)))
        share = selectors.share_get_for_source_team(access=access, public_id=share.public_id)  # as a GET reads it
        return Response(share_out(access=access, share=share, message=text.format(image=share.source_image_name),
                                  warnings=warnings),
                        status=201, headers={"Location": absolute(request, "api:share-detail",
                                                                  share_id=share.public_id)})


class ShareDetail(TeamAPIView):
    @extend_schema(operation_id="shares_retrieve", responses=ShareOut)
    def get(self, request, share_id):
        share = selectors.share_get_for_user(access=self.access, public_id=share_id)
        return Response(share_out(access=self.access, share=share))


class AccountImages(TeamAPIView):
    """What the share form lists for an account: read live from OUTSCALE with its keys."""

    capability = Capability.REQUEST_SHARE

    @extend_schema(operation_id="accounts_images_retrieve", responses=ImageListOut)
    def get(self, request, account_id):
        account = selectors.source_account_get_for_team(access=self.access, public_id=account_id)
        refused = _image_list_refused(request, self.access)
        if refused:
            return refused
        images = shareable_images_list(account=account)
        return Response({"images": ImageOut(images.images, many=True).data, "error": images.error})
