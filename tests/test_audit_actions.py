"""The registry of audit actions (audit/actions.py): the recorder holds to it, the source and the
benchmark's data use only declared actions, every declared action is written, the README's table
is up to date."""

import ast
import re
from pathlib import Path

import pytest
from django.urls import reverse

from audit import actions
from audit.errors import AuditError
from audit.models import AuditEvent
from audit.recorder import record
from bench import fill
from review import forms
from tests import render_audit_actions
from transfers.models import Share

ROOT = Path(__file__).resolve().parent.parent
# The packages that record events (outscale imports no app, so it records none).
PRODUCT = ("omiportal", "api", "webhooks", "distribution", "review", "transfers", "accounts", "audit")
REGISTRY = ROOT / "audit" / "actions.py"


def _sources(packages=PRODUCT):
    for package in packages:
        for path in sorted((ROOT / package).rglob("*.py")):
            if "migrations" not in path.parts and path != REGISTRY:
                yield path, ast.parse(path.read_text(), filename=str(path))


def _action_literals(packages=PRODUCT) -> dict[str, list[str]]:
    """Every string constant shaped like an action (ACTION_RE), with where it is."""
    found: dict[str, list[str]] = {}
    for path, tree in _sources(packages):
        for node in ast.walk(tree):
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and actions.ACTION_RE.match(node.value):
                found.setdefault(node.value, []).append(f"{path.relative_to(ROOT)}:{node.lineno}")
    return found


def _built_names() -> dict[str, list[str]]:
    """Action names put together at run time: ``action=f"..."`` or ``"..." + x``, by file."""
    built: dict[str, list[str]] = {}
    for path, tree in _sources():
        for node in ast.walk(tree):
            pieces = isinstance(node, ast.keyword) and isinstance(node.value, ast.JoinedStr | ast.BinOp)
            if pieces and node.arg == "action":
                built.setdefault(path.relative_to(ROOT).as_posix(), []).append(ast.unparse(node.value))
    return built


# --- The recorder holds to the registry -------------------------------------------------------


def test_it_refuses_an_undeclared_action(db):
    with pytest.raises(AuditError, match=r"'share\.exported' is not declared: add it to audit/actions\.py"):
        record(action="share.exported", actor=None)
    assert not AuditEvent.objects.exists()


def test_it_still_refuses_a_badly_formed_action_by_the_naming_rule(db):
    with pytest.raises(AuditError, match="past tense"):
        record(action="Share.Exported", actor=None)


@pytest.mark.parametrize("outcome", ["success", "failed"])
def test_it_refuses_a_denial_recorded_with_another_outcome(db, outcome):
    with pytest.raises(AuditError, match="'access.denied' is a denial"):
        record(action="access.denied", outcome=outcome, actor=None)
    assert not AuditEvent.objects.exists()


def test_it_records_a_declared_action_with_any_outcome_that_is_not_a_denial(db):
    assert [record(action="share.approved", outcome=outcome, actor=None).outcome
            for outcome in ("success", "denied", "failed")] == ["success", "denied", "failed"]


# --- The registry itself --------------------------------------------------------------------------


def test_every_declared_action_follows_the_naming_rule_and_has_a_group():
    for name, action in actions.ACTIONS.items():
        assert name == action.name and actions.ACTION_RE.match(name) and len(name) <= 64
        assert actions.group_of(name) in actions.GROUPS
        assert action.targets, f"{name} declares no target type (use actions.NONE or actions.ANY)"
    assert [a for _prefix, _label, group in actions.grouped() for a in group] == list(actions.ACTIONS.values())


def test_the_registry_imports_nothing_of_the_portal():
    tree = ast.parse(REGISTRY.read_text())
    imported = {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}
    imported |= {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
    assert imported <= {"re", "typing"}


# --- The source writes only declared actions, and every declared action is written -------------------


def test_every_action_named_in_the_source_is_declared():
    undeclared = {name: where for name, where in _action_literals().items() if name not in actions.ACTIONS}
    assert not undeclared, f"declare these in audit/actions.py: {undeclared}"


def test_every_action_name_built_at_run_time_is_known_to_the_registry():
    # A name put together from pieces shows no literal to the test above: its file must say, in
    # the registry (Action.built_in), which names it builds, and each must be declared.
    built_in = {action.built_in.split(":")[0] for action in actions.ACTIONS.values() if action.built_in}
    assert set(_built_names()) == built_in, _built_names()


def test_a_share_ending_records_a_declared_action_for_every_final_state():
    # transfers/services/share_state.py records f"share.{state}" when a share reaches a final state.
    assert not [state for state in Share.FINAL_STATES if f"share.{state}" not in actions.ACTIONS]


def test_every_declared_action_is_written_somewhere():
    written = set(_action_literals())
    unwritten = [name for name, action in actions.ACTIONS.items() if name not in written and not action.built_in]
    assert not unwritten, f"declared but written nowhere (remove them, or say where in built_in): {unwritten}"


def test_the_scan_sees_the_real_call_sites():
    literals = _action_literals()
    assert "accounts/access.py" in " ".join(literals["access.denied"])
    assert "transfers/services/share_state.py" in _built_names()


# --- The benchmark's data ------------------------------------------------------------------------------


def test_the_benchmark_seeds_only_declared_actions_with_outcomes_they_take():
    seeded = [(action.name, outcome) for action, outcome, _weight in fill.EVENT_KINDS]
    assert all(name in actions.ACTIONS for name, _ in seeded)
    assert all(outcome == "denied" for name, outcome in seeded if actions.ACTIONS[name].denial)
    assert all(action.targets[0] in fill.TARGET_KINDS for action, _outcome, _weight in fill.EVENT_KINDS)


def test_the_benchmark_names_no_undeclared_action_anywhere():
    undeclared = {name: where for name, where in _action_literals(("bench",)).items() if name not in actions.ACTIONS}
    assert not undeclared


# --- The README --------------------------------------------------------------------------------------


def test_the_readme_table_of_actions_is_up_to_date():
    readme = render_audit_actions.README.read_text()
    assert readme == render_audit_actions.rewritten(readme), (
        "README.md's table of audit actions does not match audit/actions.py; regenerate it with "
        ".venv/bin/python tests/render_audit_actions.py")


def test_the_readme_table_lists_every_action_once():
    table = render_audit_actions.render()
    assert sorted(re.findall(r"^\| `([a-z_.]+)` \|", table, flags=re.M)) == sorted(actions.ACTIONS)


# --- The review page's action filter -------------------------------------------------------------------


def test_the_action_filter_suggests_every_declared_action_and_each_group_prefix(world, login):
    page = login(world.auditor).get(reverse("audit:event-list", kwargs={"team_id": world.alpha.public_id}))
    html = page.content.decode()
    assert 'list="audit-actions"' in html
    datalist = re.search(r'<datalist id="audit-actions">(.*?)</datalist>', html, flags=re.S).group(1)
    suggested = re.findall(r'<option value="([^"]+)"', datalist)
    assert sorted(suggested) == sorted([*actions.ACTIONS, *(f"{prefix}." for prefix in actions.GROUPS)])
    assert 'label="An approver allowed a requested copy' in datalist


def test_every_suggestion_is_a_valid_filter(db):
    for value, _label in forms.ACTION_SUGGESTIONS:
        form = forms.AuditFilterForm({"action": value}, site_wide=True)
        assert form.is_valid(), (value, form.errors)
        assert form.filters().action == value
