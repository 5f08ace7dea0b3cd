"""Render tests/api_authz_matrix.json as docs/api/authorization-matrix.md, every cell spelled out.

    .venv/bin/python tests/render_api_authz_matrix.py          # rewrite docs/api/authorization-matrix.md
    .venv/bin/python tests/render_api_authz_matrix.py --check  # exit 1 if the committed doc is stale

tests/test_api_authz.py checks every cell against the running API with the same rules
(tests/api_routes.py ``cell``), and fails when the doc no longer matches the JSON.
"""

import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DOC_FILE = ROOT / "docs" / "api" / "authorization-matrix.md"


def render() -> str:
    from tests.api_routes import MATRIX, api_routes, cell

    routes = api_routes()
    principals = list(MATRIX["principals"])
    head = ["Method", "Path", "URL name", "Who", *principals]
    lines = [
        "# API authorization matrix",
        "",
        "Generated from `tests/api_authz_matrix.json` by `tests/render_api_authz_matrix.py`; do not edit by hand. "
        "`tests/test_api_authz.py` makes every call below with a real token and checks its status, that a refusal "
        "changes nothing, and that it is recorded (`access.denied`, with the token under `details.via`).",
        "",
        "Cells are HTTP statuses. 403: the token's role does not allow it; 404: another team's object (its "
        "existence is not told); 401: no usable token. A service token is capped at member or auditor and never "
        "approves; a token never exceeds its person's current role. Methods a route does not list answer 405.",
        "",
        "| " + " | ".join(head) + " |",
        "|" + "---|" * len(head),
    ]
    for path, methods in MATRIX["routes"].items():
        name = routes[path].name if path in routes else "?"
        for method, entry in methods.items():
            cells = [str(cell(path, method, p) or "n/a") for p in principals]
            lines.append("| " + " | ".join([method, f"`{path}`", f"`{name}`", entry["who"], *cells]) + " |")
    two_factor = MATRIX["two_factor"]
    lines += ["", "## In a team that requires two-factor sign-in", "", two_factor["about"], "",
              "| Method | Path | Column | Status |", "|---|---|---|---|"]
    for path, methods in two_factor["overrides"].items():
        for method, cells in methods.items():
            for principal, status in cells.items():
                lines.append(f"| {method} | `{path}` | {principal} | {status} |")
    lines += ["", "## Columns", "", "| Column | Token |", "|---|---|"]
    for name, spec in MATRIX["principals"].items():
        lines.append(f"| {name} | {spec['about']} |")
    lines += ["", "## Groups", "", "| Group | Columns allowed |", "|---|---|"]
    for group, members in MATRIX["groups"].items():
        lines.append(f"| {group} | {', '.join(members)} |")
    lines += ["", "## Without a token", "", "| Path | Who |", "|---|---|"]
    for path, who in MATRIX["public"].items():
        lines.append(f"| `{path}` | {who} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str]) -> int:
    sys.path.insert(0, str(ROOT))
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "omiportal.settings")
    os.environ.setdefault("DJANGO_DEBUG", "true")  # development defaults: no secrets needed to list URLs
    import django

    django.setup()
    text = render()
    if "--check" in argv:
        if not DOC_FILE.exists() or DOC_FILE.read_text() != text:
            print(f"{DOC_FILE} is stale: run .venv/bin/python tests/render_api_authz_matrix.py", file=sys.stderr)
            return 1
        return 0
    DOC_FILE.parent.mkdir(parents=True, exist_ok=True)
    DOC_FILE.write_text(text)
    print(f"wrote {DOC_FILE}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
