"""Running the trail's integrity: signing a checkpoint, verifying the chain, and what the last run found.

The layers inside audit, top to bottom: this module (the runs) → ``verify`` (the chain against its
checkpoints) → ``checkpoints`` (the signed files and their stores). Each imports only those below it.
``AuditVerification`` rows (audit.models) keep every run for the review pages (``latest_status()``);
they are not part of the hash chain (a row proves nothing by itself: re-run ``audit_verify`` to know).
Also the system check for the checkpoint signing key.
"""

import dataclasses
import datetime
from dataclasses import dataclass

from django.conf import settings
from django.core import checks
from django.utils import timezone

from audit import checkpoints, hashing, signing, verify
from audit.errors import AuditError
from audit.models import AuditChainHead, AuditEvent, AuditVerification
from audit.recorder import AuditTarget, record

REFUSED = "Refusing to sign a checkpoint: {message}. Run audit_verify."
HEAD_BEHIND = ("the chain head (#{head}) is behind the latest signed checkpoint #{number} (#{seq}): "
               "events were removed; run audit_verify")

NO_SIGNING_KEY = "Audit checkpoints are disabled: OMIPORTAL_AUDIT_SIGNING_KEY is not set."
NO_SIGNING_KEY_HINT = (
    "Set OMIPORTAL_AUDIT_SIGNING_KEY to the base64 of a 32-byte raw Ed25519 private key "
    "(generate one with: python manage.py audit_checkpoint --generate-key) and keep its public key "
    "(printed too) somewhere the database's administrators cannot change. Without signed checkpoints "
    "stored outside the database, someone who can write to the database can rewrite the audit trail undetected."
)


@checks.register(checks.Tags.security, deploy=False)
def audit_checkpoint_check(app_configs=None, **kwargs):
    try:
        key = signing.signing_key()
        signing.verify_keys()
    except AuditError as exc:
        return [checks.Error(str(exc), id="audit.E001")]
    if key is None and not settings.DEBUG:
        return [checks.Warning(NO_SIGNING_KEY, hint=NO_SIGNING_KEY_HINT, id="audit.W001")]
    return []


# --- Signing a checkpoint -----------------------------------------------------------------


@dataclass(frozen=True)
class CheckpointOutcome:
    checkpoint: checkpoints.Checkpoint | None  # the one written, or None
    message: str

    @property
    def written(self) -> bool:
        return self.checkpoint is not None


def _unchanged(head_seq: int, head_hash: str, last: checkpoints.Checkpoint) -> bool:
    if (head_seq, head_hash) == (last.seq, last.hash):
        return True
    if head_seq != last.seq + 1:
        return False
    # The only event since is the one recording that very checkpoint.
    event = AuditEvent.objects.filter(seq=head_seq).values("action", "details").first()
    return bool(event and event["action"] == checkpoints.ACTION and isinstance(event["details"], dict)
                and event["details"].get("number") == last.number)


def write_checkpoint(*, store: checkpoints.CheckpointStore | None = None,
                     now: datetime.datetime | None = None) -> CheckpointOutcome:
    """Sign the chain head and store it, unless nothing changed since the last checkpoint.

    The events since the previous checkpoint are checked first (they must link to it),
    so a checkpoint never vouches for a trail that is already broken.
    """
    key = signing.signing_key()
    if key is None:
        raise AuditError(checkpoints.DISABLED)
    store = store or checkpoints.configured_store()
    names = store.names()
    last = checkpoints.parse(names[-1], store.read(names[-1])) if names else None
    if last is not None:
        problem = checkpoints.check_signature(last)
        if problem:
            raise AuditError(REFUSED.format(message=problem.message))
    head = AuditChainHead.objects.filter(pk=AuditChainHead.SINGLETON_ID).values_list("seq", "hash").first()
    if head is None or head[0] == 0:
        return CheckpointOutcome(None, "no checkpoint: the audit trail is empty")
    head_seq, head_hash = head
    if last is not None and head_seq < last.seq:
        raise AuditError(REFUSED.format(message=HEAD_BEHIND.format(head=head_seq, number=last.number, seq=last.seq)))
    if last is not None and _unchanged(head_seq, head_hash, last):
        return CheckpointOutcome(None, f"no checkpoint: nothing changed since checkpoint #{last.number}")
    segment = verify.verify_segment(after_seq=last.seq if last else 0,
                                    after_hash=last.hash if last else hashing.GENESIS_HASH,
                                    through_seq=head_seq, through_hash=head_hash)
    if not segment.ok:
        raise AuditError(REFUSED.format(message=segment.message))
    unsigned = checkpoints.Checkpoint(number=last.number + 1 if last else 1, seq=head_seq, hash=head_hash,
                          created_at=now or timezone.now(),
                          prev_digest=last.digest if last else hashing.GENESIS_HASH,
                          key_fingerprint=signing.fingerprint(key.public_key()))
    checkpoint = dataclasses.replace(unsigned, signature=signing.sign(key, unsigned.message()))
    try:
        store.create(checkpoint.name, checkpoint.to_bytes())
    except FileExistsError:
        return CheckpointOutcome(None, f"no checkpoint: checkpoint #{checkpoint.number} was written concurrently")
    target = AuditTarget("audit.checkpoint", str(checkpoint.number), checkpoint.name)
    record(action=checkpoints.ACTION, actor=None, target=target,
           details={"number": checkpoint.number, "seq": checkpoint.seq, "hash": checkpoint.hash,
                    "digest": checkpoint.digest, "key_fingerprint": checkpoint.key_fingerprint,
                    "store": store.description})
    return CheckpointOutcome(checkpoint, f"checkpoint #{checkpoint.number} signed at event #{checkpoint.seq} "
                                         f"in {store.description}")


# --- Integrity status for the review pages ------------------------------------------------


@dataclass(frozen=True)
class IntegrityStatus:
    verified_at: datetime.datetime | None
    ok: bool | None  # None: never verified
    events_checked: int
    last_seq: int
    checkpoint_seq: int | None
    checkpoint_at: datetime.datetime | None
    message: str


NEVER_VERIFIED = "The audit trail has not been verified yet."


def latest_status() -> IntegrityStatus:
    """What the last verification run (command or periodic job) found."""
    row = AuditVerification.objects.order_by("-ran_at", "-id").first()
    if row is None:
        return IntegrityStatus(verified_at=None, ok=None, events_checked=0, last_seq=0, checkpoint_seq=None,
                               checkpoint_at=None, message=NEVER_VERIFIED)
    return IntegrityStatus(verified_at=row.ran_at, ok=row.ok, events_checked=row.count,
                           last_seq=row.last_seq, checkpoint_seq=row.checkpoint_seq,
                           checkpoint_at=row.checkpoint_at, message=row.message)


def run_verification(*, chunk_size: int = 2000):
    """Verify the chain and its checkpoints, and keep the outcome for ``latest_status()``."""
    result = verify.verify_chain(chunk_size=chunk_size)
    AuditVerification.objects.create(ok=result.ok, count=result.count, last_seq=result.last_seq,
                                     checkpoint_seq=result.checkpoint_seq, checkpoint_at=result.checkpoint_at,
                                     message=result.describe())
    return result
