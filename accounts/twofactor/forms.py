from django import forms

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
