"""Retention pages. Thin: parse, call one service, render.

The recipient team's side: its rule per family (the families it subscribes, or still has copies
of), the open run with its copies and why each goes, confirm and cancel, the runs before. The source
team's side: each version's end-of-life date."""

from django import forms
from django.contrib import messages
from django.core.exceptions import ValidationError
from django.core.paginator import Paginator
from django.shortcuts import redirect, render
from django.views.decorators.http import require_GET, require_POST

from accounts.decorators import team_view
from accounts.models import Membership
from accounts.roles import Capability
from distribution.selectors import retention as selectors
from distribution.services import retention

RUNS_PER_PAGE = 20
RULE_SAVED = "Retention rule for {family} saved."
RULE_OFF = "Retention rule for {family} saved: it keeps every copy."
PROPOSED = "{n} cop{ies} of {family} proposed for deletion: another approver of the team confirms (four eyes)."
CONFIRMED = "Confirmed: {n} cop{ies} of {family} will be deleted now."
CANCELLED = "Run cancelled: nothing was deleted."
END_OF_LIFE_SET = "End of life of {family} v{number} set to {date}."
END_OF_LIFE_CLEARED = "End of life of {family} v{number} cleared."


class RuleForm(forms.Form):
    keep_last = forms.IntegerField(label="Keep the last N versions in each account", required=False, min_value=1,
                                   max_value=retention.KEEP_LAST_MAX,
                                   help_text="Empty: no limit. Copies of older versions are proposed for deletion.")
    delete_after_end_of_life = forms.BooleanField(
        label="Delete copies of a version after its end of life", required=False,
        help_text="The family's team sets each version's end of life; its copies are proposed the day after.")


class EndOfLifeForm(forms.Form):
    end_of_life = forms.DateField(label="End of life", required=False, widget=forms.DateInput(attrs={"type": "date"}),
                                  help_text="Empty: none. Subscribers who delete after the end of life get the "
                                            "copies proposed the day after; nothing is deleted without their approver.")


def _plural(n: int) -> dict:
    return {"n": n, "ies": "y" if n == 1 else "ies"}


def _run_context(access, run) -> dict:
    """What a page needs to show a run and its buttons (the four-eyes rule says why not, if not)."""
    if run is None:
        return {"run": None}
    blocker = None
    if access.can_approve and run.state == run.State.PROPOSED:
        membership = Membership.objects.filter(pk=access.membership.pk).first() if access.membership else None
        blocker = retention.confirm_blocker(membership=membership, policy=run.policy)
    items = list(run.items.all())
    return {"run": run, "items": items, "blocker": blocker[1] if blocker else "",
            "can_decide": access.can_approve and run.state == run.State.PROPOSED}


@team_view()
@require_GET
def retention_list(request, access):
    return render(request, "distribution/retention_list.html",
                  {"rows": selectors.retention_rows_for_team(team=access.team)})


@team_view()
@require_GET
def retention_family(request, access, family_id):
    family = selectors.family_get_for_retention(access=access, public_id=family_id)
    policy = selectors.policy_for_family(team=access.team, family=family)
    initial = {"keep_last": policy.keep_last, "delete_after_end_of_life": policy.delete_after_end_of_life} \
        if policy else {}
    context = {"family": family, "policy": policy, "form": RuleForm(initial=initial), "candidates": [],
               "page": None, "run": None}
    if policy is not None:
        run = selectors.open_run_for_policy(policy=policy)
        context |= _run_context(access, run)
        if run is None:  # what a proposal would hold now: the proposable copies and those held back
            context["candidates"] = selectors.retention_candidates(policy=policy)
            context["proposable"] = sum(1 for c in context["candidates"] if not c.held)
        context["page"] = Paginator(selectors.runs_for_policy(policy=policy), RUNS_PER_PAGE) \
            .get_page(request.GET.get("page"))
    return render(request, "distribution/retention_family.html", context)


