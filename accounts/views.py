"""Team, member and cloud account pages. Thin: parse, call one service, render."""

from django.conf import settings
from django.contrib import messages
from django.contrib.auth import views as auth_views
from django.contrib.auth.decorators import login_required
from django.core.exceptions import ValidationError
from django.shortcuts import redirect, render
from django.urls import reverse_lazy
from django.views.decorators.debug import sensitive_post_parameters
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from accounts import preflight, selectors, services
from accounts.access import require
from accounts.decorators import team_view
from accounts.forms import CloudAccountForm, LoginForm, MemberAddForm, MemberRoleForm, TeamCreateForm, TeamSettingsForm
from accounts.models import CloudAccount, Role, Team
from accounts.roles import ROLE_DESCRIPTIONS, Capability
from accounts.twofactor.enforcement import step_up_url
from accounts.twofactor.services import has_device as has_two_factor_device
from audit.recorder import record


def _form_error(form, exc: ValidationError) -> None:
    for message in exc.messages:
        form.add_error(None, message)


# --- Sign-in ---------------------------------------------------------------------------


class LoginView(auth_views.LoginView):
    form_class = LoginForm
    redirect_authenticated_user = True

    def form_valid(self, form):
        response = super().form_valid(form)
        if has_two_factor_device(user=form.get_user()):
            # The password was the first step; the session is not verified until a code checks out.
            return redirect(step_up_url(enrolled=True, next_url=self.get_success_url()))
        return response


class PasswordChangeView(auth_views.PasswordChangeView):
    success_url = reverse_lazy("password_change_done")

    def form_valid(self, form):
        response = super().form_valid(form)
        record(action="user.password_changed", actor=self.request.user, target=self.request.user)
        return response


class PasswordResetConfirmView(auth_views.PasswordResetConfirmView):
    success_url = reverse_lazy("password_reset_complete")

    def form_valid(self, form):
        response = super().form_valid(form)
        record(action="user.password_reset", actor=form.user, target=form.user)
        return response


# --- Teams -------------------------------------------------------------------------------


@login_required
@require_GET
def home(request):
    """Send the user to the team they last worked in, or to the team list."""
    teams = selectors.team_list_for_user(user=request.user)
    remembered = request.session.get("team")
    team = teams.filter(public_id=remembered).first() if remembered else None
    team = team or teams.first()
    if team is None:
        return redirect("accounts:team-list")
    return redirect(settings.OMIPORTAL_TEAM_HOME, team_id=team.public_id)


@login_required
@require_http_methods(["GET", "POST"])
def team_list(request):
    form = TeamCreateForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        try:
            team = services.team_create(creator=request.user, name=form.cleaned_data["name"])
        except ValidationError as exc:
            _form_error(form, exc)
        else:
            messages.success(request, f"Team {team.name} created. Add its cloud accounts next.")
            return redirect("accounts:account-list", team_id=team.public_id)
    return render(request, "accounts/team_list.html", {
        "memberships": selectors.memberships_for_user(user=request.user),
        "compliance_teams": selectors.team_list_for_user(user=request.user)
        if request.user.is_compliance_officer else None,
        "form": form,
    })


@team_view(Capability.MANAGE_TEAM)
@require_http_methods(["GET", "POST"])
def team_settings(request, access):
    # A copy: validating a ModelForm writes into its instance, and access.team must stay as read.
    form = TeamSettingsForm(request.POST or None, instance=Team.objects.get(pk=access.team.pk))
    if request.method == "POST" and form.is_valid():
        try:
            services.team_settings_change(access=access, **form.cleaned_data)
        except ValidationError as exc:
            _form_error(form, exc)
        else:
            messages.success(request, f"Settings of {access.team.name} saved.")
            return redirect("accounts:team-settings", team_id=access.team.public_id)
    return render(request, "accounts/team_settings.html", {"form": form}, status=400 if form.errors else 200)


# --- Members -------------------------------------------------------------------------------


