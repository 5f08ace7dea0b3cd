"""What a team receives (its inbox), and the import from a pasted link.

A pasted link is a bearer secret: it goes in (``LinkImportIn.url``) and never comes out. Nothing
here reads ``Recipient.link_sealed`` or shows an export's bucket or path.
"""

from rest_framework import serializers

from transfers import rules
from transfers.models import Recipient

INCOMING_KINDS = [Recipient.Kind.TEAM.value, Recipient.Kind.LINK.value]


class DeclineIn(serializers.Serializer):
    reason = serializers.CharField(required=False, allow_blank=True, default="")


class LinkImportIn(serializers.Serializer):
    account = serializers.UUIDField(help_text="One of the team's validated cloud accounts, to import into.")
    url = serializers.CharField(write_only=True, help_text="The manifest's pre-signed OOS link (a bearer secret: "
                                                           "never shown again), or its plain path when the owner "
                                                           "granted the account read on it.")
    image_name = serializers.CharField(help_text="3 to 128 letters, digits, spaces and _ ( ) / . -")
    description = serializers.CharField(required=False, allow_blank=True, default="")


class IncomingOut(serializers.Serializer):
    id = serializers.UUIDField(source="public_id")
    kind = serializers.ChoiceField(choices=INCOMING_KINDS,
                                   help_text="team: offered by another team's share; link: a pasted link.")
    state = serializers.ChoiceField(choices=Recipient.State.choices)
    state_label = serializers.CharField(source="get_state_display")
    state_message = serializers.CharField(allow_blank=True)
    share = serializers.UUIDField(source="share.public_id", allow_null=True, default=None)
    source_team = serializers.CharField(source="share.team.name", allow_null=True, default=None)
    source_image_name = serializers.CharField(source="share.source_image_name", allow_null=True, default=None)
    image_name = serializers.CharField(allow_blank=True, help_text="The copy's name in the account.")
    description = serializers.CharField(source="share.description", allow_null=True, default=None)
    account = serializers.UUIDField(source="target_account.public_id")
    account_id = serializers.CharField(source="target_account.account_id")
    region = serializers.CharField(source="target_account.region")
    method = serializers.ChoiceField(choices=Recipient.Method.choices)
    method_reason = serializers.CharField(allow_blank=True)
    image_id = serializers.SerializerMethodField(help_text="The copy's id in the account, once complete.")
    warnings = serializers.ListField(child=serializers.CharField())
    attempt = serializers.IntegerField(help_text="Imports tried, retries included.")
    decline_reason = serializers.CharField(allow_blank=True)
    expires_at = serializers.SerializerMethodField(help_text="When the manifest link dies (an export's deadline, or "
                                                             "the pasted link's).")
    created_at = serializers.DateTimeField()
    started_at = serializers.DateTimeField(allow_null=True)
    completed_at = serializers.DateTimeField(allow_null=True)
    can_answer = serializers.SerializerMethodField(help_text="accept/ and decline/ would be taken now.")
    can_retry = serializers.SerializerMethodField(help_text="retry/ would be taken now.")

    def get_image_id(self, recipient) -> str:
        return recipient.image_id if recipient.state == Recipient.State.COMPLETED else ""

    def get_expires_at(self, recipient) -> str | None:
        export = recipient.share.export if recipient.share_id else None
        moment = export.manifest_deadline if export is not None else recipient.link_expires_at
        return serializers.DateTimeField().to_representation(moment) if moment else None

    def get_can_answer(self, recipient) -> bool:
        return rules.may_answer(access=self.context["access"], recipient=recipient)

    def get_can_retry(self, recipient) -> bool:
        return rules.may_retry(access=self.context["access"], recipient=recipient)


class IncomingActionOut(IncomingOut):
    message = serializers.CharField(source="api_message", help_text="What the page says after the action.")


def incoming_out(*, access, recipient: Recipient, message: str | None = None) -> dict:
    if message is None:
        return IncomingOut(recipient, context={"access": access}).data
    recipient.api_message = message
    return IncomingActionOut(recipient, context={"access": access}).data
