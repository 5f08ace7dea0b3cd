"""What the OpenAPI schema says of answers that ``api.schema.ApiAutoSchema`` cannot guess.

ApiAutoSchema already documents, on every operation, the RFC 9457 problems (``Problem``), the
Idempotency-Key of each POST and the cursor page of each list. Here: the headers of a POST's
success (``Location``, ``Idempotent-Replayed``) and the 403 of a decision, which may also ask for a
two-factor code.

    @extend_schema(request=In, responses={201: Out, **TWO_FACTOR_403}, parameters=created_headers())
"""

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse

from api.problems import CONTENT_TYPE
from api.schema import ProblemSerializer

TWO_FACTOR_403 = {(403, CONTENT_TYPE): OpenApiResponse(
    ProblemSerializer,
    description="The token's role does not allow this (code forbidden, recorded), or the team requires "
                "two-factor sign-in for approvers and the body's otp is missing, wrong or already used "
                "(code two_factor_required).")}


def replay_headers(*statuses: int) -> list[OpenApiParameter]:
    return [OpenApiParameter("Idempotent-Replayed", OpenApiTypes.STR, OpenApiParameter.HEADER, enum=["true"],
                             response=list(statuses),
                             description="Present when this is the stored answer of an earlier request with "
                                         "the same Idempotency-Key: nothing was done again.")]


def created_headers(status: int = 201) -> list[OpenApiParameter]:
    return [OpenApiParameter("Location", OpenApiTypes.STR, OpenApiParameter.HEADER, response=[status],
                             description="The URL of what was created."), *replay_headers(status)]
