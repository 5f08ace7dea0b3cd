"""The endpoint form: what an admin types. The service checks the URL (url_checks.py) and saves."""

from django import forms

from webhooks.models import EVENT_CHOICES
from webhooks.url_checks import MAX_URL_LENGTH

URL_HELP = ("Where OMI Portal sends each event, as a signed POST: https only, a public address, no user name or "
            "password in it.")


class EndpointForm(forms.Form):
    url = forms.CharField(label="URL", max_length=MAX_URL_LENGTH, strip=True, help_text=URL_HELP,
                          widget=forms.URLInput(attrs={"placeholder": "https://ci.example.com/hooks/omi",
                                                       "spellcheck": "false"}))
    description = forms.CharField(max_length=200, required=False, strip=True,
                                  help_text="What receives these messages, for your team (optional).")
    events = forms.MultipleChoiceField(choices=EVENT_CHOICES, widget=forms.CheckboxSelectMultiple,
                                       error_messages={"required": "Choose at least one event to send."})
