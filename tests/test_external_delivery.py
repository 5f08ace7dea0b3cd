"""What an external recipient is handed (transfers/delivery.py) and the pages that show it: the full
OOS path its object ACL opens, or the revealed link, with the commands of OUTSCALE's guide filled in
and a Copy button; the commands run as printed, with the real `osc-cli` and `aws` from the
virtualenv, against the sandbox. And imports from a pasted unsigned path or SigV2 link."""

import json
import shlex
import subprocess
import sys
from pathlib import Path

import boto3
import pytest
from botocore.config import Config
from django.urls import reverse
from django.utils.html import escape

import outscale
from accounts.models import Team
from audit.models import AuditEvent
from tests import workers
from tests.fixtures_sandbox import gateway_for
from tests.transfer_world import access, approve, request_share
from transfers import delivery, errors, link_checks
from transfers.forms import LinkImportForm
from transfers.models import Export, Recipient, Share
from transfers.services import external_links
from transfers.services.requests import ExternalRecipient

pytestmark = pytest.mark.django_db(transaction=True)

BIN = Path(sys.executable).parent
ALPHA, BETA, GAMMA, DELTA = "111122223333", "222233334444", "333344445555", "444455556666"
LINK = "https://oos.eu-west-2.outscale.com/b/k/manifest.json?AWSAccessKeyId=AK&Expires=1&Signature=a%2Bb%3D"


# --- The helper -----------------------------------------------------------------------------------


def test_the_commands_are_the_guides_filled_in_and_quoted_for_a_shell(settings):
    settings.OMIPORTAL_OUTSCALE_ENDPOINTS = {}
    oapi_cli, osc_cli, aws = delivery.import_commands(location=LINK, name="web copy (1)", region="eu-west-2")

    assert oapi_cli.steps == (("oapi-cli", "--profile", "default", "CreateImage", "--FileLocation", LINK,
                               "--ImageName", "web copy (1)"),)
    assert osc_cli.steps == (("osc-cli", "api", "CreateImage", "--profile", "default", "--FileLocation", LINK,
                              "--ImageName", "web copy (1)"),)
    assert aws.steps == (("aws", "configure", "set", "cli_follow_urlparam", "false"),
                         ("aws", "ec2", "register-image", "--image-location", LINK, "--name", "web copy (1)",
                          "--endpoint", "https://fcu.eu-west-2.outscale.com"))
    for command in (oapi_cli, osc_cli, aws):
        # What a shell makes of the text is exactly the argv: the & of the link and the name's spaces survive.
        assert [shlex.split(line) for line in command.text.splitlines()] == [list(step) for step in command.steps]
        assert LINK not in repr(command) and "Signature" not in repr(command)


def test_the_fcu_endpoint_follows_the_configured_region(settings):
    settings.OMIPORTAL_OUTSCALE_ENDPOINTS = {"us-east-2": {"fcu": "http://127.0.0.1:8723/"}}

    aws = delivery.import_commands(location="x", name="n", region="us-east-2")[2]

    assert aws.steps[1][-2:] == ("--endpoint", "http://127.0.0.1:8723")


# --- A grant: the share page ----------------------------------------------------------------------


def _granted(flow, cloud, *externals):
    share = request_share(flow, cloud, accounts=[], externals=list(externals) or [
        ExternalRecipient(account_id=BETA, region="eu-west-2", oos_user_id=cloud.account("beta")["canonical_id"])])
    approve(flow, share)
    workers.run_jobs(until=lambda: not Recipient.objects.filter(
        share=share, method=Recipient.Method.OBJECT_ACL, state__in=Recipient.OPEN_STATES).exists())
    return Share.objects.select_related("export__account").get(pk=share.pk)


def _page(client, user, share):
    client.force_login(user)
    return client.get(reverse("transfers:share-detail", kwargs={"team_id": share.team.public_id,
                                                                "share_id": share.public_id}))


