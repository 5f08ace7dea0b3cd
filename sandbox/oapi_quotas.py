"""Quotas: `ReadQuotas` and the OMI quota that `CreateImage` (copy, import) and FCU `RegisterImage`
are checked against.

OUTSCALE's documentation shows `ReadQuotas` answers (QuotaTypes -> Quotas with Name, MaxValue,
UsedValue, QuotaCollection...) and names some quotas (`lb_limit`, `lb_listeners_limit`,
`vm_limit`), but neither the name of the OMI quota nor the error a create over it returns.
Both are the sandbox's choice (marked *chosen* in README.md): the quota is `image_limit` in the
`Compute` collection, counting the account's OMIs in the Region that are not `failed`, and a
create past it is refused with 10000 (family "TooManyResources (QuotaExceded)", a code the SDK's
catalogue leaves unassigned), before anything is created.
"""

from __future__ import annotations

from . import oapi_support as support
from .oapi_errors import TOO_MANY_IMAGES, OapiError
from .world import Account, World

IMAGE_LIMIT = "image_limit"

# name -> (collection, short description, description, default MaxValue)
QUOTAS = {
    IMAGE_LIMIT: ("Compute", "Image Limit", "Maximum number of OMIs per account in the Region", 500),
}
DEFAULTS = {name: spec[3] for name, spec in QUOTAS.items()}


def limit(world: World, account: Account, name: str) -> int:
    return world.quotas.get(account.account_id, {}).get(name, DEFAULTS[name])


def used(world: World, account: Account, name: str) -> int:
    if name == IMAGE_LIMIT:
        return sum(
            1
            for image in world.images.values()
            if image.account_id == account.account_id and image.region == account.region and image.state != "failed"
        )
    return 0


def check_image_quota(world: World, account: Account) -> None:
    """Raise the quota error when one more OMI would exceed the account's `image_limit`."""
    maximum = limit(world, account, IMAGE_LIMIT)
    if maximum and used(world, account, IMAGE_LIMIT) + 1 > maximum:
        raise OapiError(
            TOO_MANY_IMAGES,
            f"The account has reached its quota of {maximum} OMIs ({IMAGE_LIMIT}); delete OMIs or ask for more.",
        )


def read_quotas(world: World, account: Account, params: dict) -> dict:
    support.check_params(params, {"Filters", "ResultsPerPage", "NextPageToken"})
    flt = support.filters(params, {"Collections", "QuotaNames", "QuotaTypes", "ShortDescriptions"})
    wanted = {name: support.want_str_list(flt, name) for name in flt}
    quotas = []
    for name, (collection, short, description, _default) in QUOTAS.items():
        checks = {"Collections": collection, "QuotaNames": name, "QuotaTypes": "global", "ShortDescriptions": short}
        if any(wanted.get(key) is not None and value not in wanted[key] for key, value in checks.items()):
            continue
        quotas.append(
            {
                "AccountId": account.account_id,
                "Description": description,
                "MaxValue": limit(world, account, name),
                "Name": name,
                "QuotaCollection": collection,
                "ShortDescription": short,
                "UsedValue": used(world, account, name),
            }
        )
    page, token = support.paginate(quotas, params, ["ReadQuotas", account.account_id, flt])
    body = {"QuotaTypes": [{"QuotaType": "global", "Quotas": page}] if page else []}
    if token:
        body["NextPageToken"] = token
    return body
