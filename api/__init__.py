"""The JSON API (/api/v1/) for pipelines: team tokens, the same services as the pages.

Django REST framework with drf-spectacular (README "API"): tokens authenticate, a token's access
is the pages' ``TeamAccess`` capped at the token's role, errors are RFC 9457 problems, and every
POST carries an ``Idempotency-Key``.
"""
