"""The images a source account may share, read live from OUTSCALE with its keys (an audited use)."""

from dataclasses import dataclass, field

import outscale
from accounts.keys import credentials_for
from accounts.models import CloudAccount

IMAGES_UNAVAILABLE = "The image list of {label} could not be read from OUTSCALE: {reason}"


@dataclass
class ImageChoices:
    images: list = field(default_factory=list)
    error: str = ""


def shareable_images_list(*, account: CloudAccount) -> ImageChoices:
    """The account's live OMI list (owned, shared with it, public); a cloud error becomes a sentence."""
    try:
        creds = credentials_for(account, purpose="list images")
        images = outscale.list_shareable_images(creds=creds, account_id=account.account_id, include_public=True)
    except outscale.CloudError as exc:
        return ImageChoices(error=IMAGES_UNAVAILABLE.format(label=account.label, reason=exc.user_message))
    order = {"owned": 0, "shared": 1, "public": 2}
    return ImageChoices(images=sorted(images, key=lambda i: (order.get(str(i.relation), 3), i.name.lower())))
