"""Issue 17's CI recipe, as a pipeline runs it: omiportal_client/distribute.py in a real subprocess.

The script runs with ``-I -S`` (no site-packages, no environment, not even its own folder on the
path), so it can only use the standard library, as on a bare CI runner. It talks over HTTP to the
live portal with a Platform service token in OMIPORTAL_TOKEN; a real ``manage.py rqworker``
process copies against the sandbox; the approver decides in Chromium while the script waits. The
printed ids are then read back with the official SDK and each recipient account's own keys.
"""

import json
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from playwright.sync_api import expect

from api.models import ApiToken, IdempotentRequest
from api.throttling import TokenRateThrottle
from audit.models import AuditEvent
from tests import factories, workers
from tests.fixtures_api import make_token
from tests.transfer_world import approve, image_id
from transfers.models import Share

pytestmark = [pytest.mark.django_db(transaction=True)]

SCRIPT = Path(__file__).resolve().parent.parent / "omiportal_client" / "distribute.py"
IMAGE = "alpha-web-2025.01"
COPY_NAME = "web-ci-1.2.0"
REASON = "Release 1.2.0 built by the pipeline."
# Exit codes, as docs/api/ci-recipe.md documents them.
OK, USAGE, REFUSED, TOKEN, REJECTED, FAILED, TIMED_OUT = 0, 2, 3, 4, 5, 6, 9
WORKER_PACE = {"OMIPORTAL_SWEEP_MIN_SECONDS": 0.2, "OMIPORTAL_SWEEP_MAX_SECONDS": 0.5,
               "OMIPORTAL_OUTSCALE_CALLS_PER_SECOND": 100, "OMIPORTAL_OUTSCALE_RETRY_BASE_DELAY": 0.05,
               "OMIPORTAL_OUTSCALE_RETRY_MAX_DELAY": 0.2, "OMIPORTAL_SWEEP_BUDGET_SECONDS": 1,
               "OMIPORTAL_AUDIT_CHECKPOINT_EVERY_SECONDS": 0, "OMIPORTAL_AUDIT_VERIFY_EVERY_SECONDS": 0}
END_S = 60  # from the approval: an export, an import and a same-Region copy, each a few sweeps


@pytest.fixture
def worker(flow, cloud, tmp_path):
    """A real worker process (with its scheduler) on this test's database, Redis and sandbox."""
    with open(tmp_path / "worker.log", "wb") as log:
        proc = workers.start_worker(workers.worker_env(
            cloud, OMIPORTAL_AUDIT_CHECKPOINT_DIR=tmp_path / "worker-checkpoints", **WORKER_PACE), stdout=log)
        try:
            yield proc
        finally:
            workers.kill_tree(proc)


@pytest.fixture
def service_token(flow):
    """Platform's service token, made by its admin (role member: it may ask, never approve)."""
    token, raw = make_token(flow.src_admin, flow.source, kind=ApiToken.Kind.SERVICE, name="release pipeline")
    return raw


class Run:
    """One run of the script, as a CI step: stdout for the next job, stderr for the log."""

    def __init__(self, args, *, token, run_id, tmp_path, name):
        env = {"PATH": "/usr/bin:/bin", "OMIPORTAL_RUN_ID": run_id}
        if token is not None:
            env["OMIPORTAL_TOKEN"] = token
        self.out_path, self.err_path = tmp_path / f"{name}.out", tmp_path / f"{name}.err"
        with open(self.out_path, "wb") as out, open(self.err_path, "wb") as err:
            self.proc = subprocess.Popen([sys.executable, "-I", "-S", str(SCRIPT), *args], env=env,
                                         stdout=out, stderr=err, stdin=subprocess.DEVNULL)

    @property
    def stderr(self) -> str:
        return self.err_path.read_text()

    @property
    def stdout(self) -> str:
        return self.out_path.read_text()

    def wait(self, timeout=END_S) -> int:
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            raise AssertionError(f"the script did not end within {timeout}s; its log:\n{self.stderr}") from None


def distribute_args(flow, cloud, live_server, *recipients, copy_name=COPY_NAME):
    args = ["--portal", live_server.url, "--source-account", str(flow.alpha.public_id),
            "--image-id", image_id(cloud, "alpha", IMAGE), "--copy-name", copy_name, "--reason", REASON,
            "--description", "pipeline build 1.2.0", "--licence-confirmed", "--timeout", str(END_S),
            "--poll-interval", "0.3", "--poll-max", "1"]
    for account in recipients:
        args += ["--to", str(account.public_id)]
    return args


