"""Credentials, endpoints, timeouts, OOS client isolation and pre-sign arithmetic."""

import ast
import logging
import pickle
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest
from django.test import override_settings

import outscale
from outscale import marks, oos, storage
from outscale.credentials import Credentials
from outscale.endpoints import endpoints_for, oos_hosts, timeouts
from outscale.regions import REGIONS

SECRET = "oos-secret-never-logged-0002"
CREDS = Credentials("AKOOSEXAMPLE00002", SECRET, "us-east-2")


@pytest.fixture(autouse=True)
def fresh_clients(settings):
    settings.OMIPORTAL_OUTSCALE_ENDPOINTS = {}
    outscale.clear_clients()
    yield
    outscale.clear_clients()


# --- credentials ----------------------------------------------------------------------------

def test_credentials_never_show_the_secret_and_mask_the_access_key():
    creds = Credentials(access_key="AKIAEXAMPLE987654", secret_key="s3cr3t-value", region="eu-west-2")
    for text in (repr(creds), str(creds), f"{creds}", repr([creds])):
        assert "s3cr3t-value" not in text
        assert "AKIAEXAMPLE987654" not in text
        assert "AKIA…7654" in text


def test_credentials_refuse_to_be_pickled():
    with pytest.raises(TypeError):
        pickle.dumps(CREDS)


def test_credentials_check_region_and_keys():
    with pytest.raises(ValueError):
        Credentials("AK", "SK", "eu-west-3")
    with pytest.raises(ValueError):
        Credentials("", "SK", "eu-west-2")


# --- endpoints and timeouts -----------------------------------------------------------------

def test_it_uses_the_real_endpoints_by_default():
    assert endpoints_for("cloudgouv-eu-west-1") == outscale.Endpoints(
        api="https://api.cloudgouv-eu-west-1.outscale.com/api/v1", oos="https://oos.cloudgouv-eu-west-1.outscale.com",
        fcu="https://fcu.cloudgouv-eu-west-1.outscale.com")


def test_settings_override_endpoints_per_region(settings):
    settings.OMIPORTAL_OUTSCALE_ENDPOINTS = {"eu-west-2": {"api": "http://127.0.0.1:8701/api/v1/",
                                                          "oos": "http://127.0.0.1:8711"}}
    assert endpoints_for("eu-west-2") == outscale.Endpoints(api="http://127.0.0.1:8701/api/v1",
                                                            oos="http://127.0.0.1:8711",
                                                            fcu="https://fcu.eu-west-2.outscale.com")
    assert endpoints_for("us-east-2").api == "https://api.us-east-2.outscale.com/api/v1"
    assert oos_hosts()["eu-west-2"] == "127.0.0.1:8711"
    assert set(oos_hosts()) == set(REGIONS)
    settings.OMIPORTAL_OUTSCALE_ENDPOINTS = {"eu-west-2": {"fcu": "http://127.0.0.1:8721/"}}
    assert endpoints_for("eu-west-2").fcu == "http://127.0.0.1:8721"  # shown in the AWS CLI's command only


def test_it_refuses_unknown_regions_and_odd_endpoints(settings):
    with pytest.raises(ValueError):
        endpoints_for("mars-1")
    settings.OMIPORTAL_OUTSCALE_ENDPOINTS = {"eu-west-2": {"api": "ftp://x"}}
    with pytest.raises(ValueError):
        endpoints_for("eu-west-2")


def test_timeouts_come_from_settings(settings):
    settings.OMIPORTAL_OUTSCALE_CONNECT_TIMEOUT = 2.5
    settings.OMIPORTAL_OUTSCALE_READ_TIMEOUT = 12.0
    assert timeouts().as_tuple() == (2.5, 12.0)


# --- the cloud layer is handed its configuration ---------------------------------------------

# Django utilities the layer may use (no settings, no app): masking frames in error reports, an HMAC.
DJANGO_UTILITIES = {"django.views.decorators.debug", "django.utils.crypto"}


