"""django-otp's clock for the two-factor tests (tests/test_twofactor.py, the insider tests).

  clock    function-scoped: the time django-otp checks codes against; ``clock.now`` starts at START
           and moves only when a test moves it, so a test chooses which 30-second step a code is in.
"""

from types import SimpleNamespace

import pytest
from django_otp.plugins.otp_totp import models as totp_models

START = 1_700_000_000.0  # a fixed moment


@pytest.fixture
def clock(monkeypatch):
    clock = SimpleNamespace(now=START)
    monkeypatch.setattr(totp_models, "time", SimpleNamespace(time=lambda: clock.now))
    return clock
