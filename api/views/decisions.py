"""The source team's decisions on a share: approve or reject (four eyes), cancel, export again.

Approval stays with people. A service token never approves (its ceiling lacks APPROVE: a 403
recorded by ``require``), nor does a member's token; the requester's own approver token is refused
by the service (``transfers.rules.decision_refusal``) with its words. In a team that requires
two-factor sign-in for approvers, a personal token approves only with a current code in ``otp``,
checked by the sign-in's own service (``twofactor_verify``: recorded, throttled, a code used once);
only then does the token's access hold APPROVE (``token_access(two_factor_checked=True)``), and the
service gets the moment it was checked as ``verified_at``.
"""

from django.conf import settings
from django.utils import timezone
from drf_spectacular.utils import extend_schema
from rest_framework.response import Response

from accounts.access import deny_access, require
from accounts.roles import Capability
from accounts.twofactor.services import TwoFactorError, twofactor_verify
from api.access import token_access
from api.idempotency import idempotent
from api.problems import Problem, problem_response
from api.schema_responses import TWO_FACTOR_403, replay_headers
from api.serializers.shares import DecisionIn, ShareActionOut, share_out
from api.views.answers import answered, form_problem
from api.views.base import TeamAPIView
from audit import recorder
from transfers import errors, selectors
from transfers.forms import DecisionForm
from transfers.services import reconcile
from transfers.services import requests as share_requests
from transfers.views.decisions import CANCELLED, REEXPORTING, REJECTED, approved_message

TWO_FACTOR = "two_factor_required"


def _step_up_needed(team) -> str:
    return errors.STEP_UP_NEEDED.format(team=team.name,
                                        minutes=max(1, settings.OMIPORTAL_APPROVAL_STEP_UP_SECONDS // 60))


def _action_schema(operation_id: str, request=None, *, two_factor=False):
    return extend_schema(operation_id=operation_id, request=request,
                         responses={200: ShareActionOut, **(TWO_FACTOR_403 if two_factor else {})},
                         parameters=replay_headers(200))


class _Decide(TeamAPIView):
    """Approve or reject. The capability is checked in ``post``: until a code checks out, a
    team that requires two-factor withholds APPROVE from every token."""

    service = None
    done = None  # the page's message, or a function of the share giving it

    @idempotent
    @answered
    def post(self, request, share_id):
        token = request.auth
        if not token_access(token, two_factor_checked=True).can(Capability.APPROVE):
            require(self.access, Capability.APPROVE)  # never with any code: 403, recorded
        share = selectors.share_get_for_source_team(access=self.access, public_id=share_id)
        body = DecisionIn(data=request.data)
        body.is_valid(raise_exception=True)
        form = DecisionForm({"digest": body.validated_data["digest"], "comment": body.validated_data["comment"]})
        if not form.is_valid():
            raise form_problem(form)
        try:
            # One block around the code's check and the decision, so that their events are appended
            # last, after the rows the approval locks (the export it reuses): the chain head's order.
            with recorder.atomic():
                access, verified_at = self.access, None
                if not access.can(Capability.APPROVE):
                    refusal = self._check_code(share, body.validated_data["otp"])
                    if refusal is not None:
                        return refusal  # the block ends normally: the failed code's count is kept
                    access, verified_at = token_access(token, two_factor_checked=True), timezone.now()
                self.service(access=access, share=share, digest=form.cleaned_data["digest"],
                             comment=form.cleaned_data["comment"], verified_at=verified_at)
        except errors.StepUpRequired as exc:
            raise Problem(status_code=403, code=TWO_FACTOR, detail=" ".join(exc.messages)) from None
        share = selectors.share_get_for_source_team(access=self.access, public_id=share_id)
        done = self.done(share) if callable(self.done) else self.done
        return Response(share_out(access=self.access, share=share, message=done.format(image=share.source_image_name)))

    def _check_code(self, share, code: str):
        """None when ``code`` is current; otherwise the 403 to answer (the attempt recorded)."""
        access = self.access
        if not code:
            deny_access(user=access.user, team=access.team, reason=TWO_FACTOR, target=share,
                        details={"needs": str(Capability.APPROVE), "role": access.role})
            return problem_response(status_code=403, code=TWO_FACTOR, detail=_step_up_needed(access.team))
        try:
            twofactor_verify(user=access.user, code=code)  # twofactor.verified, or .failed and the throttle
        except TwoFactorError as exc:
            return problem_response(status_code=403, code=TWO_FACTOR, detail=" ".join(exc.messages))
        return None


class ShareApprove(_Decide):
    service = staticmethod(share_requests.share_approve)
    done = staticmethod(approved_message)

    @_action_schema("shares_approve", DecisionIn, two_factor=True)
    def post(self, request, share_id):
        return super().post(request, share_id)


class ShareReject(_Decide):
    service = staticmethod(share_requests.share_reject)
    done = REJECTED

    @_action_schema("shares_reject", DecisionIn, two_factor=True)
    def post(self, request, share_id):
        return super().post(request, share_id)


class _ShareAction(TeamAPIView):
    """Cancel or export again: one service call on the team's share, answered with the share as it is now."""

    capability = Capability.REQUEST_SHARE
    perform = None  # the service: (access, share) -> ...
    message = ""  # the page's words, with {image}

    @idempotent
    @answered
    def post(self, request, share_id):
        share = selectors.share_get_for_source_team(access=self.access, public_id=share_id)
        self.perform(access=self.access, share=share)
        share = selectors.share_get_for_source_team(access=self.access, public_id=share_id)
        return Response(share_out(access=self.access, share=share,
                                  message=self.message.format(image=share.source_image_name)))


class ShareCancel(_ShareAction):
    perform = staticmethod(share_requests.share_cancel)
    message = CANCELLED

    @_action_schema("shares_cancel")
    def post(self, request, share_id):
        return super().post(request, share_id)


class ShareReexport(_ShareAction):
    perform = staticmethod(reconcile.share_reexport)
    message = REEXPORTING

    @_action_schema("shares_reexport")
    def post(self, request, share_id):
        return super().post(request, share_id)
