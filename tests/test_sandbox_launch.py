"""The sandbox's OAPI for issue 16: /api/latest, launch permissions, DryRun and the OMI quota."""

import pytest
import requests

from tests.fixtures_sandbox import error_code, gateway_for, read_image

ALPHA, BETA, GAMMA = "111122223333", "222233334444", "333344445555"
BUCKET = "alpha-exports"


def image_id(sandbox, name):
    return next(i.image_id for i in sandbox.world.images.values() if i.name == name)


def test_it_serves_oapi_under_api_latest_too(sandbox_world):
    latest = sandbox_world.endpoints()["eu-west-2"]["api"].replace("/api/v1", "/api/latest")
    client = gateway_for(sandbox_world, sandbox_world.account("alpha"), api=latest)
    assert client.ReadAccounts()["Accounts"][0]["AccountId"] == ALPHA
    nowhere = gateway_for(sandbox_world, sandbox_world.account("alpha"), api=latest.replace("latest", "v2"))
    with pytest.raises(requests.HTTPError) as excinfo:
        nowhere.ReadAccounts()
    assert error_code(excinfo) == "4042"


def test_it_shares_an_omi_with_an_account_and_takes_it_back(sandbox_world, oapi):
    web = image_id(sandbox_world, "alpha-web-2025.01")
    assert oapi("beta").ReadImages(Filters={"ImageIds": [web]})["Images"] == []

    answer = oapi("alpha").UpdateImage(ImageId=web, PermissionsToLaunch={"Additions": {"AccountIds": [BETA, GAMMA]}})
    assert answer["Image"]["PermissionsToLaunch"] == {"GlobalPermission": False, "AccountIds": [BETA, GAMMA]}
    # The grantee sees the OMI, and of its permissions only itself; the owner sees them all.
    seen = read_image(oapi("beta"), web)
    assert seen["PermissionsToLaunch"] == {"GlobalPermission": False, "AccountIds": [BETA]}
    shared_with_beta = oapi("beta").ReadImages(Filters={"PermissionsToLaunchAccountIds": [BETA]})["Images"]
    assert {i["ImageId"] for i in shared_with_beta} == {image_id(sandbox_world, "alpha-db-base"), web}
    owned = oapi("alpha").ReadImages(Filters={"PermissionsToLaunchAccountIds": [GAMMA]})["Images"]
    assert [i["ImageId"] for i in owned] == [web]

    copy = oapi("beta").CreateImage(SourceImageId=web, SourceRegionName="eu-west-2", ImageName="web-copy")["Image"]
    assert copy["AccountId"] == BETA

    oapi("alpha").UpdateImage(ImageId=web, PermissionsToLaunch={"Removals": {"AccountIds": [BETA]}})
    assert read_image(oapi("alpha"), web)["PermissionsToLaunch"]["AccountIds"] == [GAMMA]
    assert oapi("beta").ReadImages(Filters={"ImageIds": [web]})["Images"] == []
    with pytest.raises(requests.HTTPError) as excinfo:
        oapi("beta").CreateImage(SourceImageId=web, SourceRegionName="eu-west-2", ImageName="web-copy-2")
    assert error_code(excinfo) == "5023"
    # The copy made while the grant stood is beta's own and stays.
    assert read_image(oapi("beta"), copy["ImageId"])["AccountId"] == BETA


def test_a_public_omi_is_copied_by_anyone_and_global_permission_is_filtered(sandbox_world, oapi):
    web = image_id(sandbox_world, "alpha-web-2025.01")
    oapi("alpha").UpdateImage(ImageId=web, PermissionsToLaunch={"Additions": {"GlobalPermission": True}})
    public = oapi("gamma").ReadImages(Filters={"PermissionsToLaunchGlobalPermission": True})["Images"]
    assert web in {i["ImageId"] for i in public}
    oapi("gamma").CreateImage(SourceImageId=web, SourceRegionName="eu-west-2", ImageName="from-public")
    oapi("alpha").UpdateImage(ImageId=web, PermissionsToLaunch={"Removals": {"GlobalPermission": True}})
    assert oapi("gamma").ReadImages(Filters={"ImageIds": [web]})["Images"] == []


def test_it_refuses_additions_and_removals_together_and_bad_account_ids(sandbox_world, oapi):
    web = image_id(sandbox_world, "alpha-web-2025.01")
    both = {"Additions": {"AccountIds": [BETA]}, "Removals": {"AccountIds": [GAMMA]}}
    with pytest.raises(requests.HTTPError) as excinfo:
        oapi("alpha").UpdateImage(ImageId=web, PermissionsToLaunch=both)
    assert error_code(excinfo) == "4045"
    with pytest.raises(requests.HTTPError) as excinfo:
        oapi("alpha").UpdateImage(ImageId=web, PermissionsToLaunch={"Additions": {"AccountIds": ["beta"]}})
    assert error_code(excinfo) == "4047"
    with pytest.raises(requests.HTTPError) as excinfo:  # only the owner grants
        oapi("beta").UpdateImage(ImageId=image_id(sandbox_world, "alpha-db-base"),
                                 PermissionsToLaunch={"Additions": {"AccountIds": [GAMMA]}})
    assert error_code(excinfo) == "4045"


