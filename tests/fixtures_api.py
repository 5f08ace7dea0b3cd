"""API test helpers: tokens made by the real service, and a client that sends them.

    def test_x(api, world):
        client = api.client(world.member)                  # a personal member token of Alpha
        client = api.client(world.admin, kind="service")   # Alpha's service token (role member)
        response = client.post("/api/v1/shares/", {...})   # JSON, with a fresh Idempotency-Key
"""

import json
import uuid
from types import SimpleNamespace

import pytest
from django.test import Client

from accounts.models import Membership
from accounts.selectors import team_access_for_user
from api import tokens
from api.models import ApiToken


class ApiClient:
    def __init__(self, raw: str, token: ApiToken):
        self.raw, self.token = raw, token
        self._client = Client(HTTP_AUTHORIZATION=f"Bearer {raw}")

    def get(self, path, params=None, **headers):
        return self._client.get(path, params or {}, headers=headers)

    def post(self, path, data=None, *, key: str | None = "new", **headers):
        """``key="new"``: a fresh Idempotency-Key; None: no header; anything else: that key."""
        if key is not None:
            headers["Idempotency-Key"] = uuid.uuid4().hex if key == "new" else key
        return self._client.post(path, json.dumps(data or {}), content_type="application/json", headers=headers)

    def delete(self, path, **headers):
        return self._client.delete(path, headers=headers)


def make_token(user, team, *, kind=ApiToken.Kind.PERSONAL, role=None, days=30, name="test token"):
    access = team_access_for_user(user=user, team_public_id=team.public_id)
    if role is None:
        role = "member" if kind == ApiToken.Kind.SERVICE else Membership.objects.get(user=user, team=team).role
    return tokens.token_create(access=access, kind=kind, name=name, role=role, days=days)


@pytest.fixture
def api(db):
    def client(user, team=None, **options) -> ApiClient:
        team = team or Membership.objects.filter(user=user).select_related("team").first().team
        token, raw = make_token(user, team, **options)
        return ApiClient(raw, token)

    return SimpleNamespace(client=client, make_token=make_token)