@team_view(Capability.APPROVE)
@require_POST
def retention_rule(request, access, family_id):
    family = selectors.family_get_for_retention(access=access, public_id=family_id)
    form = RuleForm(request.POST)
    if form.is_valid():
        try:
            policy = retention.policy_set(access=access, family=family, **form.cleaned_data)
        except ValidationError as exc:
            messages.error(request, " ".join(exc.messages))
        else:
            text = RULE_SAVED if policy.keep_last or policy.delete_after_end_of_life else RULE_OFF
            messages.success(request, text.format(family=family.name))
    else:
        messages.error(request, " ".join(e for errors in form.errors.values() for e in errors))
    return redirect("distribution:retention-family", team_id=access.team.public_id, family_id=family.public_id)


@team_view(Capability.APPROVE)
@require_POST
def retention_propose(request, access, family_id):
    family = selectors.family_get_for_retention(access=access, public_id=family_id)
    policy = selectors.policy_for_family(team=access.team, family=family)
    try:
        if policy is None:
            raise ValidationError(retention.NO_RULE)
        run = retention.retention_propose(policy=policy, access=access)
    except ValidationError as exc:
        messages.error(request, " ".join(exc.messages))
    else:
        messages.success(request, PROPOSED.format(family=family.name, **_plural(run.items.count())))
    return redirect("distribution:retention-family", team_id=access.team.public_id, family_id=family.public_id)


@team_view()
@require_GET
def retention_run(request, access, run_id):
    run = selectors.run_get_for_team(access=access, public_id=run_id)
    return render(request, "distribution/retention_run.html",
                  {"family": run.policy.family, **_run_context(access, run)})


@team_view(Capability.APPROVE)
@require_POST
def retention_confirm(request, access, run_id):
    run = selectors.run_get_for_team(access=access, public_id=run_id)
    try:
        retention.run_confirm(access=access, run=run)
    except ValidationError as exc:
        messages.error(request, " ".join(exc.messages))
    else:
        messages.success(request, CONFIRMED.format(family=run.policy.family.name, **_plural(run.items.count())))
    return redirect("distribution:retention-run", team_id=access.team.public_id, run_id=run.public_id)


@team_view(Capability.APPROVE)
@require_POST
def retention_cancel(request, access, run_id):
    run = selectors.run_get_for_team(access=access, public_id=run_id)
    try:
        retention.run_cancel(access=access, run=run)
    except ValidationError as exc:
        messages.error(request, " ".join(exc.messages))
    else:
        messages.success(request, CANCELLED)
    return redirect("distribution:retention-run", team_id=access.team.public_id, run_id=run.public_id)


@team_view()
@require_GET
def retention_end_of_life(request, access, family_id):
    family = selectors.family_get_for_source_team(access=access, public_id=family_id)
    # One form per version, each its own <form>: the ids only tell their fields apart on the page.
    versions = [(v, EndOfLifeForm(initial={"end_of_life": v.end_of_life}, auto_id=f"eol_{v.number}_%s"))
                for v in selectors.versions_for_family(family=family)]
    return render(request, "distribution/retention_end_of_life.html", {"family": family, "versions": versions})


@team_view(Capability.REQUEST_SHARE)
@require_POST
def retention_end_of_life_set(request, access, version_id):
    version = selectors.version_get_for_source_team(access=access, public_id=version_id)
    form = EndOfLifeForm(request.POST)
    if form.is_valid():
        try:
            version = retention.version_set_end_of_life(access=access, version=version,
                                                        end_of_life=form.cleaned_data["end_of_life"])
        except ValidationError as exc:
            messages.error(request, " ".join(exc.messages))
        else:
            text = END_OF_LIFE_SET if version.end_of_life else END_OF_LIFE_CLEARED
            messages.success(request, text.format(family=version.family.name, number=version.number,
                                                  date=version.end_of_life))
    else:
        messages.error(request, " ".join(e for errors in form.errors.values() for e in errors))
    if request.POST.get("next") == "family":  # posted from the family's own page (the partial's row)
        return redirect("distribution:family-detail", team_id=access.team.public_id,
                        family_id=version.family.public_id)
    return redirect("distribution:retention-end-of-life", team_id=access.team.public_id,
                    family_id=version.family.public_id)
