"""Two-factor pages: set up (shows the secret until confirmed), verify (the second sign-in step), remove."""

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views.decorators.cache import never_cache
from django.views.decorators.debug import sensitive_post_parameters
from django.views.decorators.http import require_http_methods, require_POST
from django_otp import login as otp_login

from accounts.twofactor import services
from accounts.twofactor.enforcement import is_verified, note_verified, safe_next, step_up_fresh, verified_at
from accounts.twofactor.forms import CodeForm
from accounts.twofactor.qr import qr_data_uri
from accounts.twofactor.signals import remember


def _verified_session(request, device) -> None:
    # A fresh session key for the now fully signed-in session (WEB-04), then mark it verified.
    request.session.cycle_key()
    otp_login(request, device)
    remember(request, True)
    note_verified(request)  # approvals in teams that require two-factor need a recent code


def _next(request) -> str:
    return safe_next(request, request.POST.get("next") or request.GET.get("next"), "accounts:home")


def _setup_context(request, form):
    device = services.device_for_user(user=request.user)
    context = {"form": form, "device": device, "next": request.POST.get("next") or request.GET.get("next", "")}
    if device is None:
        pending = services.twofactor_start(user=request.user)
        context |= {"secret": services.secret_base32(pending), "uri": pending.config_url,
                    "qr": qr_data_uri(pending.config_url)}
    return context


@never_cache
@login_required
@require_http_methods(["GET"])
def twofactor(request):
    """Set up a device or, once active, remove it. The secret is shown only while unconfirmed."""
    return render(request, "accounts/twofactor_setup.html", _setup_context(request, CodeForm()))


@sensitive_post_parameters("code")
@never_cache
@login_required
@require_POST
def twofactor_confirm(request):
    form = CodeForm(request.POST)
    if form.is_valid():
        try:
            device = services.twofactor_confirm(user=request.user, code=form.cleaned_data["code"])
        except services.TwoFactorError as exc:
            form.add_error("code", exc.messages[0])
        else:
            _verified_session(request, device)
            messages.success(request, "Two-factor sign-in is active. You will be asked for a code at each sign-in.")
            return redirect(_next(request))
    return render(request, "accounts/twofactor_setup.html", _setup_context(request, form), status=400)


@sensitive_post_parameters("code")
@never_cache
@login_required
@require_http_methods(["GET", "POST"])
def twofactor_verify(request):
    """The second sign-in step (and the step-up before privileged team pages)."""
    if not services.has_device(user=request.user):
        remember(request, False)  # removed from another session: nothing left to verify
        return redirect(f"{reverse('accounts:twofactor')}?{request.GET.urlencode()}")
    # A session verified long ago stays on the page: an approval asks it for a fresh code (step-up).
    if is_verified(request.user) and step_up_fresh(verified_at(request)) and request.method == "GET":
        return redirect(_next(request))
    form = CodeForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        try:
            device = services.twofactor_verify(user=request.user, code=form.cleaned_data["code"])
        except services.TwoFactorError as exc:
            form.add_error("code", exc.messages[0])
        else:
            _verified_session(request, device)
            return redirect(_next(request))
    return render(request, "accounts/twofactor_verify.html", {
        "form": form, "next": request.POST.get("next") or request.GET.get("next", ""),
    }, status=400 if form.errors else 200)


@sensitive_post_parameters("code")
@never_cache
@login_required
@require_POST
def twofactor_remove(request):
    form = CodeForm(request.POST)
    if form.is_valid():
        try:
            services.twofactor_remove(user=request.user, code=form.cleaned_data["code"])
        except services.TwoFactorError as exc:
            form.add_error("code", exc.messages[0])
        else:
            remember(request, False)
            messages.success(request, "Two-factor sign-in was removed from your account.")
            return redirect("accounts:twofactor")
    return render(request, "accounts/twofactor_setup.html", _setup_context(request, form), status=400)