def _share_asked(wait_for, run: Run, copy_name=COPY_NAME) -> Share:
    wait_for(lambda: run.stderr, lambda text: "waiting for approval by a person" in text or run.proc.poll() is not None,
             timeout=20)
    assert run.proc.poll() is None, f"the script ended early:\n{run.stderr}"
    return Share.objects.get(copy_name=copy_name)


def _decide(page, live_server, sign_in, flow, share, button: str, comment: str) -> None:
    sign_in(page, live_server, flow.src_approver.email, factories.PASSWORD)
    page.goto(f"{live_server.url}/t/{flow.source.public_id}/shares/{share.public_id}/")
    expect(page.locator("[data-share-state]")).to_have_text("Waiting for approval")
    expect(page.get_by_text(REASON)).to_be_visible()
    page.get_by_label("Comment").fill(comment)
    page.get_by_role("button", name=button).click()


@pytest.mark.browser
def test_a_pipeline_gets_the_new_image_ids_once_a_person_approved_in_the_browser(
        flow, cloud, oapi, worker, service_token, page, live_server, sign_in, wait_for, tmp_path):
    flow.dest.auto_accept_incoming = True  # Research takes what it is sent: the approval is the last click
    flow.dest.save()
    run = Run(distribute_args(flow, cloud, live_server, flow.delta, flow.gamma), token=service_token,
              run_id="gh-4242", tmp_path=tmp_path, name="distribute")

    share = _share_asked(wait_for, run)
    assert share.state == Share.State.REQUESTED and share.requested_by == flow.src_admin
    assert run.stdout == ""  # stdout is the next job's input: nothing before the result
    _decide(page, live_server, sign_in, flow, share, "Approve", "Built by CI from a reviewed tag: fine.")
    expect(page.get_by_role("status")).to_contain_text("Approved")

    assert run.wait() == OK, run.stderr
    result = json.loads(run.stdout)
    assert result["share"] == str(share.public_id) and result["state"] == "completed"
    assert set(result["images"]) == {str(flow.delta.public_id), str(flow.gamma.public_id)}
    for name, account in (("delta", flow.delta), ("gamma", flow.gamma)):
        printed = result["images"][str(account.public_id)]
        assert (printed["account_id"], printed["region"]) == (account.account_id, account.region)
        # From outside the portal, with the recipient's own keys: that image, there, available, once.
        [image] = oapi(name).ReadImages(Filters={"ImageIds": [printed["image_id"]]})["Images"]
        assert (image["AccountId"], image["ImageName"], image["State"]) == (account.account_id, COPY_NAME,
                                                                            "available")
        same_name = oapi(name).ReadImages(Filters={"ImageNames": [COPY_NAME], "AccountIds": [account.account_id]})
        assert [i["ImageId"] for i in same_name["Images"]] == [printed["image_id"]]

    # The log said what it waited for; the token appears in neither output.
    log = run.stderr
    assert log.index("waiting for approval by a person") < log.index("completed")
    assert service_token not in log and service_token not in run.stdout
    # The trail names the pipeline's token as the one that asked.
    asked = AuditEvent.objects.get(action="share.requested", target_id=str(share.public_id))
    assert asked.details["via"]["kind"] == "service" and asked.details["via"]["name"] == "release pipeline"


def test_a_retried_job_asks_once_and_prints_the_same_result(
        flow, cloud, worker, service_token, live_server, wait_for, tmp_path, monkeypatch):
    flow.dest.auto_accept_incoming = True
    flow.dest.save()
    # Two requests a second per token: the script's quick looks are answered 429 and must wait it out.
    monkeypatch.setattr(TokenRateThrottle, "THROTTLE_RATES", {"token": "2/s"})
    args = distribute_args(flow, cloud, live_server, flow.delta)
    first = Run(args, token=service_token, run_id="pipeline-77", tmp_path=tmp_path, name="first")
    share = _share_asked(wait_for, first)
    first.proc.send_signal(signal.SIGTERM)  # the CI job is cancelled while it waits, then retried
    first.wait(timeout=10)

    retried = Run(args, token=service_token, run_id="pipeline-77", tmp_path=tmp_path, name="retried")
    wait_for(lambda: retried.stderr, lambda text: "waiting for approval" in text, timeout=20)
    assert f"share {share.public_id} was already asked for by this run" in retried.stderr
    approve(flow, Share.objects.get(pk=share.pk))
    assert retried.wait() == OK, retried.stderr
    assert "429" in retried.stderr  # it was told to slow down, and did

    again = Run(args, token=service_token, run_id="pipeline-77", tmp_path=tmp_path, name="again")
    assert again.wait() == OK, again.stderr
    # It reads the share as it is now, not as the replayed answer left it.
    assert "waiting for approval" not in again.stderr
    assert again.stdout == retried.stdout and json.loads(again.stdout)["share"] == str(share.public_id)
    # One share, one key, one copy in the account.
    assert Share.objects.count() == 1 and IdempotentRequest.objects.count() == 1
    assert cloud.created(flow.delta.account_id)["CreateImage"] == {COPY_NAME: 1}


