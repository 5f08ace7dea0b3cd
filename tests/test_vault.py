import base64
import uuid

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from accounts import vault

TEAM, ROW = uuid.uuid4(), uuid.uuid4()
IDS = {"team_id": TEAM, "object_id": ROW, "field": "secret_key"}


def _raw(sealed):
    version, kid, body = sealed.split("$")
    return version, kid, bytearray(base64.urlsafe_b64decode(body))


def _join(version, kid, raw):
    return f"{version}${kid}${base64.urlsafe_b64encode(bytes(raw)).decode()}"


@settings(max_examples=60, deadline=None)
@given(secret=st.text(min_size=0, max_size=200))
def test_it_round_trips_any_secret(secret):
    assert vault.decrypt(vault.seal(secret, **IDS), **IDS) == secret


def test_it_uses_a_fresh_nonce_every_time():
    nonces = {bytes(_raw(vault.seal("same", **IDS))[2][:12]) for _ in range(10_000)}
    assert len(nonces) == 10_000


def test_sealed_values_carry_version_and_key_id_but_not_the_secret():
    sealed = vault.seal("SECRETSECRET", **IDS)
    assert sealed.startswith("v1$test1$")
    assert "SECRETSECRET" not in sealed


@pytest.mark.parametrize("where", ["nonce", "body", "tag"])
def test_it_refuses_a_flipped_bit(where):
    version, kid, raw = _raw(vault.seal("top secret value", **IDS))
    index = {"nonce": 0, "body": 13, "tag": len(raw) - 1}[where]
    raw[index] ^= 0x01
    with pytest.raises(vault.VaultError, match="altered or belongs to another record"):
        vault.decrypt(_join(version, kid, raw), **IDS)


@pytest.mark.parametrize(
    "transform",
    [
        lambda v, k, r: _join(v, k, r[:-1]),  # truncated
        lambda v, k, r: _join(v, k, r + b"\x00"),  # appended
        lambda v, k, r: _join(v, k, r[:20]),  # too short
        lambda v, k, r: _join("v2", k, r),  # other version
        lambda v, k, r: "not-a-sealed-value",
        lambda v, k, r: "",
        lambda v, k, r: f"{v}${k}$***",  # not base64
    ],
)
def test_it_refuses_damaged_values_without_returning_bytes(transform):
    sealed = transform(*_raw(vault.seal("top secret value", **IDS)))
    with pytest.raises(vault.VaultError) as info:
        vault.decrypt(sealed, **IDS)
    assert "top secret" not in str(info.value)


def test_it_refuses_an_unknown_key_id(settings):
    version, _, raw = _raw(vault.seal("value", **IDS))
    with pytest.raises(vault.VaultError, match="key id 'ghost'"):
        vault.decrypt(_join(version, "ghost", raw), **IDS)


def test_a_changed_key_id_is_refused_even_when_the_ring_has_it(settings):
    other = base64.b64encode(b"k" * 32).decode()
    settings.OMIPORTAL_CREDENTIAL_KEYS = f"test1:{settings.OMIPORTAL_CREDENTIAL_KEYS.split(':')[1]},other:{other}"
    version, _, raw = _raw(vault.seal("value", **IDS))
    with pytest.raises(vault.VaultError):
        vault.decrypt(_join(version, "other", raw), **IDS)


@pytest.mark.parametrize(
    "elsewhere",
    [
        {"team_id": uuid.uuid4(), "object_id": ROW, "field": "secret_key"},  # another team
        {"team_id": TEAM, "object_id": uuid.uuid4(), "field": "secret_key"},  # another row
        {"team_id": TEAM, "object_id": ROW, "field": "access_key"},  # another field
    ],
)
def test_a_value_copied_elsewhere_does_not_open(elsewhere):
    sealed = vault.seal("value", **IDS)
    with pytest.raises(vault.VaultError):
        vault.decrypt(sealed, **elsewhere)


def test_every_key_in_the_ring_opens_and_the_first_seals(settings):
    old = settings.OMIPORTAL_CREDENTIAL_KEYS
    sealed_old = vault.seal("value", **IDS)
    settings.OMIPORTAL_CREDENTIAL_KEYS = f"new:{base64.b64encode(b'n' * 32).decode()},{old}"
    assert vault.key_id_of(vault.seal("value", **IDS)) == "new"
    assert vault.decrypt(sealed_old, **IDS) == "value"


@pytest.mark.parametrize(
    ("ring", "message"),
    [
        ("", "is empty"),
        ("nokey", "must read kid:base64key"),
        ("bad id!:AAAA", "must read kid:base64key"),
        ("k1:not base64!!", "not valid base64"),
        (f"k1:{base64.b64encode(b'short').decode()}", "must be 32 bytes"),
        (f"k1:{base64.b64encode(b'a' * 32).decode()},k1:{base64.b64encode(b'b' * 32).decode()}", "twice"),
    ],
)
def test_a_malformed_key_ring_is_explained(ring, message):
    with pytest.raises(vault.KeyRingError, match=message):
        vault.parse_key_ring(ring)


def test_the_key_ring_never_prints_its_keys():
    ring = vault.parse_key_ring(f"k1:{base64.b64encode(b'z' * 32).decode()}")
    assert "zzzz" not in repr(ring)
    assert base64.b64encode(b"z" * 32).decode()[:8] not in repr(ring)


def test_access_keys_are_masked_to_their_last_four_characters():
    assert vault.mask_access_key("AKIAEXAMPLE000000001") == "••••••••0001"
    assert "AKIA" not in vault.mask_access_key("AKIAEXAMPLE000000001")
