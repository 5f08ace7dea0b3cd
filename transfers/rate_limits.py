"""Per-person rate limits (WEB-07) on the two pages a script could drive hard: the share form's
image list (each one a call to OUTSCALE with the team's keys, against the account's API quota) and
link reveals (each one a new pre-signed URL to the disk snapshots).

Counted by django-ratelimit in the shared cache (Redis), per person rather than per address, so the
limit holds across web processes and whatever the network. A refusal is a 429 page and an
``access.denied`` event: one per person and window, since a script refused a thousand times would
otherwise write a thousand events and hold the chain's lock for each.
"""

from functools import wraps

from django.conf import settings
from django.shortcuts import render
from django_ratelimit.core import get_usage

from audit.recorder import record

IMAGE_LIST = "image-list"
LINK_REVEAL = "link-reveal"
_RATES = {IMAGE_LIST: "OMIPORTAL_IMAGE_LIST_RATE", LINK_REVEAL: "OMIPORTAL_LINK_REVEAL_RATE"}
_WHAT = {IMAGE_LIST: "image lists", LINK_REVEAL: "link reveals"}
RATE_LIMITED = "Too many {what} in a short time (the limit is {rate}). Wait {seconds} seconds, then try again."


def rate_limited(limit: str, *, applies=lambda request: True):
    """Wrap a team view (``(request, access, ...)``, inside ``team_view``): past the person's rate
    for ``limit``, answer 429 instead. ``applies(request)`` says whether this request counts."""

    def decorator(view):
        @wraps(view)
        def wrapped(request, access, *args, **kwargs):
            if applies(request):
                rate = getattr(settings, _RATES[limit])
                usage = get_usage(request, group=f"omiportal.{limit}", key="user", rate=rate, increment=True)
                if usage is not None and usage["should_limit"]:
                    return _refuse(request, access, limit, rate, usage)
            return view(request, access, *args, **kwargs)

        return wrapped

    return decorator


def _refuse(request, access, limit: str, rate: str, usage: dict):
    seconds = max(1, usage["time_left"])
    if usage["count"] == usage["limit"] + 1:  # the window's first refusal (0 and 0: the cache failed)
        record(action="access.denied", outcome="denied", actor=access.user, team=access.team,
               details={"reason": "rate_limited", "limit": limit, "rate": rate, "path": request.path[:500]})
    message = RATE_LIMITED.format(what=_WHAT[limit], rate=rate, seconds=seconds)
    response = render(request, "429.html", {"message": message, "access": access}, status=429)
    response["Retry-After"] = str(seconds)
    return response
