"""OAPI in the sandbox, through osc-sdk-python: signatures, ReadAccounts, ReadImages and the
rules of CreateImage (copy), UpdateImage, DeleteImage and tags."""

import json
import re
import uuid
from concurrent.futures import ThreadPoolExecutor
from unittest import mock

import pytest
import requests
from osc_sdk_python import authentication

from tests.fixtures_sandbox import error_code, gateway_for, oapi_error, read_image

ALPHA, BETA, GAMMA, DELTA = "111122223333", "222233334444", "333344445555", "444455556666"


def image_id(sandbox, name):
    return next(i.image_id for i in sandbox.world.images.values() if i.name == name)


def names(response):
    return {image["ImageName"] for image in response["Images"]}


# --- signatures ---------------------------------------------------------------------------------


def test_it_identifies_the_caller_with_read_accounts(sandbox_world, oapi):
    response = oapi("alpha").ReadAccounts()
    assert response["Accounts"][0]["AccountId"] == ALPHA
    assert response["Accounts"][0]["Email"] == "alpha@sandbox.example"
    assert uuid.UUID(response["ResponseContext"]["RequestId"])


def test_it_refuses_a_wrong_secret_key_with_401_code_1(sandbox_world, oapi):
    with pytest.raises(requests.HTTPError) as excinfo:
        oapi("alpha", secret_key="WRONG" * 8).ReadAccounts()
    status, body = oapi_error(excinfo)
    assert status == 401
    assert body["Errors"][0]["Code"] == "1"
    assert body["Errors"][0]["Type"] == "AccessDenied"
    assert uuid.UUID(body["ResponseContext"]["RequestId"])


def test_it_refuses_an_unknown_access_key(sandbox_world, oapi):
    with pytest.raises(requests.HTTPError) as excinfo:
        oapi("alpha", access_key="SBXUNKNOWNKEY0000000").ReadAccounts()
    assert oapi_error(excinfo)[0] == 401
    assert error_code(excinfo) == "1"


def test_it_refuses_keys_of_an_account_of_another_region(sandbox_world, oapi):
    # Accounts are per Region: delta (us-east-2) cannot call eu-west-2.
    with pytest.raises(requests.HTTPError) as excinfo:
        oapi("delta", region="eu-west-2").ReadAccounts()
    assert error_code(excinfo) == "1"


def test_it_refuses_a_stale_date(sandbox_world, oapi):
    gw = oapi("alpha")
    stale = ("20200101T000000Z", "20200101")
    with (
        mock.patch.object(authentication.Authentication, "build_dates", return_value=stale),
        pytest.raises(requests.HTTPError) as excinfo,
    ):
        gw.ReadAccounts()
    assert oapi_error(excinfo)[0] == 401
    assert error_code(excinfo) == "1"
    assert "15 minutes" in oapi_error(excinfo)[1]["Errors"][0]["Details"]


def test_it_refuses_a_body_altered_after_signing(sandbox_world, oapi):
    original = authentication.Authentication.__call__

    def tamper(self, request):
        signed = original(self, request)
        signed.body = signed.body.replace("alpha-web", "alpha-xyz")
        return signed

    with (
        mock.patch.object(authentication.Authentication, "__call__", tamper),
        pytest.raises(requests.HTTPError) as excinfo,
    ):
        oapi("alpha").ReadImages(Filters={"ImageNames": ["alpha-web-2025.01"]})
    assert oapi_error(excinfo)[0] == 401
    assert error_code(excinfo) == "1"
    assert sandbox_world.counters(ALPHA) == {}


def test_it_locks_a_key_after_four_bad_signatures(sandbox_world, oapi):
    for _ in range(4):
        with pytest.raises(requests.HTTPError):
            oapi("beta", secret_key="B" * 40).ReadAccounts()
    with pytest.raises(requests.HTTPError) as excinfo:
        oapi("beta").ReadAccounts()  # the right secret, but the key is locked for a minute
    assert oapi_error(excinfo)[0] == 401
    assert error_code(excinfo) == "13"


def test_it_answers_an_unknown_action_with_an_error_body(sandbox_world, oapi):
    with pytest.raises(requests.HTTPError) as excinfo:
        oapi("alpha").raw("ReadVms")
    assert oapi_error(excinfo)[0] == 400
    assert error_code(excinfo) == "4042"


