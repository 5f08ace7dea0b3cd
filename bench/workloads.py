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
- **export-fleet**: a release to many accounts, as an organisation publishing to hundreds of its
  accounts makes: one account of the first team (alpha, eu-west-2) shares a few release images,
  each with every one of ``--fleet-accounts`` recipient accounts (seeded into the sandbox, in the
  two Regions outside eu-west-2, and added to the other teams), so each export ends with one
  import into each account. The export workload sends half its imports into one account, whose
  allowance then paces them; here no account receives more than one import per image.

All run on bench.load.seed's four teams of two accounts over the sandbox's five accounts (alpha,
beta and gamma share eu-west-2).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

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
    world, made = sandbox.world, []
    accounts = {entry["name"]: entry for entry in sandbox.describe()["accounts"]}
    with world.lock:
        for i in range(n):
            _, source, _, _ = plan_export(seeded, images, i)
            made.append(_seed_image(world, accounts[source.label], _DISTINCT_BASE + i, f"bench-distinct-{i:05d}",
                                    "bench_transfers: one image per transfer"))
    return made


def _seed_image(world, owner: dict, number: int, name: str, description: str) -> dict:
    """An image of ``owner`` (a describe() entry) with id ami-<number in hex>, straight into the
    world (its lock held by the caller); returned as source_images lists one."""
    from sandbox.world import Image, Snapshot, utc_now  # the sandbox runs in the bench process

    image_id = f"ami-{number:08x}"
    world.images[image_id] = Image(
        image_id=image_id, account_id=owner["account_id"], region=owner["region"], name=name,
        description=description, created=utc_now(), snapshots=[Snapshot(f"snap-{number:08x}", "/dev/sda1", 10)])
    return {"image_id": image_id, "name": name, "kind": "owned"}


def plan_distinct(distinct: list[dict]):
    """The export workload's routes, each transfer with its own image (``seed_distinct_images``):
    no export is shared, so a transfer's floor is its export, its import and its tag."""
    def plan(seeded, images: dict, i: int) -> tuple:
        team, source, _, target = plan_export(seeded, images, i)
        return team, source, distinct[i], target
    return plan


# --- a release to many accounts -------------------------------------------------------------------

FLEET = "export-fleet"  # not in WORKLOADS either
FLEET_REGIONS = ("us-east-2", "cloudgouv-eu-west-1")  # the sandbox's Regions other than the publisher's
_FLEET_IMAGE_BASE = 0xF0000000  # ami-f0000000, ...: clear of the distinct images' and the sandbox's
_FLEET_ACCOUNT_BASE = 700000000000  # 12-digit account ids clear of the sandbox's seeded ones


@dataclass
class Fleet:
    team: object  # the publishing team (accounts.models.Team)
    source: object  # its account that owns the release images (accounts.models.CloudAccount)
    images: list[dict]
    targets: list  # one CloudAccount per recipient account, in the other teams


def seed_fleet(sandbox, seeded, *, accounts: int, transfers: int) -> Fleet:
    """``accounts`` recipient accounts and ceil(transfers / accounts) release images, written
    straight into the in-process sandbox's world (no call), and the accounts added to the teams
    other than the first (through the service, as their admins would)."""
    from bench import load

    team, world = seeded.teams[0], sandbox.world
    source = seeded.accounts[team.pk][0]
    owner = sandbox.account(source.label)
    entries = seed_world_accounts(world, count=accounts, prefix="fleet", base=_FLEET_ACCOUNT_BASE)
    with world.lock:
        images = [_seed_image(world, owner, _FLEET_IMAGE_BASE + j, f"bench-release-{j + 1:03d}",
                              "bench_transfers: a release image shared with the fleet")
                  for j in range(math.ceil(transfers / accounts))]
    others = [t for t in seeded.teams if t.pk != team.pk]
    targets = []
    for k, entry in enumerate(entries):
        other = others[k % len(others)]
        targets.append(load.add_account(other, seeded.staff[other.pk]["admin"], entry["name"], entry))
    return Fleet(team=team, source=source, images=images, targets=targets)


def seed_world_accounts(world, *, count: int, prefix: str, base: int) -> list[dict]:
    """``count`` accounts written straight into the sandbox's world, each with its keys and an
    export bucket, in the Regions outside the publisher's in turn: their describe()-like entries."""
    from sandbox import seed
    from sandbox.world import Account, Bucket, utc_now

    entries = []
    with world.lock:
        for k in range(count):
            name = f"{prefix}-{k + 1:04d}"
            entry = {"name": name, "account_id": str(base + k), "region": FLEET_REGIONS[k % len(FLEET_REGIONS)],
                     "access_key": seed.access_key_for(name), "secret_key": seed.secret_key_for(name),
                     "bucket": f"{name}-exports"}
            world.accounts[entry["account_id"]] = Account(
                name=name, account_id=entry["account_id"], region=entry["region"], email=f"{name}@sandbox.example",
                access_key=entry["access_key"], secret_key=entry["secret_key"], bucket=entry["bucket"],
                canonical_id=seed.canonical_id_for(name))
            world.buckets[(entry["region"], entry["bucket"])] = Bucket(entry["bucket"], entry["region"],
                                                                       entry["account_id"], utc_now())
            entries.append(entry)
    return entries


def plan_fleet(fleet: Fleet):
    """Transfer ``i``: release image i // accounts to recipient account i % accounts, so the
    images go out one after the other, each to every account."""
    def plan(seeded, images: dict, i: int) -> tuple:
        n = len(fleet.targets)
        return fleet.team, fleet.source, fleet.images[i // n], fleet.targets[i % n]
    return plan