def test_the_source_team_sees_the_path_and_the_commands_with_copy_buttons(flow, cloud, client):
    share = _granted(flow, cloud)
    export = share.export
    path = outscale.object_path(region="eu-west-2", bucket=export.bucket, key=export.manifest_key)
    recipient = share.recipients.get()

    page = _page(client, flow.src_member, share).content.decode()

    assert f'data-delivery="{recipient.public_id}"' in page and escape(path) in page
    for command in delivery.import_commands(location=path, name=share.copy_name, region="eu-west-2"):
        assert escape(command.text) in page
        assert f'data-command="{command.tool}"' in page
    assert page.count("data-copy-target=") >= 4 and "js/copy-link.js" in page
    assert "X-Amz-Signature" not in page and "AWSAccessKeyId" not in page  # no bearer link anywhere
    reveal = reverse("transfers:share-reveal-link", kwargs={"team_id": share.team.public_id,
                                                            "share_id": share.public_id,
                                                            "recipient_id": recipient.public_id})
    assert reveal not in page  # no link to reveal for an account that reads by its grant


def test_the_path_is_gone_once_the_grant_is_removed(flow, cloud, client):
    share = _granted(flow, cloud)
    Recipient.objects.filter(share=share).update(acl_removed_at=share.export.manifest_deadline)

    page = _page(client, flow.src_member, share).content.decode()

    assert "data-delivery=" not in page and share.export.manifest_key not in page


def test_an_account_served_by_a_grant_gets_no_link(flow, cloud, client):
    share = _granted(flow, cloud)
    recipient = share.recipients.get()
    client.force_login(flow.src_member)

    response = client.post(reverse("transfers:share-reveal-link", kwargs={
        "team_id": share.team.public_id, "share_id": share.public_id, "recipient_id": recipient.public_id}),
        follow=True)

    assert errors.LINK_NOT_NEEDED in [str(m) for m in response.context["messages"]]
    assert not AuditEvent.objects.filter(action="link.revealed", outcome="success").exists()


# --- A link: the reveal page ----------------------------------------------------------------------


def _revealed(flow, cloud, client, account_id=DELTA, region="us-east-2"):
    share = request_share(flow, cloud, accounts=[], externals=[ExternalRecipient(account_id, region)])
    approve(flow, share)
    workers.run_jobs(until=lambda: Share.objects.get(pk=share.pk).state == Share.State.READY)
    recipient = share.recipients.get()
    client.force_login(flow.src_member)
    response = client.post(reverse("transfers:share-reveal-link", kwargs={
        "team_id": share.team.public_id, "share_id": share.public_id, "recipient_id": recipient.public_id}))
    assert response.status_code == 200
    return share, response


def test_the_reveal_page_fills_the_commands_with_the_link_it_shows(flow, cloud, client):
    share, response = _revealed(flow, cloud, client)
    page = response.content.decode()
    url = response.context["link"].url

    assert "no-store" in response["Cache-Control"] and response["Referrer-Policy"] == "no-referrer"
    [shown] = response.context["deliveries"]
    assert shown.signed and shown.location == url
    for command in shown.commands:
        assert escape(command.text) in page and url in command.text
    assert shown.commands[2].steps[1][-1] == cloud.endpoints()["us-east-2"]["fcu"]
    # The link is on this page only: the share page still shows none.
    assert url not in _page(client, flow.src_member, share).content.decode()
    event = AuditEvent.objects.get(action="link.revealed")
    assert url not in json.dumps(event.details)


# --- The commands, run as printed -------------------------------------------------------------------


def _run(steps, env):
    done = None
    for step in steps:
        done = subprocess.run([str(BIN / step[0]), *step[1:]], env=env, capture_output=True, text=True, timeout=120,
                              check=False)
        assert done.returncode == 0, done.stdout + done.stderr
    return done


def _env(cloud, tmp_path, name):
    """The recipient's own machine: its keys for aws in the environment, its osc-cli profile "default"."""
    entry = cloud.account(name)
    home = tmp_path / name
    (home / ".osc").mkdir(parents=True)
    (home / ".osc" / "config.json").write_text(json.dumps({"default": {
        "access_key": entry["access_key"], "secret_key": entry["secret_key"], "region_name": entry["region"],
        "endpoint": cloud.endpoints()[entry["region"]]["api"].rsplit("/api/", 1)[0]}}))
    return {"PATH": str(BIN), "HOME": str(home), "AWS_ACCESS_KEY_ID": entry["access_key"],
            "AWS_SECRET_ACCESS_KEY": entry["secret_key"], "AWS_DEFAULT_REGION": entry["region"]}


