"""What transfer services refuse, in words shown to users (tests assert on these)."""

from django.core.exceptions import ValidationError


class ShareError(ValidationError):
    """Bad input or a rule broken: shown on the form, nothing changed."""


class ShareConflict(ShareError):
    """The share moved on before this decision (another approver, expiry, cancellation)."""


class StepUpRequired(ShareError):
    """The team asks for a recent two-factor code before a decision: the page sends the person to verify."""


ACCOUNT_NOT_VALID = "The account {label} has no validated keys: check its keys on the Cloud accounts page first."
IMAGE_GONE = "The image {image_id} is no longer available in {label}; refresh the list and pick another."
SOURCE_AS_RECIPIENT = "The source account cannot also be a recipient."
RECIPIENT_CLOSED = "{label} does not accept images from other teams."
RECIPIENT_INVALID = "{label} has no validated keys, so nothing can be imported into it."
NO_RECIPIENT = "Choose at least one recipient account."
DUPLICATE_RECIPIENT = "The same account is listed twice."
EXTERNAL_ID = "An OUTSCALE account id is 12 digits."
LICENCE_REQUIRED = "Confirm that the image's third-party licences allow this export."
NAME_TAKEN = "An image named {name} already exists in {label}; choose another copy name."
# A lookup found an image under the copy's name without the portal's mark for this transfer (made
# by hand in the account, or by the portal for something else): never adopted, nothing touched.
NAME_NOT_OURS = "The name {name} is taken by an image OMI Portal did not create."
SELF_APPROVAL = "You asked for this copy, so someone else must approve it."
ROLE_GRANTED_BY_REQUESTER = ("{requester} gave you your role in this team, so you cannot decide on their request: "
                             "another approver must.")
ROLE_GRANTED_AFTER_REQUEST = ("You became an approver of this team after this copy was requested, so you cannot "
                              "decide on it: an approver who held the role before the request must.")
STEP_UP_NEEDED = ("{team} asks approvers for a fresh two-factor code: enter one (within the last {minutes} minutes) "
                  "before approving or rejecting.")
MOVED_ON = "This share is no longer waiting for a decision (it is now {state})."
STALE_DIGEST = "This request changed after you opened it; review it again before deciding."
REQUEST_EXPIRED = "This request expired on {when}: ask for a new one."
NOT_CANCELLABLE = "Only a share whose export has not finished can be cancelled (it is {state})."
# The last share of an export in flight was withdrawn (transfers/services/export_cancels.py).
EXPORT_CANCELLED = ("Cancelled: every share that needed this export was withdrawn, so OMI Portal cancelled the "
                    "export task.")
EXPORT_CANCELLED_UNSTARTED = ("Cancelled: every share that needed this export was withdrawn before OUTSCALE "
                              "started it.")
EXPORT_CANCEL_REFUSED = ("Every share that needed this export was withdrawn, but OUTSCALE would not cancel the "
                         "export task ({reason}): it runs to its end, and nobody is offered it.")
NOT_OFFERED = "This image is not waiting for your team's answer (it is {state})."
NOT_RETRYABLE = "Only a failed step can be retried (it is {state})."
# A step that kept raising something other than an answer from OUTSCALE (transfers/services/bounded.py).
# Only the error's class is named: the text of a database, vault or HTTP error may carry a secret.
STEP_GAVE_UP = ("OMI Portal could not complete this step after {attempts} attempts (internal error: {error}), "
                "so it stopped trying. This was not OUTSCALE's answer: retry later, and if it fails again, "
                "ask the portal's operators to look at its logs for this transfer.")
NOT_REEXPORTABLE = "Only an expired or failed share can be exported again (it is {state})."
LINK_EXPIRED = "The link expired on {when}. Ask the source team to export the image again."
LINK_SOURCE_ONLY = "Only the source team can reveal the link of an external recipient."
LINK_NOT_YET = "The link exists once the export has completed."
# Launch permissions (transfers/services/grant_releases.py).
GRANT_SOURCE_ONLY = "Only the team that shared the image can take its launch permission back."
GRANT_NOT_OPEN = "This launch permission is not in place any more (it is {state})."
GRANT_IN_USE = "A copy by this launch permission is under way: it is removed as soon as the copy ends."
LINK_NOT_NEEDED = ("This account is granted read on the export's files (an object ACL): it imports from the OOS path "
                   "shown on the share, and needs no link.")
TEXT_NUL = "Text may not contain NUL characters."
BUCKET_NOT_OWNED = ("The export bucket {bucket} belongs to another OUTSCALE account, not to {label}: set a bucket "
                    "the account owns on the Cloud accounts page.")
BUCKET_MISSING = ("The export bucket {bucket} does not exist in {label} ({region}): create it with that account's "
                  "keys, or set another one on the Cloud accounts page.")
EXPORT_BUCKET_REFUSED = "Nothing was exported: {reason}"
CHANGED_SINCE_REQUEST = "The account {label} changed since the request ({what}): ask for a new request."
CHANGED_SINCE_APPROVAL = "The account {label} changed after the approval ({what}). A new approval is needed."
APPROVAL_LAPSED = ("The approval of this share ended on {when} (the team's approval lifetime): a new approval is "
                   "needed, so ask for a new request.")
MANIFEST_DEADLINE_ASSUMED = ("The manifest's deadline could not be read ({reason}): the link is taken to be valid "
                             "until {when}, 7 days after the export was last seen running.")