def test_the_cloud_layer_reads_no_settings_and_uses_only_djangos_utilities():
    root = Path(outscale.__file__).parent
    used = set()
    for path in root.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "django":
                used.add(node.module)
            elif isinstance(node, ast.Import):
                used.update(alias.name for alias in node.names if alias.name.split(".")[0] == "django")
    assert used <= DJANGO_UTILITIES, used - DJANGO_UTILITIES


def test_a_changed_setting_reaches_the_layer_and_a_restored_one_comes_back(settings):
    before = outscale.config.current()
    with override_settings(OMIPORTAL_OUTSCALE_RETRY_ATTEMPTS=7, SECRET_KEY="another-key-for-marks-0123456789"):
        assert outscale.config.current().retry_attempts == 7
        assert outscale.config.current().mark_keys[0] == "another-key-for-marks-0123456789"
    assert outscale.config.current() == before


def test_marks_need_a_key_handed_in():
    before = outscale.config.current()
    outscale.configure(outscale.Config())
    try:
        with pytest.raises(RuntimeError, match="no key for the portal's mark"):
            marks.mark("recipient:abc:1")
    finally:
        outscale.configure(before)


# --- OOS client isolation --------------------------------------------------------------------

@pytest.fixture
def hostile_aws_environment(monkeypatch, tmp_path):
    (tmp_path / ".aws").mkdir()
    (tmp_path / ".aws" / "config").write_text("[default]\nregion = us-east-1\ns3 =\n  addressing_style = virtual\n")
    (tmp_path / ".aws" / "credentials").write_text("[default]\naws_access_key_id = EVILFILE\n")
    monkeypatch.setenv("HOME", str(tmp_path))
    for name, value in {"AWS_PROFILE": "does-not-exist", "AWS_ACCESS_KEY_ID": "EVILENV", "AWS_SECRET_ACCESS_KEY": "x",
                        "AWS_DEFAULT_REGION": "us-east-1", "AWS_ENDPOINT_URL": "http://127.0.0.1:9",
                        "AWS_ENDPOINT_URL_S3": "http://127.0.0.1:9", "AWS_MAX_ATTEMPTS": "9",
                        "AWS_CONFIG_FILE": str(tmp_path / ".aws" / "config"), "AWS_DATA_PATH": str(tmp_path)}.items():
        monkeypatch.setenv(name, value)


def test_the_hostile_environment_does_break_a_stock_boto3_session(hostile_aws_environment):
    import boto3
    import botocore.exceptions

    with pytest.raises(botocore.exceptions.ProfileNotFound):
        boto3.session.Session().client("s3")


def test_oos_clients_ignore_aws_environment_and_files(hostile_aws_environment):
    client = oos.client_for(CREDS)

    assert client.meta.endpoint_url == "https://oos.us-east-2.outscale.com"
    assert client.meta.region_name == "us-east-2"
    assert client.meta.config.s3 == {"addressing_style": "path"}
    assert client.meta.config.retries["total_max_attempts"] == 1
    assert client._request_signer._credentials.access_key == CREDS.access_key


def test_oos_clients_are_per_account_and_shared_by_the_threads_of_a_process():
    import threading

    first = oos.client_for(CREDS)
    assert oos.client_for(CREDS) is first
    elsewhere = []
    thread = threading.Thread(target=lambda: elsewhere.append(oos.client_for(CREDS)))
    thread.start()
    thread.join()
    assert elsewhere[0] is first  # boto3 clients are thread-safe; building one costs milliseconds
    other = Credentials(access_key="AK2", secret_key=CREDS.secret_key, region=CREDS.region)
    assert oos.client_for(other) is not first
    outscale.clear_clients()
    assert oos.client_for(CREDS) is not first


# --- pre-signing -----------------------------------------------------------------------------

def signed_fields(url: str) -> dict:
    return {k: v[0] for k, v in parse_qs(urlsplit(url).query).items()}


