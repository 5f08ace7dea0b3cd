"""Render audit/actions.py as the README's table of audit actions.

    .venv/bin/python tests/render_audit_actions.py          # rewrite the table in README.md
    .venv/bin/python tests/render_audit_actions.py --check  # exit 1 if the committed table is stale

The table sits between two marker comments in README.md's audit trail section; everything
outside them is left alone. tests/test_audit_actions.py fails when it no longer matches the
registry. Plain Python: the registry needs no Django.
"""

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))  # run as a script, from anywhere

from audit import actions  # noqa: E402

README = ROOT / "README.md"
START = "<!-- audit-actions: generated from audit/actions.py by tests/render_audit_actions.py; do not edit -->"
END = "<!-- /audit-actions -->"
NO_MARKERS = f"README.md has no table of audit actions: put the lines {START} and {END} where it goes."


def _target(kind: str) -> str:
    if kind == actions.ANY:
        return "what was refused, if anything"
    return "none" if kind == actions.NONE else f"`{kind}`"


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def render() -> str:
    lines = ["| Action | What it means | Target | Always denied |", "|---|---|---|---|"]
    for _prefix, label, members in actions.grouped():
        lines.append(f"| **{label}** | | | |")
        for action in members:
            targets = " or ".join(_target(kind) for kind in action.targets)
            lines.append(f"| `{action.name}` | {_cell(action.meaning)} | {targets} | "
                         f"{'yes' if action.denial else ''} |")
    return "\n".join(lines) + "\n"


def rewritten(readme: str) -> str:
    """``readme`` with the table between the markers replaced by the registry's."""
    head, start, rest = readme.partition(START + "\n")
    _old, end, tail = rest.partition(END)
    if not start or not end:
        raise ValueError(NO_MARKERS)
    return head + start + render() + end + tail


def main(argv: list[str]) -> int:
    readme = README.read_text()
    text = rewritten(readme)
    if "--check" in argv:
        if readme != text:
            print(f"{README}'s audit actions are stale: run .venv/bin/python tests/render_audit_actions.py",
                  file=sys.stderr)
            return 1
        return 0
    README.write_text(text)
    print(f"wrote the audit actions in {README}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
