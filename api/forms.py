"""The token pages' form: it parses; api.tokens decides who may make which token."""

import secrets

from django import forms

from accounts.models import Role
from api.models import ApiToken
from api.tokens import DEFAULT_DAYS, MAX_DAYS


class TokenCreateForm(forms.Form):
    """Any kind and role parse, so that asking beyond one's standing reaches the service and is refused
    there with a recorded 403; the selects only offer what this person may give."""

    name = forms.CharField(max_length=80, strip=True, help_text="What uses it, e.g. “packer pipeline”.",
                           widget=forms.TextInput(attrs={"autocomplete": "off"}))
    kind = forms.ChoiceField(choices=ApiToken.Kind.choices, initial=ApiToken.Kind.PERSONAL)
    role = forms.ChoiceField(choices=Role.choices)
    days = forms.IntegerField(label="Expires after (days)", min_value=1, max_value=MAX_DAYS, initial=DEFAULT_DAYS,
                              help_text=f"From 1 to {MAX_DAYS} days.")
    # Marks one rendering of the form, so that reloading the page that shows a new token (the browser
    # posts again) does not make a second one. Not a secret.
    once = forms.CharField(widget=forms.HiddenInput, max_length=64)

    def __init__(self, *args, kinds: list[str], roles: list[str], service_roles: list[str], **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["kind"].widget.choices = [(k, label) for k, label in ApiToken.Kind.choices if k in kinds]
        self.fields["role"].widget.choices = [(r, label) for r, label in Role.choices if r in roles]
        self.fields["role"].initial = Role.MEMBER if Role.MEMBER in roles else (roles[-1] if roles else None)
        self.fields["once"].initial = secrets.token_hex(16)
        if ApiToken.Kind.SERVICE in kinds:
            self.fields["kind"].help_text = (
                "Personal: acts as you. Team service: for a pipeline; it acts for the team with the role "
                f"it is given ({' or '.join(service_roles)}), recorded with your name, and never approves.")
        else:
            self.fields["kind"].help_text = "Personal: acts as you. Team admins make the team's service tokens."
        self.fields["role"].help_text = "At most your own role; the token also never exceeds your role of the day."
