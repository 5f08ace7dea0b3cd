"""Start-up checks: with DJANGO_DEBUG off, the portal refuses what is only safe on one machine.

Each fallback is right for `make run` and quietly wrong in production: email printed to the
console puts invite and reset links in the logs; without DATABASE_URL or REDIS_URL each host
gets a database and a Redis of its own; checkpoints in a directory only one host sees look, from
every other host, like a cut or rewritten trail. Management commands (rqworker included) run
these checks; gunicorn does not, so omiportal/wsgi.py calls ``refuse_to_start_on_errors``.
"""

from django.conf import settings
from django.core import checks
from django.core.management.base import SystemCheckError

LOCAL_EMAIL_BACKENDS = {
    "django.core.mail.backends.console.EmailBackend",
    "django.core.mail.backends.locmem.EmailBackend",
    "django.core.mail.backends.dummy.EmailBackend",
    "django.core.mail.backends.filebased.EmailBackend",
}

LOCAL_EMAIL = "Email is not sent ({backend}): invite and password reset links would end up in logs or nowhere."
LOCAL_EMAIL_HINT = "Set OMIPORTAL_EMAIL_URL to a mail server, e.g. smtp+tls://user:password@smtp.example.com:587."
NO_DATABASE_URL = "DATABASE_URL is not set: this host would use an SQLite database of its own."
NO_DATABASE_URL_HINT = (
    "Set DATABASE_URL to the PostgreSQL database every host shares, e.g. postgres://user:password@host:5432/omiportal."
)
NO_REDIS_URL = (
    "REDIS_URL is not set: this host would run an embedded Redis of its own, and its jobs would never reach "
    "the other hosts' workers."
)
NO_REDIS_URL_HINT = "Set REDIS_URL to the Redis server every host shares, e.g. redis://host:6379/0."
LOCAL_CHECKPOINTS = (
    "Audit checkpoints would go to the local directory {directory}: a host that does not see the others' "
    "checkpoints reports the trail as cut or rewritten."
)
LOCAL_CHECKPOINTS_HINT = (
    "Set OMIPORTAL_AUDIT_CHECKPOINT_BUCKET (an OOS bucket), or declare OMIPORTAL_AUDIT_CHECKPOINT_DIR_SHARED=true "
    "if every host mounts that directory, or OMIPORTAL_SINGLE_HOST=true if one host runs the web server "
    "and all workers."
)
LOCAL_SERVICES_ALLOWED = (
    "OMIPORTAL_ALLOW_LOCAL_SERVICES is on: the checks for email, DATABASE_URL, REDIS_URL and the "
    "checkpoint store are skipped."
)
LOCAL_SERVICES_ALLOWED_HINT = "Unset OMIPORTAL_ALLOW_LOCAL_SERVICES: it is for the test suite only."


def _applies() -> bool:
    return not settings.DEBUG and not settings.OMIPORTAL_ALLOW_LOCAL_SERVICES


@checks.register(checks.Tags.security)
def email_backend_check(app_configs=None, **kwargs):
    if _applies() and settings.EMAIL_BACKEND in LOCAL_EMAIL_BACKENDS:
        return [checks.Error(LOCAL_EMAIL.format(backend=settings.EMAIL_BACKEND.rsplit(".", 2)[-2]),
                             hint=LOCAL_EMAIL_HINT, id="omiportal.E010")]
    return []


@checks.register()
def shared_database_check(app_configs=None, **kwargs):
    if _applies() and settings.OMIPORTAL_DATABASE_EMBEDDED:
        return [checks.Error(NO_DATABASE_URL, hint=NO_DATABASE_URL_HINT, id="omiportal.E011")]
    return []


@checks.register()
def shared_redis_check(app_configs=None, **kwargs):
    if _applies() and settings.OMIPORTAL_REDIS_EMBEDDED:
        return [checks.Error(NO_REDIS_URL, hint=NO_REDIS_URL_HINT, id="omiportal.E012")]
    return []


@checks.register(checks.Tags.security)
def checkpoint_store_check(app_configs=None, **kwargs):
    # Only while checkpoints are written: without a signing key there is no store to share
    # (audit.W001 says so).
    if (_applies() and settings.OMIPORTAL_AUDIT_SIGNING_KEY and not settings.OMIPORTAL_AUDIT_CHECKPOINT_BUCKET
            and not settings.OMIPORTAL_AUDIT_CHECKPOINT_DIR_SHARED and not settings.OMIPORTAL_SINGLE_HOST):
        return [checks.Error(LOCAL_CHECKPOINTS.format(directory=settings.OMIPORTAL_AUDIT_CHECKPOINT_DIR),
                             hint=LOCAL_CHECKPOINTS_HINT, id="omiportal.E013")]
    return []


@checks.register(checks.Tags.security, deploy=True)
def local_services_allowed_check(app_configs=None, **kwargs):
    if not settings.DEBUG and settings.OMIPORTAL_ALLOW_LOCAL_SERVICES:
        return [checks.Warning(LOCAL_SERVICES_ALLOWED, hint=LOCAL_SERVICES_ALLOWED_HINT, id="omiportal.W010")]
    return []


WEBHOOK_HOSTS_ALLOWED = ("OMIPORTAL_WEBHOOK_ALLOW_HOSTS lets webhook endpoints reach {hosts}: addresses that "
                         "endpoint URLs are otherwise refused (loopback, private networks).")
WEBHOOK_HOSTS_ALLOWED_HINT = "Unset it outside tests, unless a receiver inside your network is meant to get them."


@checks.register(checks.Tags.security, deploy=True)
def webhook_hosts_allowed_check(app_configs=None, **kwargs):
    if not settings.DEBUG and settings.OMIPORTAL_WEBHOOK_ALLOW_HOSTS:
        hosts = ", ".join(settings.OMIPORTAL_WEBHOOK_ALLOW_HOSTS)
        return [checks.Warning(WEBHOOK_HOSTS_ALLOWED.format(hosts=hosts), hint=WEBHOOK_HOSTS_ALLOWED_HINT,
                               id="omiportal.W011")]
    return []


def refuse_to_start_on_errors() -> None:
    """Raise SystemCheckError when a check fails, as manage.py commands do; nothing in DEBUG."""
    if settings.DEBUG:
        return
    errors = [message for message in checks.run_checks() if message.is_serious() and not message.is_silenced()]
    if errors:
        raise SystemCheckError("The portal refuses to start:\n" + "\n".join(str(error) for error in errors))