@team_view()
@require_http_methods(["GET", "POST"])
def member_list(request, access):
    form = MemberAddForm(request.POST or None)
    if request.method == "POST":
        require(access, Capability.MANAGE_TEAM)
        if form.is_valid():
            try:
                membership = services.membership_add(
                    access=access, email=form.cleaned_data["email"], role=form.cleaned_data["role"],
                    site_url=request.build_absolute_uri("/"),
                )
            except ValidationError as exc:
                _form_error(form, exc)
            else:
                messages.success(request, f"{membership.user.email} added as {membership.get_role_display()}.")
                return redirect("accounts:member-list", team_id=access.team.public_id)
    return render(request, "accounts/member_list.html", {
        "memberships": selectors.membership_list_for_team(team=access.team),
        "form": form,
        "roles": Role.choices,
        "role_descriptions": {str(k): v for k, v in ROLE_DESCRIPTIONS.items()},
    }, status=400 if form.errors else 200)


@team_view(Capability.MANAGE_TEAM)
@require_POST
def member_role(request, access, membership_id):
    membership = selectors.membership_get_for_team(access=access, public_id=membership_id)
    form = MemberRoleForm(request.POST)
    if not form.is_valid():
        messages.error(request, "Choose one of the listed roles.")
    else:
        try:
            services.membership_change_role(access=access, membership=membership, role=form.cleaned_data["role"])
        except ValidationError as exc:
            messages.error(request, " ".join(exc.messages))
        else:
            messages.success(request, f"{membership.user.email} is now {membership.get_role_display()}.")
    return redirect("accounts:member-list", team_id=access.team.public_id)


@team_view(Capability.MANAGE_TEAM)
@require_POST
def member_remove(request, access, membership_id):
    membership = selectors.membership_get_for_team(access=access, public_id=membership_id)
    try:
        services.membership_remove(access=access, membership=membership)
    except ValidationError as exc:
        messages.error(request, " ".join(exc.messages))
    else:
        messages.success(request, f"{membership.user.email} was removed from {access.team.name}.")
    return redirect("accounts:member-list", team_id=access.team.public_id)


@team_view(Capability.MANAGE_TEAM)
@require_POST
def member_reinvite(request, access, membership_id):
    membership = selectors.membership_get_for_team(access=access, public_id=membership_id)
    try:
        services.membership_reinvite(access=access, membership=membership, site_url=request.build_absolute_uri("/"))
    except ValidationError as exc:
        messages.error(request, " ".join(exc.messages))
    else:
        messages.success(request, f"A new invitation was sent to {membership.user.email}.")
    return redirect("accounts:member-list", team_id=access.team.public_id)


# --- Cloud accounts ----------------------------------------------------------------------------


@team_view()
@require_GET
def account_list(request, access):
    return render(request, "accounts/account_list.html", {
        "accounts": selectors.cloud_account_list_for_team(team=access.team),
    })


@sensitive_post_parameters("access_key", "secret_key")
@team_view(Capability.MANAGE_TEAM)
@require_http_methods(["GET", "POST"])
def account_create(request, access):
    form = CloudAccountForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        try:
            account = services.cloud_account_create(access=access, **form.cleaned_data)
        except ValidationError as exc:
            _form_error(form, exc)
        else:
            return _after_save(request, access, account, created=True)
    return render(request, "accounts/account_form.html", {"form": form, "account": None},
                  status=400 if form.errors else 200)


def _after_save(request, access, account, *, created: bool):
    """Saving keys validates them at once; a refusal is shown on the account's form."""
    verb = "saved" if created else "updated"
    if account.validation_status == CloudAccount.Validation.PENDING:
        account = services.cloud_account_validate(access=access, account=account)
    elif account.is_valid and account.preflight_checked_at is None:  # another bucket: check it
        account = preflight.cloud_account_preflight(account=account, actor=access.user)
    if account.validation_status == CloudAccount.Validation.INVALID:
        messages.error(request, f"Cloud account {account.label} {verb}, but OUTSCALE refused its keys: "
                                "see below.")
        return redirect("accounts:account-edit", team_id=access.team.public_id, account_id=account.public_id)
    if not account.is_valid:
        messages.warning(request, f"Cloud account {account.label} {verb}, but its keys could not be checked yet: "
                                  f"{account.validation_message} Use “Check keys” to try again.")
        return redirect("accounts:account-list", team_id=access.team.public_id)
    messages.success(request, f"Cloud account {account.label} {verb} and validated: OUTSCALE account "
                              f"{account.account_id}.")
    if account.preflight.get("problems"):
        messages.warning(request, f"The pre-flight checks of {account.label} found problems that would stop its "
                                  "exports or copies: see below.")
    return redirect("accounts:account-list", team_id=access.team.public_id)