# --- ReadImages ---------------------------------------------------------------------------------


def test_it_returns_public_images_too_without_an_account_filter(sandbox_world, oapi):
    assert names(oapi("alpha").ReadImages()) == {
        "alpha-web-2025.01",
        "alpha-db-base",
        "alpha-legacy-broken",
        "Ubuntu-24.04-2025.01.15-0",
    }


def test_it_returns_only_the_given_accounts_images_with_account_ids(sandbox_world, oapi):
    response = oapi("alpha").ReadImages(Filters={"AccountIds": [ALPHA]})
    assert names(response) == {"alpha-web-2025.01", "alpha-db-base", "alpha-legacy-broken"}


def test_it_shows_an_image_shared_with_the_account(sandbox_world, oapi):
    assert names(oapi("beta").ReadImages()) == {"beta-app-1.0", "alpha-db-base", "Ubuntu-24.04-2025.01.15-0"}
    assert names(oapi("gamma").ReadImages(Filters={"AccountIds": [ALPHA]})) == set()


def test_it_keeps_regions_apart(sandbox_world, oapi):
    assert names(oapi("delta").ReadImages()) == {"delta-api-2.3", "Debian-12-2025.01.15-0"}


def test_it_filters_by_name_and_launch_permission(sandbox_world, oapi):
    gw = oapi("alpha")
    assert names(gw.ReadImages(Filters={"ImageNames": ["alpha-db-base"], "AccountIds": [ALPHA]})) == {"alpha-db-base"}
    assert names(gw.ReadImages(Filters={"PermissionsToLaunchAccountIds": [BETA]})) == {"alpha-db-base"}
    assert names(gw.ReadImages(Filters={"PermissionsToLaunchGlobalPermission": True})) == {"Ubuntu-24.04-2025.01.15-0"}


def test_it_describes_images_as_the_spec_does(sandbox_world, oapi):
    image = read_image(oapi("alpha"), image_id(sandbox_world, "alpha-db-base"))
    assert re.fullmatch(r"ami-[0-9a-f]{8}", image["ImageId"])
    assert image["AccountId"] == ALPHA
    assert image["State"] == "available"
    assert image["StateComment"] == {}
    assert image["PermissionsToLaunch"] == {"GlobalPermission": False, "AccountIds": [BETA]}
    assert image["Tags"] == []
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", image["CreationDate"])
    assert image["BlockDeviceMappings"][0]["Bsu"]["SnapshotId"].startswith("snap-")


def test_it_pages_read_images(sandbox_world, oapi):
    gw = oapi("alpha")
    first = gw.ReadImages(ResultsPerPage=2)
    assert len(first["Images"]) == 2 and first["NextPageToken"]
    second = gw.ReadImages(ResultsPerPage=2, NextPageToken=first["NextPageToken"])
    assert "NextPageToken" not in second
    assert names(first) | names(second) == names(gw.ReadImages())
    with pytest.raises(requests.HTTPError) as excinfo:
        gw.ReadImages(ResultsPerPage=2, NextPageToken=first["NextPageToken"], Filters={"AccountIds": [ALPHA]})
    assert error_code(excinfo) == "4091"


# --- CreateImage (copy) -------------------------------------------------------------------------


def test_it_copies_a_shared_image_into_the_account(sandbox_world, oapi, wait_for):
    gw = oapi("beta")
    created = gw.CreateImage(
        SourceImageId=image_id(sandbox_world, "alpha-db-base"), SourceRegionName="eu-west-2", ImageName="db-copy"
    )["Image"]
    assert created["State"] == "pending"
    assert created["AccountId"] == BETA
    assert re.fullmatch(r"ami-[0-9a-f]{8}", created["ImageId"])
    assert created["ImageId"] != image_id(sandbox_world, "alpha-db-base")
    final = wait_for(lambda: read_image(gw, created["ImageId"]), lambda i: i["State"] != "pending")
    assert final["State"] == "available"
    assert final["FileLocation"] == f"{BETA}/db-copy"


