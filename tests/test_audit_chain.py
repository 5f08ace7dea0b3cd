"""The hash chain and its verification: AUD-01 to AUD-04, and the audit_verify command."""

import datetime
import uuid

import pytest
from django.core.management import CommandError, call_command
from django.db import connection, transaction
from django.db.models.expressions import RawSQL
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from audit import actions, guard, hashing, verify
from audit.context import AuditContext, _current
from audit.models import AuditChainHead, AuditEvent
from audit.recorder import AuditTarget, record
from audit.verify import verify_chain
from tests import factories

DB_EXAMPLES = settings(
    max_examples=30,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)

# Anything PostgreSQL can store in text: no NUL, no lone surrogates.
# Hypothesis also draws string constants from the project's code, such as the guard's own
# "x-amz-signature" pattern: values the guard rightly refuses are left out of these histories.
text = st.text(alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), max_size=24).filter(
    lambda value: not guard.is_secret_value(value))
keys = text.filter(lambda key: not guard.is_secret_key(key))
json_values = st.recursive(
    st.none() | st.booleans() | st.integers(min_value=hashing.INT_MIN, max_value=hashing.INT_MAX) | text,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(keys, children, max_size=4),
    max_leaves=15,
)
# A denial (auth.locked_out) is only ever recorded denied: the recorder refuses it otherwise.
events = st.fixed_dictionaries({
    "action": st.sampled_from(["share.approved", "membership.role_changed", "auth.locked_out", "audit.read"]),
    "outcome": st.sampled_from(["success", "denied", "failed"]),
    "details": st.dictionaries(keys, json_values, max_size=5),
    "target": st.none() | st.builds(AuditTarget, text.filter(bool), text.map(lambda s: s[:64]), text),
    "cloud_request_ids": st.lists(text.filter(bool), max_size=3),
    "with_actor": st.booleans(),
    "with_team": st.booleans(),
}).filter(lambda event: event["outcome"] == "denied" or not actions.ACTIONS[event["action"]].denial)


@pytest.fixture
def people(db):
    return factories.make_user("actor@example.com", full_name="Ada Actor"), factories.make_team("Chain team")


@pytest.fixture
def web_context():
    token = _current.set(AuditContext(request_id="a" * 32, ip="2001:db8::7", user_agent="pytest/1.0"))
    yield
    _current.reset(token)


def _record_history(history, people):
    user, team = people
    return [
        record(
            action=item["action"], outcome=item["outcome"], details=item["details"], target=item["target"],
            cloud_request_ids=item["cloud_request_ids"],
            actor=user if item["with_actor"] else None, team=team if item["with_team"] else None,
        )
        for item in history
    ]


def _record_some(count, people):
    user, team = people
    return [
        record(action="share.approved", actor=user, team=team, target=team,
               details={"n": index, "nested": {"list": [index, "x", None, True]}}, cloud_request_ids=[f"req-{index}"])
        for index in range(1, count + 1)
    ]


@DB_EXAMPLES
@given(history=st.lists(events, min_size=1, max_size=6))
def test_it_verifies_every_generated_history(people, history):
    # Each example runs in a savepoint rolled back at its end, so every history
    # starts a fresh chain at seq 1.
    with transaction.atomic():
        recorded = _record_history(history, people)
        result = verify_chain()
        assert result.ok, result
        assert result.count == len(history)
        stored = list(AuditEvent.objects.order_by("seq"))
        assert [event.seq for event in stored] == list(range(1, len(history) + 1))
        assert stored[0].prev_hash == hashing.GENESIS_HASH
        for item, event, fresh in zip(history, recorded, stored, strict=True):
            assert fresh.details == hashing.normalise_json(item["details"])
            assert fresh.hash == event.hash
            if item["target"] is not None:
                assert fresh.target_label == item["target"].label
        transaction.set_rollback(True)


def _changed_text(value, data, *, alphabet=None):
    if not value:
        return data.draw(st.text(alphabet=alphabet or "xyz", min_size=1, max_size=3))
    index = data.draw(st.integers(0, len(value) - 1))
    any_char = st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00")
    replacement = data.draw(st.sampled_from(alphabet) if alphabet else any_char)
    if replacement == value[index]:
        replacement = "0" if value[index] != "0" else "1"
    return value[:index] + replacement + value[index + 1:]


def _tampered(field, value, data):
    """A value for ``field`` differing from ``value`` by one character, one unit or one key."""
    if field in ("hash", "prev_hash"):
        return _changed_text(value, data, alphabet="0123456789abcdef")
    if field == "public_id":
        return uuid.UUID(_changed_text(value.hex, data, alphabet="0123456789abcdef"))
    if field == "occurred_at":
        return value + datetime.timedelta(microseconds=data.draw(st.integers(1, 10**6)))
    if field == "seq":
        return value + 100
    if field in ("actor_id", "team_id"):
        return 999_999 if value is None else value + 1
    if field == "outcome":
        return data.draw(st.sampled_from(sorted({"success", "denied", "failed"} - {value})))
    if field == "details":
        return {**value, "tampered": data.draw(st.integers(0, 9))}
    if field == "cloud_request_ids":
        return [*value, "req-forged"]
    if field == "ip":
        return "10.9.8.7" if value != "10.9.8.7" else "10.9.8.6"
    return _changed_text(value, data)


@pytest.mark.parametrize("field", [*hashing.HASHED_FIELDS, "prev_hash", "hash"])
@settings(DB_EXAMPLES, max_examples=6)
@given(data=st.data())
def test_it_reports_the_event_whose_hashed_field_was_altered(people, audit_tamper, web_context, field, data):
    # Hypothesis picks the event and the change; every field is tried.
    with transaction.atomic():
        _record_some(4, people)
        seq = data.draw(st.integers(1, 4), label="seq")
        original = AuditEvent.objects.values_list(field, flat=True).get(seq=seq)
        audit_tamper.update(seq, **{field: _tampered(field, original, data)})
        result = verify_chain()
        assert not result.ok
        assert result.first_bad_seq == seq, result
        transaction.set_rollback(True)


