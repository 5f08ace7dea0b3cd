"""A team's webhook endpoints and their delivery log. Thin: parse, call one service, render.

Admins manage endpoints; every role reads the list and the log. A signing secret is shown once, in
the answer to the POST that made it (never in a redirect, a session or a cache)."""


from django.contrib import messages
from django.core.exceptions import ValidationError
from django.core.paginator import Paginator
from django.shortcuts import redirect, render
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from accounts.decorators import secret_page, team_view
from accounts.roles import Capability
from webhooks import selectors, services
from webhooks.forms import EndpointForm
from webhooks.url_checks import UrlRefused

DELIVERIES_PER_PAGE = 25
CREATED = "Endpoint for {host} added: copy its signing secret now, it is shown only once."
ROTATED = "New signing secret for {host}: copy it now, it is shown only once."
SAVED = "Endpoint for {host} saved."
DELETED = "Endpoint for {host} deleted, with its messages and their log."
REDELIVERING = "{event} {msg_id} will be sent again to {host} (same webhook-id, a new attempt)."



def _refused(form, exc: ValidationError) -> None:
    field = "url" if isinstance(exc, UrlRefused) else None
    for message in exc.messages:
        form.add_error(field, message)


@team_view()
@require_GET
def endpoint_list(request, access):
    return render(request, "webhooks/endpoint_list.html", {"endpoints": selectors.endpoints_for_team(team=access.team)})


@secret_page
@team_view(Capability.MANAGE_TEAM)
@require_http_methods(["GET", "POST"])
def endpoint_create(request, access):
    form = EndpointForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        try:
            endpoint, secret = services.endpoint_create(access=access, **form.cleaned_data)
        except ValidationError as exc:
            _refused(form, exc)
        else:
            messages.success(request, CREATED.format(host=endpoint.host))
            return render(request, "webhooks/endpoint_secret.html", {"endpoint": endpoint, "secret": secret})
    return render(request, "webhooks/endpoint_form.html", {"form": form, "endpoint": None},
                  status=400 if form.errors else 200)


@team_view(Capability.MANAGE_TEAM)
@require_http_methods(["GET", "POST"])
def endpoint_edit(request, access, endpoint_id):
    endpoint = selectors.endpoint_get_for_team(access=access, public_id=endpoint_id)
    initial = {"url": endpoint.url, "description": endpoint.description, "events": endpoint.events}
    form = EndpointForm(request.POST or None, initial=initial)
    if request.method == "POST" and form.is_valid():
        try:
            endpoint = services.endpoint_update(access=access, endpoint=endpoint, **form.cleaned_data)
        except ValidationError as exc:
            _refused(form, exc)
        else:
            messages.success(request, SAVED.format(host=endpoint.host))
            return redirect("webhooks:endpoint-detail", team_id=access.team.public_id, endpoint_id=endpoint.public_id)
    return render(request, "webhooks/endpoint_form.html", {"form": form, "endpoint": endpoint},
                  status=400 if form.errors else 200)


@team_view(Capability.MANAGE_TEAM)
@require_POST
def endpoint_delete(request, access, endpoint_id):
    endpoint = selectors.endpoint_get_for_team(access=access, public_id=endpoint_id)
    try:
        services.endpoint_delete(access=access, endpoint=endpoint)
    except ValidationError as exc:
        messages.error(request, " ".join(exc.messages))
    else:
        messages.success(request, DELETED.format(host=endpoint.host))
    return redirect("webhooks:endpoint-list", team_id=access.team.public_id)


@secret_page
@team_view(Capability.MANAGE_TEAM)
@require_POST
def endpoint_rotate(request, access, endpoint_id):
    endpoint = selectors.endpoint_get_for_team(access=access, public_id=endpoint_id)
    try:
        secret = services.endpoint_rotate_secret(access=access, endpoint=endpoint)
    except ValidationError as exc:
        messages.error(request, " ".join(exc.messages))
        return redirect("webhooks:endpoint-list", team_id=access.team.public_id)
    messages.success(request, ROTATED.format(host=endpoint.host))
    return render(request, "webhooks/endpoint_secret.html", {"endpoint": endpoint, "secret": secret, "rotated": True})


@team_view()
@require_GET
def endpoint_detail(request, access, endpoint_id):
    """The delivery log: every message, each attempt with its time, answer, duration and error."""
    endpoint = selectors.endpoint_get_for_team(access=access, public_id=endpoint_id)
    page = Paginator(selectors.deliveries_for_endpoint(endpoint=endpoint), DELIVERIES_PER_PAGE) \
        .get_page(request.GET.get("page"))
    return render(request, "webhooks/endpoint_detail.html", {"endpoint": endpoint, "page": page})


@team_view(Capability.MANAGE_TEAM)
@require_POST
def delivery_redeliver(request, access, endpoint_id, delivery_id):
    endpoint = selectors.endpoint_get_for_team(access=access, public_id=endpoint_id)
    delivery = selectors.delivery_get_for_endpoint(access=access, endpoint=endpoint, public_id=delivery_id)
    try:
        delivery = services.delivery_redeliver(access=access, delivery=delivery)
    except ValidationError as exc:
        messages.error(request, " ".join(exc.messages))
    else:
        messages.success(request, REDELIVERING.format(event=delivery.event_type, msg_id=delivery.msg_id,
                                                      host=endpoint.host))
    return redirect("webhooks:endpoint-detail", team_id=access.team.public_id, endpoint_id=endpoint.public_id)
