"""Signed checkpoints outside the database and what verification makes of them: AUD-05 to AUD-07,
export files, the integrity status for the review pages, and the worker's periodic jobs."""

import base64
import dataclasses
import json
import os
import time

import django_rq
import pytest
from django.core.management import CommandError, call_command
from rq.job import Job, JobStatus
from rq.serializers import JSONSerializer

from audit import checkpoints, hashing, integrity, jobs, signing, verify
from audit.checkpoints import DirectoryStore
from audit.download_format import DOWNLOAD_COLUMNS, csv_cells, event_row, head_line
from audit.download_verify import verify_download
from audit.integrity import NO_SIGNING_KEY, audit_checkpoint_check, latest_status, write_checkpoint
from audit.models import AuditChainHead, AuditEvent
from audit.recorder import AuditTarget, record
from audit.verify import verify_chain
from omiportal.worker import PortalWorker
from tests import workers


@pytest.fixture
def signing_key(settings, tmp_path):
    key = signing.generate_private_key_b64()
    settings.OMIPORTAL_AUDIT_SIGNING_KEY = key
    settings.OMIPORTAL_AUDIT_VERIFY_KEYS = []
    settings.OMIPORTAL_AUDIT_CHECKPOINT_DIR = str(tmp_path / "checkpoints")
    settings.OMIPORTAL_AUDIT_CHECKPOINT_BUCKET = ""
    settings.OMIPORTAL_AUDIT_ARCHIVED_THROUGH_SEQ = 0
    return key


@pytest.fixture
def store(db, signing_key, settings):
    return DirectoryStore(settings.OMIPORTAL_AUDIT_CHECKPOINT_DIR)


def _record(count, start=1):
    return [record(action="share.approved", actor=None, target=AuditTarget("share", str(n), f"Share {n}"),
                   details={"n": n, "list": [n, "x", None, True]}, cloud_request_ids=[f"req-{n}"])
            for n in range(start, start + count)]


def _rewrite(store, name, change):
    path = os.path.join(store.path, name)
    with open(path, encoding="utf-8") as handle:
        document = json.load(handle)
    change(document)
    os.chmod(path, 0o644)
    with open(path, "w", encoding="utf-8") as handle:
        json.dump(document, handle)


def _rehash_from(audit_tamper, seq):
    """The attacker with database write access: recompute every hash from ``seq`` on, and the head."""
    columns = ("prev_hash", *hashing.HASHED_FIELDS)
    prev = AuditEvent.objects.get(seq=seq - 1).hash if seq > 1 else hashing.GENESIS_HASH
    last = AuditEvent.objects.order_by("-seq").values_list("seq", flat=True).first()
    with audit_tamper.lifted():
        for current in range(seq, last + 1):
            values = AuditEvent.objects.values(*columns).get(seq=current)
            digest = hashing.event_hash(prev_hash=prev, fields={f: values[f] for f in hashing.HASHED_FIELDS})
            AuditEvent._base_manager.filter(seq=current).update(prev_hash=prev, hash=digest)
            prev = digest
        AuditChainHead._base_manager.update(seq=last, hash=prev)


# --- writing checkpoints ------------------------------------------------------------------


def test_it_signs_the_chain_head_outside_the_database_and_records_an_event(store):
    _record(3)
    outcome = write_checkpoint()
    assert outcome.written and outcome.checkpoint.seq == 3 and outcome.checkpoint.number == 1
    assert store.names() == ["checkpoint-00000001.json"]
    path = os.path.join(store.path, "checkpoint-00000001.json")
    assert oct(os.stat(path).st_mode & 0o777) == "0o444"
    with open(path, encoding="utf-8") as handle:
        document = json.load(handle)
    assert document["format"] == checkpoints.FORMAT
    assert document["checkpoint"]["hash"] == AuditEvent.objects.get(seq=3).hash
    assert document["checkpoint"]["prev_digest"] == hashing.GENESIS_HASH
    assert document["checkpoint"]["key_fingerprint"].startswith("ed25519:")
    event = AuditEvent.objects.get(seq=4)
    assert event.action == "audit.checkpointed" and event.details["number"] == 1
    result = verify_chain()
    assert result.ok, result
    assert (result.checkpoint_seq, result.checkpoints) == (3, 1)


