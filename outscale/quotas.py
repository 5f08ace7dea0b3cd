"""What the pre-flight checks ask OUTSCALE before anything long starts: a quota's headroom
(ReadQuotas) and whether a create would be accepted (the same call with DryRun: true).

OUTSCALE documents ReadQuotas and some quota names (lb_limit, vm_limit) but not the name of the
OMI quota, and it documents DryRun only as "checks whether you have the required permissions".
So the quota's name is a constant here (the sandbox's choice, kept in step with it), a quota the
account does not report is "unknown" rather than "fine", and a dry run is read answer by answer
(``dry_run``): a 200 says the call would be accepted; an error answer is the error the real call
would get, raised as usual.
"""

from dataclasses import dataclass
from typing import Any

from outscale import oapi
from outscale.credentials import Credentials
from outscale.results import CallResult

IMAGE_QUOTA = "image_limit"  # OMIs per account and Region


@dataclass(frozen=True)
class Quota:
    name: str
    max_value: int  # 0: no limit (OUTSCALE's convention)
    used_value: int
    request_ids: tuple[str, ...] = ()

    @property
    def headroom(self) -> int | None:
        """How many more the account may create; None when there is no limit."""
        return None if self.max_value == 0 else max(0, self.max_value - self.used_value)


def read_quota(*, creds: Credentials, name: str = IMAGE_QUOTA) -> Quota | None:
    """The account's global quota ``name`` (one ReadQuotas call), or None when OUTSCALE reports none."""
    response = oapi.call(creds, "ReadQuotas", Filters={"QuotaNames": [name]})
    for group in response.body.get("QuotaTypes") or []:
        if group.get("QuotaType") not in (None, "global"):
            continue
        for quota in group.get("Quotas") or []:
            if quota.get("Name") == name:
                return Quota(name=name, max_value=int(quota.get("MaxValue") or 0),
                             used_value=int(quota.get("UsedValue") or 0), request_ids=response.request_ids)
    return None


def dry_run(*, creds: Credentials, action: str, **params: Any) -> CallResult:
    """Send ``action`` with DryRun: true. Returns when OUTSCALE would accept the call; raises the
    CloudError the real call would get (refused keys, a taken name, a full quota, ...)."""
    return CallResult(oapi.call(creds, action, dry_run=True, **params).request_ids)
