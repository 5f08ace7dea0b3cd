"""A real webhook receiver for the tests: an HTTP server on 127.0.0.1 (its own threads) that checks
every message's signature with the Standard Webhooks library, as a customer's receiver would, and
answers what the test scripts (500 then 200, a slow answer...).

    receiver = Receiver(); receiver.start()
    receiver.secret = secret          # the endpoint's, shown once when it was made
    receiver.script = [500]           # the next answers; then 200
    ... receiver.messages             # each: headers, body, verified, error, at
"""

import json
import threading
import time
from dataclasses import dataclass, field
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from django.db import transaction
from django.utils import timezone
from standardwebhooks import Webhook, WebhookVerificationError

from tests import factories
from transfers import events
from transfers.models import Recipient, Share


def make_share(team, user) -> Share:
    """A share waiting for approval, with one external recipient: something for events to be about."""
    account = factories.make_cloud_account(team, label=f"{team.name}-prod")
    share = Share.objects.create(
        team=team, source_account=account, source_image_id="ami-00000001", source_image_name="web",
        source_image_relation="owned", copy_name="web-copy", reason="tests", licence_confirmed_at=timezone.now(),
        requested_by=user, approval_required=True, approval_deadline=timezone.now() + timedelta(days=1),
        digest="0" * 64)
    Recipient.objects.create(share=share, kind=Recipient.Kind.EXTERNAL, external_account_id="123456789012",
                             external_region="eu-west-2")
    return share


def emit(kind, ids, **kwargs):
    with transaction.atomic():  # as a service does: in the transaction of its change
        events.emit(kind, ids, **kwargs)


@dataclass
class Message:
    path: str
    headers: dict[str, str]
    body: bytes
    at: float
    status: int
    verified: bool = False
    error: str = ""
    signed_by: list[str] = field(default_factory=list)  # which of the receiver's secrets verify it

    @property
    def json(self) -> dict:
        return json.loads(self.body)

    @property
    def type(self) -> str:
        return self.json["type"]

    @property
    def webhook_id(self) -> str:
        return self.headers["webhook-id"]


class Receiver:
    def __init__(self):
        self.messages: list[Message] = []
        self.secret = ""
        self.other_secrets: list[str] = []  # also tried, to see which secrets signed (rotation)
        self.script: list[int] = []
        self.delay = 0.0  # seconds before answering
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def port(self) -> int:
        return self._server.server_address[1]

    def url(self, path: str = "/hooks/omi") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def start(self) -> "Receiver":
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def of_type(self, kind: str) -> list[Message]:
        return [m for m in self.messages if m.type == kind]

    def _handler(self):
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 - http.server's name
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                headers = {k.lower(): v for k, v in self.headers.items()}
                if receiver.delay:
                    time.sleep(receiver.delay)
                with receiver._lock:
                    status = receiver.script.pop(0) if receiver.script else 200
                    message = Message(path=self.path, headers=headers, body=body, at=time.monotonic(), status=status)
                    for secret in [receiver.secret, *receiver.other_secrets]:
                        if not secret:
                            continue
                        try:
                            Webhook(secret).verify(body, headers)
                        except WebhookVerificationError as exc:
                            if secret == receiver.secret:
                                message.error = str(exc)
                        else:
                            message.signed_by.append(secret)
                    message.verified = receiver.secret in message.signed_by
                    receiver.messages.append(message)
                self.send_response(status)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *args):
                pass  # quiet

        return Handler