def _image(oapi, name, image_name):
    return oapi(name).ReadImages(Filters={"ImageNames": [image_name]})["Images"]


@pytest.mark.parametrize("tool", ["osc-cli", "aws"])
def test_the_commands_for_a_grant_import_the_copy_as_printed(flow, cloud, oapi, tmp_path, tool):
    share = _granted(flow, cloud)
    shown = delivery.share_deliveries(access=access(flow.src_member, flow.source), share=share,
                                      recipients=list(share.recipients.all()))
    command = next(c for c in shown[0].commands if c.tool == tool)

    done = _run(command.steps, _env(cloud, tmp_path, "beta"))

    [image] = _image(oapi, "beta", share.copy_name)
    assert image["AccountId"] == BETA and image["ImageId"] in done.stdout
    # The same command from an account that was not granted read is refused.
    env = _env(cloud, tmp_path, "gamma")
    _run(command.steps[:-1], env)
    refused = subprocess.run([str(BIN / command.steps[-1][0]), *command.steps[-1][1:]], env=env, capture_output=True,
                             text=True, timeout=120, check=False)
    assert refused.returncode != 0
    assert "4074" in refused.stdout + refused.stderr or "(InvalidManifest)" in refused.stderr
    assert not _image(oapi, "gamma", share.copy_name)


@pytest.mark.parametrize("tool", ["osc-cli", "aws"])
def test_the_commands_for_a_revealed_link_import_the_copy_as_printed(flow, cloud, client, oapi, tmp_path, tool):
    share, response = _revealed(flow, cloud, client)
    command = next(c for c in response.context["deliveries"][0].commands if c.tool == tool)

    _run(command.steps, _env(cloud, tmp_path, "delta"))

    [image] = _image(oapi, "delta", share.copy_name)
    assert image["AccountId"] == DELTA


# --- Importing from a pasted path or SigV2 link ------------------------------------------------------


def _dest_access(flow):
    return access(flow.dst_member, flow.dest)


def _exported(flow, cloud):
    """An export of alpha's image, made by the portal for a share to delta."""
    share = request_share(flow, cloud, accounts=[], externals=[ExternalRecipient(DELTA, "us-east-2")])
    approve(flow, share)
    workers.run_jobs(until=lambda: Share.objects.get(pk=share.pk).state == Share.State.READY)
    return Export.objects.select_related("account").get(shares=share)


def _alpha_creds(cloud):
    entry = cloud.account("alpha")
    return outscale.Credentials(entry["access_key"], entry["secret_key"], "eu-west-2")


def _imported(recipient):
    workers.run_jobs(until=lambda: Recipient.objects.get(pk=recipient.pk).state in Recipient.FINAL_STATES)
    return Recipient.objects.get(pk=recipient.pk)


def test_a_pasted_path_imports_into_an_account_granted_read(flow, cloud):
    export = _exported(flow, cloud)
    keys = outscale.manifest_object_keys(creds=_alpha_creds(cloud), bucket=export.bucket,
                                         manifest_key=export.manifest_key, prefix=export.prefix).keys
    outscale.grant_object_read(creds=_alpha_creds(cloud), bucket=export.bucket, keys=keys,
                               user_id=cloud.account("gamma")["canonical_id"])
    path = outscale.object_path(region="eu-west-2", bucket=export.bucket, key=export.manifest_key)

    recipient = external_links.link_import_create(access=_dest_access(flow), account=flow.gamma, url=path,
                                                  image_name="from-a-path")

    assert recipient.method == Recipient.Method.OBJECT_ACL and recipient.link_expires_at is not None
    event = AuditEvent.objects.get(action="link.import_requested")
    assert event.details["link_form"] == link_checks.UNSIGNED
    done = _imported(recipient)
    assert done.state == Recipient.State.COMPLETED, done.state_message
    assert cloud.world.images[done.image_id].account_id == GAMMA


def test_a_pasted_path_without_a_grant_fails_and_says_why(flow, cloud):
    export = _exported(flow, cloud)
    path = outscale.object_path(region="eu-west-2", bucket=export.bucket, key=export.manifest_key)

    recipient = external_links.link_import_create(access=_dest_access(flow), account=flow.gamma, url=path,
                                                  image_name="not-granted")

    done = _imported(recipient)
    assert done.state == Recipient.State.FAILED
    assert done.state_message.startswith("OUTSCALE would not import from this manifest path (")
    assert f"the OOS user ID of account {GAMMA}" in done.state_message