def test_it_writes_nothing_when_nothing_changed_and_links_the_next_one(store):
    _record(2)
    first = write_checkpoint().checkpoint
    again = write_checkpoint()  # only its own audit.checkpointed event came since
    assert not again.written and "nothing changed" in again.message
    assert store.names() == ["checkpoint-00000001.json"]
    _record(1, start=3)
    second = write_checkpoint().checkpoint
    assert (second.number, second.seq, second.prev_digest) == (2, 4, first.digest)
    assert verify_chain().ok


def test_it_writes_nothing_for_an_empty_trail(store):
    assert not write_checkpoint().written
    assert store.names() == []


def test_checkpoint_files_are_never_overwritten(store):
    store.create("checkpoint-00000001.json", b"first")
    with pytest.raises(FileExistsError):
        store.create("checkpoint-00000001.json", b"second")
    assert store.read("checkpoint-00000001.json") == b"first"
    assert [name for name in os.listdir(store.path) if name.startswith(".tmp")] == []


def test_it_refuses_to_sign_a_trail_already_broken_since_the_last_checkpoint(store, audit_tamper):
    _record(2)
    write_checkpoint()
    _record(2, start=3)
    audit_tamper.update(5, target_label="forged")
    with pytest.raises(checkpoints.AuditError, match="Refusing to sign"):
        write_checkpoint()
    assert len(store.names()) == 1


def test_checkpoints_are_off_without_a_key_and_the_system_check_says_what_to_set(settings):
    settings.DEBUG = False
    settings.OMIPORTAL_AUDIT_SIGNING_KEY = ""
    warnings = audit_checkpoint_check()
    assert [w.id for w in warnings] == ["audit.W001"]
    assert warnings[0].msg == NO_SIGNING_KEY and "OMIPORTAL_AUDIT_SIGNING_KEY" in warnings[0].hint
    assert not checkpoints.enabled()
    with pytest.raises(checkpoints.AuditError, match="OMIPORTAL_AUDIT_SIGNING_KEY"):
        write_checkpoint()
    settings.OMIPORTAL_AUDIT_SIGNING_KEY = "bm90IGEga2V5"
    assert [e.id for e in audit_checkpoint_check()] == ["audit.E001"]
    settings.OMIPORTAL_AUDIT_SIGNING_KEY = signing.generate_private_key_b64()
    assert audit_checkpoint_check() == []


# --- AUD-05, AUD-06: what the chain alone cannot see ----------------------------------------


def test_aud05_a_rewritten_prefix_with_recomputed_hashes_is_caught_by_the_checkpoint(store, audit_tamper):
    _record(6)
    write_checkpoint()  # at #6; its event is #7
    _record(2, start=7)  # #8, #9
    audit_tamper.update(2, target_label="forged", details={"n": 999})
    _rehash_from(audit_tamper, 2)
    assert verify_chain(checkpoints=[]).ok  # without the checkpoint, a perfect chain
    result = verify_chain()
    assert (result.ok, result.reason, result.first_bad_seq, result.checkpoint_number) == (
        False, verify.CHECKPOINT_MISMATCH, 6, 1)
    assert "rewritten" in result.message


def test_aud06_a_tail_cut_after_a_checkpoint_is_caught_even_with_the_head_rewound(store, audit_tamper):
    _record(5)
    write_checkpoint()  # at #5; its event is #6
    for seq in (6, 5, 4):
        audit_tamper.delete(seq)
    audit_tamper.set_head(seq=3, hash=AuditEvent.objects.get(seq=3).hash)
    assert verify_chain(checkpoints=[]).ok
    result = verify_chain()
    assert (result.ok, result.reason, result.first_bad_seq) == (False, verify.CHECKPOINT_BEYOND_CHAIN, 4)
    assert "#5" in result.message


