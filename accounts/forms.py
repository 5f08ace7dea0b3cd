"""Forms parse and validate input; services apply the rules and write."""

import re

from django import forms
from django.contrib.auth.forms import AuthenticationForm

from accounts.models import CloudAccount, Role, Team, bucket_name_validator
from accounts.tag_keys import MAX_KEYS, clean_tag_keys
from outscale.regions import REGION_CHOICES

ACCESS_KEY_RE = re.compile(r"^[A-Z0-9]{20}$")
SECRET_KEY_RE = re.compile(r"^[A-Z0-9]{40}$")
ACCESS_KEY_MESSAGE = "An OUTSCALE access key id is 20 uppercase letters and digits."
SECRET_KEY_MESSAGE = "An OUTSCALE secret key is 40 uppercase letters and digits."
KEYS_TOGETHER_MESSAGE = "To replace the keys, give both the access key id and the secret key."


class LoginForm(AuthenticationForm):
    username = forms.EmailField(label="Email", widget=forms.EmailInput(attrs={"autofocus": True,
                                                                           "autocomplete": "email"}))


class TeamCreateForm(forms.Form):
    name = forms.CharField(max_length=80, strip=True)


class MemberAddForm(forms.Form):
    email = forms.EmailField(help_text="Someone new gets an email to choose a password.")
    role = forms.ChoiceField(choices=Role.choices, initial=Role.MEMBER)


class MemberRoleForm(forms.Form):
    role = forms.ChoiceField(choices=Role.choices)


class CloudAccountForm(forms.Form):
    """Add or edit an OUTSCALE account. Keys are write-only: never rendered back."""

    label = forms.CharField(max_length=80, strip=True, help_text="How your team calls this account.")
    region = forms.ChoiceField(choices=REGION_CHOICES)
    access_key = forms.CharField(
        label="Access key id", max_length=20, required=True, strip=True,
        widget=forms.TextInput(attrs={"autocomplete": "off", "spellcheck": "false"}),
    )
    secret_key = forms.CharField(
        label="Secret key", max_length=40, required=True, strip=True,
        widget=forms.PasswordInput(render_value=False, attrs={"autocomplete": "new-password"}),
    )
    export_bucket = forms.CharField(
        label="Export bucket", max_length=63, validators=[bucket_name_validator],
        help_text="The OOS bucket in this Region where exports of this account's images are written.",
    )
    accepts_incoming_shares = forms.BooleanField(
        required=False, label="Accept images shared by other teams",
        help_text="Lists this account in the directory other teams pick recipients from.",
    )

    def __init__(self, *args, editing: CloudAccount | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.editing = editing
        if editing is not None:
            for name in ("access_key", "secret_key"):
                self.fields[name].required = False
            self.fields["access_key"].help_text = f"Current: {editing.access_key_hint}. Leave blank to keep."
            self.fields["secret_key"].help_text = "Leave blank to keep the stored secret key."

    def clean_access_key(self):
        value = self.cleaned_data["access_key"]
        if value and not ACCESS_KEY_RE.match(value):
            raise forms.ValidationError(ACCESS_KEY_MESSAGE)
        return value

    def clean_secret_key(self):
        value = self.cleaned_data["secret_key"]
        if value and not SECRET_KEY_RE.match(value):
            raise forms.ValidationError(SECRET_KEY_MESSAGE)
        return value

    def clean(self):
        data = super().clean()
        one_key_only = bool(data.get("access_key")) != bool(data.get("secret_key"))
        key_errors = self.errors.get("access_key") or self.errors.get("secret_key")
        if self.editing is not None and one_key_only and not key_errors:
            raise forms.ValidationError(KEYS_TOGETHER_MESSAGE)
        return data


class TeamSettingsForm(forms.ModelForm):
    request_expiry_days = forms.IntegerField(
        label="Requests expire after (days)", min_value=1, max_value=365,
        help_text=Team._meta.get_field("request_expiry_days").help_text,
    )
    approval_lifetime_days = forms.IntegerField(
        label="Approvals last (days)", min_value=1, max_value=365,
        help_text=Team._meta.get_field("approval_lifetime_days").help_text,
    )
    copy_tag_allowlist = forms.CharField(
        label="Tags carried to copies", required=False,
        widget=forms.Textarea(attrs={"rows": 3, "spellcheck": "false", "class": "mono"}),
        help_text=f"Tag keys of a source image that its copies carry too, one per line (at most {MAX_KEYS}). "
                  "The portal's own provenance tags (omiportal:…) are always set.")

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["copy_tag_allowlist"].initial = "\n".join(self.instance.copy_tag_allowlist or [])

    def clean_copy_tag_allowlist(self):
        return clean_tag_keys(self.cleaned_data["copy_tag_allowlist"])

    class Meta:
        model = Team
        fields = ["require_approval_for_own_accounts", "request_expiry_days", "approval_lifetime_days",
                  "auto_accept_incoming", "cleanup_exports", "require_two_factor_for_privileged",
                  "export_disk_format"]
        labels = {
            "require_approval_for_own_accounts": "Require approval between the team's own accounts",
            "auto_accept_incoming": "Accept incoming images automatically",
            "cleanup_exports": "Clean up export files",
            "require_two_factor_for_privileged": "Require two-factor sign-in for approvers and admins",
            "export_disk_format": "Disk format of exports",
        }
