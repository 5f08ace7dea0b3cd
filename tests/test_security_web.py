"""Web defences (WEB-01, WEB-02, WEB-05, WEB-06, WEB-09, SEC-08, SEC-12).

Headers and cookies are checked with production-like settings (HTTPS redirect, HSTS, secure
cookies on) over secure requests; CSRF origin checks over HTTPS; django-axes lockout keyed on the
connection address, not on a client-supplied X-Forwarded-For; static scans for `csrf_exempt` and for
modules that could open sealed credentials. The forced-500 page is covered by tests/test_errors.py.
"""

import ast
import re
from pathlib import Path

import pytest
from django.test import Client
from django.urls import URLPattern, URLResolver, get_resolver, reverse
from django.views.debug import SafeExceptionReporterFilter

from tests import factories

ROOT = Path(__file__).resolve().parent.parent
HOST = "portal.example.com"
ORIGIN = f"https://{HOST}"
ONE_YEAR = 365 * 24 * 3600


@pytest.fixture
def production(settings):
    """What DJANGO_DEBUG=false gives by default (pytest's env turns redirect and secure cookies off)."""
    settings.ALLOWED_HOSTS = [HOST]
    settings.SECURE_SSL_REDIRECT = True
    settings.SECURE_HSTS_SECONDS = ONE_YEAR
    settings.SECURE_HSTS_INCLUDE_SUBDOMAINS = True
    settings.SESSION_COOKIE_SECURE = True
    settings.CSRF_COOKIE_SECURE = True
    return settings


def _secure_client(**kwargs) -> Client:
    return Client(HTTP_HOST=HOST, **kwargs)


# --- WEB-09: security headers ---------------------------------------------------------------------

def _csp(response) -> dict[str, list[str]]:
    policy = response["Content-Security-Policy"]
    directives = {}
    for part in policy.split(";"):
        words = part.split()
        if words:
            directives[words[0]] = words[1:]
    return directives


def _pages(world):
    team = world.alpha.public_id
    return [
        (None, reverse("login")),
        (world.admin, reverse("transfers:dashboard", kwargs={"team_id": team})),
        (world.admin, reverse("accounts:account-create", kwargs={"team_id": team})),
        (world.member, reverse("transfers:link-import", kwargs={"team_id": team})),
        (world.member, "/no/such/page/"),
    ]


def test_html_responses_carry_the_security_headers(production, world):
    for user, url in _pages(world):
        client = _secure_client()
        if user is not None:
            client.force_login(user)
        response = client.get(url, secure=True)
        assert response.status_code in (200, 404), (url, response.status_code)
        assert response["Content-Type"].startswith("text/html")
        hsts = dict(re.findall(r"([\w-]+)(?:=(\d+))?", response["Strict-Transport-Security"]))
        assert int(hsts["max-age"]) >= ONE_YEAR and "includeSubDomains" in hsts, url
        csp = _csp(response)
        assert csp["object-src"] == ["'none'"] and csp["base-uri"] == ["'none'"], url
        assert csp["frame-ancestors"] == ["'none'"], url
        assert "default-src" in csp and "script-src" in csp, url
        assert "'unsafe-inline'" not in response["Content-Security-Policy"], url
        assert "'unsafe-eval'" not in response["Content-Security-Policy"], url
        assert response["X-Content-Type-Options"] == "nosniff"
        assert response["Referrer-Policy"] in {"no-referrer", "same-origin", "strict-origin",
                                               "strict-origin-when-cross-origin"}
        assert response["Cross-Origin-Opener-Policy"] == "same-origin"
        assert response["X-Frame-Options"] == "DENY"


def test_plain_http_is_redirected_to_https(production):
    response = _secure_client().get(reverse("login"))
    assert response.status_code == 301
    assert response["Location"] == f"{ORIGIN}{reverse('login')}"


