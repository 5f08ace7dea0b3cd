"""Per-token rate limits (OMIPORTAL_API_RATE, e.g. 120/m), counted in the shared cache (Redis), so
every web process counts together. A 429 carries Retry-After (DRF computes it)."""

from rest_framework.throttling import SimpleRateThrottle

from api.models import ApiToken


class TokenRateThrottle(SimpleRateThrottle):
    scope = "token"

    def get_cache_key(self, request, view):
        if isinstance(request.auth, ApiToken):
            return self.cache_format % {"scope": self.scope, "ident": f"t{request.auth.public_id}"}
        return self.cache_format % {"scope": self.scope, "ident": f"ip{self.get_ident(request)}"}
