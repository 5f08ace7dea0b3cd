"""Reads for retention: which copies a team's policy would delete and which it must keep anyway, and
the pages' lists. Every read starts from the team; another team's family, policy or run is not found.

A copy is *proposed* when the policy says it may go (older than the last N versions in its
account, or its version is past the end of life the source team set) and nothing holds it back:
it is pinned (tag ``omiportal:pinned``), it carries the latest tag, a launch permission on it is
open, a share of it is under way (the copy is itself being shared on), or another run is deleting
it. The same holds are checked again right before each delete (services/retention_deletes.py).
"""

from dataclasses import dataclass
from datetime import date

from django.db.models import Exists, OuterRef, Prefetch, Q, QuerySet
from django.utils import timezone

from accounts.access import NotInTeam
from accounts.selectors import TeamAccess
from audit.recorder import AuditTarget
from distribution.models import (
    Family,
    FamilyVersion,
    InventoryEntry,
    RetentionItem,
    RetentionPolicy,
    RetentionRun,
    Subscription,
)
from transfers.models import LaunchGrant, Share

PINNED_TAG = "omiportal:pinned"  # on a copy in a recipient account: retention never proposes it

# Copies that exist, or may: a copy still being made is neither ranked nor proposed.
PRESENT = (InventoryEntry.CloudState.AVAILABLE, InventoryEntry.CloudState.FAILED, InventoryEntry.CloudState.UNKNOWN)

HELD_PINNED = "Pinned: it carries the tag omiportal:pinned."
HELD_LATEST = "It carries the family's latest tag in its account."
HELD_GRANT = "A launch permission on it is open (share {share})."
HELD_SHARE = "It is being shared on (share {share}, {state})."
HELD_OTHER_RUN = "Another retention run is deleting it."


@dataclass(frozen=True)
class Candidate:
    entry: InventoryEntry
    reason: str  # why the policy lets it go
    held: str = ""  # why it stays anyway ("": proposed)


def _not_found(access: TeamAccess, public_id, kind: str) -> NotInTeam:
    return NotInTeam("Not found in this team.", user=access.user, team=access.team,
                     target=AuditTarget(kind, str(public_id), ""))


def today() -> date:
    return timezone.now().date()


# --- what a policy would delete ------------------------------------------------------------------

def _why_it_may_go(entry: InventoryEntry, rank: int, policy: RetentionPolicy, on: date) -> str:
    reasons = []
    if policy.keep_last and rank >= policy.keep_last:
        reasons.append(f"Older than the {policy.keep_last} newest version{'s' if policy.keep_last > 1 else ''} "
                       f"in {entry.account.label}.")
    end = entry.version.end_of_life
    if policy.delete_after_end_of_life and end is not None and end < on:
        reasons.append(f"Version {entry.version.number} reached its end of life on {end:%Y-%m-%d}.")
    return " ".join(reasons)


def holds(entries: list[InventoryEntry], *, run: RetentionRun | None = None) -> dict[int, str]:
    """Why each of these copies must stay, by entry pk (absent: nothing holds it). Three queries
    whatever the number of copies; ``run``'s own items do not hold its copies back."""
    held: dict[int, str] = {}
    for entry in entries:
        if entry.pinned:
            held[entry.pk] = HELD_PINNED
        elif entry.is_latest:
            held[entry.pk] = HELD_LATEST
    by_image = {entry.image_id: entry for entry in entries if entry.pk not in held}
    if by_image:
        grants = LaunchGrant.objects.filter(image_id__in=by_image, state__in=LaunchGrant.OPEN_STATES) \
            .values_list("image_id", "share__public_id")
        for image_id, share_id in grants:
            held.setdefault(by_image[image_id].pk, HELD_GRANT.format(share=share_id))
        shares = Share.objects.filter(source_image_id__in=by_image).exclude(state__in=Share.FINAL_STATES) \
            .values_list("source_image_id", "public_id", "state")
        for image_id, share_id, state in shares:
            held.setdefault(by_image[image_id].pk, HELD_SHARE.format(share=share_id, state=state))
        others = RetentionItem.objects.filter(entry_id__in=[e.pk for e in by_image.values()],
                                              state__in=[RetentionItem.State.DELETING, RetentionItem.State.DELETED])
        if run is not None:
            others = others.exclude(run=run)
        for entry_id in others.values_list("entry_id", flat=True):
            held.setdefault(entry_id, HELD_OTHER_RUN)
    return held