def test_a_permitted_dry_run_answers_like_success_and_changes_nothing(sandbox_world, oapi):
    web = image_id(sandbox_world, "alpha-web-2025.01")
    alpha, before = oapi("alpha"), len(sandbox_world.world.images)
    rng_before = sandbox_world.world.rng.getstate()
    for action, params in (
        ("CreateImage", {"SourceImageId": web, "SourceRegionName": "eu-west-2", "ImageName": "dry"}),
        ("UpdateImage", {"ImageId": web, "PermissionsToLaunch": {"Additions": {"AccountIds": [BETA]}}}),
        ("CreateImageExportTask", {"ImageId": web, "OsuExport": {"DiskImageFormat": "raw", "OsuBucket": BUCKET}}),
        ("CreateTags", {"ResourceIds": [web], "Tags": [{"Key": "k", "Value": "v"}]}),
        ("DeleteImage", {"ImageId": web}),
        ("ReadQuotas", {}),
    ):
        answer = alpha.raw(action, DryRun=True, **params)
        assert set(answer) == {"ResponseContext"}, action
    assert len(sandbox_world.world.images) == before
    image = read_image(alpha, web)
    assert image["PermissionsToLaunch"]["AccountIds"] == [] and image["Tags"] == []
    assert alpha.ReadImageExportTasks()["ImageExportTasks"] == []
    assert sandbox_world.world.rng.getstate() == rng_before  # the next ids are the same as without it
    counters = sandbox_world.counters(ALPHA)
    assert counters["CreateImage:DryRun"] == 1 and "CreateImage" not in counters
    assert sandbox_world.created(ALPHA) == {}


def test_a_refused_dry_run_answers_the_real_error(sandbox_world, oapi):
    web = image_id(sandbox_world, "alpha-web-2025.01")
    with pytest.raises(requests.HTTPError) as excinfo:  # not visible to beta
        oapi("beta").raw("CreateImage", DryRun=True, SourceImageId=web, SourceRegionName="eu-west-2", ImageName="dry1")
    assert error_code(excinfo) == "5023"
    with pytest.raises(requests.HTTPError) as excinfo:  # the name is taken
        oapi("alpha").raw("CreateImage", DryRun=True, SourceImageId=web, SourceRegionName="eu-west-2",
                          ImageName="alpha-db-base")
    assert error_code(excinfo) == "9015"
    with pytest.raises(requests.HTTPError) as excinfo:  # not the owner
        oapi("beta").raw("UpdateImage", DryRun=True, ImageId=image_id(sandbox_world, "alpha-db-base"),
                         PermissionsToLaunch={"Additions": {"AccountIds": [GAMMA]}})
    assert error_code(excinfo) == "4045"
    with pytest.raises(requests.HTTPError) as excinfo:
        oapi("alpha").raw("DeleteExportTask", DryRun=True, ExportTaskId="image-export-00000000")
    assert error_code(excinfo) == "5058"
    with pytest.raises(requests.HTTPError) as excinfo:
        oapi("alpha", secret_key="X" * 40).raw("ReadQuotas", DryRun=True)
    assert error_code(excinfo) == "1"


def test_it_reads_the_omi_quota_and_refuses_a_create_past_it(sandbox_world, oapi):
    quota = oapi("beta").ReadQuotas(Filters={"QuotaNames": ["image_limit"]})["QuotaTypes"]
    assert quota == [{"QuotaType": "global", "Quotas": [{
        "AccountId": BETA, "Description": "Maximum number of OMIs per account in the Region", "MaxValue": 500,
        "Name": "image_limit", "QuotaCollection": "Compute", "ShortDescription": "Image Limit", "UsedValue": 1}]}]
    assert oapi("beta").ReadQuotas(Filters={"Collections": ["LBU"]})["QuotaTypes"] == []

    sandbox_world.set_quota(BETA, "image_limit", 2)
    shared = image_id(sandbox_world, "alpha-db-base")
    oapi("beta").CreateImage(SourceImageId=shared, SourceRegionName="eu-west-2", ImageName="db-1")
    used = oapi("beta").ReadQuotas()["QuotaTypes"][0]["Quotas"][0]
    assert (used["UsedValue"], used["MaxValue"]) == (2, 2)
    for dry_run in (True, False):
        with pytest.raises(requests.HTTPError) as excinfo:
            oapi("beta").raw("CreateImage", DryRun=dry_run, SourceImageId=shared, SourceRegionName="eu-west-2",
                             ImageName="db-2")
        status, code = excinfo.value.response.status_code, error_code(excinfo)
        assert (status, code) == (400, "10000")
        assert excinfo.value.response.json()["Errors"][0]["Type"] == "TooManyResources (QuotaExceded)"
    assert sandbox_world.created(BETA) == {"CreateImage": {"db-1": 1}}


def test_the_control_endpoint_sets_a_quota(sandbox_world, oapi):
    control = sandbox_world.control_url
    answer = requests.post(f"{control}/quotas/{GAMMA}", json={"image_limit": 1}, timeout=5)
    assert answer.json() == {"image_limit": 1}
    assert requests.post(f"{control}/quotas/{GAMMA}", json={"nope": 1}, timeout=5).status_code == 400
    with pytest.raises(requests.HTTPError) as excinfo:
        oapi("gamma").CreateImage(SourceImageId=image_id(sandbox_world, "gamma-ci-runner"),
                                  SourceRegionName="eu-west-2", ImageName="ci-2")
    assert error_code(excinfo) == "10000"
    sandbox_world.reset()
    assert oapi("gamma").ReadQuotas()["QuotaTypes"][0]["Quotas"][0]["MaxValue"] == 500
