"""The receiving side: the team's inbox, answering an offer, retrying a failed import, and
importing from a pasted link. The same pieces as the pages (transfers.views.incoming).

A pasted link is a bearer secret. It is read from the body into the page's form and handed to the
service, which seals it; it never appears in an answer (the new recipient is shown without it), a
Location, an error (the form's and the link checks' messages name no part of it, and the body's
shape is checked by a serializer whose messages never repeat a value) or a log, and the handler's
locals are hidden from error reports (``sensitive_variables``).
"""

from django.views.decorators.debug import sensitive_variables
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import serializers
from rest_framework.response import Response

from accounts.roles import Capability
from api.idempotency import idempotent
from api.pagination import NewestFirst
from api.schema_responses import created_headers, replay_headers
from api.serializers.incoming import DeclineIn, IncomingActionOut, IncomingOut, LinkImportIn, incoming_out
from api.views.answers import absolute, answered, form_problem
from api.views.base import TeamAPIView
from transfers import selectors
from transfers.forms import DeclineForm, LinkImportForm
from transfers.models import Recipient
from transfers.services import external_links, import_offers
from transfers.views.incoming import ACCEPTED, DECLINED, LINK_IMPORT_STARTED, RETRIED


class IncomingQuery(serializers.Serializer):
    state = serializers.ChoiceField(choices=Recipient.State.choices, required=False, allow_blank=True)


def _name(recipient) -> str:
    return recipient.share.copy_name if recipient.share_id else recipient.image_name


class IncomingList(TeamAPIView):
    @extend_schema(operation_id="incoming_list", responses=IncomingOut(many=True),
                   parameters=[OpenApiParameter("state", str, enum=["", *Recipient.State.values],
                                                description="Only the copies in this state.")])
    def get(self, request):
        query = IncomingQuery(data=request.query_params)
        query.is_valid(raise_exception=True)
        rows = selectors.inbox_for_team(team=self.access.team)
        if query.validated_data.get("state"):
            rows = rows.filter(state=query.validated_data["state"])
        paginator = NewestFirst()
        page = paginator.paginate_queryset(rows, request, view=self)
        return paginator.get_paginated_response(IncomingOut(page, many=True, context={"access": self.access}).data)


class IncomingDetail(TeamAPIView):
    @extend_schema(operation_id="incoming_retrieve", responses=IncomingOut)
    def get(self, request, recipient_id):
        recipient = selectors.recipient_get_for_team(access=self.access, public_id=recipient_id)
        return Response(incoming_out(access=self.access, recipient=recipient))


def _answer_schema(operation_id: str, request=None):
    return extend_schema(operation_id=operation_id, request=request, responses=IncomingActionOut,
                         parameters=replay_headers(200))


class _Answer(TeamAPIView):
    capability = Capability.ACCEPT_SHARE
    done = ""

    def act(self, recipient, body) -> None:
        raise NotImplementedError

    @idempotent
    @answered
    def post(self, request, recipient_id):
        recipient = selectors.recipient_get_for_team(access=self.access, public_id=recipient_id)
        self.act(recipient, request.data)
        recipient = selectors.recipient_get_for_team(access=self.access, public_id=recipient_id)
        message = self.done.format(name=_name(recipient), account=recipient.target_account.label)
        return Response(incoming_out(access=self.access, recipient=recipient, message=message))


class IncomingAccept(_Answer):
    done = ACCEPTED

    def act(self, recipient, body):
        import_offers.recipient_accept(access=self.access, recipient=recipient)

    @_answer_schema("incoming_accept")
    def post(self, request, recipient_id):
        return super().post(request, recipient_id)


class IncomingDecline(_Answer):
    done = DECLINED

    def act(self, recipient, body):
        data = DeclineIn(data=body)
        data.is_valid(raise_exception=True)
        form = DeclineForm({"reason": data.validated_data["reason"]})
        if not form.is_valid():
            raise form_problem(form)
        import_offers.recipient_decline(access=self.access, recipient=recipient, reason=form.cleaned_data["reason"])

    @_answer_schema("incoming_decline", DeclineIn)
    def post(self, request, recipient_id):
        return super().post(request, recipient_id)


class IncomingRetry(_Answer):
    done = RETRIED

    def act(self, recipient, body):
        import_offers.recipient_retry(access=self.access, recipient=recipient)

    @_answer_schema("incoming_retry")
    def post(self, request, recipient_id):
        return super().post(request, recipient_id)


class LinkImportCreate(TeamAPIView):
    capability = Capability.ACCEPT_SHARE

    @extend_schema(operation_id="link_imports_create", request=LinkImportIn,
                   responses={201: IncomingActionOut}, parameters=created_headers())
    @idempotent
    @answered
    @sensitive_variables()  # innermost: it hides the frame it calls, this one
    def post(self, request):
        body = LinkImportIn(data=request.data)
        body.is_valid(raise_exception=True)
        data = body.validated_data
        # Another team's account is not found (recorded), as everywhere in the API; the form then
        # checks the rest with the page's words.
        account = selectors.source_account_get_for_team(access=self.access, public_id=data["account"])
        form = LinkImportForm({"account": str(account.public_id), "url": data["url"], "image_name": data["image_name"],
                               "description": data["description"]}, accounts=[account])
        if not form.is_valid():
            raise form_problem(form)
        clean = form.cleaned_data
        recipient = external_links.link_import_create(access=self.access, account=clean["account"], url=clean["url"],
                                                      image_name=clean["image_name"],
                                                      description=clean["description"])
        recipient = selectors.recipient_get_for_team(access=self.access, public_id=recipient.public_id)
        message = LINK_IMPORT_STARTED.format(name=recipient.image_name, account=recipient.target_account.label)
        return Response(incoming_out(access=self.access, recipient=recipient, message=message), status=201,
                        headers={"Location": absolute(request, "api:incoming-detail",
                                                      recipient_id=recipient.public_id)})