@sensitive_post_parameters("access_key", "secret_key")
@team_view(Capability.MANAGE_TEAM)
@require_http_methods(["GET", "POST"])
def account_edit(request, access, account_id):
    account = selectors.cloud_account_get_for_team(access=access, public_id=account_id)
    initial = {field: getattr(account, field) for field in services.EDITABLE_FIELDS}
    form = CloudAccountForm(request.POST or None, initial=initial, editing=account)
    if request.method == "POST" and form.is_valid():
        try:
            account = services.cloud_account_update(access=access, account=account, **form.cleaned_data)
        except ValidationError as exc:
            _form_error(form, exc)
        else:
            return _after_save(request, access, account, created=False)
    return render(request, "accounts/account_form.html", {"form": form, "account": account},
                  status=400 if form.errors else 200)


@team_view(Capability.MANAGE_TEAM)
@require_POST
def account_validate(request, access, account_id):
    account = selectors.cloud_account_get_for_team(access=access, public_id=account_id)
    account = services.cloud_account_validate(access=access, account=account)
    if account.is_valid:
        messages.success(request, f"{account.label}: {services.VALIDATION_OK_MESSAGE} "
                                  f"OUTSCALE account {account.account_id}.")
        if account.preflight.get("problems"):
            messages.warning(request, f"The pre-flight checks of {account.label} found problems that would stop "
                                      "its exports or copies: see below.")
    elif account.validation_status == CloudAccount.Validation.INVALID:
        messages.error(request, f"{account.label}: OUTSCALE refused the keys: {account.validation_message}")
    else:
        messages.warning(request, f"{account.label}: the keys could not be checked yet: {account.validation_message}")
    return redirect("accounts:account-list", team_id=access.team.public_id)


@team_view(Capability.MANAGE_TEAM)
@require_POST
def account_create_bucket(request, access, account_id):
    """Create the account's missing export bucket, as the pre-flight checks offered."""
    account = selectors.cloud_account_get_for_team(access=access, public_id=account_id)
    try:
        account = preflight.cloud_account_create_bucket(access=access, account=account)
    except ValidationError as exc:
        messages.error(request, " ".join(exc.messages))
    else:
        messages.success(request, preflight.BUCKET_CREATED_MESSAGE.format(
            bucket=account.export_bucket, label=account.label, region=account.region))
    return redirect("accounts:account-list", team_id=access.team.public_id)


@team_view(Capability.APPROVE)
@require_POST
def account_confirm_ownership(request, access, account_id):
    account = selectors.cloud_account_get_for_team(access=access, public_id=account_id)
    try:
        account = services.cloud_account_confirm_ownership(access=access, account=account)
    except ValidationError as exc:
        messages.error(request, " ".join(exc.messages))
    else:
        messages.success(request, f"{account.label} (OUTSCALE account {account.account_id}) is confirmed as "
                                  f"{access.team.name}'s own.")
    return redirect("accounts:account-list", team_id=access.team.public_id)


@team_view(Capability.MANAGE_TEAM)
@require_http_methods(["GET", "POST"])
def account_delete(request, access, account_id):
    """Delete an account nothing used; retire one with history (shares, exports, imports keep it)."""
    account = selectors.cloud_account_get_for_team(access=access, public_id=account_id)
    history = services.cloud_account_has_history(account)
    if request.method == "POST":
        try:
            if account.is_retired:
                raise services.TeamError(services.ACCOUNT_RETIRED_MESSAGE.format(label=account.label))
            if history:
                services.cloud_account_retire(access=access, account=account)
                messages.success(request, f"Cloud account {account.label} retired. Its keys are gone from the "
                                          "portal; its history stays.")
            else:
                services.cloud_account_delete(access=access, account=account)
                messages.success(request, f"Cloud account {account.label} deleted. Its keys are gone from the "
                                          "portal.")
        except services.TeamError as exc:
            messages.error(request, " ".join(exc.messages))
        return redirect("accounts:account-list", team_id=access.team.public_id)
    return render(request, "accounts/account_confirm_delete.html", {"account": account, "history": history})


