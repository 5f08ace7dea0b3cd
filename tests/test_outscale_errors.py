"""Mapping OUTSCALE's error answers (OAPI JSON, OOS S3 codes) to the layer's exception types."""

import json

import pytest

from outscale import errors


def oapi_body(code: str, type_: str = "Error", details: str = "", request_id: str = "0475ca1e-d0c5") -> bytes:
    return json.dumps({"Errors": [{"Code": code, "Type": type_, "Details": details}],
                       "ResponseContext": {"RequestId": request_id}}).encode()


@pytest.mark.parametrize(
    ("status", "code", "expected", "retryable"),
    [
        (401, "1", errors.CredentialError, False),
        (401, "4", errors.CredentialError, False),
        (403, "5", errors.CredentialError, False),
        (401, "7", errors.CredentialError, False),
        (401, "8", errors.CredentialError, False),
        (401, "11", errors.CredentialError, False),
        (401, "13", errors.CredentialError, False),
        (403, "14", errors.CredentialError, False),
        (401, "20", errors.CredentialError, False),
        (503, "6", errors.RetryLater, True),
        (429, "24", errors.RetryLater, True),
        (429, "25", errors.RetryLater, True),
        (409, "9002", errors.RetryLater, True),
        (409, "6001", errors.RetryLater, True),
        (400, "5023", errors.NotFound, False),
        (400, "5031", errors.NotFound, False),
        (400, "5058", errors.NotFound, False),
        (400, "4045", errors.InvalidInput, False),
        (400, "4002", errors.InvalidInput, False),
        (409, "9015", errors.Conflict, False),
        (400, "10026", errors.QuotaExceeded, False),
        (500, "2000", errors.RetryLater, True),
        (403, "3", errors.CredentialError, False),
        (400, "3", errors.CloudError, False),
    ],
)
def test_it_maps_oapi_codes_to_what_a_caller_can_do(status, code, expected, retryable):
    error = errors.error_from_oapi(http_status=status, body=oapi_body(code))
    assert type(error) is expected
    assert error.retryable is retryable
    assert error.code == code
    assert error.request_id == "0475ca1e-d0c5"
    assert error.user_message.endswith(".")


def test_throttling_never_ran_but_a_server_error_may_have():
    throttled = errors.error_from_oapi(http_status=429, body=oapi_body("24"))
    crashed = errors.error_from_oapi(http_status=500, body=oapi_body("2000"))
    assert (throttled.kind, throttled.may_have_run) == (errors.RetryLater.THROTTLED, False)
    assert (crashed.kind, crashed.may_have_run) == (errors.RetryLater.UNAVAILABLE, True)


def test_it_names_the_error_from_the_sdk_catalogue():
    error = errors.error_from_oapi(http_status=400, body=oapi_body("5023", "InvalidResource"))
    assert "does not exist" in error.user_message
    conflict = errors.error_from_oapi(http_status=409, body=oapi_body("9015"))
    assert "duplicate-name" in conflict.user_message


def test_it_survives_answers_that_are_not_oapi_json():
    gateway = errors.error_from_oapi(http_status=502, body=b"<html>Bad Gateway</html>")
    assert isinstance(gateway, errors.RetryLater) and gateway.request_ids == ()
    teapot = errors.error_from_oapi(http_status=418, body=None)
    assert type(teapot) is errors.CloudError and not teapot.retryable


def test_messages_never_echo_urls_from_the_cloud():
    url = "https://oos.eu-west-2.outscale.com/bucket/m.json?X-Amz-Credential=AK&X-Amz-Signature=abc"
    error = errors.error_from_oapi(http_status=400, body=oapi_body("4040", details=f"bad manifest {url}"))
    assert error.details == "bad manifest <url>"
    assert "X-Amz" not in str(error) and "X-Amz" not in error.user_message


@pytest.mark.parametrize(
    ("code", "status", "expected"),
    [
        ("InvalidAccessKeyId", 403, errors.CredentialError),
        ("SignatureDoesNotMatch", 403, errors.CredentialError),
        ("AccessDenied", 403, errors.CredentialError),
        ("SlowDown", 503, errors.RetryLater),
        ("InternalError", 500, errors.RetryLater),
        ("NoSuchBucket", 404, errors.NotFound),
        ("NoSuchKey", 404, errors.NotFound),
        ("404", 404, errors.NotFound),
        ("BucketAlreadyExists", 409, errors.Conflict),
        ("InvalidArgument", 400, errors.InvalidInput),
    ],
)
def test_it_maps_oos_errors(code, status, expected):
    error = errors.error_from_s3(code=code, http_status=status, request_id="tx-1")
    assert type(error) is expected
    assert error.request_ids == ("tx-1",)


def test_credential_errors_say_they_will_not_be_retried_and_what_to_do():
    error = errors.error_from_oapi(http_status=401, body=oapi_body("4"))
    assert not error.retryable
    assert "stored keys" in error.user_message
    assert "code=4" in str(error) and "request_id=0475ca1e-d0c5" in str(error)