def test_a_store_missing_a_checkpoint_the_trail_recorded_is_caught(store):
    _record(2)
    write_checkpoint()
    _record(1, start=3)
    write_checkpoint()
    os.unlink(os.path.join(store.path, "checkpoint-00000002.json"))
    result = verify_chain()
    assert (result.ok, result.reason, result.checkpoint_number) == (False, verify.CHECKPOINT_MISSING, 2)


# --- AUD-07: the checkpoints themselves -------------------------------------------------------


def test_aud07_a_tampered_signature_fails(store):
    _record(2)
    write_checkpoint()

    def flip(document):
        raw = bytearray(base64.b64decode(document["signature"]))
        raw[5] ^= 1
        document["signature"] = base64.b64encode(bytes(raw)).decode()

    _rewrite(store, "checkpoint-00000001.json", flip)
    result = verify_chain()
    assert (result.ok, result.reason, result.checkpoint_number) == (False, verify.CHECKPOINT_BAD_SIGNATURE, 1)


def test_aud07_a_checkpoint_moved_to_match_a_rewritten_trail_fails(store):
    _record(3)
    write_checkpoint()

    def move(document):
        document["checkpoint"]["seq"] = 2
        document["checkpoint"]["hash"] = AuditEvent.objects.get(seq=2).hash
        document.pop("digest")

    _rewrite(store, "checkpoint-00000001.json", move)
    result = verify_chain()
    assert (result.ok, result.reason, result.checkpoint_number) == (False, verify.CHECKPOINT_BAD_SIGNATURE, 1)


def test_aud07_an_unknown_key_fails_until_its_public_key_is_listed(store, settings, signing_key):
    _record(2)
    write_checkpoint()
    settings.OMIPORTAL_AUDIT_SIGNING_KEY = signing.generate_private_key_b64()  # rotated
    result = verify_chain()
    assert (result.ok, result.reason, result.checkpoint_number) == (False, verify.CHECKPOINT_UNKNOWN_KEY, 1)
    assert "OMIPORTAL_AUDIT_VERIFY_KEYS" in result.message
    settings.OMIPORTAL_AUDIT_VERIFY_KEYS = [signing.public_key_b64(signing_key)]
    assert verify_chain().ok
    _record(1, start=3)
    assert write_checkpoint().written  # the new key continues the chain of checkpoints
    result = verify_chain()
    assert result.ok and result.checkpoints == 2


def test_aud07_a_broken_checkpoint_link_fails(store, signing_key):
    _record(2)
    write_checkpoint()
    _record(1, start=3)
    second = write_checkpoint().checkpoint
    # A validly signed checkpoint #2 that does not link to #1 (e.g. from another chain).
    key = signing.signing_key()
    forged = dataclasses.replace(second, prev_digest="ab" * 32, signature="", stored_digest="")
    forged = dataclasses.replace(forged, signature=signing.sign(key, forged.message()))
    os.chmod(os.path.join(store.path, second.name), 0o644)
    os.unlink(os.path.join(store.path, second.name))
    store.create(forged.name, forged.to_bytes())
    result = verify_chain()
    assert (result.ok, result.reason, result.checkpoint_number) == (False, verify.CHECKPOINT_BROKEN_LINK, 2)


def test_aud07_a_missing_checkpoint_in_the_middle_breaks_the_numbering(store):
    for start in (1, 2, 3):
        _record(1, start=start)
        write_checkpoint()
    os.unlink(os.path.join(store.path, "checkpoint-00000002.json"))
    result = verify_chain()
    assert (result.ok, result.reason, result.checkpoint_number) == (False, verify.CHECKPOINT_BROKEN_LINK, 2)


def test_a_malformed_checkpoint_file_fails_verification(store):
    _record(1)
    store.create("checkpoint-00000001.json", b"{not json")
    result = verify_chain()
    assert (result.ok, result.reason) == (False, "checkpoint_malformed")


# --- the OOS store --------------------------------------------------------------------------