def test_production_defaults_turn_https_hsts_and_secure_cookies_on(tmp_path):
    """The real settings module with DJANGO_DEBUG=false and nothing else set (no test overrides)."""
    from tests.test_settings import PRODUCTION, _manage

    code = ("from django.conf import settings as s; print('SETTINGS', s.SECURE_SSL_REDIRECT, s.SECURE_HSTS_SECONDS, "
            "s.SECURE_HSTS_INCLUDE_SUBDOMAINS, s.SESSION_COOKIE_SECURE, s.CSRF_COOKIE_SECURE, "
            "s.SESSION_COOKIE_HTTPONLY, s.SESSION_COOKIE_SAMESITE, s.CSRF_COOKIE_SAMESITE, s.X_FRAME_OPTIONS)")
    result = _manage("shell", "-c", code, env_overrides={**PRODUCTION, "OMIPORTAL_VAR_DIR": str(tmp_path)})
    assert result.returncode == 0, result.stderr
    line = next(line for line in result.stdout.splitlines() if line.startswith("SETTINGS "))
    ssl, hsts, subdomains, session_secure, csrf_secure, httponly, samesite, csrf_samesite, frames = \
        line.split()[1:]
    assert ssl == "True" and int(hsts) >= ONE_YEAR and subdomains == "True"
    assert session_secure == csrf_secure == httponly == "True"
    assert samesite in ("Lax", "Strict") and csrf_samesite in ("Lax", "Strict") and frames == "DENY"


# --- WEB-05: cookies ---------------------------------------------------------------------------------

def _login(client, email, password, **extra):
    page = client.get(reverse("login"), secure=True)
    assert page.status_code == 200
    token = client.cookies["csrftoken"].value
    return client.post(reverse("login"), {"username": email, "password": password, "csrfmiddlewaretoken": token},
                       secure=True, HTTP_REFERER=f"{ORIGIN}{reverse('login')}", **extra)


def test_session_and_csrf_cookies_are_secure_httponly_and_samesite(production, db):
    user = factories.make_user("cookie@alpha.test")
    client = _secure_client(enforce_csrf_checks=True)
    response = _login(client, user.email, factories.PASSWORD)
    assert response.status_code == 302, response.content.decode()[:500]
    session = response.cookies["sessionid"]
    assert session["secure"] and session["httponly"] and session["samesite"] in ("Lax", "Strict")
    csrf = client.cookies["csrftoken"]
    assert csrf["secure"] and csrf["samesite"] in ("Lax", "Strict")
    header = "\n".join(str(c) for c in response.cookies.values())
    assert "Secure" in header and "HttpOnly" in header and "SameSite=" in header


# --- WEB-01 / WEB-02: CSRF -----------------------------------------------------------------------------

CSRF_ALLOWLIST: set[str] = set()  # "path/to/file.py" of any reviewed csrf_exempt; none today


def _project_python_files():
    skip = {".venv", "var", "staticfiles", "node_modules", ".git"}
    for path in ROOT.rglob("*.py"):
        rel = path.relative_to(ROOT)
        if not skip.intersection(rel.parts):
            yield rel, path


def test_no_csrf_exempt_in_project_code():
    me = Path(__file__).resolve()
    offenders = [str(rel) for rel, path in _project_python_files()
                 if path.resolve() != me and "csrf_exempt" in path.read_text() and str(rel) not in CSRF_ALLOWLIST]
    assert not offenders, f"csrf_exempt used in {offenders}; review it and add it to CSRF_ALLOWLIST"


def _views(resolver=None, prefix=""):
    for pattern in (resolver or get_resolver()).url_patterns:
        if isinstance(pattern, URLResolver):
            yield from _views(pattern, prefix + str(pattern.pattern))
        elif isinstance(pattern, URLPattern):
            yield prefix + str(pattern.pattern), pattern.callback


def _reads_no_cookie(view) -> bool:
    """A DRF view that authenticates by bearer token only: a forged cross-site request carries no token,
    so it has nothing to ride on (DRF marks its views csrf_exempt and leaves CSRF to SessionAuthentication)."""
    cls = getattr(view, "cls", None)
    if cls is None:
        return False
    classes = [getattr(c, "__name__", type(c).__name__) for c in cls.authentication_classes]
    schema_views = ("SpectacularAPIView", "SpectacularSwaggerSplitView")
    return classes == ["TokenAuthentication"] or (cls.__name__ in schema_views and classes == [])


