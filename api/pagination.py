"""Cursor pagination: stable under inserts (a pipeline paging while shares are made sees each once),
and one indexed range query per page whatever the table's size."""

from rest_framework.pagination import CursorPagination


class Cursor(CursorPagination):
    page_size = 25
    max_page_size = 100
    page_size_query_param = "page_size"
    ordering = "-created_at"


class NewestShares(Cursor):
    ordering = ("-requested_at", "-id")


class NewestFirst(Cursor):
    ordering = ("-created_at", "-id")


class TrailOrder(Cursor):
    ordering = "-seq"
