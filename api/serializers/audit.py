"""The audit trail as the API shows it: every field the review page's event view shows.

``ip`` and ``user_agent`` are included: the event page shows them to the same readers (team admins,
auditors, compliance officers) and the trail's CSV/JSON Lines exports carry them. The integer keys
(``actor_id``, ``team_id``) are left out, as everywhere in the API: ``actor_name`` and ``team_name``
are the copies the event keeps, whatever happened to the person or team since.
"""

from rest_framework import serializers

from audit.models import AuditEvent


class AuditEventSerializer(serializers.ModelSerializer):
    id = serializers.UUIDField(source="public_id", read_only=True)
    details = serializers.JSONField(read_only=True, help_text="What the action recorded; an API request's "
                                                              "events name the token under \"via\".")
    cloud_request_ids = serializers.ListField(child=serializers.CharField(), read_only=True,
                                              help_text="OUTSCALE RequestIds of the calls behind this event.")
    ip = serializers.IPAddressField(read_only=True, allow_null=True)

    class Meta:
        model = AuditEvent
        fields = ["seq", "id", "occurred_at", "actor_name", "team_name", "action", "outcome", "target_type",
                  "target_id", "target_label", "details", "request_id", "ip", "user_agent", "cloud_request_ids",
                  "hash", "prev_hash"]
        read_only_fields = fields


class AuditEventPageSerializer(serializers.Serializer):
    """One page of the trail, newest first (the review page's keyset pages: ``before``/``after``)."""

    next = serializers.URLField(allow_null=True, help_text="Older events (the page's \"Older\" link).")
    previous = serializers.URLField(allow_null=True, help_text="Newer events (the page's \"Newer\" link).")
    searched = serializers.ListField(
        child=serializers.IntegerField(), min_length=2, max_length=2, allow_null=True,
        help_text="[lowest, highest] seq a text or actor search looked at for this page, when that window "
                  "ran out before the page filled; \"next\" continues below it. Null otherwise.")
    results = AuditEventSerializer(many=True)


class AuditIntegritySerializer(serializers.Serializer):
    """What the last verification of the whole chain found (``audit_verify`` or the periodic job)."""

    verified_at = serializers.DateTimeField(allow_null=True, help_text="Null: never verified.")
    ok = serializers.BooleanField(allow_null=True, help_text="Null: never verified.")
    events_checked = serializers.IntegerField()
    last_seq = serializers.IntegerField(help_text="The last event found good.")
    checkpoint_seq = serializers.IntegerField(allow_null=True, help_text="The signed checkpoint compared against.")
    checkpoint_at = serializers.DateTimeField(allow_null=True)
    message = serializers.CharField(allow_blank=True)
