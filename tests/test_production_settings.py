"""INS-08 and WEB-06: production fails closed, and behind a proxy lock-outs stay per address and person.

The start-up refusals are checked twice: the check functions in this process (settings
overridden), and the real entry points (check --deploy, gunicorn's wsgi module, rqworker) in
fresh interpreters with production variables, as tests/test_settings.py does.
"""

import os
import subprocess
import sys
from pathlib import Path

import pytest
from axes.models import AccessAttempt
from django.core.management import call_command
from django.core.management.base import CommandError, SystemCheckError
from django.test import Client, RequestFactory
from django.urls import reverse

from accounts.management.commands import seed_demo
from accounts.models import Team, User
from audit.context import client_ip
from audit.models import AuditEvent
from omiportal import checks as production
from tests import factories
from tests.test_settings import PRODUCTION

ROOT = Path(__file__).resolve().parent.parent
# What a careless production start-up leaves out: email, database, Redis and a shared checkpoint store.
FALLBACKS = ("OMIPORTAL_EMAIL_URL", "DATABASE_URL", "REDIS_URL", "OMIPORTAL_AUDIT_CHECKPOINT_BUCKET")


def _run(args, *, env_overrides, drop=(), tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DJANGO_", "OMIPORTAL_", "DATABASE_", "REDIS_"))}
    env.update({"OMIPORTAL_ENV_FILE": "", "OMIPORTAL_VAR_DIR": str(tmp_path), **env_overrides})
    for name in drop:
        env.pop(name, None)
    return subprocess.run([sys.executable, *args], env=env, capture_output=True, text=True, timeout=120, cwd=ROOT)


@pytest.fixture
def production_settings(settings):
    """This process's settings as a production host with everything set (then each test removes one)."""
    settings.DEBUG = False
    settings.OMIPORTAL_ALLOW_LOCAL_SERVICES = False
    settings.EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
    settings.OMIPORTAL_DATABASE_EMBEDDED = False
    settings.OMIPORTAL_REDIS_EMBEDDED = False
    settings.OMIPORTAL_AUDIT_SIGNING_KEY = PRODUCTION["OMIPORTAL_AUDIT_SIGNING_KEY"]
    settings.OMIPORTAL_AUDIT_CHECKPOINT_BUCKET = "omiportal-checkpoints"
    settings.OMIPORTAL_AUDIT_CHECKPOINT_DIR_SHARED = False
    settings.OMIPORTAL_SINGLE_HOST = False
    return settings


def _ids(messages):
    return [message.id for message in messages]


# --- The check functions -----------------------------------------------------------------------------

def test_it_passes_a_production_host_with_everything_shared(production_settings):
    for check in (production.email_backend_check, production.shared_database_check,
                  production.shared_redis_check, production.checkpoint_store_check,
                  production.local_services_allowed_check):
        assert check() == [], check.__name__


@pytest.mark.parametrize("backend", ["console", "locmem", "dummy", "filebased"])
def test_it_refuses_email_that_is_never_sent(production_settings, backend):
    production_settings.EMAIL_BACKEND = f"django.core.mail.backends.{backend}.EmailBackend"
    errors = production.email_backend_check()
    assert _ids(errors) == ["omiportal.E010"]
    assert "invite and password reset links" in errors[0].msg and "Set OMIPORTAL_EMAIL_URL" in errors[0].hint


def test_it_refuses_a_database_of_the_hosts_own(production_settings):
    production_settings.OMIPORTAL_DATABASE_EMBEDDED = True
    errors = production.shared_database_check()
    assert _ids(errors) == ["omiportal.E011"] and "Set DATABASE_URL" in errors[0].hint


def test_it_refuses_a_redis_of_the_hosts_own(production_settings):
    production_settings.OMIPORTAL_REDIS_EMBEDDED = True
    errors = production.shared_redis_check()
    assert _ids(errors) == ["omiportal.E012"] and "Set REDIS_URL" in errors[0].hint


def test_it_refuses_a_checkpoint_directory_nobody_said_was_shared(production_settings):
    production_settings.OMIPORTAL_AUDIT_CHECKPOINT_BUCKET = ""
    errors = production.checkpoint_store_check()
    assert _ids(errors) == ["omiportal.E013"]
    for name in ("OMIPORTAL_AUDIT_CHECKPOINT_BUCKET", "OMIPORTAL_AUDIT_CHECKPOINT_DIR_SHARED=true",
                 "OMIPORTAL_SINGLE_HOST=true"):
        assert name in errors[0].hint


@pytest.mark.parametrize("declaration", ["OMIPORTAL_AUDIT_CHECKPOINT_DIR_SHARED", "OMIPORTAL_SINGLE_HOST"])
def test_a_declared_shared_directory_or_single_host_is_accepted(production_settings, declaration):
    production_settings.OMIPORTAL_AUDIT_CHECKPOINT_BUCKET = ""
    setattr(production_settings, declaration, True)
    assert production.checkpoint_store_check() == []


def test_without_a_signing_key_there_is_no_store_to_share(production_settings):
    production_settings.OMIPORTAL_AUDIT_CHECKPOINT_BUCKET = ""
    production_settings.OMIPORTAL_AUDIT_SIGNING_KEY = ""
    assert production.checkpoint_store_check() == []  # audit.W001 already says checkpoints are off


def test_development_may_use_every_fallback(production_settings):
    production_settings.DEBUG = True
    production_settings.EMAIL_BACKEND = "django.core.mail.backends.console.EmailBackend"
    production_settings.OMIPORTAL_DATABASE_EMBEDDED = production_settings.OMIPORTAL_REDIS_EMBEDDED = True
    production_settings.OMIPORTAL_AUDIT_CHECKPOINT_BUCKET = ""
    assert production.email_backend_check() + production.shared_database_check() + \
        production.shared_redis_check() + production.checkpoint_store_check() == []


def test_allowing_local_services_skips_the_refusals_and_check_deploy_warns(production_settings):
    production_settings.OMIPORTAL_ALLOW_LOCAL_SERVICES = True
    production_settings.OMIPORTAL_DATABASE_EMBEDDED = True
    assert production.shared_database_check() == []
    assert _ids(production.local_services_allowed_check()) == ["omiportal.W010"]


def test_a_webhook_host_allowance_is_warned_about_in_production(production_settings):
    assert production.webhook_hosts_allowed_check() == []
    production_settings.OMIPORTAL_WEBHOOK_ALLOW_HOSTS = ["127.0.0.1"]
    assert _ids(production.webhook_hosts_allowed_check()) == ["omiportal.W011"]
    production_settings.DEBUG = True
    assert production.webhook_hosts_allowed_check() == []


def test_refuse_to_start_raises_on_an_error_and_not_in_debug(production_settings, db):
    production_settings.OMIPORTAL_REDIS_EMBEDDED = True
    with pytest.raises(SystemCheckError, match="omiportal.E012"):
        production.refuse_to_start_on_errors()
    production_settings.DEBUG = True
    production.refuse_to_start_on_errors()


# --- The real entry points, in fresh interpreters -----------------------------------------------------

def test_check_deploy_without_email_database_redis_or_checkpoint_store_says_what_to_set(tmp_path):
    result = _run(["manage.py", "check", "--deploy"], env_overrides=PRODUCTION, drop=FALLBACKS, tmp_path=tmp_path)
    assert result.returncode != 0
    for check_id, what in (("omiportal.E010", "Set OMIPORTAL_EMAIL_URL"), ("omiportal.E011", "Set DATABASE_URL"),
                           ("omiportal.E012", "Set REDIS_URL"),
                           ("omiportal.E013", "Set OMIPORTAL_AUDIT_CHECKPOINT_BUCKET")):
        assert check_id in result.stderr and what in result.stderr, (check_id, result.stderr)


def test_check_deploy_passes_with_a_declared_single_host(tmp_path):
    env = {**PRODUCTION, "OMIPORTAL_SINGLE_HOST": "true"}
    result = _run(["manage.py", "check", "--deploy", "--fail-level", "WARNING"], env_overrides=env,
                  drop=["OMIPORTAL_AUDIT_CHECKPOINT_BUCKET"], tmp_path=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr


def test_check_deploy_warns_when_local_services_are_allowed(tmp_path):
    env = {**PRODUCTION, "OMIPORTAL_ALLOW_LOCAL_SERVICES": "true"}
    result = _run(["manage.py", "check", "--deploy", "--fail-level", "WARNING"], env_overrides=env, tmp_path=tmp_path)
    assert result.returncode != 0 and "omiportal.W010" in result.stderr


_WSGI = "import omiportal.wsgi; print('serving')"


def test_gunicorn_refuses_to_load_the_app_with_console_email(tmp_path):
    refused = _run(["-c", _WSGI], env_overrides=PRODUCTION, drop=["OMIPORTAL_EMAIL_URL"], tmp_path=tmp_path)
    assert refused.returncode != 0 and "serving" not in refused.stdout
    assert "omiportal.E010" in refused.stderr and "Set OMIPORTAL_EMAIL_URL" in refused.stderr
    served = _run(["-c", _WSGI], env_overrides=PRODUCTION, tmp_path=tmp_path)
    assert served.returncode == 0 and "serving" in served.stdout, served.stderr


def test_a_worker_refuses_to_start_without_a_shared_database(tmp_path):
    result = _run(["manage.py", "rqworker", "--burst", "poll", "default"], env_overrides=PRODUCTION,
                  drop=["DATABASE_URL"], tmp_path=tmp_path)
    assert result.returncode != 0
    assert "omiportal.E011" in result.stderr and "Set DATABASE_URL" in result.stderr


# --- A leftover .env ------------------------------------------------------------------------------

_SETTINGS_DEBUG = (
    "import sys, runpy; "
    "print(runpy.run_path(sys.argv[1])['DEBUG'])"
)


def _debug_of_settings_beside(env_file_dir: Path, *, tmp_path, env_file=None) -> str:
    """DEBUG as omiportal/settings.py computes it when it lives in env_file_dir/omiportal (so that a
    .env beside "manage.py" is one this test wrote, not the working tree's)."""
    package = env_file_dir / "omiportal"
    package.mkdir(exist_ok=True)
    (package / "settings.py").write_text((ROOT / "omiportal" / "settings.py").read_text())
    # DJANGO_DEBUG unset, as on a server: only a .env could turn it on.
    env = {**{k: v for k, v in PRODUCTION.items() if k != "DJANGO_DEBUG"}, "PYTHONPATH": str(ROOT)}
    if env_file is not None:
        env["OMIPORTAL_ENV_FILE"] = env_file
    result = subprocess.run(
        [sys.executable, "-c", _SETTINGS_DEBUG, str(package / "settings.py")],
        env={**{k: v for k, v in os.environ.items() if not k.startswith(("DJANGO_", "OMIPORTAL_"))},
             "OMIPORTAL_VAR_DIR": str(tmp_path / "var"), **env},
        capture_output=True, text=True, timeout=60, cwd=env_file_dir)
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


def test_a_leftover_env_file_is_not_read_unless_named(tmp_path):
    site = tmp_path / "site"
    site.mkdir()
    (site / ".env").write_text("DJANGO_DEBUG=true\n")
    assert _debug_of_settings_beside(site, tmp_path=tmp_path) == "False"
    # The same file, named, is read: `make run` names it.
    assert _debug_of_settings_beside(site, tmp_path=tmp_path, env_file=".env") == "True"


def test_make_run_names_the_development_env_file():
    assert "OMIPORTAL_ENV_FILE=.env $(PY) -m omiportal.run_local" in (ROOT / "Makefile").read_text()


# --- WEB-06 behind a proxy: the client address ----------------------------------------------------------

def _request(remote, forwarded=None):
    extra = {"HTTP_X_FORWARDED_FOR": forwarded} if forwarded is not None else {}
    return RequestFactory().get("/", REMOTE_ADDR=remote, **extra)


def test_with_no_trusted_proxy_forwarded_for_is_ignored(settings):
    settings.OMIPORTAL_TRUSTED_PROXIES = 0
    assert client_ip(_request("203.0.113.7", "198.51.100.1")) == "203.0.113.7"


def test_with_trusted_proxies_only_their_hops_are_believed(settings):
    settings.OMIPORTAL_TRUSTED_PROXIES = 1
    # The client wrote the first entry; the proxy appended the address it was connected from.
    assert client_ip(_request("10.0.0.2", "192.0.2.10, 203.0.113.66")) == "203.0.113.66"
    settings.OMIPORTAL_TRUSTED_PROXIES = 2
    assert client_ip(_request("10.0.0.3", "192.0.2.10, 203.0.113.66, 10.0.0.2")) == "203.0.113.66"
    # Fewer hops than proxies: the request skipped one, and only the connection is believed.
    assert client_ip(_request("203.0.113.66", "192.0.2.10")) == "203.0.113.66"


def _fail(client, email, *, remote, forwarded):
    return client.post(reverse("login"), {"username": email, "password": "wrong password"},
                       REMOTE_ADDR=remote, HTTP_X_FORWARDED_FOR=forwarded)


def test_with_no_trusted_proxy_a_spoofed_forwarded_for_does_not_change_the_lockout_key(settings, db):
    settings.OMIPORTAL_TRUSTED_PROXIES = 0
    approver = factories.make_user("approver@alpha.test")
    for attempt in range(settings.AXES_FAILURE_LIMIT):
        _fail(Client(), approver.email, remote="203.0.113.66", forwarded=f"198.51.100.{attempt}")
    assert set(AccessAttempt.objects.values_list("ip_address", flat=True)) == {"203.0.113.66"}
    locked = Client().post(reverse("login"), {"username": approver.email, "password": factories.PASSWORD},
                           REMOTE_ADDR="203.0.113.66", HTTP_X_FORWARDED_FOR="192.0.2.10")
    assert locked.status_code in (403, 429)


def test_behind_a_trusted_proxy_an_attacker_locks_out_only_themselves(settings, db):
    settings.OMIPORTAL_TRUSTED_PROXIES = 1
    approver = factories.make_user("approver@alpha.test")
    proxy = "10.0.0.2"
    for _ in range(settings.AXES_FAILURE_LIMIT + 2):
        # The attacker even claims the approver's address; the proxy appends the real one.
        _fail(Client(), approver.email, remote=proxy, forwarded="192.0.2.10, 203.0.113.66")
    assert set(AccessAttempt.objects.values_list("ip_address", flat=True)) == {"203.0.113.66"}
    attacker = Client().post(reverse("login"), {"username": approver.email, "password": factories.PASSWORD},
                             REMOTE_ADDR=proxy, HTTP_X_FORWARDED_FOR="203.0.113.66")
    assert attacker.status_code in (403, 429)
    # The approver, behind the same proxy, signs in.
    client = Client()
    response = client.post(reverse("login"), {"username": approver.email, "password": factories.PASSWORD},
                           REMOTE_ADDR=proxy, HTTP_X_FORWARDED_FOR="192.0.2.10")
    assert response.status_code == 302 and "_auth_user_id" in client.session
    # One function gives both the lock-out key and the trail's address.
    assert set(AuditEvent.objects.filter(action="auth.login_failed").values_list("ip", flat=True)) == {"203.0.113.66"}
    assert AuditEvent.objects.get(action="auth.logged_in").ip == "192.0.2.10"


# --- seed_demo --------------------------------------------------------------------------------------

def test_seed_demo_refuses_a_database_with_real_people(db):
    factories.make_user("ceo@example.com")
    with pytest.raises(CommandError) as refused:
        call_command("seed_demo")
    assert str(refused.value) == seed_demo.NOT_A_DEMO_DATABASE.format(users=1, teams=0)
    assert not Team.objects.exists() and User.objects.count() == 1


def test_seed_demo_refuses_a_database_with_a_real_team(db):
    factories.make_team("Payments")
    with pytest.raises(CommandError, match="not the demo's"):
        call_command("seed_demo")
    assert list(Team.objects.values_list("name", flat=True)) == ["Payments"]


def test_seed_demo_runs_on_an_empty_database_and_again_on_its_own(db):
    call_command("seed_demo", stdout=open(os.devnull, "w"))  # noqa: SIM115
    users = User.objects.count()
    call_command("seed_demo", stdout=open(os.devnull, "w"))  # noqa: SIM115
    assert User.objects.count() == users == len(seed_demo.DEMO_EMAILS)