@pytest.mark.parametrize("moved", ["year 999", "the same time BC"])
def test_it_reports_an_event_moved_to_a_time_the_recorder_cannot_write(people, audit_tamper, moved):
    """The recorder stamps the present. PostgreSQL prints a year BC like the same year AD, so
    verification reads such a time as no time at all, and says the event was altered."""
    if moved == "the same time BC" and connection.vendor != "postgresql":
        pytest.skip("SQLite stores times as text, without eras")
    _record_some(3, people)
    if moved == "year 999":
        when = AuditEvent.objects.get(seq=2).occurred_at
        audit_tamper.update(2, occurred_at=when.replace(year=999))
    else:
        audit_tamper.update(2, occurred_at=RawSQL(
            "((occurred_at AT TIME ZONE 'UTC')::text || ' BC')::timestamp AT TIME ZONE 'UTC'", []))
    result = verify_chain()
    assert not result.ok
    assert (result.first_bad_seq, result.reason) == (2, verify.HASH_MISMATCH), result


def test_it_detects_a_deleted_first_row(people, audit_tamper):
    _record_some(4, people)
    audit_tamper.delete(1)
    result = verify_chain()
    assert (result.ok, result.reason, result.first_bad_seq) == (False, verify.GAP, 1)


def test_it_detects_a_deleted_middle_row(people, audit_tamper):
    _record_some(5, people)
    audit_tamper.delete(3)
    result = verify_chain()
    assert (result.ok, result.reason, result.first_bad_seq, result.count) == (False, verify.GAP, 3, 2)


def test_it_detects_a_deleted_last_row_through_the_chain_head(people, audit_tamper):
    _record_some(5, people)
    audit_tamper.delete(5)
    result = verify_chain()
    # Events 1 to 4 still form a perfect chain: only the head knows #5 existed.
    assert result.count == 4
    assert (result.ok, result.reason, result.first_bad_seq) == (False, verify.HEAD_MISMATCH, 5)


def test_it_detects_a_head_that_disagrees_with_the_last_event(people, audit_tamper):
    _record_some(3, people)
    audit_tamper.set_head(seq=3, hash="f" * 64)
    result = verify_chain()
    assert (result.ok, result.reason, result.first_bad_seq) == (False, verify.HEAD_MISMATCH, 3)


def test_it_detects_a_missing_chain_head(people, audit_tamper):
    _record_some(2, people)
    with audit_tamper.lifted():
        AuditChainHead._base_manager.all().delete()
    result = verify_chain()
    assert (result.ok, result.reason) == (False, verify.HEAD_MISSING)


PAYLOAD = [field for field in hashing.HASHED_FIELDS if field not in ("seq", "public_id")]


def _swap(tamper, a, b, fields):
    values = {seq: AuditEvent.objects.values(*fields).get(seq=seq) for seq in (a, b)}
    with tamper.lifted():  # hash and public_id are unique: park one row first
        parked = {f: (f"parked-{a}" if f == "hash" else uuid.uuid4()) for f in ("hash", "public_id") if f in fields}
        if parked:
            AuditEvent._base_manager.filter(seq=a).update(**parked)
        AuditEvent._base_manager.filter(seq=b).update(**values[a])
        AuditEvent._base_manager.filter(seq=a).update(**values[b])


def test_it_detects_two_events_with_swapped_payloads(people, audit_tamper):
    _record_some(5, people)
    _swap(audit_tamper, 2, 4, PAYLOAD)
    result = verify_chain()
    assert (result.ok, result.reason, result.first_bad_seq) == (False, verify.HASH_MISMATCH, 2)


def test_it_detects_two_whole_events_swapped_with_their_hashes(people, audit_tamper):
    _record_some(5, people)
    _swap(audit_tamper, 2, 4, [*PAYLOAD, "public_id", "prev_hash", "hash"])
    result = verify_chain()
    assert (result.ok, result.reason, result.first_bad_seq) == (False, verify.BROKEN_LINK, 2)


def test_it_detects_reordered_sequence_numbers(people, audit_tamper):
    _record_some(4, people)
    with audit_tamper.lifted():
        AuditEvent._base_manager.filter(seq=2).update(seq=1000)
        AuditEvent._base_manager.filter(seq=3).update(seq=2)
        AuditEvent._base_manager.filter(seq=1000).update(seq=3)
    result = verify_chain()
    assert not result.ok
    assert result.first_bad_seq == 2


def test_it_verifies_across_fetch_chunks(people):
    _record_some(7, people)
    result = verify_chain(chunk_size=2)
    assert (result.ok, result.count, result.last_seq) == (True, 7, 7)


def test_it_verifies_an_empty_trail(db):
    result = verify_chain()
    assert (result.ok, result.count) == (True, 0)


def test_the_command_succeeds_on_an_intact_chain(people, capsys):
    _record_some(3, people)
    call_command("audit_verify")
    assert "intact: 3 event(s)" in capsys.readouterr().out


def test_the_command_fails_naming_the_first_bad_event(people, audit_tamper):
    _record_some(4, people)
    audit_tamper.update(3, target_label="forged")
    with pytest.raises(CommandError) as excinfo:
        call_command("audit_verify")
    assert excinfo.value.returncode == 1
    assert "event #3" in str(excinfo.value)
    assert "hash_mismatch" in str(excinfo.value)
