"""Shares as the API takes and shows them.

The request serializers check only the JSON's shape (types, required fields): what the values may
be is the pages' forms' business (``transfers.forms``), so the API refuses with the same words.
The answers are built from what the share pages read (``transfers.selectors``, ``presentation``):
a recipient team sees only its own recipients, and a copy's image id shows once it is complete.
"""

from rest_framework import serializers

from transfers import presentation, selectors
from transfers.models import Recipient, Share

# --- Requests -------------------------------------------------------------------------------------------


class ExternalIn(serializers.Serializer):
    account_id = serializers.CharField(allow_blank=True, help_text="The 12-digit OUTSCALE account id.")
    region = serializers.CharField(allow_blank=True, help_text="Its Region, such as eu-west-2.")
    oos_user_id = serializers.CharField(required=False, allow_blank=True, default="",
                                        help_text="Only for an account in the source's Region: its OOS user ID, "
                                                  "granted read on the export instead of receiving a link.")


class ShareRequestIn(serializers.Serializer):
    source_account = serializers.UUIDField(help_text="One of the team's validated cloud accounts.")
    image_id = serializers.CharField(help_text="One of GET accounts/{id}/images/.")
    recipients = serializers.ListField(child=serializers.UUIDField(), required=False, default=list,
                                       help_text="Cloud account ids: the team's own, or other teams' that accept "
                                                 "images.")
    externals = serializers.ListField(child=ExternalIn(), required=False, default=list,
                                      help_text="Accounts outside the portal (at most 3).")
    copy_name = serializers.CharField(help_text="3 to 128 letters, digits, spaces and _ ( ) / . -")
    description = serializers.CharField(required=False, allow_blank=True, default="")
    reason = serializers.CharField(help_text="Why the copy is needed; the approver reads it.")
    licence_confirmed = serializers.BooleanField(required=False, default=False,
                                                 help_text="Must be true: the image's third-party licences allow "
                                                           "exporting it.")
    launch_permission_only = serializers.BooleanField(required=False, default=False)


class DecisionIn(serializers.Serializer):
    digest = serializers.CharField(help_text="The share's digest as read: the approval binds what was seen.")
    comment = serializers.CharField(required=False, allow_blank=True, default="")
    otp = serializers.CharField(required=False, allow_blank=True, default="",
                                help_text="A current code of the person's authenticator app, when the team "
                                          "requires two-factor sign-in for approvers.")


# --- Answers --------------------------------------------------------------------------------------------


class ExportProgressOut(serializers.Serializer):
    state = serializers.CharField()
    state_label = serializers.CharField()
    progress = serializers.IntegerField(help_text="Percent, as OUTSCALE reports it.")
    message = serializers.CharField(allow_blank=True)
    elapsed_seconds = serializers.IntegerField()
    eta_seconds = serializers.IntegerField(allow_null=True)
    eta_text = serializers.CharField(allow_blank=True)


class RecipientProgressOut(serializers.Serializer):
    id = serializers.UUIDField()
    state = serializers.ChoiceField(choices=Recipient.State.choices)
    state_label = serializers.CharField()
    message = serializers.CharField(allow_blank=True)
    image_id = serializers.CharField(allow_blank=True)
    elapsed_text = serializers.CharField(allow_blank=True)


class ProgressOut(serializers.Serializer):
    """``transfers.presentation.share_progress``: what the share page's live panel polls."""

    state = serializers.ChoiceField(choices=Share.State.choices)
    state_label = serializers.CharField()
    message = serializers.CharField(allow_blank=True)
    final = serializers.BooleanField()
    export = ExportProgressOut(allow_null=True)
    deadline = serializers.CharField(allow_null=True, help_text="When the manifest link dies (ISO 8601).")
    deadline_seconds = serializers.IntegerField(allow_null=True)
    deadline_text = serializers.CharField(allow_blank=True)
    recipients = RecipientProgressOut(many=True)