def test_checkpoints_go_to_an_oos_bucket_when_one_is_set(db, cloud, settings, signing_key, oos):
    account = cloud.account("alpha")
    settings.OMIPORTAL_AUDIT_CHECKPOINT_BUCKET = account["bucket"]
    settings.OMIPORTAL_AUDIT_CHECKPOINT_REGION = account["region"]
    settings.OMIPORTAL_AUDIT_CHECKPOINT_ACCESS_KEY = account["access_key"]
    settings.OMIPORTAL_AUDIT_CHECKPOINT_SECRET_KEY = account["secret_key"]
    settings.OMIPORTAL_AUDIT_CHECKPOINT_PREFIX = "audit/"
    _record(2)
    assert write_checkpoint().written
    assert not write_checkpoint().written
    _record(1, start=3)
    assert write_checkpoint().written
    client = oos("alpha")
    keys = [item["Key"] for item in client.list_objects_v2(Bucket=account["bucket"], Prefix="audit/")["Contents"]]
    assert keys == ["audit/checkpoint-00000001.json", "audit/checkpoint-00000002.json"]
    assert not os.path.exists(settings.OMIPORTAL_AUDIT_CHECKPOINT_DIR)
    assert verify_chain().ok
    bucket_store = checkpoints.configured_store()
    with pytest.raises(FileExistsError):
        bucket_store.create("checkpoint-00000002.json", b"{}")
    # Someone with the bucket's keys but not the signing key rewrites a checkpoint.
    body = json.loads(client.get_object(Bucket=account["bucket"], Key=keys[0])["Body"].read())
    body["checkpoint"]["seq"] = 1
    client.put_object(Bucket=account["bucket"], Key=keys[0], Body=json.dumps(body).encode())
    result = verify_chain()
    assert (result.ok, result.reason, result.checkpoint_number) == (False, verify.CHECKPOINT_BAD_SIGNATURE, 1)


# --- export files ---------------------------------------------------------------------------


def _export_jsonl(path, seqs=None, head=True):
    rows = AuditEvent.objects.order_by("seq").values(*DOWNLOAD_COLUMNS)
    with open(path, "w", encoding="utf-8") as handle:
        if head:
            chain = AuditChainHead.objects.get()
            handle.write(head_line(seq=chain.seq, hash=chain.hash) + "\n")
        for values in rows:
            if seqs is None or values["seq"] in seqs:
                handle.write(json.dumps(event_row(values), ensure_ascii=False) + "\n")
    return path


def _export_csv(path):
    import csv

    chain = AuditChainHead.objects.get()
    with open(path, "w", encoding="utf-8", newline="") as handle:
        handle.write(head_line(seq=chain.seq, hash=chain.hash, csv=True) + "\r\n")
        writer = csv.writer(handle)
        writer.writerow(DOWNLOAD_COLUMNS)
        for values in AuditEvent.objects.order_by("seq").values(*DOWNLOAD_COLUMNS):
            writer.writerow(csv_cells(event_row(values)))
    return path


def _edit_line(path, seq, old, new):
    with open(path, encoding="utf-8") as handle:
        lines = handle.read().splitlines(keepends=True)
    index = next(i for i, line in enumerate(lines) if f'"seq": {seq},' in line or line.startswith(f"{seq},"))
    assert old in lines[index]
    lines[index] = lines[index].replace(old, new, 1)
    with open(path, "w", encoding="utf-8") as handle:
        handle.write("".join(lines))


def test_a_jsonl_export_verifies_and_an_edited_cell_is_named(store, tmp_path):
    _record(4)
    cp = write_checkpoint().checkpoint
    path = _export_jsonl(tmp_path / "audit.jsonl")
    result = verify_download(path, checkpoint=cp)
    assert result.ok and result.rows == 5 and "complete" in result.message
    call_command("audit_verify", "--export", str(path), "--checkpoint", os.path.join(store.path, cp.name))
    _edit_line(path, 3, "Share 3", "Share X")
    result = verify_download(path)
    assert (result.ok, result.first_bad_seq, result.reason) == (False, 3, "hash_mismatch")
    with pytest.raises(CommandError) as excinfo:
        call_command("audit_verify", "--export", str(path))
    assert excinfo.value.returncode == 1 and "event #3" in str(excinfo.value)