def test_presigned_links_are_path_style_sigv4_for_the_region():
    link = storage.presign_manifest(creds=CREDS, bucket="exports", key="p/ami-1/manifest.json",
                                    not_after=datetime.now(UTC) + timedelta(days=2))
    parts = urlsplit(link.url)
    assert parts.netloc == "oos.us-east-2.outscale.com"
    assert parts.path == "/exports/p/ami-1/manifest.json"
    fields = signed_fields(link.url)
    assert fields["X-Amz-Algorithm"] == "AWS4-HMAC-SHA256"
    assert "/us-east-2/s3/aws4_request" in fields["X-Amz-Credential"]


def test_presign_expiry_is_clamped_to_the_manifest_deadline():
    deadline = datetime.now(UTC) + timedelta(hours=5)
    link = storage.presign_manifest(creds=CREDS, bucket="b", key="k", not_after=deadline)
    assert deadline - timedelta(seconds=3) <= link.expires_at <= deadline
    assert int(signed_fields(link.url)["X-Amz-Expires"]) <= 5 * 3600


def test_presign_expiry_never_exceeds_seven_days():
    link = storage.presign_manifest(creds=CREDS, bucket="b", key="k", not_after=datetime.now(UTC) + timedelta(days=30))
    assert signed_fields(link.url)["X-Amz-Expires"] == "604800"
    assert link.expires_at <= datetime.now(UTC) + timedelta(days=7)


def test_presign_refuses_a_passed_deadline_without_signing():
    with pytest.raises(outscale.ManifestExpired):
        storage.presign_manifest(creds=CREDS, bucket="b", key="k", not_after=datetime.now(UTC) - timedelta(seconds=1))
    with pytest.raises(ValueError):
        storage.presign_manifest(creds=CREDS, bucket="b", key="k", not_after=datetime(2030, 1, 1))


def test_presigned_link_repr_hides_the_url_and_logs_stay_quiet(caplog):
    caplog.set_level(logging.DEBUG)
    caplog.set_level(logging.DEBUG, logger="botocore")  # as an operator debugging OOS might
    link = storage.presign_manifest(creds=CREDS, bucket="b", key="k", not_after=datetime.now(UTC) + timedelta(days=1))
    assert "X-Amz-Signature" not in repr(link)
    signature = signed_fields(link.url)["X-Amz-Signature"]
    assert signature not in caplog.text and SECRET not in caplog.text


def test_logs_stay_quiet_after_logging_is_configured_again(caplog, settings):
    # dictConfig resets the levels of botocore's child loggers to NOTSET; the signature stays out anyway.
    import logging.config

    logging.config.dictConfig(settings.LOGGING)
    logging.getLogger().addHandler(caplog.handler)  # dictConfig replaced the root's handlers, caplog's too
    caplog.set_level(logging.DEBUG)
    caplog.set_level(logging.DEBUG, logger="botocore")
    link = storage.presign_manifest(creds=CREDS, bucket="b", key="k", not_after=datetime.now(UTC) + timedelta(days=1))
    assert signed_fields(link.url)["X-Amz-Signature"] not in caplog.text and SECRET not in caplog.text


def test_delete_refuses_prefixes_that_could_match_other_exports():
    for prefix in ("", "exports/abc"):
        with pytest.raises(ValueError):
            storage.delete_export_objects(creds=CREDS, bucket="b", prefix=prefix)


def test_export_prefix_and_manifest_url_helpers():
    assert storage.export_prefix(prefix="x/", image_id="ami-1") == "x/ami-1/"
    assert storage.export_prefix(prefix="x/ami-1/", image_id="ami-1") == "x/ami-1/"
    assert storage.manifest_key_from_url(url="http://h/b/x/ami-1/manifest.json", bucket="b") == "x/ami-1/manifest.json"
    assert storage.manifest_key_from_url(url="http://h/b/k?X-Amz-Signature=1", bucket="b") is None


def test_warm_up_reports_its_time():
    assert outscale.warm_up() >= 0
