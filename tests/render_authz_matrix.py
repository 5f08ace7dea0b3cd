"""Render tests/authz_matrix.json as docs/authorization-matrix.md, the auditors' table.

    .venv/bin/python tests/render_authz_matrix.py          # rewrite docs/authorization-matrix.md
    .venv/bin/python tests/render_authz_matrix.py --check  # exit 1 if the committed doc is stale

tests/test_authz.py loads the same JSON and checks every URL against it; a test fails when the
doc no longer matches the JSON.
"""

import json
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MATRIX_FILE = ROOT / "tests" / "authz_matrix.json"
DOC_FILE = ROOT / "docs" / "authorization-matrix.md"
COLUMNS = ("member", "approver", "admin", "auditor", "compliance")


def load() -> dict:
    return json.loads(MATRIX_FILE.read_text())


def _routes() -> dict[str, str]:
    from django.urls import URLPattern, URLResolver, get_resolver

    routes: dict[str, str] = {}

    def walk(resolver, namespace, prefix):
        for pattern in resolver.url_patterns:
            if isinstance(pattern, URLResolver):
                # The admin's instance namespace is otpadmin; its URLs are named by the application's, admin.
                ns = f"{namespace}{pattern.app_name or pattern.namespace}:" if pattern.namespace else namespace
                walk(pattern, ns, prefix + str(pattern.pattern))
            elif isinstance(pattern, URLPattern) and pattern.name:
                routes.setdefault(namespace + pattern.name, "/" + prefix + str(pattern.pattern))

    walk(get_resolver(), "", "")
    return routes


def render(matrix: dict, routes: dict[str, str]) -> str:
    roles = matrix["roles"]
    head = ["URL name", "Path pattern", "Methods", *COLUMNS, "other team", "anonymous"]
    lines = [
        "# Authorization matrix",
        "",
        "Generated from `tests/authz_matrix.json` by `tests/render_authz_matrix.py`; do not edit by hand.",
        "`tests/test_authz.py` checks every URL of the portal against the same file.",
        "",
        "Cells: **allow** = the role gets the page or performs the action; **403** = refused and audited "
        "(`access.denied`); **404** = another team's URL or object, refused and audited; "
        "**login** = sent to sign in. "
        "Every POST needs a CSRF token; POST-only actions answer GET with 405.",
        "",
        "## Team URLs",
        "",
        "| " + " | ".join(head) + " |",
        "|" + "---|" * len(head),
    ]
    for name, entry in sorted(matrix["team_urls"].items()):
        allowed = set(roles[entry["who"]])
        cells = ["allow" if role in allowed else "403" for role in COLUMNS]
        lines.append("| " + " | ".join([f"`{name}`", f"`{routes.get(name, '?')}`", ", ".join(entry["methods"]),
                                         *cells, "404", "login"]) + " |")
    lines += ["", "## Site-wide audit pages (compliance officers only)", "",
              "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name in sorted(matrix["compliance_only"]):
        cells = ["allow" if role == "compliance" else "403" for role in COLUMNS]
        lines.append("| " + " | ".join([f"`{name}`", f"`{routes.get(name, '?')}`", "GET", *cells, "403",
                                         "login"]) + " |")
    lines += ["", "## URLs without a team", "", "| URL name | Path pattern | Who |", "|---|---|---|"]
    for name, who in sorted(matrix["unscoped"].items()):
        lines.append(f"| `{name}` | `{routes.get(name, '?')}` | {who} |")
    lines += ["", "## Admin site", "",
              "Staff sign in to /admin/ with a password and a TOTP code; anyone else is sent to that sign-in. "
              "Staff below hold every model permission; superusers are refused the same things.", "",
              "| URL name | Path pattern | Methods | Who |", "|---|---|---|---|"]
    for name, entry in sorted(matrix.get("admin_urls", {}).items()):
        path = routes.get(name, "?").replace("|", "\\|")  # a regex route's alternatives would split the row
        path = "(every URL whose name starts so)" if name.endswith("*") else f"`{path}`"
        lines.append(f"| `{name}` | {path} | {', '.join(entry['methods'])} | {entry['who']} |")
    lines += ["", "| Who | Meaning |", "|---|---|"]
    for who, meaning in sorted(matrix.get("admin_who", {}).items()):
        lines.append(f"| {who} | {meaning} |")
    lines += ["", "## Role groups", "", "| Group | Roles |", "|---|---|"]
    for group, members in sorted(roles.items()):
        lines.append(f"| {group} | {', '.join(sorted(members))} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str]) -> int:
    sys.path.insert(0, str(ROOT))
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "omiportal.settings")
    os.environ.setdefault("DJANGO_DEBUG", "true")  # development defaults: no secrets needed to list URLs
    import django

    django.setup()
    text = render(load(), _routes())
    if "--check" in argv:
        if DOC_FILE.read_text() != text:
            print(f"{DOC_FILE} is stale: run .venv/bin/python tests/render_authz_matrix.py", file=sys.stderr)
            return 1
        return 0
    DOC_FILE.parent.mkdir(parents=True, exist_ok=True)
    DOC_FILE.write_text(text)
    print(f"wrote {DOC_FILE}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