def test_a_csv_export_verifies_and_an_edited_cell_is_named(store, tmp_path):
    _record(3)
    write_checkpoint()
    path = _export_csv(tmp_path / "audit.csv")
    assert verify_download(path).ok
    _edit_line(path, 2, "req-2", "req-9")
    result = verify_download(path)
    assert (result.ok, result.first_bad_seq) == (False, 2)


def test_a_filtered_export_checks_each_row_and_the_checkpoint_it_contains(store, tmp_path):
    _record(6)
    cp = write_checkpoint().checkpoint  # at #6
    path = _export_jsonl(tmp_path / "filtered.jsonl", seqs={2, 4, 6}, head=False)
    result = verify_download(path, checkpoint=cp)
    assert result.ok and not result.contiguous and "1 anchor" in result.message
    wrong = dataclasses.replace(cp, hash="0" * 63 + "1")
    assert verify_download(path, checkpoint=wrong).reason == "checkpoint_mismatch"


def test_a_complete_export_that_stops_before_the_checkpoint_fails(store, tmp_path):
    _record(5)
    cp = write_checkpoint().checkpoint
    path = _export_jsonl(tmp_path / "short.jsonl", seqs={1, 2, 3}, head=False)
    result = verify_download(path, checkpoint=cp)
    assert (result.ok, result.reason, result.first_bad_seq) == (False, "checkpoint_beyond_chain", 4)


def test_the_command_refuses_a_tampered_checkpoint_file_for_an_export(store, tmp_path):
    _record(2)
    cp = write_checkpoint().checkpoint
    path = _export_jsonl(tmp_path / "audit.jsonl")
    _rewrite(store, cp.name, lambda document: document["checkpoint"].update(seq=1))
    with pytest.raises(CommandError) as excinfo:
        call_command("audit_verify", "--export", str(path), "--checkpoint", os.path.join(store.path, cp.name))
    assert excinfo.value.returncode == 1 and "checkpoint_bad_signature" in str(excinfo.value)


# --- the command, the status, retention --------------------------------------------------------


def test_audit_verify_exit_codes_and_the_integrity_status(store, audit_tamper, capsys):
    status = latest_status()
    assert (status.ok, status.verified_at, status.message) == (None, None, integrity.NEVER_VERIFIED)
    _record(3)
    call_command("audit_checkpoint")
    call_command("audit_verify")
    assert "OK: audit chain intact: 4 event(s)" in capsys.readouterr().out
    status = latest_status()
    assert (status.ok, status.events_checked, status.last_seq, status.checkpoint_seq) == (True, 4, 4, 3)
    assert status.verified_at is not None and status.checkpoint_at is not None
    audit_tamper.update(2, actor_name="forged")
    _rehash_from(audit_tamper, 2)
    with pytest.raises(CommandError) as excinfo:
        call_command("audit_verify")
    assert excinfo.value.returncode == 1
    assert "event #3" in str(excinfo.value) and "checkpoint_mismatch" in str(excinfo.value)
    status = latest_status()
    assert status.ok is False and "event #3" in status.message


def test_audit_checkpoint_command_generates_a_key(capsys):
    call_command("audit_checkpoint", "--generate-key")
    out = capsys.readouterr().out
    private = out.split("OMIPORTAL_AUDIT_SIGNING_KEY=")[1].split()[0]
    assert len(base64.b64decode(private)) == 32 and signing.public_key_b64(private) in out


