"""Which transfers `bench_transfers` requests: `plan(seeded, images, i)` gives transfer i's team,
source account, image and target account (bench.load.request_and_approve asks it).

Since each recipient's method is chosen by where it is (transfers/services/methods.py), the
workload decides the path measured:

- **export**: every target in another Region than its source, so every transfer is export → bucket
  → import (one export per source image and account, shared by the transfers of that image);
- **same-region**: every target an account of another team in the source's Region, under another
  OUTSCALE account id, and every image owned by the source, so every transfer is grant → copy →
  revoke (launch permission) and no export is made.

Both run on bench.load.seed's four teams of two accounts over the sandbox's five accounts (alpha,
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
