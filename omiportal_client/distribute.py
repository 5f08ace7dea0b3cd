#!/usr/bin/env python3
"""Distribute a freshly built image through the OMI Portal, from a CI job.

    export OMIPORTAL_TOKEN=...        # a team service token, never a flag
    python3 omiportal_client/distribute.py --portal https://portal.example \\
        --source-account <uuid> --image-id ami-12345678 --to <uuid> --to <uuid> \\
        --copy-name web-1.2.0 --reason "Release 1.2.0" --licence-confirmed

Asks for the share (POST /api/v1/shares/), waits for a person's approval and for every import,
and prints one JSON object on stdout: {"share", "state", "images": {account uuid: {account_id,
region, image_id}}}. Progress goes to stderr. The Idempotency-Key is derived from the inputs and the
CI run id, so a retried job finds the share its first attempt asked for instead of asking again.

Standard library only, in one file: a CI job runs it with any python3 >= 3.9, without the portal.
Exit codes (docs/api/ci-recipe.md): 0 completed, 2 usage, 3 refused, 4 token, 5 rejected,
6 failed, 7 expired, 8 cancelled, 9 timed out, 10 portal unreachable
(5xx or no answer 9 times in a row, or until the timeout).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from email.utils import parsedate_to_datetime

OK, USAGE, REFUSED, TOKEN, REJECTED, FAILED, EXPIRED, CANCELLED, TIMED_OUT, UNREACHABLE = 0, 2, 3, 4, 5, 6, 7, 8, 9, 10
ENDS = {"rejected": REJECTED, "failed": FAILED, "expired": EXPIRED, "cancelled": CANCELLED}
RUN_ID_VARIABLES = ("OMIPORTAL_RUN_ID", "GITHUB_RUN_ID", "CI_PIPELINE_ID")  # not per attempt: a retry keeps them
LOOPBACK = {"localhost", "127.0.0.1", "::1"}
HTTP_TIMEOUT = 30
MAX_FAILURES = 8  # 5xx or no answer in a row, about 4 minutes with the doubling pauses: then it is not a blip
HEARTBEAT = 300  # a line now and then, so a long wait for a person does not look like a hang
USER_AGENT = "omiportal-distribute/1"
WAITING = {
    "requested": "waiting for approval by a person (an approver of the source team other than the requester)",
    "approved": "approved: the copies start",
    "exporting": "exporting the image",
    "ready": "offered to the recipient accounts",
    "importing": "importing into the recipient accounts",
    "completed": "done",
}
# What a person can do about an ended share before the pipeline waits again.
NEXT = {
    "failed": "\nA member of the recipient team can retry a failed import; then: --share {id}",
    "expired": "\nA member of the source team can export again (share page, or POST shares/{id}/reexport/); "
               "then: --share {id}",
}


class Stop(Exception):
    def __init__(self, code: int, message: str):
        super().__init__(message)
        self.code = code


def say(message: str) -> None:
    print(f"omiportal: {message}", file=sys.stderr, flush=True)


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    # The token must never follow a redirect to another host; the API itself never redirects.
    def redirect_request(self, req, fp, code, msg, headers, newurl):
        raise urllib.error.HTTPError(req.full_url, code, f"unexpected redirect to {newurl}", headers, fp)


class Portal:
    def __init__(self, base: str, token: str, deadline: float):
        self.base, self.token, self.deadline = base.rstrip("/") + "/api/v1/", token, deadline
        self.opener = urllib.request.build_opener(_NoRedirect)

    def call(self, method: str, path: str, body: bytes | None = None, key: str | None = None):
        """(status, headers, JSON) of one answer; waits out 429s, 5xx and network errors until the deadline
        (a POST may be repeated: its Idempotency-Key makes the portal answer the first one's result)."""
        delay, failures, last = 2.0, 0, "none"
        while True:
            # The scheme was checked in arguments(): https, or http to this machine only.
            request = urllib.request.Request(self.base + path, data=body, method=method)  # noqa: S310
            request.add_unredirected_header("Authorization", f"Bearer {self.token}")
            request.add_header("Accept", "application/json")
            request.add_header("User-Agent", USER_AGENT)
            if body is not None:
                request.add_header("Content-Type", "application/json")
            if key is not None:
                request.add_header("Idempotency-Key", key)
            try:
                with self.opener.open(request, timeout=HTTP_TIMEOUT) as answer:
                    return answer.status, answer.headers, _json(answer.read())
            except urllib.error.HTTPError as error:
                status, headers, data = error.code, error.headers, _json(error.read())
                if status == 429:  # asked to slow down: not a failure, however often
                    wait = retry_after(headers, delay)
                    say(f"the portal asks to slow down (429): next try in {wait:g} s")
                elif status >= 500:
                    wait, failures, last = delay, failures + 1, problem_text(status, data)
                    say(f"the portal answered {last}: next try in {wait:g} s")
                else:
                    return status, headers, data
            except (urllib.error.URLError, OSError) as error:
                wait, failures, last = delay, failures + 1, str(getattr(error, "reason", error))
                say(f"the portal did not answer ({last}): next try in {wait:g} s")
            if failures > MAX_FAILURES or time.monotonic() + wait > self.deadline:
                raise Stop(UNREACHABLE, f"gave up: {failures} tries in a row went unanswered; the last: {last}")
            time.sleep(wait)
            delay = min(delay * 2, 60.0)


def _json(raw: bytes):
    try:
        return json.loads(raw or b"{}")
    except ValueError:
        return {"detail": raw[:200].decode("utf-8", "replace")}


def retry_after(headers, default: float) -> float:
    value = (headers.get("Retry-After") or "").strip()
    if value.isdigit():
        return max(float(value), 1.0)
    try:
        return max(parsedate_to_datetime(value).timestamp() - time.time(), 1.0)
    except (TypeError, ValueError):
        return default


def problem_text(status: int, data) -> str:
    if not isinstance(data, dict):
        return f"HTTP {status}"
    errors = data.get("errors") or {}
    # With field errors, the title heads them (the detail only repeats them, joined).
    head = (data.get("title") if errors else data.get("detail")) or data.get("detail") or f"HTTP {status}"
    text = f"{head} ({data.get('code', status)})"
    for field, messages in errors.items():
        text += f"\n  {field}: {' '.join(map(str, messages)) if isinstance(messages, list) else messages}"
    return text


def refuse(status: int, data) -> Stop:
    if status == 401:
        return Stop(TOKEN, f"the token was not accepted: {problem_text(status, data)}")
    return Stop(REFUSED, f"the portal refused: {problem_text(status, data)}")


def run_id() -> str:
    return next((os.environ[name] for name in RUN_ID_VARIABLES if os.environ.get(name)), "")


def idempotency_key(portal: str, body: dict, run: str) -> str:
    """The same inputs in the same CI run give the same key: a retried job replays, never re-asks."""
    canonical = json.dumps({"portal": portal, "request": body, "run": run}, sort_keys=True, separators=(",", ":"))
    return "distribute-" + hashlib.sha256(canonical.encode()).hexdigest()[:48]


def ask(portal: Portal, args) -> dict:
    body = {"source_account": args.source_account, "image_id": args.image_id, "recipients": sorted(set(args.to)),
            "externals": [], "copy_name": args.copy_name, "description": args.description, "reason": args.reason,
            "licence_confirmed": True, "launch_permission_only": False}
    run = run_id()
    if not run:
        say("no CI run id (OMIPORTAL_RUN_ID, GITHUB_RUN_ID, CI_PIPELINE_ID): the same inputs find the same share")
    # The portal fingerprints the body's bytes: a retry must send exactly the same ones.
    raw = json.dumps(body, sort_keys=True, separators=(",", ":")).encode()
    status, headers, share = portal.call("POST", "shares/", raw, idempotency_key(args.portal, body, run))
    if status not in (200, 201):
        raise refuse(status, share)
    if headers.get("Idempotent-Replayed") != "true":
        say(f"share {share['id']} asked for")
        return share
    # The replayed answer is the share as it was then: read it as it is now.
    say(f"share {share['id']} was already asked for by this run")
    return look(portal, share["id"])


def look(portal: Portal, share_id: str) -> dict:
    status, _, share = portal.call("GET", f"shares/{urllib.parse.quote(share_id)}/")
    if status != 200:
        raise refuse(status, share)
    return share


def describe(share: dict) -> list[str]:
    """What a person reading the CI log wants to know now, one line per fact."""
    state = share.get("state", "")
    said = WAITING.get(state) or share.get("state_message") or share.get("state_label") or state
    lines = [f"{state}: {said}"]
    export = (share.get("progress") or {}).get("export") or {}
    if state == "exporting" and isinstance(export.get("progress"), (int, float)):
        eta = f", about {export['eta_text']} left" if export.get("eta_text") else ""
        lines[0] += f" ({export['progress']:g} %{eta})"
    for r in share.get("recipients") or []:
        line = f"  {r.get('account_id')} {r.get('region')}: {r.get('state_label') or r.get('state')}"
        if r.get("state") == "offered":
            line += " (a member of the recipient team accepts it, unless the team accepts automatically)"
        if r.get("state_message"):
            line += f" ({r['state_message']})"
        lines.append(line)
    return lines


def wait(portal: Portal, share: dict, first: float, longest: float) -> dict:
    seen, states, delay, last_line = None, None, first, time.monotonic()
    while True:
        lines = describe(share)
        if time.monotonic() - last_line >= HEARTBEAT or len(lines) != len(seen or ()):
            seen = [None] * len(lines)  # everything again, now and then
        changed = [line for n, line in enumerate(lines) if line != seen[n]]  # same length, checked above
        for line in changed:  # only what moved: a long export is one line a look, not one per recipient
            say(line)
        if changed:
            seen, last_line = lines, time.monotonic()
        now = (share.get("state"), [r.get("state") for r in share.get("recipients") or []])
        if now != states:
            states, delay = now, first  # a state moved: the next one may follow soon
        if share.get("state") in ("completed", *ENDS):
            return share
        if time.monotonic() + delay > portal.deadline:
            raise Stop(TIMED_OUT, f"timed out in state {share.get('state')}; wait again with --share {share['id']}")
        time.sleep(delay)
        delay = min(delay * 1.5, longest)
        share = look(portal, share["id"])


def outcome(share: dict) -> dict:
    """The JSON for the next job, or Stop when the share did not bring every copy."""
    state = share.get("state")
    # An external recipient gets a link, not an image id: only the portal's accounts are counted.
    recipients = [r for r in share.get("recipients") or [] if r.get("kind", "team") == "team"]
    if state == "rejected":
        who = share.get("decided_by") or "an approver"
        who = who.get("name") or who.get("email") if isinstance(who, dict) else who
        raise Stop(REJECTED, f"rejected by {who}: {share.get('decision_comment') or '(no comment)'}")
    if state in ENDS:
        detail = "".join(f"\n  {r.get('account_id')}: {r['state_message']}" for r in recipients
                         if r.get("state_message"))
        # A request nobody approved in time has no export to renew: only an approved share gets the hint.
        hint = NEXT.get(state, "") if share.get("decided_by") else ""
        raise Stop(ENDS[state], f"share {state}: {share.get('state_message') or share.get('state_label')}{detail}"
                                f"{hint.format(id=share['id'])}")
    missing = [r for r in recipients if r.get("state") != "completed" or not r.get("image_id")]
    if missing:
        detail = "; ".join(f"{r.get('account_id')} {r.get('state')} {r.get('state_message', '')}".strip()
                           for r in missing)
        raise Stop(FAILED, f"not every copy was made: {detail}")
    images = {r["account"]: {"account_id": r["account_id"], "region": r["region"], "image_id": r["image_id"]}
              for r in recipients}
    return {"share": share["id"], "state": state, "images": images}


def arguments(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog="The token is read from "
                                     "OMIPORTAL_TOKEN. Exit codes: 0 completed, 2 usage, 3 refused, 4 token, "
                                     "5 rejected, 6 failed, 7 expired, 8 cancelled, 9 timed out, 10 unreachable.")
    parser.add_argument("--portal", default=os.environ.get("OMIPORTAL_URL"), help="the portal's URL")
    parser.add_argument("--share", help="wait for this share instead of asking for a new one")
    parser.add_argument("--source-account", help="the source cloud account's id (uuid)")
    parser.add_argument("--image-id", help="the image to copy (ami-...)")
    parser.add_argument("--to", action="append", default=[], help="a recipient cloud account's id; repeat")
    parser.add_argument("--copy-name", help="the name of each copy")
    parser.add_argument("--reason", help="why: the approver reads it")
    parser.add_argument("--description", default="")
    parser.add_argument("--licence-confirmed", action="store_true",
                        help="confirm that the image's third-party licences allow exporting it")
    parser.add_argument("--timeout", type=float, default=7200, help="seconds to wait in all (default 7200)")
    parser.add_argument("--poll-interval", type=float, default=5, help="first wait between looks (s)")
    parser.add_argument("--poll-max", type=float, default=60, help="longest wait between looks (s)")
    parser.add_argument("--no-wait", action="store_true", help="print the share id and exit")
    args = parser.parse_args(argv)
    if not args.portal:
        parser.error("--portal (or OMIPORTAL_URL) is required")
    url = urllib.parse.urlsplit(args.portal)
    if url.scheme != "https" and not (url.scheme == "http" and url.hostname in LOOPBACK):
        parser.error("--portal must be https:// (the token is a bearer secret); http only to this machine")
    if not args.share:
        needed = ("source_account", "image_id", "to", "copy_name", "reason")
        absent = ["--" + name.replace("_", "-") for name in needed if not getattr(args, name)]
        if absent:
            parser.error("missing " + ", ".join(absent))
        if not args.licence_confirmed:
            parser.error("--licence-confirmed is required: the portal exports only with the licences confirmed")
    if not os.environ.get("OMIPORTAL_TOKEN"):
        parser.error("set OMIPORTAL_TOKEN to a team service token (never pass it as a flag)")
    return args


def main(argv=None) -> int:
    args = arguments(argv)
    portal = Portal(args.portal, os.environ["OMIPORTAL_TOKEN"], time.monotonic() + args.timeout)
    try:
        share = look(portal, args.share) if args.share else ask(portal, args)
        if args.no_wait:
            print(share["id"])
            return OK
        result = outcome(wait(portal, share, args.poll_interval, args.poll_max))
    except Stop as stop:
        say(str(stop))
        return stop.code
    print(json.dumps(result, sort_keys=True))
    return OK


if __name__ == "__main__":
    sys.exit(main())
