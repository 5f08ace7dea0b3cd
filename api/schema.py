"""How drf-spectacular describes the API: its token scheme, its errors, its headers, its pages.

``ApiAutoSchema`` (settings ``REST_FRAMEWORK["DEFAULT_SCHEMA_CLASS"]``) makes the published schema
say what the views really answer, so that a client generated from it, and Schemathesis
(tests/test_api_schema.py), can rely on it:

- every operation documents the RFC 9457 problems it can answer (``application/problem+json``,
  the ``Problem`` component), beside whatever the view's ``@extend_schema`` lists;
- every POST documents its required ``Idempotency-Key`` header (api/idempotency.py);
- a list answer is a cursor page (``next``, ``previous``, ``results``) with its ``cursor`` and
  ``page_size`` parameters: every list of this API is paginated (api/pagination.py), whether the
  view names its ``pagination_class`` or makes the paginator in its handler.
"""

from drf_spectacular.extensions import OpenApiAuthenticationExtension
from drf_spectacular.openapi import AutoSchema
from drf_spectacular.utils import OpenApiParameter
from rest_framework import serializers

from api.pagination import Cursor

PROBLEM_MEDIA_TYPE = "application/problem+json"
# api/idempotency.py KEY_RE: visible ASCII.
IDEMPOTENCY_KEY = {"type": "string", "pattern": "^[!-~]{1,255}$", "minLength": 1, "maxLength": 255}

# What any operation may answer (problems.py); a POST may also refuse its body or its key.
COMMON_PROBLEMS = {
    "400": "The request is malformed: a parameter or field is invalid (code validation_error).",
    "401": "No token, or a token that is unknown, expired or revoked (code not_authenticated).",
    "403": "The token's role does not allow this (code forbidden); the refusal is in the audit trail.",
    "404": "Nothing this token may see has this id: another team's objects are 404 too (code not_found); "
           "or a cursor this API did not give.",
    "429": "The token's rate limit is reached (code rate_limited); wait Retry-After seconds.",
    "502": "OUTSCALE refused or did not answer (code cloud_error).",
}
POST_PROBLEMS = {
    "415": "The body is not JSON (code unsupported_media_type).",
    "422": "A rule refused the request, in the pages' words (code refused or a more precise one), or the "
           "Idempotency-Key was already used for a different request (code idempotency_key_reused).",
}


class ProblemSerializer(serializers.Serializer):
    """An error, as RFC 9457 problem details: ``code`` is what a client branches on."""

    type = serializers.URLField()
    title = serializers.CharField()
    status = serializers.IntegerField()
    detail = serializers.CharField(allow_blank=True)
    code = serializers.CharField()
    errors = serializers.DictField(required=False, help_text="Each invalid field's messages (validation_error).")

    class Meta:
        ref_name = "Problem"


class ApiAutoSchema(AutoSchema):
    def get_description(self):
        # A view's own words only: not those its base class (TeamAPIView) writes for developers.
        handler = getattr(self.view, self.method.lower(), None)
        return (getattr(handler, "__doc__", None) or self.view.__class__.__dict__.get("__doc__") or "").strip()

    def get_override_parameters(self):
        parameters = list(super().get_override_parameters())
        if self.method == "POST":
            parameters.append(OpenApiParameter(
                "Idempotency-Key", IDEMPOTENCY_KEY, OpenApiParameter.HEADER, required=True,
                description="1 to 255 visible ASCII characters, new for each request and the same on its retries: "
                            "a retry gets the first answer again, with Idempotent-Replayed: true."))
        return parameters

    def _get_paginator(self):
        paginator = super()._get_paginator()
        if paginator is None and self.method == "GET":
            return Cursor()  # the handler pages with a Cursor subclass: same parameters, same shape
        return paginator

    def _get_response_bodies(self, direction="response"):
        responses = super()._get_response_bodies(direction)
        problems = {**COMMON_PROBLEMS, **(POST_PROBLEMS if self.method == "POST" else {})}
        for status, description in problems.items():
            if status not in responses:
                response = self._get_response_for_code(ProblemSerializer, status, [PROBLEM_MEDIA_TYPE], direction)
                responses[status] = {**response, "description": description}
        if "429" in responses:
            responses["429"]["headers"] = {"Retry-After": {
                "schema": {"type": "integer"}, "description": "Seconds to wait before the next request."}}
        return responses


class TokenScheme(OpenApiAuthenticationExtension):
    target_class = "api.authentication.TokenAuthentication"
    name = "token"

    def get_security_definition(self, auto_schema):
        return {"type": "http", "scheme": "bearer", "bearerFormat": "omi_<prefix>_<secret>",
                "description": "A personal or team service token, made on the team's API tokens page."}