def test_an_archived_prefix_verifies_from_its_signed_checkpoint(store, audit_tamper, settings, tmp_path):
    _record(5)
    cp = write_checkpoint().checkpoint  # at #5
    _record(2, start=6)
    archive = _export_jsonl(tmp_path / "archive.jsonl", seqs=set(range(1, 6)), head=False)
    assert verify_download(archive, checkpoint=cp).ok
    for seq in range(1, 6):  # the documented maintenance procedure, done by an operator
        audit_tamper.delete(seq)
    assert verify_chain().reason == verify.GAP
    settings.OMIPORTAL_AUDIT_ARCHIVED_THROUGH_SEQ = 5
    result = verify_chain()
    assert result.ok and result.count == 3, result
    settings.OMIPORTAL_AUDIT_ARCHIVED_THROUGH_SEQ = 4  # not a checkpoint: refused
    assert verify_chain().reason == verify.ARCHIVE_ANCHOR_MISSING


# --- the worker's maintenance tick -------------------------------------------------------------


@pytest.fixture
def queues():
    workers.flush()
    yield [django_rq.get_queue("default"), django_rq.get_queue("poll")]
    workers.flush()


def test_the_maintenance_tick_enqueues_the_audit_jobs_at_most_once_per_interval(queues, signing_key):
    worker = PortalWorker(queues, connection=queues[0].connection)
    worker.run_maintenance_tasks()
    worker.run_maintenance_tasks()
    default = django_rq.get_queue("default")
    assert sorted(_names(default.job_ids)) == ["audit-checkpoint", "audit-verify"]
    (checkpoint_id,) = (i for i in default.job_ids if i.startswith("audit-checkpoint-"))
    job = Job.fetch(checkpoint_id, connection=default.connection, serializer=JSONSerializer)
    assert job.func_name == "audit.jobs.audit_checkpoint_job"
    for job_id in list(default.job_ids):  # the jobs ran (result_ttl=0); the interval has not passed yet
        default.fetch_job(job_id).delete()
    worker.run_maintenance_tasks()
    assert default.job_ids == []
    connection = default.connection
    ttl = connection.ttl(jobs.THROTTLE_KEY.format(job_id="audit-checkpoint"))
    assert 3500 < ttl <= 3600
    connection.delete(jobs.THROTTLE_KEY.format(job_id="audit-checkpoint"))  # the interval passes
    worker.run_maintenance_tasks()
    assert _names(default.job_ids) == ["audit-checkpoint"]


def _names(job_ids):
    """The jobs' names: their ids without the slot (recorder.slot_job_id)."""
    return [job_id.rsplit("-", 1)[0] for job_id in job_ids]


@pytest.mark.django_db(transaction=True)  # jobs go out when the transaction commits (COMMIT_MODE)
def test_a_checkpoint_killed_mid_run_does_not_block_the_next_interval(queues, store, settings):
    """rq declares a job run in-process abandoned only after its timeout plus a minute (16 minutes on
    the default queue); with one fixed id, every checkpoint until then was refused as a duplicate."""
    settings.OMIPORTAL_AUDIT_CHECKPOINT_EVERY_SECONDS = 1
    settings.OMIPORTAL_AUDIT_VERIFY_EVERY_SECONDS = 0
    _record(2)
    assert jobs.ensure_audit_jobs_enqueued() == ["audit-checkpoint"]
    killed = workers.killed_mid_run()
    time.sleep(1.1)  # the next interval: its throttle key has expired, and its slot is another
    assert jobs.ensure_audit_jobs_enqueued() == ["audit-checkpoint"]
    assert killed.get_status() == JobStatus.STARTED  # still rq's record of the killed run
    workers.run_jobs()
    assert [c.seq for c in checkpoints.load_all()] == [2]


def test_no_checkpoint_job_without_a_key(db, queues, settings):  # db: the tick looks for pending events
    settings.OMIPORTAL_AUDIT_SIGNING_KEY = ""
    assert jobs.ensure_audit_jobs_enqueued() == ["audit-verify"]


def test_the_jobs_write_a_checkpoint_and_a_verification(store):
    _record(2)
    assert "checkpoint #1" in jobs.audit_checkpoint_job()
    assert jobs.audit_verify_job() is True
    assert latest_status().checkpoint_seq == 2
