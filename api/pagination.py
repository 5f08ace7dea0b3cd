"""Cursor pagination: stable under inserts (a pipeline paging while shares are made sees each once),
and one indexed range query per page whatever the table's size."""

from rest_framework import exceptions, serializers
from rest_framework.pagination import CursorPagination


def page_size_from(request, *, default: int, maximum: int) -> int:
    """The ``page_size`` a request asks for, or a 400 that says what is wrong. DRF falls back to
    the default on a bad value; a pipeline asking for page_size=1000, "ten" or two sizes at once
    should hear that it did not get what it asked (found by tests/test_api_schema.py)."""
    values = request.query_params.getlist("page_size")
    if not values:
        return default
    if len(values) > 1:
        raise exceptions.ValidationError({"page_size": ["Give page_size once."]})
    try:
        return serializers.IntegerField(min_value=1, max_value=maximum).run_validation(values[0])
    except exceptions.ValidationError as exc:
        raise exceptions.ValidationError({"page_size": exc.detail}) from None


class Cursor(CursorPagination):
    page_size = 25
    max_page_size = 100
    page_size_query_param = "page_size"
    ordering = "-created_at"

    def get_page_size(self, request):
        return page_size_from(request, default=self.page_size, maximum=self.max_page_size)

    def get_schema_operation_parameters(self, view):
        parameters = super().get_schema_operation_parameters(view)
        for parameter in parameters:
            if parameter["name"] == self.page_size_query_param:
                parameter["schema"] = {"type": "integer", "minimum": 1, "maximum": self.max_page_size,
                                       "default": self.page_size}
        return parameters


class NewestShares(Cursor):
    ordering = ("-requested_at", "-id")


class NewestFirst(Cursor):
    ordering = ("-created_at", "-id")


class TrailOrder(Cursor):
    ordering = "-seq"