def test_it_copies_a_public_image(sandbox_world, oapi):
    created = oapi("gamma").CreateImage(
        SourceImageId=image_id(sandbox_world, "Ubuntu-24.04-2025.01.15-0"),
        SourceRegionName="eu-west-2",
        ImageName="ubuntu-copy",
    )["Image"]
    assert created["AccountId"] == GAMMA


def test_it_refuses_a_source_region_other_than_the_callers(sandbox_world, oapi):
    with pytest.raises(requests.HTTPError) as excinfo:
        oapi("alpha").CreateImage(
            SourceImageId=image_id(sandbox_world, "alpha-web-2025.01"),
            SourceRegionName="us-east-2",
            ImageName="cross-region",
        )
    assert oapi_error(excinfo)[0] == 400
    assert error_code(excinfo) == "4047"


def test_it_refuses_a_duplicate_name_in_the_account_with_9015(sandbox_world, oapi):
    gw = oapi("alpha")
    source = image_id(sandbox_world, "alpha-web-2025.01")
    gw.CreateImage(SourceImageId=source, SourceRegionName="eu-west-2", ImageName="web-copy")
    with pytest.raises(requests.HTTPError) as excinfo:
        gw.CreateImage(SourceImageId=source, SourceRegionName="eu-west-2", ImageName="web-copy")
    assert oapi_error(excinfo)[0] == 409
    assert error_code(excinfo) == "9015"
    # Names are unique per account only.
    oapi("gamma").CreateImage(
        SourceImageId=image_id(sandbox_world, "Ubuntu-24.04-2025.01.15-0"),
        SourceRegionName="eu-west-2",
        ImageName="web-copy",
    )


@pytest.mark.parametrize("name", ["ab", "x" * 129, "bad*name", "accentué", "semi;colon"])
def test_it_refuses_invalid_image_names(sandbox_world, oapi, name):
    with pytest.raises(requests.HTTPError) as excinfo:
        oapi("alpha").CreateImage(
            SourceImageId=image_id(sandbox_world, "alpha-web-2025.01"), SourceRegionName="eu-west-2", ImageName=name
        )
    assert error_code(excinfo) == "4026"


def test_it_accepts_every_allowed_character(sandbox_world, oapi):
    name = "Web_1 (copy)/2025.01-a" + "x" * 106  # 128 characters
    created = oapi("alpha").CreateImage(
        SourceImageId=image_id(sandbox_world, "alpha-web-2025.01"), SourceRegionName="eu-west-2", ImageName=name
    )["Image"]
    assert created["ImageName"] == name


def test_it_hides_images_of_other_accounts_from_copy(sandbox_world, oapi):
    with pytest.raises(requests.HTTPError) as excinfo:
        oapi("gamma").CreateImage(
            SourceImageId=image_id(sandbox_world, "beta-app-1.0"), SourceRegionName="eu-west-2", ImageName="stolen"
        )
    assert error_code(excinfo) == "5023"


def test_it_requires_a_name(sandbox_world, oapi):
    with pytest.raises(requests.HTTPError) as excinfo:
        oapi("alpha").CreateImage(
            SourceImageId=image_id(sandbox_world, "alpha-web-2025.01"), SourceRegionName="eu-west-2"
        )
    assert error_code(excinfo) == "7000"


# --- UpdateImage, DeleteImage, tags -------------------------------------------------------------


def test_it_shares_and_unshares_an_image(sandbox_world, oapi):
    web = image_id(sandbox_world, "alpha-web-2025.01")
    updated = oapi("alpha").UpdateImage(ImageId=web, PermissionsToLaunch={"Additions": {"AccountIds": [GAMMA]}})
    assert updated["Image"]["PermissionsToLaunch"]["AccountIds"] == [GAMMA]
    assert "alpha-web-2025.01" in names(oapi("gamma").ReadImages())
    oapi("alpha").UpdateImage(ImageId=web, PermissionsToLaunch={"Removals": {"AccountIds": [GAMMA]}})
    assert "alpha-web-2025.01" not in names(oapi("gamma").ReadImages())


def test_it_makes_an_image_public(sandbox_world, oapi):
    web = image_id(sandbox_world, "alpha-web-2025.01")
    oapi("alpha").UpdateImage(ImageId=web, PermissionsToLaunch={"Additions": {"GlobalPermission": True}})
    assert "alpha-web-2025.01" in names(oapi("beta").ReadImages())


