"""Retention of a recipient team's copies of a family: the rule, its runs, the source team's
end-of-life dates. Services: they check the role, write with conditional updates, and record each
change in the audit trail in the same transaction. Deleting is retention_deletes.py's.

Four eyes: whoever last set a policy's rule (created or changed it) cannot confirm its runs, nor can
an approver whose role that person gave, or who got the role after the rule was set, as for a
share's approval. One person could otherwise set "keep the last version" and delete every older
copy alone. The person who pressed "Propose now" may confirm: the proposal only applies the rule.
"""

from datetime import date

from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from django.utils import timezone

from accounts.access import require
from accounts.models import Membership
from accounts.roles import Capability
from accounts.selectors import TeamAccess
from audit import recorder
from audit.recorder import record
from distribution.models import Family, FamilyVersion, RetentionItem, RetentionPolicy, RetentionRun
from distribution.selectors import retention as selectors
from transfers import scheduling

KEEP_LAST_MAX = 100
KEEP_LAST_RANGE = f"Keep between 1 and {KEEP_LAST_MAX} versions, or leave it empty."
NOTHING_TO_DELETE = "Nothing to delete: the rule keeps every copy of {family}, or each one it lets go is held back."
RUN_OPEN = "A run of this rule is already open: confirm or cancel it first."
NO_RULE = "Set a rule first: keep the last N versions, or delete after the end of life."
NOT_WAITING = "This run is no longer waiting for confirmation (it is {state})."
SET_IT_YOURSELF = "You set this rule: another approver of the team confirms its runs (four eyes)."
ROLE_FROM_SETTER = "Your role was given by the person who set this rule: another approver confirms its runs."
ROLE_AFTER_RULE = "Your role was given after this rule was set: an approver who held it before confirms."
NOT_THE_SOURCE = "Only the team that publishes {family} sets its versions' end of life."

RUN_ITEMS_IN_EVENT = 50  # the event lists the first copies; the run's page has them all


def _rules(policy: RetentionPolicy) -> dict:
    return {"keep_last": policy.keep_last, "delete_after_end_of_life": policy.delete_after_end_of_life}


def _check(keep_last) -> None:
    if keep_last is not None and not 1 <= int(keep_last) <= KEEP_LAST_MAX:
        raise ValidationError(KEEP_LAST_RANGE)


def policy_set(*, access: TeamAccess, family: Family, keep_last: int | None,
               delete_after_end_of_life: bool) -> RetentionPolicy:
    """Create or change the team's rule for ``family`` (an approver or admin). A change cancels a
    run still waiting for confirmation: it was proposed under the old rule."""
    require(access, Capability.APPROVE, target=family)
    _check(keep_last)
    now = timezone.now()
    rules = {"keep_last": keep_last, "delete_after_end_of_life": bool(delete_after_end_of_life)}
    with recorder.atomic():
        policy = RetentionPolicy.objects.select_for_update().filter(team=access.team, family=family).first()
        if policy is None:
            try:
                with transaction.atomic():
                    policy = RetentionPolicy.objects.create(team=access.team, family=family, created_by=access.user,
                                                            changed_by=access.user, changed_at=now, **rules)
            except IntegrityError:  # set at the same moment by someone else: change theirs
                policy = RetentionPolicy.objects.select_for_update().get(team=access.team, family=family)
            else:
                record(action="retention.policy_created", actor=access.user, team=access.team, target=policy,
                       details={"family": family.name, **rules})
                return policy
        before = _rules(policy)
        if before == rules:
            return policy
        RetentionPolicy.objects.filter(pk=policy.pk).update(changed_by=access.user, changed_at=now, **rules)
        policy.refresh_from_db()
        record(action="retention.policy_changed", actor=access.user, team=access.team, target=policy,
               details={"family": family.name, "before": before, "after": rules})
        for run in RetentionRun.objects.filter(policy=policy, state=RetentionRun.State.PROPOSED):
            _cancel(run, user=access.user, team=access.team, why="the rule changed", now=now)
    return policy


def retention_propose(*, policy: RetentionPolicy, access: TeamAccess | None = None) -> RetentionRun | None:
    """Propose the copies the rule lets go now, if any and no run of the rule is open. ``access``:
    someone's "Propose now" (an approver or admin; told why nothing was proposed); None: the sweep."""
    if access is not None:
        require(access, Capability.APPROVE, target=policy)
    with recorder.atomic():
        # The rule's row, locked: a change of the rule waits for the proposal made under it, or the other way round.
        policy = RetentionPolicy.objects.select_for_update().select_related("team", "family").get(pk=policy.pk)
        if access is not None and policy.team_id != access.team.pk:
            raise ValidationError(NO_RULE)
        if not policy.keep_last and not policy.delete_after_end_of_life:
            if access is None:
                return None
            raise ValidationError(NO_RULE)
        candidates = [c for c in selectors.retention_candidates(policy=policy) if not c.held]
        if not candidates:
            if access is None:
                return None
            raise ValidationError(NOTHING_TO_DELETE.format(family=policy.family.name))
        try:
            with transaction.atomic():
                run = RetentionRun.objects.create(policy=policy, proposed_by=access.user if access else None)
        except IntegrityError:  # retentionrun_one_open_per_policy
            if access is None:
                return None
            raise ValidationError(RUN_OPEN) from None
        RetentionItem.objects.bulk_create([RetentionItem(run=run, entry=c.entry, reason=c.reason[:300])
                                           for c in candidates])
        record(action="retention.proposed", actor=access.user if access else None, team=policy.team, target=run,
               details={"family": policy.family.name, **_rules(policy), "copies": len(candidates),
                        "by": "person" if access else "sweep",
                        "images": [f"{c.entry.image_id} ({c.entry.account.account_id})"
                                   for c in candidates[:RUN_ITEMS_IN_EVENT]]})
    return run


