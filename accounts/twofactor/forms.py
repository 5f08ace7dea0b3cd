from django import forms

from accounts.models import Team

CODE_FORMAT_MESSAGE = "Enter the 6 digits your authenticator app shows."


class CodeForm(forms.Form):
    code = forms.RegexField(
        label="Code from your authenticator app", regex=r"^\d{6}$", strip=True,
        error_messages={"invalid": CODE_FORMAT_MESSAGE},
        widget=forms.TextInput(attrs={"autocomplete": "one-time-code", "inputmode": "numeric",
                                      "autofocus": True, "maxlength": 6, "pattern": r"\d{6}"}),
    )

    def clean_code(self):
        return self.cleaned_data["code"].replace(" ", "")


class TeamSettingsForm(forms.ModelForm):
    request_expiry_days = forms.IntegerField(
        label="Requests expire after (days)", min_value=1, max_value=365,
        help_text=Team._meta.get_field("request_expiry_days").help_text,
    )

    class Meta:
        model = Team
        fields = ["require_approval_for_own_accounts", "request_expiry_days", "auto_accept_incoming",
                  "cleanup_exports", "require_two_factor_for_privileged"]
        labels = {
            "require_approval_for_own_accounts": "Require approval between the team's own accounts",
            "auto_accept_incoming": "Accept incoming images automatically",
            "cleanup_exports": "Clean up export files",
            "require_two_factor_for_privileged": "Require two-factor sign-in for approvers and admins",
        }
