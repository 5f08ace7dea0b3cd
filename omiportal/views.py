"""Site-wide views: the production error page, and the refusal of a form without its CSRF token."""

from django.http import HttpResponseForbidden, HttpResponseServerError
from django.template import loader

from api.problems import server_error_problem
from audit.recorder import record

PATH_MAX = 500


def server_error(request):
    """A 500 page with the request id and nothing else: no settings, no traceback.

    Rendered without context processors, which could fail again for the same reason. Under /api/,
    the same as a problem (application/problem+json).
    """
    problem = server_error_problem(request)
    if problem is not None:
        return problem
    template = loader.get_template("500.html")
    return HttpResponseServerError(template.render({"request_id": getattr(request, "request_id", "")}))


def csrf_failure(request, reason=""):
    """CSRF_FAILURE_VIEW: a forged or stale form is a denied attempt, so it goes in the trail (INS-06).

    What is kept: the path and Django's reason ("CSRF token missing.", "Origin checking failed …");
    never the token or cookie values, which Django's reasons do not contain either.
    """
    record(action="access.denied", outcome="denied",
           details={"reason": "csrf", "method": request.method, "path": request.path[:PATH_MAX],
                    "csrf_reason": str(reason)[:PATH_MAX]})
    template = loader.get_template("403_csrf.html")
    return HttpResponseForbidden(template.render({"request_id": getattr(request, "request_id", "")}))
