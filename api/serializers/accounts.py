"""The team's cloud accounts as the API shows them: never a key, not even its masked hint."""

from rest_framework import serializers

from accounts.models import CloudAccount


class CloudAccountSerializer(serializers.ModelSerializer):
    id = serializers.UUIDField(source="public_id", read_only=True)
    retired = serializers.BooleanField(source="is_retired", read_only=True)

    class Meta:
        model = CloudAccount
        fields = ["id", "label", "region", "account_id", "validation_status", "accepts_incoming_shares",
                  "export_bucket", "retired", "created_at"]
        read_only_fields = fields
