"""A family's latest copy per account, as the API shows it (the family's latest page says the same)."""

from rest_framework import serializers


class LatestCopyOut(serializers.Serializer):
    account = serializers.UUIDField(source="account.public_id", help_text="The portal's id of the account.")
    account_label = serializers.CharField(source="account.label")
    account_id = serializers.CharField(source="account.account_id", help_text="The OUTSCALE account id.")
    region = serializers.CharField(source="account.region")
    team = serializers.CharField(source="account.team.name", help_text="The account's team.")
    image_id = serializers.CharField(help_text="The copy that carries the latest tag in that account.")
    image_name = serializers.CharField(allow_blank=True)
    version = serializers.IntegerField(source="version.number", allow_null=True, default=None,
                                       help_text="The family version it is a copy of.")
    tagged_at = serializers.DateTimeField(source="family_tagged_at", allow_null=True)


class FamilyLatestOut(serializers.Serializer):
    family = serializers.UUIDField(source="family.public_id")
    name = serializers.CharField(source="family.name", help_text="The value of the family and latest tags.")
    tag_filter = serializers.CharField(help_text='The ReadImages filter that finds the same image in an account: '
                                                 '{"Filters": {"Tags": ["<tag_filter>"]}}.')
    accounts = LatestCopyOut(many=True, help_text="One entry per account that holds a copy carrying the latest tag: "
                                                  "the family's team sees every account its shares reached, "
                                                  "another team its own accounts.")
