"""Image families: a source team's line of images in one source account, found by a name pattern or a tag.

Who may declare and archive one: anyone of the source team who may request a share (members,
approvers, admins). A family shares nothing by itself: its versions leave the account only under a
standing approval, signed by an approver who neither declared the family nor set up a subscription
it covers (services/approvals.py). Archiving only narrows: no more versions are looked for, and the
family's active standing approval stops.
"""

import re

from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from django.utils import timezone

from accounts.access import require
from accounts.models import CloudAccount
from accounts.roles import Capability
from accounts.selectors import TeamAccess
from audit import recorder
from audit.recorder import record
from distribution.models import FAMILY_TAG, LATEST_TAG, Family, StandingApproval
from distribution.services import approvals
from transfers import scheduling

# The family's name is also the value of the family and latest tags on every copy, and the start
# of the copies' names ("{family}-v{number}"): OUTSCALE image names allow these characters.
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{1,63}$")
PATTERN_RE = re.compile(r"^[A-Za-z0-9 _()/.\-*?\[\]!]{1,128}$")
WILDCARDS = "*?[]!"
PORTAL_TAG_PREFIX = "omiportal:"

NAME_INVALID = ("A family name is 2 to 64 letters, digits, dots, underscores or hyphens, starting with a letter or "
                "digit.")
NAME_TAKEN = ("A family named {name} already exists (names are unique across the portal, archived ones "
              "included: the name tags every copy): choose another.")
PATTERN_MISSING = "Give the name pattern of the family's images, e.g. golden-web-*."
PATTERN_INVALID = ("A name pattern uses the characters of image names (letters, digits, space, _ ( ) / . -) and the "
                   "wildcards * ? [ ]; at most 128 characters.")
PATTERN_TOO_BROAD = ("The pattern needs at least 3 characters besides wildcards: a pattern like * would take every "
                     "image of the account as a version.")
TAG_KEY_MISSING = "Give the tag key that marks the family's images (its value too, if only one value counts)."
TAG_KEY_INVALID = "A tag key is 1 to 128 characters, without a NUL character."
TAG_KEY_PORTAL = "Tags starting with omiportal: are the portal's own (it puts them on the copies it makes)."
TAG_VALUE_INVALID = "A tag value is at most 255 characters, without a NUL character."
MATCH_INVALID = "Choose how the family's images are found: by name pattern or by tag."
DESCRIPTION_INVALID = "A description is at most 255 characters, without a NUL character."
ACCOUNT_NOT_YOURS = "The source account must be one of your team's own accounts."
ACCOUNT_NOT_READY = ("{label} cannot be a family's source: {reason}. An admin fixes it on the Cloud accounts page.")
ALREADY_ARCHIVED = "{name} is already archived."
ARCHIVED_REASON = "{person} archived the family {name}."


def _text(value, limit: int, message: str, field: str) -> str:
    text = (value or "").strip()
    if len(text) > limit or "\x00" in text:
        raise ValidationError({field: message})
    return text


def family_rules_clean(*, name: str, description: str, match: str, name_pattern: str = "", tag_key: str = "",
                       tag_value: str = "") -> dict:
    """The declaration's fields as they will be saved, or a ValidationError naming the field at fault."""
    name = (name or "").strip()
    if not NAME_RE.fullmatch(name):
        raise ValidationError({"name": NAME_INVALID})
    fields = {"name": name, "description": _text(description, 255, DESCRIPTION_INVALID, "description"),
              "match": match, "name_pattern": "", "tag_key": "", "tag_value": ""}
    if match == Family.Match.NAME:
        pattern = (name_pattern or "").strip()
        if not pattern:
            raise ValidationError({"name_pattern": PATTERN_MISSING})
        if not PATTERN_RE.fullmatch(pattern):
            raise ValidationError({"name_pattern": PATTERN_INVALID})
        if len([c for c in pattern if c not in WILDCARDS]) < 3:
            raise ValidationError({"name_pattern": PATTERN_TOO_BROAD})
        fields["name_pattern"] = pattern
    elif match == Family.Match.TAG:
        key = _text(tag_key, 128, TAG_KEY_INVALID, "tag_key")
        if not key:
            raise ValidationError({"tag_key": TAG_KEY_MISSING})
        # A copy carries the portal's tags (FAMILY_TAG, LATEST_TAG, provenance): never a source version.
        if key.lower().startswith(PORTAL_TAG_PREFIX) or key in (FAMILY_TAG, LATEST_TAG):
            raise ValidationError({"tag_key": TAG_KEY_PORTAL})
        fields["tag_key"] = key
        fields["tag_value"] = _text(tag_value, 255, TAG_VALUE_INVALID, "tag_value")
    else:
        raise ValidationError({"match": MATCH_INVALID})
    return fields


