"""The seeded world: deterministic accounts, keys, buckets and OMIs.

Everything is derived from fixed names, so ids and keys are the same on every run and can appear
in demos and docs. The keys are sandbox-only secrets; they open nothing outside the sandbox.
"""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime

from .world import Account, Bucket, Image, Snapshot, World

SEED_DATE = datetime(2025, 1, 15, 9, 30, tzinfo=UTC)

# name, account id, Region, publisher?
ACCOUNTS = (
    ("alpha", "111122223333", "eu-west-2", False),
    ("beta", "222233334444", "eu-west-2", False),
    ("gamma", "333344445555", "eu-west-2", False),
    ("delta", "444455556666", "us-east-2", False),
    ("epsilon", "555566667777", "cloudgouv-eu-west-1", False),
    ("outscale-eu-west-2", "900000000001", "eu-west-2", True),
    ("outscale-us-east-2", "900000000002", "us-east-2", True),
)

# owner, name, description, extra attributes
IMAGES = (
    ("alpha", "alpha-web-2025.01", "Web front end, hardened", {}),
    ("alpha", "alpha-db-base", "PostgreSQL base image, shared with beta", {"permitted_accounts": ["222233334444"]}),
    (
        "alpha",
        "alpha-legacy-broken",
        "An OMI whose export always fails",
        {"export_failure": "Snapshot export failed: the source volume is not readable (sandbox seed)."},
    ),
    ("beta", "beta-app-1.0", "Beta application server", {}),
    ("gamma", "gamma-ci-runner", "CI runner", {}),
    ("delta", "delta-api-2.3", "Delta API servers", {}),
    ("epsilon", "epsilon-secure-base", "SecNumCloud base image", {}),
    (
        "outscale-eu-west-2",
        "Ubuntu-24.04-2025.01.15-0",
        "Ubuntu 24.04 LTS (public OUTSCALE OMI)",
        {"global_permission": True, "account_alias": "Outscale"},
    ),
    (
        "outscale-us-east-2",
        "Debian-12-2025.01.15-0",
        "Debian 12 (public OUTSCALE OMI)",
        {"global_permission": True, "account_alias": "Outscale"},
    ),
)


def _digest(*parts: str) -> str:
    return hashlib.sha256("/".join(parts).encode()).hexdigest()


def access_key_for(name: str) -> str:
    # OUTSCALE access keys are 20 upper-case alphanumerics, secret keys 40.
    return ("SBX" + _digest("ak", name)[:17]).upper()


def secret_key_for(name: str) -> str:
    return _digest("sk", name)[:40].upper()


def canonical_id_for(name: str) -> str:
    # OOS's "S3 user ID": 64 hex digits, unrelated to the 12-digit account id.
    return _digest("canonical", name)


def image_id_for(name: str) -> str:
    return "ami-" + _digest("ami", name)[:8]


def snapshot_id_for(name: str, index: int = 0) -> str:
    return "snap-" + _digest("snap", name, str(index))[:8]


def populate(world: World) -> None:
    """Fill a cleared world with the seeded accounts, buckets and OMIs."""
    with world.lock:
        by_name: dict[str, Account] = {}
        for name, account_id, region, publisher in ACCOUNTS:
            account = Account(
                name=name,
                account_id=account_id,
                region=region,
                email=f"{name}@sandbox.example",
                access_key=access_key_for(name),
                secret_key=secret_key_for(name),
                bucket=f"{name}-exports",
                publisher=publisher,
                canonical_id=canonical_id_for(name),
            )
            world.accounts[account_id] = account
            world.buckets[(region, account.bucket)] = Bucket(account.bucket, region, account_id, SEED_DATE)
            by_name[name] = account
        for owner, name, description, extra in IMAGES:
            account = by_name[owner]
            image = Image(
                image_id=image_id_for(name),
                account_id=account.account_id,
                region=account.region,
                name=name,
                description=description,
                created=SEED_DATE,
                snapshots=[Snapshot(snapshot_id_for(name), "/dev/sda1", 10)],
                file_location=f"{account.account_id}/{name}",
                **extra,
            )
            world.images[image.image_id] = image


def describe_accounts(world: World) -> list[dict]:
    """Accounts with keys and the OMIs each can see, as `Sandbox.describe()` reports them."""
    world.tick()
    with world.lock:
        result = []
        for account in world.accounts.values():
            images = []
            for image in world.images.values():
                if image.region != account.region or not image.visible_to(account.account_id):
                    continue
                if image.account_id == account.account_id:
                    kind = "owned"
                elif account.account_id in image.permitted_accounts:
                    kind = "shared-with"
                else:
                    kind = "public"
                images.append({"image_id": image.image_id, "name": image.name, "kind": kind})
            result.append(
                {
                    "name": account.name,
                    "account_id": account.account_id,
                    "canonical_id": account.canonical_id,
                    "region": account.region,
                    "email": account.email,
                    "access_key": account.access_key,
                    "secret_key": account.secret_key,
                    "bucket": account.bucket,
                    "publisher": account.publisher,
                    "images": images,
                }
            )
        return result
