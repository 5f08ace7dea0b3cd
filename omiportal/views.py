"""Site-wide views: the production error page."""

from django.http import HttpResponseServerError
from django.template import loader


def server_error(request):
    """A 500 page with the request id and nothing else: no settings, no traceback.

    Rendered without context processors, which could fail again for the same reason.
    """
    template = loader.get_template("500.html")
    return HttpResponseServerError(template.render({"request_id": getattr(request, "request_id", "")}))
