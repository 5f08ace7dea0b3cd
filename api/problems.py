"""Errors as RFC 9457 problem details (``application/problem+json``) with stable codes.

``detail`` carries the same words the pages show; ``code`` is what a pipeline branches on, and
``errors`` (validation only) lists each field's messages.
"""

from django.core.exceptions import PermissionDenied as DjangoPermissionDenied
from django.core.exceptions import ValidationError as DjangoValidationError
from django.http import Http404, JsonResponse
from django.views import defaults
from rest_framework import exceptions
from rest_framework.response import Response
from rest_framework.views import exception_handler

import outscale

CONTENT_TYPE = "application/problem+json"
TYPE_BASE = "https://omiportal.example/problems/"

# status -> (code, title) for the exceptions DRF raises itself.
_DEFAULTS = {
    400: ("invalid_request", "The request is not valid"),
    401: ("not_authenticated", "A valid API token is needed"),
    403: ("forbidden", "Not allowed"),
    404: ("not_found", "Not found"),
    405: ("method_not_allowed", "Method not allowed"),
    406: ("not_acceptable", "Not acceptable"),
    409: ("conflict", "Conflict"),
    415: ("unsupported_media_type", "Unsupported media type"),
    422: ("unprocessable", "The request cannot be carried out"),
    429: ("rate_limited", "Too many requests"),
}


class Problem(exceptions.APIException):
    """Raised by the API's views for an answer with its own code."""

    def __init__(self, *, status_code: int, code: str, detail: str, title: str = "", errors=None):
        super().__init__(detail=detail, code=code)
        self.status_code, self.problem_code, self.title, self.errors = status_code, code, title, errors


def problem_response(*, status_code: int, code: str, detail: str, title: str = "", errors=None,
                     headers=None) -> Response:
    body = {"type": TYPE_BASE + code, "title": title or _DEFAULTS.get(status_code, (code, code))[1],
            "status": status_code, "detail": detail, "code": code}
    if errors:
        body["errors"] = errors
    return Response(body, status=status_code, headers=headers, content_type=CONTENT_TYPE)


def _flatten(detail) -> str:
    if isinstance(detail, dict):
        return " ".join(_flatten(v) for v in detail.values())
    if isinstance(detail, list):
        return " ".join(_flatten(v) for v in detail)
    return str(detail)


def handler(exc, context):
    """DRF's EXCEPTION_HANDLER: every error the API answers, in one shape."""
    if isinstance(exc, Problem):
        return problem_response(status_code=exc.status_code, code=exc.problem_code, detail=str(exc.detail),
                                title=exc.title, errors=exc.errors)
    if isinstance(exc, DjangoValidationError):
        # A service's refusal: the words the pages show, as a 422 (the request was well formed).
        return problem_response(status_code=422, code=getattr(exc, "code", None) or "refused",
                                detail=" ".join(exc.messages), title="The request cannot be carried out")
    if isinstance(exc, outscale.CloudError):
        return problem_response(status_code=502, code="cloud_error", detail=exc.user_message,
                                title="OUTSCALE refused or did not answer")
    if isinstance(exc, Http404):
        exc = exceptions.NotFound(str(exc) or "Not found.")
    elif isinstance(exc, DjangoPermissionDenied):
        exc = exceptions.PermissionDenied(str(exc) or "Not allowed.")
    response = exception_handler(exc, context)
    if response is None:
        return None  # a bug: Django's 500 handler answers (and logs it)
    code, title = _DEFAULTS.get(response.status_code, ("error", "Error"))
    errors = None
    if isinstance(exc, exceptions.ValidationError):
        code, errors = "validation_error", exc.detail if isinstance(exc.detail, dict) else {"non_field_errors":
                                                                                            exc.detail}
        detail = _flatten(exc.detail)
    else:
        detail = _flatten(response.data.get("detail", "")) if isinstance(response.data, dict) else ""
    headers = {k: v for k, v in response.items() if k in ("Retry-After", "WWW-Authenticate", "Allow")}
    return problem_response(status_code=response.status_code, code=code, detail=detail, title=title,
                            errors=errors, headers=headers)


API_PATH = "/api/"


def not_found(request, exception=None):
    """The site's handler404: a URL under /api/ that matches no route (an id that is not a UUID, a
    typo) is a problem like any other 404 of the API; a page's 404 stays Django's page."""
    if not request.path.startswith(API_PATH):
        return defaults.page_not_found(request, exception)
    body = {"type": TYPE_BASE + "not_found", "title": _DEFAULTS[404][1], "status": 404,
            "detail": "No such URL in this API.", "code": "not_found"}
    return JsonResponse(body, status=404, content_type=CONTENT_TYPE)


def server_error_problem(request) -> JsonResponse | None:
    """Under /api/, a crash answers as a problem too (with the request id to quote), nothing more."""
    if not request.path.startswith(API_PATH):
        return None
    body = {"type": TYPE_BASE + "server_error", "title": "Server error", "status": 500,
            "detail": "Something went wrong on the portal's side; nothing about it is shown here. Quote "
                      f"request id {getattr(request, 'request_id', '') or '-'} to the operators.",
            "code": "server_error"}
    return JsonResponse(body, status=500, content_type=CONTENT_TYPE)
