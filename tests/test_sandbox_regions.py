"""The simulator keeps its own list of Regions (it imports nothing of the portal): it must be OUTSCALE's."""

from outscale.regions import REGIONS
from sandbox import server


def test_the_sandbox_serves_every_region_the_portal_knows_in_the_same_order():
    assert server.REGIONS == REGIONS
