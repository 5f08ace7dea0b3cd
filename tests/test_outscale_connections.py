"""A thread's OAPI gateways share one HTTP session per endpoint (outscale/oapi.py): a hand-off's
thread creating into many accounts of a Region reuses its connection (against OUTSCALE, a TLS
handshake saved per create), and that session keeps no cookie one account's answer set."""

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import requests

import outscale
from outscale import oapi
from outscale.credentials import Credentials

SAME_REGION = ("alpha", "beta", "gamma")  # the sandbox's accounts in eu-west-2


def _creds(entry: dict) -> Credentials:
    return Credentials(entry["access_key"], entry["secret_key"], entry["region"])


def test_a_thread_calling_several_accounts_of_a_region_opens_one_connection(cloud):
    accounts = [cloud.account(name) for name in SAME_REGION]
    before = cloud.connections()["oapi"]
    for _ in range(2):
        for entry in accounts:
            assert outscale.identify_account(creds=_creds(entry)).account_id == entry["account_id"]
    # Six calls for three accounts: one connection (a session per gateway opened three).
    assert cloud.connections()["oapi"] - before == 1
    # Each account keeps its own gateway (its own keys and pace), over the thread's one session.
    gateways = [oapi.gateway_for(_creds(entry)) for entry in accounts]
    assert len({id(g) for g in gateways}) == 3 and len({id(g.call.session) for g in gateways}) == 1


def test_threads_do_not_share_a_session_and_another_region_gets_its_own(cloud):
    alpha, delta = cloud.account("alpha"), cloud.account("delta")  # eu-west-2, us-east-2
    here = oapi.gateway_for(_creds(alpha)).call.session
    assert oapi.gateway_for(_creds(delta)).call.session is not here
    elsewhere = []
    thread = threading.Thread(target=lambda: elsewhere.append(oapi.gateway_for(_creds(alpha)).call.session))
    thread.start()
    thread.join()
    assert elsewhere[0] is not here  # a requests Session is not thread-safe
    oapi.clear_clients()
    assert oapi.gateway_for(_creds(alpha)).call.session is not here  # a new configuration, new sessions


class _SetsCookies(BaseHTTPRequestHandler):
    def do_GET(self):  # noqa: N802 - http.server's naming
        self.send_response(200)
        self.send_header("Set-Cookie", "session=of-the-first-account; Path=/")
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args):
        pass


def test_the_shared_session_keeps_no_cookie_from_one_accounts_answer_for_the_next():
    server = ThreadingHTTPServer(("127.0.0.1", 0), _SetsCookies)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/api/v1"
        session = oapi._thread_session(url)
        answer = session.get(url, timeout=5)
        assert answer.headers["Set-Cookie"].startswith("session=")  # the server did set one
        assert len(session.cookies) == 0  # and the session did not keep it
        plain = requests.Session()
        plain.get(url, timeout=5)
        assert len(plain.cookies) == 1  # what a stock session would have sent with the next account's call
    finally:
        server.shutdown()
        server.server_close()
        oapi.clear_clients()
