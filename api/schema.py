"""How drf-spectacular describes the API's authentication and errors in the OpenAPI schema."""

from drf_spectacular.extensions import OpenApiAuthenticationExtension


class TokenScheme(OpenApiAuthenticationExtension):
    target_class = "api.authentication.TokenAuthentication"
    name = "token"

    def get_security_definition(self, auto_schema):
        return {"type": "http", "scheme": "bearer", "bearerFormat": "omi_<prefix>_<secret>",
                "description": "A personal or team service token, made on the team's API tokens page."}
