"""Start-up behaviour with production settings, checked in fresh interpreters."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
from django.conf import settings
from django.db import connection

ROOT = Path(__file__).resolve().parent.parent
PRODUCTION = {
    "DJANGO_DEBUG": "false",
    "DJANGO_SECRET_KEY": "production-like-secret-" + "x" * 50,
    "DJANGO_ALLOWED_HOSTS": "portal.example.com",
    "OMIPORTAL_CREDENTIAL_KEYS": "k1:dGVzdHMtb25seS1jcmVkZW50aWFsLWtleS0zMmJ5dGU=",
    "DATABASE_URL": "postgres://postgres@127.0.0.1:5432/test",
    "REDIS_URL": "redis://127.0.0.1:6379/0",
    "OMIPORTAL_STATIC_MANIFEST": "true",
    "OMIPORTAL_AUDIT_SIGNING_KEY": "c2lnbmluZy1rZXktZm9yLXRlc3RzLW9ubHktMzJieXQ=",
    "OMIPORTAL_EMAIL_URL": "smtp+tls://portal:secret@smtp.example.com:587",
    "OMIPORTAL_AUDIT_CHECKPOINT_BUCKET": "omiportal-checkpoints",
}


def _manage(*args, env_overrides, drop=()):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DJANGO_", "OMIPORTAL_"))}
    env.update({"OMIPORTAL_ENV_FILE": "", **env_overrides})
    for name in drop:
        env.pop(name, None)
    return subprocess.run([sys.executable, str(ROOT / "manage.py"), *args], env=env, capture_output=True,
                          text=True, timeout=120, cwd=ROOT)


@pytest.mark.parametrize(("missing", "hint"), [
    ("DJANGO_SECRET_KEY", "DJANGO_SECRET_KEY is not set"),
    ("OMIPORTAL_CREDENTIAL_KEYS", "OMIPORTAL_CREDENTIAL_KEYS is not set"),
])
def test_production_refuses_to_start_without_its_secrets(missing, hint, tmp_path):
    result = _manage("check", env_overrides={**PRODUCTION, "OMIPORTAL_VAR_DIR": str(tmp_path)}, drop=[missing])
    assert result.returncode != 0
    assert hint in result.stderr


def test_a_malformed_key_ring_stops_start_up(tmp_path):
    result = _manage("check", env_overrides={**PRODUCTION, "OMIPORTAL_CREDENTIAL_KEYS": "k1:too-short"})
    assert result.returncode != 0
    assert "omiportal.E001" in result.stderr


def test_check_deploy_passes_with_production_settings():
    result = _manage("check", "--deploy", "--fail-level", "WARNING", env_overrides=PRODUCTION)
    assert result.returncode == 0, result.stdout + result.stderr


_COOKIES = ("from django.conf import settings as s; print(s.SESSION_COOKIE_NAME, s.CSRF_COOKIE_NAME, "
            "s.SESSION_COOKIE_SECURE, s.CSRF_COOKIE_SECURE, s.SESSION_COOKIE_PATH, s.CSRF_COOKIE_PATH, "
            "s.SESSION_COOKIE_DOMAIN, s.CSRF_COOKIE_DOMAIN)")


def test_production_cookies_carry_the_host_prefix():
    # __Host- cookies must be Secure, with Path=/ and no Domain, or browsers drop them.
    result = _manage("shell", "--no-imports", "-c", _COOKIES, env_overrides=PRODUCTION)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["__Host-sessionid", "__Host-csrftoken", "True", "True", "/", "/", "None", "None"]


def test_without_secure_cookies_the_names_stay_plain():
    # Local HTTP testing turns Secure off; a __Host- cookie would then never be stored.
    result = _manage("shell", "--no-imports", "-c", _COOKIES,
                     env_overrides={**PRODUCTION, "OMIPORTAL_SECURE_COOKIES": "false"})
    assert result.returncode == 0, result.stderr
    assert result.stdout.split()[:4] == ["sessionid", "csrftoken", "False", "False"]


def test_jobs_use_the_json_serializer_and_wait_for_commit():
    for queue in settings.RQ_QUEUES.values():
        assert queue["SERIALIZER"] == "rq.serializers.JSONSerializer"
    assert settings.RQ["COMMIT_MODE"] == "on_db_commit"


def test_ci_runs_on_postgresql_and_a_redis_server():
    """CI must exercise the real services; locally the embedded defaults are fine."""
    if os.environ.get("CI"):
        assert connection.vendor == "postgresql"
        assert settings.REDIS_URL.startswith("redis://")
    else:
        assert connection.vendor in {"sqlite", "postgresql"}
    import django_rq

    assert django_rq.get_connection("default").ping()


@pytest.mark.django_db
def test_a_statement_a_connection_runs_again_and_again_is_prepared_once():
    """PostgreSQL plans a prepared statement once per connection (and may keep a generic plan),
    not on every run: under load, planning took more of its time than running the queries."""
    from accounts.models import Team

    if connection.vendor != "postgresql":
        pytest.skip("prepared statements are PostgreSQL's")
    marker = "prepared-statement-probe"
    for _ in range(settings.DATABASES["default"]["OPTIONS"]["prepare_threshold"] + 1):
        list(Team.objects.filter(name=marker))
    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM pg_prepared_statements WHERE statement LIKE %s",
                       ['%"accounts_team"."name" = $1%'])
        assert cursor.fetchone()[0] == 1


_PREPARE = ("from django.conf import settings as s; o = s.DATABASES['default'].get('OPTIONS', {}); "
            "print(o.get('server_side_binding'), o.get('prepare_threshold'))")


@pytest.mark.parametrize(("value", "expected"), [(None, ["True", "5"]), ("2", ["True", "2"]), ("0", ["None", "None"])])
def test_the_prepare_threshold_is_a_setting_and_zero_turns_it_off(value, expected):
    overrides = {**PRODUCTION} if value is None else {**PRODUCTION, "DATABASE_PREPARE_THRESHOLD": value}
    result = _manage("shell", "--no-imports", "-c", _PREPARE, env_overrides=overrides,
                     drop=() if value is not None else ("DATABASE_PREPARE_THRESHOLD",))
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == expected