@pytest.mark.browser
def test_a_rejection_ends_the_job_with_its_code_and_the_approvers_comment(
        flow, cloud, service_token, page, live_server, sign_in, wait_for, tmp_path):
    run = Run(distribute_args(flow, cloud, live_server, flow.delta), token=service_token, run_id="gl-9",
              tmp_path=tmp_path, name="distribute")
    share = _share_asked(wait_for, run)
    comment = "Not this build: the base image still has CVE-2025-0001."
    _decide(page, live_server, sign_in, flow, share, "Reject", comment)
    expect(page.get_by_role("status")).to_contain_text("Rejected")

    assert run.wait() == REJECTED, run.stderr
    assert run.stdout == ""
    assert re.search(rf"rejected by .+: {re.escape(comment)}", run.stderr), run.stderr
    assert not cloud.counters(flow.delta.account_id).get("CreateImage")


def test_a_failed_import_ends_the_job_with_its_code_the_clouds_reason_and_what_to_do(
        flow, cloud, worker, service_token, live_server, wait_for, tmp_path):
    flow.dest.auto_accept_incoming = True
    flow.dest.save()
    cloud.faults.fail_import(COPY_NAME, comment="disk image is corrupt")
    run = Run(distribute_args(flow, cloud, live_server, flow.delta), token=service_token, run_id="gh-5",
              tmp_path=tmp_path, name="distribute")
    share = _share_asked(wait_for, run)
    approve(flow, share)

    assert run.wait() == FAILED, run.stderr
    assert run.stdout == ""
    assert f"{flow.delta.account_id}: " in run.stderr and "disk image is corrupt" in run.stderr
    assert f"retry a failed import; then: --share {share.public_id}" in run.stderr


def test_a_bad_token_or_a_refused_request_ends_with_its_own_code_and_the_portals_words(
        flow, cloud, service_token, live_server, tmp_path):
    args = distribute_args(flow, cloud, live_server, flow.delta)
    missing = Run(args, token=None, run_id="1", tmp_path=tmp_path, name="missing")
    assert missing.wait() == USAGE and "OMIPORTAL_TOKEN" in missing.stderr

    wrong = Run(args, token="omi_" + "x" * 40, run_id="1", tmp_path=tmp_path, name="wrong")
    assert wrong.wait() == TOKEN and "not_authenticated" in wrong.stderr

    unknown = [*args]
    unknown[unknown.index("--image-id") + 1] = "ami-00000000"
    refused = Run(unknown, token=service_token, run_id="1", tmp_path=tmp_path, name="refused")
    assert refused.wait() == REFUSED and "the portal refused" in refused.stderr
    assert refused.stdout == "" and not Share.objects.exists()


def test_no_wait_prints_the_share_id_and_a_later_job_waits_for_it_until_its_timeout(
        flow, cloud, service_token, live_server, tmp_path):
    args = distribute_args(flow, cloud, live_server, flow.delta)
    ask = Run([*args, "--no-wait"], token=service_token, run_id="split-1", tmp_path=tmp_path, name="ask")
    assert ask.wait() == OK, ask.stderr
    share = Share.objects.get()
    assert ask.stdout == f"{share.public_id}\n"

    later = Run(["--portal", live_server.url, "--share", str(share.public_id), "--timeout", "2",
                 "--poll-interval", "0.3"], token=service_token, run_id="split-1", tmp_path=tmp_path, name="later")
    assert later.wait() == TIMED_OUT and later.stdout == ""
    assert f"timed out in state requested; wait again with --share {share.public_id}" in later.stderr
