"""The audit trail's filter form (GET): validates every value before any query sees it."""

import re

from django import forms
from django.core.validators import RegexValidator
from django.utils.html import format_html, format_html_join

from accounts.models import Team
from audit import actions
from audit.models import AuditEvent
from review.selectors import AuditFilters

DATES_INVERTED = "The start date is after the end date."
BOTH_CURSORS = "A page is either older or newer than another one, not both."
ACTION_INVALID = "Use an action such as share.approved, or a prefix ending with a dot, such as share."
TARGET_TYPE_INVALID = "Use a target type such as transfers.share or accounts.cloudaccount."
TEXT_TOO_SHORT = "Search for at least {n} characters."
UNKNOWN_TEAM = "No such team."

MIN_TEXT = 2
_ACTION = re.compile(r"^[a-z][a-z0-9_]*(\.[a-z0-9_]+)*\.?$")
_TARGET_TYPE = re.compile(r"^[a-z][a-z0-9_]*\.[a-z][a-z0-9_]*$")


# What the action box suggests: each group's prefix, then its actions, as audit/actions.py declares them.
ACTION_SUGGESTIONS = [
    suggestion
    for prefix, label, group in actions.grouped()
    for suggestion in [(f"{prefix}.", f"{label}: every {prefix}. action"), *((a.name, a.meaning) for a in group)]
]


class _ActionInput(forms.TextInput):
    """A text box, so any action or prefix can still be typed (older events, a prefix such as
    share.), with the declared actions offered in a list as it is typed."""

    LIST_ID = "audit-actions"

    def __init__(self):
        super().__init__(attrs={"list": self.LIST_ID, "autocomplete": "off", "spellcheck": "false"})

    def render(self, name, value, attrs=None, renderer=None):
        options = format_html_join("", '<option value="{}" label="{}"></option>', ACTION_SUGGESTIONS)
        return format_html('{}<datalist id="{}">{}</datalist>', super().render(name, value, attrs, renderer),
                           self.LIST_ID, options)


class _TeamChoice(forms.ModelChoiceField):
    def label_from_instance(self, obj):
        return obj.name

    def to_python(self, value):
        try:
            return super().to_python(value)
        except forms.ValidationError:  # "not a valid UUID" would say more than needed
            raise forms.ValidationError(UNKNOWN_TEAM, code="invalid_choice") from None


SEQ_MAX = 2**63 - 1  # AuditEvent.seq is a bigint: a cursor past it is a form error, not a database one


class AuditFilterForm(forms.Form):
    team = _TeamChoice(queryset=Team.objects.order_by("name"), to_field_name="public_id", required=False,
                       empty_label="Every team", error_messages={"invalid_choice": UNKNOWN_TEAM})
    actor = forms.CharField(required=False, max_length=100, min_length=MIN_TEXT,
                            help_text="Email or name contains.")
    action = forms.CharField(required=False, max_length=64, validators=[RegexValidator(_ACTION, ACTION_INVALID)],
                             widget=_ActionInput(),
                             help_text="Exact, or a prefix ending with a dot (share.); typing lists every action.")
    outcome = forms.ChoiceField(required=False, choices=[("", "Any outcome"), *AuditEvent.Outcome.choices])
    target_type = forms.CharField(required=False, max_length=100, label="Target type",
                                  validators=[RegexValidator(_TARGET_TYPE, TARGET_TYPE_INVALID)])
    target_id = forms.CharField(required=False, max_length=64, label="Target id")
    date_from = forms.DateField(required=False, label="From (UTC)", input_formats=["%Y-%m-%d"],
                                widget=forms.DateInput(attrs={"type": "date"}, format="%Y-%m-%d"))
    date_to = forms.DateField(required=False, label="To (UTC)", input_formats=["%Y-%m-%d"],
                              widget=forms.DateInput(attrs={"type": "date"}, format="%Y-%m-%d"))
    q = forms.CharField(required=False, max_length=100, min_length=MIN_TEXT, label="Text",
                        help_text="Contains, in the target, the actor's name or the action.")
    # Cursors: validated here with the rest, never rendered as inputs.
    before = forms.IntegerField(required=False, min_value=1, max_value=SEQ_MAX, widget=forms.HiddenInput)
    after = forms.IntegerField(required=False, min_value=0, max_value=SEQ_MAX, widget=forms.HiddenInput)

    FILTER_FIELDS = ("team", "actor", "action", "outcome", "target_type", "target_id", "date_from", "date_to", "q")

    def __init__(self, data=None, *, site_wide: bool):
        super().__init__(data)
        self.site_wide = site_wide
        for name in ("actor", "q"):
            self.fields[name].error_messages["min_length"] = TEXT_TOO_SHORT.format(n=MIN_TEXT)
        if not site_wide:
            del self.fields["team"]

    def clean(self):
        data = super().clean()
        start, end = data.get("date_from"), data.get("date_to")
        if start and end and start > end:
            self.add_error("date_to", DATES_INVERTED)
        if data.get("before") is not None and data.get("after") is not None:
            raise forms.ValidationError(BOTH_CURSORS)
        return data

    @property
    def filter_fields(self):
        return [self[name] for name in self.FILTER_FIELDS if name in self.fields]

    def filters(self) -> AuditFilters:
        data = self.cleaned_data
        values = {name: data.get(name) for name in self.FILTER_FIELDS if name in self.fields}
        return AuditFilters(**{key: (value.strip() if isinstance(value, str) else value)
                               for key, value in values.items()})
