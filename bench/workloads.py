"""Which transfers `bench_transfers` requests: `plan(seeded, images, i)` gives transfer i's team,
source account, image and target account (bench.load.request_and_approve asks it).

Since each recipient's method is chosen by where it is (transfers/services/methods.py), the
workload decides the path measured:

- **export**: every target in another Region than its source, so every transfer is export → bucket
  → import (one export per source image and account, shared by the transfers of that image);
- **same-region**: every target an account of another team in the source's Region, under another
  OUTSCALE account id, and every image owned by the source, so every transfer is grant → copy →
  revoke (launch permission) and no export is made.

- **export-distinct**: the export workload's routes, each transfer with an image of its own
  (seeded straight into the sandbox's world), so no export is shared: the floor is three calls.

All run on bench.load.seed's four teams of two accounts over the sandbox's five accounts (alpha,
beta and gamma share eu-west-2).
"""

from __future__ import annotations

WORKLOADS = ("export", "same-region")


def plan_export(seeded, images: dict, i: int) -> tuple:
    """Transfer ``i`` to an account of another team in another Region than its source."""
    teams = seeded.teams
    team = teams[i % len(teams)]
    source = seeded.accounts[team.pk][(i // len(teams)) % 2]
    image = images[source.label][(i // (2 * len(teams))) % len(images[source.label])]
    others = [teams[(i + 1 + k + (i // len(teams))) % len(teams)] for k in range(len(teams))]
    for other in others:
        choices = [a for a in seeded.accounts[other.pk] if a.region != source.region]
        if other.pk != team.pk and choices:
            return team, source, image, choices[i % len(choices)]
    raise ValueError(f"No team's account lies outside {source.region}: the export workload needs one.")


def same_region_routes(seeded, images: dict) -> list[tuple]:
    """Every (team, source account, owned image, target account) of the same-Region workload,
    ordered so that consecutive transfers go from different sources to different accounts."""
    groups = []
    for team in seeded.teams:
        for source in seeded.accounts[team.pk]:
            owned = [image for image in images[source.label] if image["kind"] == "owned"]
            targets = [a for other in seeded.teams if other.pk != team.pk for a in seeded.accounts[other.pk]
                       if a.region == source.region and a.account_id != source.account_id]
            group = [(team, source, image, target) for target in targets for image in owned]
            if group:
                groups.append(group)
    if not groups:
        raise ValueError("No two teams have accounts in one Region: the same-Region workload needs them.")
    routes = []
    for k in range(max(len(g) for g in groups)):  # round robin over the sources
        routes += [g[k] for g in groups if k < len(g)]
    return routes


def plan_same_region(seeded, images: dict, i: int) -> tuple:
    routes = same_region_routes(seeded, images)
    return routes[i % len(routes)]


# --- a distinct image per transfer ----------------------------------------------------------------

# Not in WORKLOADS ("both" stays export + same-region): `--workload export-distinct` asks for it.
DISTINCT = "export-distinct"
_DISTINCT_BASE = 0xD0000000  # seeded ids ami-d0000000, ami-d0000001, ...: clear of the sandbox's own


def seed_distinct_images(sandbox, seeded, images: dict, n: int) -> list[dict]:
    """One owned image per transfer, written straight into the in-process sandbox's world (no
    call: seeding 10,000 images takes a moment), each owned by the account ``plan_export`` makes
    transfer ``i``'s source; returns them by transfer index."""
    from sandbox.world import Image, Snapshot, utc_now  # the sandbox runs in the bench process

    world, made = sandbox.world, []
    accounts = {entry["name"]: entry for entry in sandbox.describe()["accounts"]}
    with world.lock:
        for i in range(n):
            _, source, _, _ = plan_export(seeded, images, i)
            owner = accounts[source.label]
            image_id, name = f"ami-{_DISTINCT_BASE + i:08x}", f"bench-distinct-{i:05d}"
            world.images[image_id] = Image(
                image_id=image_id, account_id=owner["account_id"], region=owner["region"], name=name,
                description="bench_transfers: one image per transfer", created=utc_now(),
                snapshots=[Snapshot(f"snap-{_DISTINCT_BASE + i:08x}", "/dev/sda1", 10)])
            made.append({"image_id": image_id, "name": name, "kind": "owned"})
    return made


def plan_distinct(distinct: list[dict]):
    """The export workload's routes, each transfer with its own image (``seed_distinct_images``):
    no export is shared, so a transfer's floor is its export, its import and its tag."""
    def plan(seeded, images: dict, i: int) -> tuple:
        team, source, _, target = plan_export(seeded, images, i)
        return team, source, distinct[i], target
    return plan
