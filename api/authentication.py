"""``Authorization: Bearer omi_…``: the only way into the API (no session, so no CSRF to forge)."""

from rest_framework import authentication, exceptions

from api import tokens

INVALID = "The token is unknown, expired or revoked."


class TokenAuthentication(authentication.BaseAuthentication):
    keyword = "Bearer"

    def authenticate(self, request):
        header = authentication.get_authorization_header(request).split()
        if not header or header[0].lower() != self.keyword.lower().encode():
            return None
        if len(header) != 2:
            raise exceptions.AuthenticationFailed("The Authorization header is 'Bearer <token>'.")
        try:
            raw = header[1].decode("ascii")
        except UnicodeDecodeError:
            raise exceptions.AuthenticationFailed(INVALID) from None
        token = tokens.token_for(raw)
        if token is None:
            raise exceptions.AuthenticationFailed(INVALID)
        tokens.token_touch(token)
        # Every audit event this request records names the token (audit.recorder._with_via).
        request._request.audit_via = {"kind": token.kind, "name": token.name, "id": str(token.public_id),
                                      "prefix": f"{tokens.PREFIX}{token.prefix}"}
        return token.user, token

    def authenticate_header(self, request):
        return self.keyword  # a 401 with WWW-Authenticate: Bearer
