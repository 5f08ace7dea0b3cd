"""What an external recipient is handed: where its copy is read from (the full OOS path its object
ACL opens, or the pre-signed link the source team reveals) and the commands that import it, filled
in as OUTSCALE's guide ("Importing an OMI from a Bucket") prints them:

    oapi-cli --profile "default" CreateImage --FileLocation <link or path> --ImageName <copy name>
    osc-cli api CreateImage --profile "default" --FileLocation <link or path> --ImageName <copy name>
    aws ec2 register-image --image-location <link or path> --name <copy name> --endpoint <FCU endpoint>

The AWS CLI v1 fetches any argument that starts with https:// and sends the page instead unless
`cli_follow_urlparam` is off, so its command is preceded by the line that turns it off.

A link is a bearer secret: commands built from one are made only for the page that already shows
that link (the reveal page, never cached), and neither they nor their repr go to a log or a URL.
"""

import shlex
from dataclasses import dataclass, field
from datetime import datetime

from django.utils import timezone

import outscale
from accounts.selectors import TeamAccess
from transfers.models import Recipient, Share

PROFILE = "default"
AWS_URLPARAM = ("aws", "configure", "set", "cli_follow_urlparam", "false")


@dataclass(frozen=True)
class Command:
    """One tool's way to import the copy: the argv of each step, and the text to paste in a shell."""

    tool: str
    steps: tuple[tuple[str, ...], ...] = field(repr=False)
    note: str = ""

    @property
    def text(self) -> str:
        return "\n".join(shlex.join(step) for step in self.steps)


@dataclass(frozen=True)
class Delivery:
    """An external recipient's copy: where it is read from and how it is imported."""

    recipient: Recipient
    location: str = field(repr=False)
    signed: bool
    name: str
    region: str
    until: datetime | None
    commands: tuple[Command, ...] = field(repr=False)


def import_commands(*, location: str, name: str, region: str) -> tuple[Command, ...]:
    """The guide's three commands, filled in for this location, copy name and Region."""
    fcu = outscale.endpoints_for(region).fcu
    return (
        Command("oapi-cli", (("oapi-cli", "--profile", PROFILE, "CreateImage", "--FileLocation", location,
                              "--ImageName", name),)),
        Command("osc-cli", (("osc-cli", "api", "CreateImage", "--profile", PROFILE, "--FileLocation", location,
                             "--ImageName", name),)),
        Command("aws", (AWS_URLPARAM, ("aws", "ec2", "register-image", "--image-location", location, "--name", name,
                                       "--endpoint", fcu)),
                note="The first line stops AWS CLI v1 from fetching the link and sending its content instead."),
    )


def object_acl_delivery(share: Share, recipient: Recipient, now: datetime | None = None) -> Delivery | None:
    """The full OOS path an external account's grant opens, while the grant stands."""
    export = share.export
    if recipient.method != Recipient.Method.OBJECT_ACL or not recipient.acl_granted_at or recipient.acl_removed_at \
            or export is None or not export.manifest_key or export.manifest_deadline <= (now or timezone.now()):
        return None
    path = outscale.object_path(region=export.account.region, bucket=export.bucket, key=export.manifest_key)
    return Delivery(recipient=recipient, location=path, signed=False, name=share.copy_name,
                    region=recipient.external_region, until=export.manifest_deadline,
                    commands=import_commands(location=path, name=share.copy_name, region=recipient.external_region))


def share_deliveries(*, access: TeamAccess, share: Share, recipients) -> list[Delivery]:
    """For the source team's share page: each external account served by a grant that stands."""
    if share.team_id != access.team.pk:
        return []
    now = timezone.now()
    found = (object_acl_delivery(share, r, now) for r in recipients if r.kind == Recipient.Kind.EXTERNAL)
    return [d for d in found if d is not None]


def link_delivery(*, share: Share, recipient: Recipient, url: str, expires_at: datetime) -> Delivery:
    """For the page that reveals a link, and only there: the commands with that link in them."""
    return Delivery(recipient=recipient, location=url, signed=True, name=share.copy_name,
                    region=recipient.external_region, until=expires_at,
                    commands=import_commands(location=url, name=share.copy_name, region=recipient.external_region))
