"""pytest plugin: real-browser tests with Playwright driving Debian's Chromium.

    @pytest.mark.browser
    def test_it_signs_in(page, live_server, sign_in):
        user = factories.make_user("admin@alpha.test")
        sign_in(page, live_server, user.email, factories.PASSWORD)
        expect(page.get_by_role("heading", level=1)).to_be_visible()

Fixtures:
  chromium_path  session-scoped: the Chromium binary (env OMIPORTAL_CHROMIUM, then ``chromium`` on
                 PATH, then /usr/bin/chromium); skips when it is missing, fails instead with CI set
  playwright     session-scoped Playwright (sync API)
  browser        session-scoped headless Chromium, offline-friendly flags
  page           function-scoped page in a fresh context (10 s timeouts); the test fails at
                 teardown if the page threw, logged a console error or hit a CSP violation
  sign_in        sign_in(page, live_server, email, password, succeed=True) through the login form

Playwright's sync API keeps its event loop marked as running in the main thread between calls,
so Django's async-safety guard would refuse every ORM call made by the test or by the fixtures'
teardown (the flush after ``live_server``). The ``playwright`` fixture therefore sets
DJANGO_ALLOW_ASYNC_UNSAFE, and keeps it set until the session ends: the loop stays marked for
as long as Playwright runs, i.e. also during the tests that follow the first browser test.
The live server thread has no loop; the guard does nothing for it either way.
"""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import pytest

DEFAULT_CHROMIUM = "/usr/bin/chromium"
INSTALL_HINT = "Chromium not installed: apt-get install chromium"
TIMEOUT_MS = 10_000
# Paths whose 404 a page may log without failing the test. None: base.html links an icon, so
# Chromium no longer asks for /favicon.ico.
KNOWN_MISSING_PATHS: set[str] = set()

# Root in a container, no network: no sandbox, no GPU, and nothing that phones home.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def find_chromium() -> str | None:
    """The configured Chromium, or None. A configured path that does not exist is a mistake,
    not a missing install: it fails rather than skips."""
    configured = os.environ.get("OMIPORTAL_CHROMIUM")
    if configured:
        if not (os.path.isfile(configured) and os.access(configured, os.X_OK)):
            pytest.fail(f"OMIPORTAL_CHROMIUM={configured!r} is not an executable file", pytrace=False)
        return configured
    found = shutil.which("chromium")
    if found:
        return found
    if os.path.isfile(DEFAULT_CHROMIUM) and os.access(DEFAULT_CHROMIUM, os.X_OK):
        return DEFAULT_CHROMIUM
    return None


@pytest.fixture(scope="session")
def chromium_path() -> str:
    path = find_chromium()
    if path is None:
        if os.environ.get("CI"):
            pytest.fail(f"{INSTALL_HINT} (.ci/run installs it; set OMIPORTAL_CHROMIUM to its path)", pytrace=False)
        pytest.skip(INSTALL_HINT)
    return path


@pytest.fixture(scope="session")
def playwright() -> Iterator:
    from playwright.sync_api import sync_playwright

    with pytest.MonkeyPatch.context() as mp:
        # See the module docstring: Playwright's loop looks "running" to Django from now on.
        mp.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
        pw = sync_playwright().start()
        try:
            yield pw
        finally:
            pw.stop()


@pytest.fixture(scope="session")
def browser(playwright, chromium_path) -> Iterator:
    browser = playwright.chromium.launch(executable_path=chromium_path, headless=True, args=CHROMIUM_ARGS)
    yield browser
    browser.close()


@dataclass
class PageProblems:
    """What went wrong in the page, as the browser saw it."""

    js_errors: list[str] = field(default_factory=list)
    csp_violations: list[str] = field(default_factory=list)
    console_errors: list[str] = field(default_factory=list)
    failed_requests: list[str] = field(default_factory=list)

    def on_console(self, message) -> None:
        if message.type != "error":
            return
        url = message.location.get("url", "")
        if urlsplit(url).path in KNOWN_MISSING_PATHS and message.text.startswith("Failed to load resource"):
            return
        text = f"{message.text} ({url or '?'})"
        if "Content Security Policy" in message.text:
            self.csp_violations.append(text)
        else:
            self.console_errors.append(text)

    def on_page_error(self, error) -> None:
        self.js_errors.append(f"{error.name}: {error.message}")

    def on_request_failed(self, request) -> None:
        # A navigation that replaces a page still loading is aborted by design.
        if request.failure != "net::ERR_ABORTED":
            self.failed_requests.append(f"{request.method} {request.url}: {request.failure}")

    def report(self) -> str:
        sections = [
            ("uncaught JavaScript errors", self.js_errors),
            ("Content-Security-Policy violations", self.csp_violations),
            ("console errors", self.console_errors),
            ("failed requests", self.failed_requests),
        ]
        return "\n".join(
            f"{title}:\n" + "\n".join(f"  - {line}" for line in lines) for title, lines in sections if lines
        )


@pytest.fixture
def page_problems() -> PageProblems:
    """The problems the ``page`` fixture collects; a test may inspect (or clear) them."""
    return PageProblems()


@pytest.fixture
def page(browser, page_problems: PageProblems) -> Iterator:
    context = browser.new_context(viewport={"width": 1280, "height": 800}, locale="en-US", service_workers="block")
    context.set_default_timeout(TIMEOUT_MS)
    context.set_default_navigation_timeout(TIMEOUT_MS)
    page = context.new_page()
    page.on("console", page_problems.on_console)
    page.on("pageerror", page_problems.on_page_error)
    page.on("requestfailed", page_problems.on_request_failed)
    try:
        yield page
    finally:
        context.close()
    report = page_problems.report()
    if report:
        pytest.fail(f"the page reported problems:\n{report}", pytrace=False)


SignIn = Callable[..., None]


@pytest.fixture
def sign_in() -> SignIn:
    """Sign in through the real login form. With ``succeed=False`` the form must refuse."""
    from playwright.sync_api import expect

    def _sign_in(page, live_server, email: str, password: str, *, succeed: bool = True) -> None:
        login_url = f"{live_server.url}/login/"
        page.goto(login_url)
        form = page.locator("form", has=page.locator('input[name="password"]'))
        form.locator('input[name="username"]').fill(email)
        form.locator('input[name="password"]').fill(password)
        with page.expect_navigation(wait_until="load"):
            form.get_by_role("button", name="Sign in").click()
        if succeed:
            expect(page).not_to_have_url(re.compile(r"/login/"))
            expect(page.get_by_role("button", name="Sign out")).to_be_visible()
        else:
            expect(page).to_have_url(re.compile(r"/login/"))
            expect(page.locator(".errorbox")).to_be_visible()

    return _sign_in
