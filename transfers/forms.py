"""Forms parse what people type; services apply the rules. Nothing here accepts a team, a state,
a requester or an approver from the request: those come from the acting user's access."""

from django import forms

import outscale
from outscale.regions import REGION_CHOICES
from transfers import errors
from transfers.link_checks import MSG_UNSIGNED_REGION, validate_manifest_url
from transfers.services.requests import EXTERNAL_ID_RE, ExternalRecipient

EXTERNAL_ROWS = 3
RECIPIENT_NOT_LISTED = "Pick recipients from the list: one of the chosen accounts is not available to your team."
IMAGE_NOT_LISTED = "Pick one of the images listed for this account."
EXTERNAL_REGION_REQUIRED = "Choose the Region of external account {account_id}."
ACCOUNT_NOT_LISTED = "Pick one of your team's validated accounts."
OOS_USER_HELP = ("For an account in {region}: its owner's OOS user ID (aws s3api list-buckets --query Owner.ID). "
                 "It is then granted read on the export instead of receiving a link.")
LINK_HELP = ("The manifest's pre-signed OOS link (SigV4, or the AWSAccessKeyId / Expires / Signature form of "
             "OUTSCALE's guide), or its plain path https://oos.<region>.outscale.com/<bucket>/<manifest> with nothing "
             "after it, if the image's owner granted your account read on the manifest and its snapshots (an object "
             "ACL; same Region only).")


class ShareRequestForm(forms.Form):
    """Step 2 of sharing: the image, recipients and names. Choices come from the live image list and
    from what the team may pick (TEN-04): any other value is refused before a service runs."""

    image_id = forms.ChoiceField(label="Image", widget=forms.RadioSelect,
                                 error_messages={"invalid_choice": IMAGE_NOT_LISTED, "required": IMAGE_NOT_LISTED})
    recipients = forms.MultipleChoiceField(required=False, widget=forms.CheckboxSelectMultiple,
                                           error_messages={"invalid_choice": RECIPIENT_NOT_LISTED})
    copy_name = forms.CharField(max_length=128, strip=True, label="Name of the copy",
                                help_text="3 to 128 letters, digits, spaces and _ ( ) / . - ; unique in each "
                                          "recipient account.")
    description = forms.CharField(
        max_length=255, required=False, strip=True,
        help_text=f"The Description of every copy. Copies keep its first {outscale.DESCRIPTION_ROOM} characters: "
                  f"OUTSCALE keeps {outscale.DESCRIPTION_MAX}, and the portal's mark takes the rest.")
    reason = forms.CharField(max_length=2000, strip=True, widget=forms.Textarea(attrs={"rows": 3}),
                             help_text="Why this copy is needed; the approver reads it.")
    licence_confirmed = forms.BooleanField(
        required=False, label="I confirm that the image's third-party licences allow exporting it.")
    launch_permission_only = forms.BooleanField(
        required=False, label="Launch permission only (no copy)",
        help_text="The accounts in the image's Region may launch it, and make no copy, until your team revokes "
                  "the permission on its Launch permissions page. Only for an image the account owns.")

    def __init__(self, *args, images, source, recipient_accounts, **kwargs):
        super().__init__(*args, **kwargs)
        self.source_key = str(source.public_id)
        self.recipient_accounts = {str(a.public_id): a for a in recipient_accounts}
        self.fields["image_id"].choices = [(i.image_id, i.name) for i in images]
        # The source is a known choice only so that picking it gets the precise refusal below.
        self.fields["recipients"].choices = [(key, a.label) for key, a in self.recipient_accounts.items()] + \
            [(self.source_key, source.label)]
        for n in range(1, EXTERNAL_ROWS + 1):
            self.fields[f"external_account_{n}"] = forms.CharField(
                required=False, max_length=12, strip=True, label="External account id")
            self.fields[f"external_region_{n}"] = forms.ChoiceField(
                required=False, choices=[("", "Region…"), *REGION_CHOICES], label="Region")
            self.fields[f"external_oos_user_{n}"] = forms.CharField(
                required=False, max_length=128, strip=True, label="OOS user ID (optional)",
                help_text=OOS_USER_HELP.format(region=source.region))

    def clean_copy_name(self):
        name = self.cleaned_data["copy_name"]
        try:
            outscale.validate_image_name(name)
        except ValueError as exc:
            raise forms.ValidationError(str(exc)) from None
        return name

    def clean_recipients(self):
        keys = self.cleaned_data["recipients"]
        if self.source_key in keys:
            raise forms.ValidationError(errors.SOURCE_AS_RECIPIENT)
        return keys

    def clean_licence_confirmed(self):
        if not self.cleaned_data["licence_confirmed"]:
            raise forms.ValidationError(errors.LICENCE_REQUIRED)
        return True

    def clean(self):
        data = super().clean()
        externals = []
        for n in range(1, EXTERNAL_ROWS + 1):
            account_id, region = data.get(f"external_account_{n}", ""), data.get(f"external_region_{n}", "")
            oos_user_id = data.get(f"external_oos_user_{n}", "")
            if not account_id and not region and not oos_user_id:
                continue
            if not EXTERNAL_ID_RE.match(account_id or ""):
                self.add_error(f"external_account_{n}", errors.EXTERNAL_ID)
            elif not region:
                self.add_error(f"external_region_{n}", EXTERNAL_REGION_REQUIRED.format(account_id=account_id))
            else:
                externals.append(ExternalRecipient(account_id=account_id, region=region, oos_user_id=oos_user_id))
        data["externals"] = externals
        data["accounts"] = [self.recipient_accounts[key] for key in data.get("recipients", [])]
        external_errors = any(key.startswith("external_") for key in self.errors)
        if "recipients" in data and not data["accounts"] and not externals and not external_errors:
            self.add_error("recipients", errors.NO_RECIPIENT)
        return data

    def external_rows(self):
        return [(self[f"external_account_{n}"], self[f"external_region_{n}"], self[f"external_oos_user_{n}"])
                for n in range(1, EXTERNAL_ROWS + 1)]