def test_no_routed_view_is_csrf_exempt():
    """Third-party views included in the URLconf (admin, django-rq) count too. The API's views are the
    one exception, each checked to authenticate by bearer token only (or not at all: the public schema)."""
    exempt = [route for route, view in _views() if getattr(view, "csrf_exempt", False)]
    cookie_free = [route for route, view in _views() if getattr(view, "csrf_exempt", False) and _reads_no_cookie(view)]
    assert exempt == cookie_free, f"CSRF-exempt views that read a session: {set(exempt) - set(cookie_free)}"
    assert all(route.startswith("api/v1/") for route in exempt), exempt


@pytest.mark.parametrize("headers", [
    {"HTTP_ORIGIN": "https://evil.example"},
    {"HTTP_ORIGIN": f"http://{HOST}"},  # the right host over plain http is another origin
    {"HTTP_REFERER": "https://evil.example/page"},
    {"HTTP_REFERER": f"https://{HOST}.evil.example/login/"},
    {},  # HTTPS with neither Origin nor Referer
], ids=["foreign-origin", "http-origin", "foreign-referer", "lookalike-referer", "no-referer"])
def test_a_post_with_a_valid_token_from_another_origin_is_refused(production, world, headers):
    client = _secure_client(enforce_csrf_checks=True)
    client.force_login(world.admin)
    url = reverse("accounts:team-list")
    client.get(url, secure=True)
    token = client.cookies["csrftoken"].value
    before = world.admin.memberships.count()
    response = client.post(url, {"name": "Injected team", "csrfmiddlewaretoken": token}, secure=True, **headers)
    assert response.status_code == 403
    assert world.admin.memberships.count() == before
    # The same token from the portal's own origin is accepted: the refusal above is about the origin.
    ok = client.post(url, {"name": "Real team", "csrfmiddlewaretoken": token}, secure=True, HTTP_ORIGIN=ORIGIN)
    assert ok.status_code in (200, 302)


# --- WEB-06: login throttling -----------------------------------------------------------------------------

def test_failed_logins_lock_the_account_and_a_spoofed_forwarded_for_does_not_reset_it(settings, db):
    user = factories.make_user("target@alpha.test")
    limit = settings.AXES_FAILURE_LIMIT
    client = Client()
    for attempt in range(limit):
        # Each attempt claims another client address; the lock must not follow the claim.
        response = client.post(reverse("login"), {"username": user.email, "password": "wrong password"},
                               REMOTE_ADDR="203.0.113.7", HTTP_X_FORWARDED_FOR=f"198.51.100.{attempt}")
        assert response.status_code in (200, 403, 429)
    for forwarded in ("198.51.100.250", "10.0.0.1", ""):
        locked = client.post(reverse("login"), {"username": user.email, "password": factories.PASSWORD},
                             REMOTE_ADDR="203.0.113.7", HTTP_X_FORWARDED_FOR=forwarded)
        assert locked.status_code in (403, 429), forwarded
        assert "_auth_user_id" not in client.session
    from axes.models import AccessAttempt

    assert set(AccessAttempt.objects.values_list("ip_address", flat=True)) == {"203.0.113.7"}
    # Another connection address is another key: that person is not locked out.
    other = Client().post(reverse("login"), {"username": user.email, "password": factories.PASSWORD},
                          REMOTE_ADDR="192.0.2.10", HTTP_X_FORWARDED_FOR="203.0.113.7")
    assert other.status_code == 302


# --- SEC-08: who may open sealed credentials ---------------------------------------------------------------

# Modules allowed to import the vault: the vault itself, the bridge that opens keys for the cloud layer,
# the rotation command, the services that seal what people type, the start-up check of the key ring
# (key ids only), and the page benchmark's bulk fill (seals dummy keys; it needs an empty audit trail,
# so it cannot go through the audited service).
VAULT_IMPORTERS = {
    "accounts/vault.py", "accounts/keys.py",
    "accounts/management/commands/rotate_credential_keys.py", "accounts/services.py", "accounts/checks.py",
    "accounts/preflight.py",  # a service: it catches VaultError when keys it checks with do not open
    "bench/fill.py",
    "webhooks/secrets.py",  # seals and opens the endpoints' signing secrets, only to sign
}
VAULT_IMPORTER_DIRS = ("transfers/services/",)
DECRYPT_CALLERS = {"accounts/vault.py", "accounts/keys.py", "webhooks/secrets.py"}
# Names that open sealed values, directly or through the bridge.
OPENERS = {"decrypt", "reseal", "credentials_for", "open_pasted_link"}
PRESENTATION = re.compile(r"(^|/)(views(/.*)?|forms|admin|admin_site|urls|templatetags/.*|decorators|"
                          r"context_processors|middleware)\.py$")