def test_it_refuses_updates_by_a_non_owner(sandbox_world, oapi):
    with pytest.raises(requests.HTTPError) as excinfo:
        oapi("beta").UpdateImage(
            ImageId=image_id(sandbox_world, "alpha-db-base"),
            PermissionsToLaunch={"Additions": {"AccountIds": [GAMMA]}},
        )
    assert error_code(excinfo) == "4045"


def test_it_refuses_malformed_account_ids(sandbox_world, oapi):
    with pytest.raises(requests.HTTPError) as excinfo:
        oapi("alpha").UpdateImage(
            ImageId=image_id(sandbox_world, "alpha-web-2025.01"),
            PermissionsToLaunch={"Additions": {"AccountIds": ["12ab"]}},
        )
    assert error_code(excinfo) == "4047"


def test_it_deletes_an_owned_image(sandbox_world, oapi):
    web = image_id(sandbox_world, "alpha-web-2025.01")
    oapi("alpha").DeleteImage(ImageId=web)
    assert oapi("alpha").ReadImages(Filters={"ImageIds": [web]})["Images"] == []
    with pytest.raises(requests.HTTPError) as excinfo:
        oapi("alpha").DeleteImage(ImageId=web)
    assert error_code(excinfo) == "5023"


def test_it_tags_and_untags_an_image(sandbox_world, oapi):
    gw = oapi("alpha")
    web = image_id(sandbox_world, "alpha-web-2025.01")
    gw.CreateTags(ResourceIds=[web], Tags=[{"Key": "omiportal-share", "Value": "42"}])
    assert read_image(gw, web)["Tags"] == [{"Key": "omiportal-share", "Value": "42"}]
    assert names(gw.ReadImages(Filters={"TagKeys": ["omiportal-share"]})) == {"alpha-web-2025.01"}
    gw.DeleteTags(ResourceIds=[web], Tags=[{"Key": "omiportal-share", "Value": ""}])
    assert read_image(gw, web)["Tags"] == []
    with pytest.raises(requests.HTTPError) as excinfo:
        gw.CreateTags(ResourceIds=["vol-12345678"], Tags=[{"Key": "k", "Value": "v"}])
    assert error_code(excinfo) == "4104"


def test_it_refuses_unknown_parameters_and_a_dry_run_that_is_not_a_boolean(sandbox_world, oapi):
    with pytest.raises(requests.HTTPError) as excinfo:
        oapi("alpha").raw("ReadImages", Bogus=1)
    assert error_code(excinfo) == "4045"
    with pytest.raises(requests.HTTPError) as excinfo:
        oapi("alpha").raw("ReadImages", DryRun="yes")
    assert error_code(excinfo) == "4108"


def test_every_answer_carries_a_request_id(sandbox_world, oapi):
    oapi("alpha").ReadAccounts()
    with pytest.raises(requests.HTTPError):
        oapi("alpha").DeleteImage(ImageId="ami-00000000")
    answers = list(sandbox_world.world.responses)
    assert len(answers) == 2
    for _action, _status, body in answers:
        assert uuid.UUID(body["ResponseContext"]["RequestId"])
    assert json.dumps(answers)  # plain JSON data


def test_concurrent_creates_with_one_name_make_one_image(sandbox, sandbox_world):
    # Gateways are not thread-safe: one per thread, as the portal's workers have.
    gateways = [gateway_for(sandbox, sandbox.account("alpha")) for _ in range(8)]
    source = image_id(sandbox_world, "alpha-web-2025.01")

    def create(gw):
        try:
            gw.CreateImage(SourceImageId=source, SourceRegionName="eu-west-2", ImageName="race")
            return "created"
        except requests.HTTPError as exc:
            return exc.response.json()["Errors"][0]["Code"]

    with ThreadPoolExecutor(max_workers=8) as pool:
        outcomes = list(pool.map(create, gateways))
    assert sorted(outcomes) == ["9015"] * 7 + ["created"]
    assert sandbox_world.counters(ALPHA)["CreateImage"] == 8
