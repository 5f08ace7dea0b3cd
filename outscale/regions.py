"""OUTSCALE's public Regions and their endpoints.

ReadRegions under-reports, so the list lives in code (DESIGN §2).
"""

REGIONS = (
    "eu-west-2",
    "cloudgouv-eu-west-1",
    "us-east-2",
    "us-west-1",
    "ap-northeast-1",
)
DEFAULT_REGION = "eu-west-2"
REGION_CHOICES = [(name, name) for name in REGIONS]


def default_api_endpoint(region: str) -> str:
    return f"https://api.{region}.outscale.com/api/v1"


def default_oos_endpoint(region: str) -> str:
    return f"https://oos.{region}.outscale.com"


def default_fcu_endpoint(region: str) -> str:
    """The EC2-compatible API (FCU) of a Region, which the AWS CLI's `--endpoint` names."""
    return f"https://fcu.{region}.outscale.com"