def source_account_problem(account: CloudAccount) -> str:
    """Why the account cannot be a family's source now ("" when it can)."""
    if account.is_retired:
        return "it is retired"
    if not account.is_valid:
        return "its keys are not validated"
    if not account.account_id:
        return "its OUTSCALE account id is not known yet"
    return ""


def family_declare(*, access: TeamAccess, source_account: CloudAccount, name: str, description: str = "",
                   match: str, name_pattern: str = "", tag_key: str = "", tag_value: str = "") -> Family:
    """Declare a family; nothing is saved when a rule refuses it. Its first look at the account runs at once."""
    require(access, Capability.REQUEST_SHARE)
    fields = family_rules_clean(name=name, description=description, match=match, name_pattern=name_pattern,
                                tag_key=tag_key, tag_value=tag_value)
    if source_account.team_id != access.team.pk:
        raise ValidationError({"source_account": ACCOUNT_NOT_YOURS})
    problem = source_account_problem(source_account)
    if problem:
        raise ValidationError({"source_account": ACCOUNT_NOT_READY.format(label=source_account.label,
                                                                          reason=problem)})
    with recorder.atomic():
        try:
            with transaction.atomic():
                family = Family.objects.create(team=access.team, source_account=source_account,
                                               created_by=access.user, **fields)
        except IntegrityError:
            raise ValidationError({"name": NAME_TAKEN.format(name=fields["name"])}) from None
        record(action="family.declared", actor=access.user, team=access.team, target=family,
               details={**_rule(family), "source_account_id": source_account.account_id,
                        "source_region": source_account.region, "description": family.description})
        # Its last_scanned_at is empty, so the account is due: the versions already there show up now.
        scheduling.enqueue("distribution.jobs.discovery.family_scan_job", str(source_account.public_id),
                           job_id=f"family-scan-{source_account.public_id}-d{family.public_id}", queue="poll",
                           result_ttl=0)
    return family


def _rule(family: Family) -> dict:
    if family.match == Family.Match.NAME:
        return {"name": family.name, "match": "name", "name_pattern": family.name_pattern}
    return {"name": family.name, "match": "tag", "tag_key": family.tag_key, "tag_value": family.tag_value}


def family_archive(*, access: TeamAccess, family: Family) -> Family:
    """No more versions looked for or shared; the versions, copies and subscriptions stay on record."""
    require(access, Capability.REQUEST_SHARE, target=family)
    now = timezone.now()
    with recorder.atomic():
        if not Family.objects.filter(pk=family.pk, team=access.team, archived_at__isnull=True).update(archived_at=now):
            raise ValidationError(ALREADY_ARCHIVED.format(name=family.name))
        family.refresh_from_db()
        # Nothing is released from an archived family: its active approval ends with it.
        active = StandingApproval.objects.filter(family=family, state=StandingApproval.State.ACTIVE).first()
        if active is not None:
            approvals.approval_end(active, state=StandingApproval.State.STOPPED, action="standing_approval.stopped",
                                   reason=ARCHIVED_REASON.format(name=family.name, person=access.user.display_name))
        record(action="family.archived", actor=access.user, team=access.team, target=family, details=_rule(family))
    return family


def standing_approval_stop(family: Family, reason: str) -> int:
    """In the transaction that changed who receives the family (or the family itself): its active
    standing approval stops when it no longer covers exactly what was signed, so nothing goes out
    again until an approver signs anew (approvals.py decides; nothing silently widens)."""
    return approvals.approvals_stop_for_change(family, reason)
