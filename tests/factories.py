"""Small builders for test data. Services are used where a rule or an audit event matters."""

import itertools

from accounts import vault
from accounts.models import CloudAccount, Membership, Role, Team, User

PASSWORD = "correct horse battery staple"
_seq = itertools.count(1)


def make_user(email=None, *, password=PASSWORD, **extra) -> User:
    return User.objects.create_user(email=email or f"user{next(_seq)}@example.com", password=password, **extra)


def make_team(name=None) -> Team:
    return Team.objects.create(name=name or f"Team {next(_seq)}")


def add_member(team, user=None, role=Role.MEMBER, *, granted_by=None, granted_at=None) -> Membership:
    """A member whose role was given now (or at ``granted_at``), by ``granted_by`` (None: nobody recorded)."""
    extra = {"role_granted_at": granted_at} if granted_at else {}
    return Membership.objects.create(team=team, user=user or make_user(), role=role, role_granted_by=granted_by,
                                     **extra)


def make_cloud_account(team, *, label=None, region="eu-west-2", access_key="AKIAEXAMPLE000000001",
                       secret_key="S" * 40, bucket="exports", **extra) -> CloudAccount:
    account = CloudAccount(team=team, label=label or f"account-{next(_seq)}", region=region,
                           export_bucket=bucket, **extra)
    ids = {"team_id": team.public_id, "object_id": account.public_id}
    account.access_key_sealed = vault.seal(access_key, field="access_key", **ids)
    account.secret_key_sealed = vault.seal(secret_key, field="secret_key", **ids)
    account.access_key_hint = vault.mask_access_key(access_key)
    account.save()
    return account