def test_a_pasted_path_into_another_region_is_refused_before_anything_runs(flow, cloud):
    export = _exported(flow, cloud)
    path = outscale.object_path(region="eu-west-2", bucket=export.bucket, key=export.manifest_key)
    form = LinkImportForm({"url": path, "account": str(flow.delta.public_id), "image_name": "elsewhere"},
                          accounts=[flow.delta, flow.gamma])

    assert not form.is_valid()
    assert form.errors["account"] == [link_checks.MSG_UNSIGNED_REGION.format(region="eu-west-2")]
    with pytest.raises(errors.ShareError) as caught:
        external_links.link_import_create(access=_dest_access(flow), account=flow.delta, url=path, image_name="x")
    assert caught.value.messages == [link_checks.MSG_UNSIGNED_REGION.format(region="eu-west-2")]
    assert not Recipient.objects.filter(kind=Recipient.Kind.LINK).exists()


def test_a_pasted_sigv2_link_imports(flow, cloud):
    export = _exported(flow, cloud)
    entry = cloud.account("alpha")
    s3 = boto3.client("s3", endpoint_url=cloud.endpoints()["eu-west-2"]["oos"], region_name="eu-west-2",
                      aws_access_key_id=entry["access_key"], aws_secret_access_key=entry["secret_key"],
                      config=Config(signature_version="s3", s3={"addressing_style": "path"}))
    url = s3.generate_presigned_url("get_object", Params={"Bucket": export.bucket, "Key": export.manifest_key},
                                    ExpiresIn=3600)
    assert "AWSAccessKeyId=" in url and "X-Amz" not in url

    recipient = external_links.link_import_create(access=_dest_access(flow), account=flow.delta, url=url,
                                                  image_name="from-sigv2")

    assert recipient.method == Recipient.Method.LINK
    done = _imported(recipient)
    assert done.state == Recipient.State.COMPLETED, done.state_message
    assert cloud.world.images[done.image_id].account_id == DELTA
    assert Team.objects.get(pk=flow.dest.pk)  # the importing team's trail names no link
    assert url not in json.dumps(list(AuditEvent.objects.values_list("details", flat=True)))


def test_an_object_acl_recipient_is_bound_to_its_gateway_account(flow, cloud):
    # Sanity for the sandbox gateway helper the tests above lean on: beta cannot read alpha's export alone.
    export = _exported(flow, cloud)
    path = outscale.object_path(region="eu-west-2", bucket=export.bucket, key=export.manifest_key)
    with pytest.raises(Exception):  # noqa: B017, PT011 - the sandbox refuses with 4074
        gateway_for(cloud, cloud.account("beta")).CreateImage(FileLocation=path, ImageName="no-grant")


def test_the_approver_sees_the_oos_user_id_the_grant_will_name(flow, cloud, client):
    user_id = cloud.account("beta")["canonical_id"]
    share = request_share(flow, cloud, accounts=[], externals=[
        ExternalRecipient(account_id=BETA, region="eu-west-2", oos_user_id=user_id)])

    page = _page(client, flow.src_approver, share).content.decode()

    assert f'data-oos-user-id>{user_id}<' in page and "Approve" in page


def test_an_account_whose_grant_failed_may_still_be_given_a_link(flow, cloud, client):
    share = _granted(flow, cloud, ExternalRecipient(account_id=BETA, region="eu-west-2",
                                                    oos_user_id=cloud.account("gamma")["canonical_id"]),
                     ExternalRecipient(account_id=DELTA, region="us-east-2"))
    recipient = share.recipients.get(external_account_id=BETA)
    assert recipient.state == Recipient.State.FAILED and share.state == Share.State.READY
    client.force_login(flow.src_member)

    response = client.post(reverse("transfers:share-reveal-link", kwargs={
        "team_id": share.team.public_id, "share_id": share.public_id, "recipient_id": recipient.public_id}))

    assert response.status_code == 200 and response.context["deliveries"][0].signed
