"""Gives every request an id and makes it the audit context for what the request records."""

from collections.abc import Callable

from django.http import HttpRequest, HttpResponse

from audit.context import request_context

REQUEST_ID_HEADER = "X-Request-ID"


class RequestContextMiddleware:
    """Set the audit context (request id, client IP, user agent, request) for the request.

    Placed before the session and auth middleware so that even their events (a
    failed login) carry the request id; the user is read lazily at record time.
    The id is always fresh: a client-supplied X-Request-ID is not trusted.
    """

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]):
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        with request_context(request=request) as context:
            # Error pages can show it, so a user can quote it to support.
            request.request_id = context.request_id
            response = self.get_response(request)
        response[REQUEST_ID_HEADER] = context.request_id
        return response
