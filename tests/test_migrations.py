"""The models and their migrations agree: a move between modules (issue 15) must not need one."""

from io import StringIO

import pytest
from django.apps import apps
from django.core.management import call_command


@pytest.mark.django_db
def test_the_models_need_no_new_migration():
    out = StringIO()
    call_command("makemigrations", "--check", "--dry-run", stdout=out)  # exits non-zero on a change
    assert "No changes detected" in out.getvalue()


def test_the_app_labels_the_migrations_name_are_unchanged():
    labels = {config.label for config in apps.get_app_configs()}
    assert {"audit", "accounts", "transfers", "sandbox"} <= labels
    assert apps.get_app_config("audit").name == "audit"
