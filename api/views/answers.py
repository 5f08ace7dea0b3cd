"""How the transfer endpoints answer a refusal, and speak the pages' forms' words.

``@answered`` sits between ``@idempotent`` and a POST handler. A refusal (a service's
ValidationError, a missing role, a 404, a cloud error, a bad body) becomes the answer instead of
an exception, so ``idempotent`` frees the key and *commits* what the service chose to keep, as the
page would under autocommit: its denial, the failure of an import refused because its account
changed since the approval (``import_offers._refuse_if_changed``), a wrong two-factor code's count
towards the device's throttle. What the service undid, it undid itself: each of its transactions (plain or
``recorder.atomic()``) is a savepoint of ``idempotent``'s, whose writes and events go when it raises.
"""

from functools import wraps

from django.core.exceptions import PermissionDenied
from django.core.exceptions import ValidationError as DjangoValidationError
from django.http import Http404
from django.urls import reverse
from rest_framework.exceptions import APIException

import outscale
from api.problems import Problem

REFUSALS = (DjangoValidationError, PermissionDenied, Http404, APIException, outscale.CloudError)


def answered(handler):
    """Wrap an APIView's ``post`` (inside ``@idempotent``)."""

    @wraps(handler)
    def wrapped(view, request, *args, **kwargs):
        try:
            return handler(view, request, *args, **kwargs)
        except REFUSALS as exc:
            return view.handle_exception(exc)  # records a NotInTeam, then the problem

    return wrapped


def form_problem(form, names: dict[str, str] | None = None) -> Problem:
    """A page's form refused the request: a 400 ``validation_error`` with the form's own messages,
    each under the API's name of its field (``names``: form field -> API field)."""
    names = names or {}
    errors: dict[str, list[str]] = {}
    for field, messages in form.errors.items():
        key = "non_field_errors" if field == "__all__" else names.get(field, field)
        errors.setdefault(key, []).extend(str(m) for m in messages)
    detail = " ".join(m for messages in errors.values() for m in messages)
    return Problem(status_code=400, code="validation_error", detail=detail, errors=errors)


def absolute(request, name: str, **kwargs) -> str:
    return request.build_absolute_uri(reverse(name, kwargs=kwargs))
