"""``Idempotency-Key`` on every POST: a pipeline that retries after a lost answer never acts twice.

The mechanism is a unique constraint and one transaction (``api.models.IdempotentRequest``): the
key's row is inserted first, inside the transaction that carries the POST's own writes, and its
answer is stored before that transaction commits. A retry (or a concurrent twin) with the same key
blocks on the unique index until the first commits and then replays the stored answer, with
``Idempotent-Replayed: true``; if the first failed (an error rolls everything back, the key
included) the retry simply runs. The same key with a different request is refused (422).
"""

import hashlib
import re
from functools import wraps

from django.db import IntegrityError, transaction
from rest_framework.response import Response

from api.models import IdempotentRequest
from api.problems import Problem
from audit import recorder

HEADER = "Idempotency-Key"
KEY_RE = re.compile(r"^[\x21-\x7e]{1,255}$")  # visible ASCII, as the IETF draft's examples
MISSING = "Every POST needs an Idempotency-Key header (a new random value per request, reused on its retries)."
MALFORMED = "The Idempotency-Key header is 1 to 255 visible ASCII characters."
REUSED = "This Idempotency-Key was already used for a different request."


def _fingerprint(request) -> str:
    digest = hashlib.sha256()
    for part in (request.method.encode(), request.path.encode(), request.body):
        digest.update(len(part).to_bytes(8, "big") + part)
    return digest.hexdigest()


def idempotent(handler):
    """Wrap an APIView's ``post``."""

    @wraps(handler)
    def wrapped(view, request, *args, **kwargs):
        key = request.headers.get(HEADER)
        if key is None:
            raise Problem(status_code=400, code="idempotency_key_missing", detail=MISSING)
        if not KEY_RE.match(key):
            raise Problem(status_code=400, code="idempotency_key_malformed", detail=MALFORMED)
        fingerprint = _fingerprint(request._request)
        # recorder.atomic: every event of the POST (a credential.used before the service's own
        # block included) is appended at the end, so the audit chain head is the transaction's last
        # lock, as in every service and sweep, even though this transaction spans the cloud calls.
        with recorder.atomic():
            try:
                with transaction.atomic():
                    row = IdempotentRequest.objects.create(token=request.auth, key=key, fingerprint=fingerprint)
            except IntegrityError:
                return _replay(IdempotentRequest.objects.get(token=request.auth, key=key), fingerprint)
            response = handler(view, request, *args, **kwargs)
            if 200 <= response.status_code < 300:
                row.status_code, row.response = response.status_code, response.data
                row.location = response.get("Location", "")
                row.save(update_fields=["status_code", "response", "location"])
            else:  # an answer that did nothing: the key stays free for a corrected retry
                row.delete()
        return response

    return wrapped


def _replay(row: IdempotentRequest, fingerprint: str) -> Response:
    if row.fingerprint != fingerprint:
        raise Problem(status_code=422, code="idempotency_key_reused", detail=REUSED)
    headers = {"Idempotent-Replayed": "true"}
    if row.location:
        headers["Location"] = row.location
    return Response(row.response, status=row.status_code, headers=headers)