class DecisionForm(forms.Form):
    """Approve or reject: the digest is what the approver saw; the service refuses a stale one."""

    digest = forms.CharField(max_length=64, widget=forms.HiddenInput)
    comment = forms.CharField(max_length=2000, required=False, strip=True,
                              widget=forms.Textarea(attrs={"rows": 2}))


class DeclineForm(forms.Form):
    reason = forms.CharField(max_length=500, required=False, strip=True)


class SecretTextarea(forms.Textarea):
    """Never renders what was typed: a pasted link is a bearer secret, even when refused."""

    def get_context(self, name, value, attrs):
        return super().get_context(name, None, attrs)


class LinkImportForm(forms.Form):
    url = forms.CharField(label="Manifest link", max_length=8192, strip=True,
                          widget=SecretTextarea(attrs={"rows": 4, "autocomplete": "off", "spellcheck": "false"}),
                          help_text=LINK_HELP)
    account = forms.ChoiceField(label="Import into", error_messages={"invalid_choice": ACCOUNT_NOT_LISTED})
    image_name = forms.CharField(max_length=128, strip=True, label="Name of the imported image")
    description = forms.CharField(max_length=255, required=False, strip=True)

    def __init__(self, *args, accounts, **kwargs):
        super().__init__(*args, **kwargs)
        self.accounts = {str(a.public_id): a for a in accounts}
        self.fields["account"].choices = [(key, f"{a.label} ({a.region})") for key, a in self.accounts.items()]

    def clean_url(self):
        url = self.cleaned_data["url"]
        validate_manifest_url(url)  # LinkError names no part of the link, so it can be shown as is
        return url

    def clean_image_name(self):
        name = self.cleaned_data["image_name"]
        try:
            outscale.validate_image_name(name)
        except ValueError as exc:
            raise forms.ValidationError(str(exc)) from None
        return name

    def clean_account(self):
        return self.accounts[self.cleaned_data["account"]]

    def clean(self):
        data = super().clean()
        if "url" in data and "account" in data:
            link = validate_manifest_url(data["url"])
            if not link.signed and link.region != data["account"].region:
                self.add_error("account", MSG_UNSIGNED_REGION.format(region=link.region))
        return data