def _imports(tree) -> set[str]:
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def _called_names(tree) -> set[str]:
    called = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            func = node.func
            called.add(func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", ""))
    return called


APP_PACKAGES = ("accounts", "transfers", "review", "audit", "outscale", "bench", "omiportal", "webhooks", "api",
                "distribution")


def _app_modules():
    for rel, path in _project_python_files():
        if rel.parts[0] in APP_PACKAGES and "migrations" not in rel.parts:
            yield rel.as_posix(), ast.parse(path.read_text(), filename=str(rel))


def test_only_the_allowed_modules_import_the_vault():
    offenders = []
    for rel, tree in _app_modules():
        imports_vault = any(name == "accounts.vault" or name.startswith("accounts.vault.") for name in _imports(tree))
        if imports_vault and rel not in VAULT_IMPORTERS and not rel.startswith(VAULT_IMPORTER_DIRS):
            offenders.append(rel)
    assert not offenders, f"these modules import accounts.vault: {offenders}"


def test_only_the_vault_and_its_bridge_decrypt():
    offenders = [rel for rel, tree in _app_modules()
                 if "decrypt" in _called_names(tree) and rel not in DECRYPT_CALLERS]
    assert not offenders, f"these modules call decrypt(): {offenders}"


def test_views_forms_admin_and_templates_never_touch_sealed_values():
    offenders = []
    for rel, tree in _app_modules():
        if not PRESENTATION.search(rel):
            continue
        imported = _imports(tree)
        if any("vault" in name or "accounts.keys" in name for name in imported) or \
                OPENERS & _called_names(tree):
            offenders.append(rel)
    for path in (ROOT / "templates").rglob("*.html"):
        text = path.read_text()
        if re.search(r"vault|decrypt|_sealed|credentials_for|secret_key", text):
            offenders.append(str(path.relative_to(ROOT)))
    for path in ROOT.glob("*/templates/**/*.html"):
        if ".venv" not in path.parts and re.search(r"vault|decrypt|_sealed|credentials_for", path.read_text()):
            offenders.append(str(path.relative_to(ROOT)))
    assert not offenders, f"presentation code that could open sealed credentials: {offenders}"


def test_the_static_scan_sees_the_real_modules():
    modules = dict(_app_modules())
    assert "accounts/views.py" in modules and "accounts/forms.py" in modules and "accounts/admin.py" in modules
    assert "decrypt" in _called_names(modules["accounts/keys.py"])


# --- SEC-12: the credential views mark their secrets -------------------------------------------------------

def test_credential_and_link_posts_are_masked_in_error_reports(world, client):
    client.force_login(world.admin)
    team = world.alpha.public_id
    account = factories.make_cloud_account(world.alpha, label="masked")
    posts = [
        (reverse("accounts:account-create", kwargs={"team_id": team}), {"access_key", "secret_key"}),
        (reverse("accounts:account-edit", kwargs={"team_id": team, "account_id": account.public_id}),
         {"access_key", "secret_key"}),
        (reverse("transfers:link-import", kwargs={"team_id": team}), {"url"}),
    ]
    for url, secret_fields in posts:
        data = {"label": "x", "region": "nowhere", "access_key": "A" * 20, "secret_key": "B" * 40,
                "export_bucket": "b", "url": "https://oos.eu-west-2.outscale.com/b/k?X-Amz-Signature=" + "c" * 64,
                "image_name": "n", "account": "none"}
        response = client.post(url, data)
        request = response.wsgi_request
        assert set(request.sensitive_post_parameters) == secret_fields, url
        shown = SafeExceptionReporterFilter().get_post_parameters(request)
        for field in secret_fields:
            assert shown[field] == "********************", (url, field)
        assert shown["image_name"] == "n" if "url" in secret_fields else shown["label"] == "x"