def retention_candidates(*, policy: RetentionPolicy, on: date | None = None) -> list[Candidate]:
    """The team's copies of the family that the policy lets go, oldest version first, each with
    what holds it back, if anything. In each account the newest ``keep_last`` versions present
    stay (a copy still being made does not count, so an old one stays until the new one exists)."""
    on = on or today()
    if not policy.keep_last and not policy.delete_after_end_of_life:
        return []
    entries = list(InventoryEntry.objects.filter(
        team=policy.team, account__team=policy.team, family=policy.family, version__isnull=False, orphan=False,
        cloud_state__in=PRESENT).select_related("account", "version").order_by("account_id", "-version__number", "pk"))
    ranked: list[tuple[InventoryEntry, str]] = []
    numbers: dict[int, list[int]] = {}
    for entry in entries:
        seen = numbers.setdefault(entry.account_id, [])
        if entry.version.number not in seen:
            seen.append(entry.version.number)
        reason = _why_it_may_go(entry, seen.index(entry.version.number), policy, on)
        if reason:
            ranked.append((entry, reason))
    held = holds([entry for entry, _ in ranked])
    found = [Candidate(entry, reason, held.get(entry.pk, "")) for entry, reason in ranked]
    return sorted(found, key=lambda c: (c.entry.version.number, c.entry.account.label, c.entry.pk))


# --- pages ---------------------------------------------------------------------------------------

def families_for_retention(*, team) -> QuerySet:
    """Families whose copies the team may keep a rule for: those it subscribes, and those it still
    has copies of (a subscription ended, the copies stayed)."""
    subscribed = Subscription.objects.filter(family=OuterRef("pk"), team=team, ended_at__isnull=True)
    has_copies = InventoryEntry.objects.filter(family=OuterRef("pk"), team=team).exclude(
        cloud_state=InventoryEntry.CloudState.DELETED)
    return Family.objects.filter(Q(Exists(subscribed)) | Q(Exists(has_copies))).select_related("team")


def family_get_for_retention(*, access: TeamAccess, public_id) -> Family:
    family = families_for_retention(team=access.team).filter(public_id=public_id).first()
    if family is None:
        raise _not_found(access, public_id, "distribution.family")
    return family


def retention_rows_for_team(*, team) -> list[dict]:
    """One row per family: its policy and open run, if any (three queries)."""
    families = list(families_for_retention(team=team).order_by("name", "pk"))
    policies = {p.family_id: p for p in RetentionPolicy.objects.filter(team=team, family__in=families)}
    open_runs = {run.policy.family_id: run for run in RetentionRun.objects.filter(
        policy__team=team, state__in=[RetentionRun.State.PROPOSED, RetentionRun.State.CONFIRMED])
        .select_related("policy")}
    return [{"family": family, "policy": policies.get(family.pk), "open_run": open_runs.get(family.pk)}
            for family in families]


def policy_for_family(*, team, family: Family) -> RetentionPolicy | None:
    return RetentionPolicy.objects.filter(team=team, family=family).select_related("changed_by").first()


def _items() -> Prefetch:
    return Prefetch("items", queryset=RetentionItem.objects.select_related("entry__account", "entry__version")
                    .order_by("entry__version__number", "entry__account__label", "pk"))


def open_run_for_policy(*, policy: RetentionPolicy) -> RetentionRun | None:
    return RetentionRun.objects.filter(policy=policy, state__in=[RetentionRun.State.PROPOSED,
                                                                 RetentionRun.State.CONFIRMED]) \
        .select_related("proposed_by", "confirmed_by").prefetch_related(_items()).first()


def runs_for_policy(*, policy: RetentionPolicy) -> QuerySet:
    """The history, newest first; page it before reading."""
    return RetentionRun.objects.filter(policy=policy).select_related("proposed_by", "confirmed_by", "cancelled_by") \
        .order_by("-proposed_at", "-pk")


def run_get_for_team(*, access: TeamAccess, public_id) -> RetentionRun:
    run = RetentionRun.objects.filter(policy__team=access.team, public_id=public_id) \
        .select_related("policy__team", "policy__family__team", "policy__changed_by", "proposed_by",
                        "confirmed_by", "cancelled_by").prefetch_related(_items()).first()
    if run is None:
        raise _not_found(access, public_id, "distribution.retentionrun")
    return run


# --- the source team's end-of-life dates ---------------------------------------------------------

def family_get_for_source_team(*, access: TeamAccess, public_id) -> Family:
    family = Family.objects.filter(team=access.team, public_id=public_id).first()
    if family is None:
        raise _not_found(access, public_id, "distribution.family")
    return family


def versions_for_family(*, family: Family) -> QuerySet:
    return FamilyVersion.objects.filter(family=family).order_by("-number")


def version_get_for_source_team(*, access: TeamAccess, public_id) -> FamilyVersion:
    version = FamilyVersion.objects.select_related("family__team").filter(
        family__team=access.team, public_id=public_id).first()
    if version is None:
        raise _not_found(access, public_id, "distribution.familyversion")
    return version