class RecipientOut(serializers.Serializer):
    id = serializers.UUIDField(source="public_id")
    kind = serializers.ChoiceField(choices=Recipient.Kind.choices)
    team = serializers.CharField(source="team.name", allow_null=True, default=None)
    account = serializers.UUIDField(source="target_account.public_id", allow_null=True, default=None,
                                    help_text="The portal's cloud account (none for an external one).")
    account_id = serializers.SerializerMethodField(help_text="The OUTSCALE account id.")
    region = serializers.CharField()
    method = serializers.ChoiceField(choices=Recipient.Method.choices)
    method_reason = serializers.CharField(allow_blank=True)
    state = serializers.ChoiceField(choices=Recipient.State.choices)
    state_label = serializers.CharField(source="get_state_display")
    state_message = serializers.CharField(allow_blank=True)
    image_id = serializers.SerializerMethodField(help_text="The copy's id in the recipient account, once complete.")
    image_name = serializers.CharField(allow_blank=True)
    warnings = serializers.ListField(child=serializers.CharField())
    completed_at = serializers.DateTimeField(allow_null=True)

    def get_account_id(self, recipient) -> str:
        if recipient.kind == Recipient.Kind.EXTERNAL:
            return recipient.external_account_id
        return recipient.bound_account_id or recipient.target_account.account_id

    def get_image_id(self, recipient) -> str:
        return recipient.image_id if recipient.state == Recipient.State.COMPLETED else ""  # as the page shows it


class ShareSummaryOut(serializers.Serializer):
    """A share in the team's list."""

    id = serializers.UUIDField(source="public_id")
    state = serializers.ChoiceField(choices=Share.State.choices)
    state_label = serializers.CharField(source="get_state_display")
    state_message = serializers.CharField(allow_blank=True)
    team = serializers.CharField(source="team.name", help_text="The source team.")
    source_account = serializers.UUIDField(source="source_account.public_id")
    image_id = serializers.CharField(source="source_image_id")
    image_name = serializers.CharField(source="source_image_name")
    copy_name = serializers.CharField()
    requested_by = serializers.CharField(source="requested_by.display_name")
    requested_at = serializers.DateTimeField()
    approval_required = serializers.BooleanField()
    decided_by = serializers.CharField(source="decided_by.display_name", allow_null=True, default=None)
    decided_at = serializers.DateTimeField(allow_null=True)


class ShareListRecipientsOut(ShareSummaryOut):
    recipients = RecipientOut(source="recipients.all", many=True)


class ShareOut(ShareSummaryOut):
    """A share with its live progress and the recipients the acting team may see."""

    description = serializers.CharField(allow_blank=True)
    reason = serializers.CharField()
    approval_deadline = serializers.DateTimeField(allow_null=True)
    approval_expires_at = serializers.DateTimeField(allow_null=True)
    digest = serializers.CharField(help_text="What an approval binds: send it back to approve or reject.")
    decision_comment = serializers.CharField(allow_blank=True)
    launch_permission_only = serializers.BooleanField()
    progress = ProgressOut(source="api_progress")
    recipients = RecipientOut(source="api_recipients", many=True)


class ShareActionOut(ShareOut):
    message = serializers.CharField(source="api_message", help_text="What the page says after the action.")
    warnings = serializers.ListField(child=serializers.CharField(), source="api_warnings", default=list)


def share_out(*, access, share: Share, message: str | None = None, warnings=()) -> dict:
    """The share as the acting team may see it; with ``message``, the answer to an action."""
    share.api_recipients = selectors.share_recipients_for_user(access=access, share=share)
    share.api_progress = presentation.share_progress(share=share, recipients=share.api_recipients)
    if message is None:
        return ShareOut(share).data
    share.api_message, share.api_warnings = message, list(warnings)
    return ShareActionOut(share).data


class ImageOut(serializers.Serializer):
    image_id = serializers.CharField()
    name = serializers.CharField()
    relation = serializers.ChoiceField(choices=["owned", "shared", "public"],
                                       help_text="A shared or public image is copied into the account first.")
    state = serializers.CharField()
    description = serializers.CharField(allow_blank=True)
    account_id = serializers.CharField(allow_blank=True)
    account_alias = serializers.CharField(allow_blank=True)
    architecture = serializers.CharField(allow_blank=True)
    creation_date = serializers.CharField(allow_blank=True)
    product_codes = serializers.ListField(child=serializers.CharField())
    size_gib = serializers.IntegerField(source="facts.size_gib")


class ImageListOut(serializers.Serializer):
    images = ImageOut(many=True)
    error = serializers.CharField(allow_blank=True, help_text="Why the list could not be read (the list is then "
                                                              "empty).")


class ShareListQuery(serializers.Serializer):
    state = serializers.ChoiceField(choices=Share.State.choices, required=False, allow_blank=True)