def confirm_blocker(*, membership: Membership | None, policy: RetentionPolicy) -> tuple[str, str] | None:
    """Why this member may not confirm the policy's runs (reason code, message), or None."""
    if membership is None:
        return None  # no role in the team: require() refuses it
    if policy.changed_by_id is not None and membership.user_id == policy.changed_by_id:
        return "set_the_rule", SET_IT_YOURSELF
    if policy.changed_by_id is not None and membership.role_granted_by_id == policy.changed_by_id:
        return "role_granted_by_rule_setter", ROLE_FROM_SETTER
    if membership.role_granted_at > policy.changed_at:
        return "role_granted_after_rule", ROLE_AFTER_RULE
    return None


def run_confirm(*, access: TeamAccess, run: RetentionRun) -> RetentionRun:
    """An approver of the team who did not set the rule confirms: the deletion job starts."""
    require(access, Capability.APPROVE, target=run)
    membership = Membership.objects.filter(pk=access.membership.pk).first() if access.membership else None
    blocker = confirm_blocker(membership=membership, policy=RetentionPolicy.objects.get(pk=run.policy_id))
    if blocker:
        # No transaction is open here: the refusal stays in the trail.
        record(action="retention.confirmed", outcome="denied", actor=access.user, team=access.team, target=run,
               details={"reason": blocker[0]})
        raise ValidationError(blocker[1])
    now = timezone.now()
    with recorder.atomic():
        policy = RetentionPolicy.objects.select_for_update().get(pk=run.policy_id)
        blocker = confirm_blocker(membership=membership, policy=policy)  # the rule may have changed meanwhile
        if blocker:
            raise ValidationError(blocker[1])
        if not RetentionRun.objects.filter(pk=run.pk, policy__team=access.team, state=RetentionRun.State.PROPOSED) \
                .update(state=RetentionRun.State.CONFIRMED, confirmed_by=access.user, confirmed_at=now):
            raise ValidationError(NOT_WAITING.format(state=_state_label(run)))
        run.refresh_from_db()
        record(action="retention.confirmed", actor=access.user, team=access.team, target=run,
               details={"family": policy.family.name, "copies": run.items.count()})
        enqueue_deletes(run)
    return run


def run_cancel(*, access: TeamAccess, run: RetentionRun) -> RetentionRun:
    require(access, Capability.APPROVE, target=run)
    with recorder.atomic():
        if not _cancel(run, user=access.user, team=access.team, why="cancelled", now=timezone.now()):
            raise ValidationError(NOT_WAITING.format(state=_state_label(run)))
    run.refresh_from_db()
    return run


def _cancel(run: RetentionRun, *, user, team, why: str, now) -> bool:
    if not RetentionRun.objects.filter(pk=run.pk, policy__team=team, state=RetentionRun.State.PROPOSED) \
            .update(state=RetentionRun.State.CANCELLED, cancelled_by=user, finished_at=now):
        return False
    run.refresh_from_db()
    record(action="retention.cancelled", actor=user, team=team, target=run, details={"reason": why})
    return True


def _state_label(run: RetentionRun) -> str:
    current = RetentionRun.objects.filter(pk=run.pk).first()
    return current.get_state_display().lower() if current else "gone"


def enqueue_deletes(run: RetentionRun, *, delay: float = 0, tag: str = "") -> None:
    """Queue the run's deletion job on commit (ids only; a duplicate is harmless: each copy is claimed once)."""
    scheduling.enqueue("distribution.jobs.retention.retention_delete_job", str(run.public_id),
                       job_id=f"retention-delete-{run.public_id}{tag}", delay=delay)


def version_set_end_of_life(*, access: TeamAccess, version: FamilyVersion, end_of_life: date | None) -> FamilyVersion:
    """The source team sets (or clears, with None) when a version's copies may go: recipient teams
    whose rule deletes after the end of life get them proposed the day after."""
    require(access, Capability.REQUEST_SHARE, target=version)
    family = version.family
    if family.team_id != access.team.pk:
        raise ValidationError(NOT_THE_SOURCE.format(family=family.name))
    with recorder.atomic():
        current = FamilyVersion.objects.select_for_update().get(pk=version.pk)
        if current.end_of_life == end_of_life:
            return current
        FamilyVersion.objects.filter(pk=version.pk).update(end_of_life=end_of_life, updated_at=timezone.now())
        record(action="retention.end_of_life_set", actor=access.user, team=access.team, target=current,
               details={"family": family.name, "number": current.number, "image_id": current.image_id,
                        "before": current.end_of_life.isoformat() if current.end_of_life else None,
                        "after": end_of_life.isoformat() if end_of_life else None})
        current.refresh_from_db()
    return current
