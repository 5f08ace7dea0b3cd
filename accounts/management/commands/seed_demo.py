"""Demo teams and people in every role; with --sandbox, the sandbox's accounts too.

Idempotent: running it again changes nothing and prints the same logins.
"""

import json
from pathlib import Path

from django.core.management.base import BaseCommand, CommandError
from django.db import transaction

from accounts import services
from accounts.models import CloudAccount, Membership, Role, Team, User
from accounts.selectors import TeamAccess
from audit.context import job_context

DEMO_PASSWORD = "omiportal-demo"
TEAMS = {
    "Platform": ["admin", "approver", "member", "auditor"],
    "Research": ["admin", "approver", "member"],
}
COMPLIANCE_EMAIL = "compliance@demo.test"
# Which of the sandbox's seeded accounts each demo team registers.
SANDBOX_ACCOUNTS = {"Platform": ["alpha", "delta"], "Research": ["beta", "gamma", "epsilon"]}


def demo_email(team: str, role: str) -> str:
    return f"{role}@{team.lower()}.demo.test"


DEMO_EMAILS = {demo_email(team, role) for team, roles in TEAMS.items() for role in roles} | {COMPLIANCE_EMAIL}
NOT_A_DEMO_DATABASE = (
    "This database holds {users} user(s) and {teams} team(s) that are not the demo's: seed_demo only runs "
    "on an empty database or on the demo's, so that known demo passwords never reach real data. "
    "Point DATABASE_URL (or OMIPORTAL_VAR_DIR) at another database, or start a demo over with `make clean`."
)


class Command(BaseCommand):
    help = "Create demo teams and users (password: omiportal-demo); optionally register sandbox accounts."

    def add_arguments(self, parser):
        parser.add_argument("--sandbox", type=Path, help="The sandbox's --describe JSON file.")

    def handle(self, *args, sandbox=None, **options):
        with job_context(job_id="cmd-seed-demo"), transaction.atomic():
            _refuse_unless_demo_data()
            teams = {name: self._team(name, roles) for name, roles in TEAMS.items()}
            if not User.objects.filter(email=COMPLIANCE_EMAIL).exists():
                User.objects.create_user(email=COMPLIANCE_EMAIL, password=DEMO_PASSWORD,
                                         full_name="Casey Compliance", is_compliance_officer=True)
        if sandbox:
            self._register_sandbox_accounts(teams, json.loads(sandbox.read_text()))
        self.stdout.write(f"Demo logins (password for all: {DEMO_PASSWORD}):")
        for name, roles in TEAMS.items():
            for role in roles:
                self.stdout.write(f"  {demo_email(name, role):34} {role} of {name}")
        self.stdout.write(f"  {COMPLIANCE_EMAIL:34} compliance officer (every team, read-only)")

    def _team(self, name: str, roles: list[str]) -> Team:
        team, _ = Team.objects.get_or_create(name=name)
        for role in roles:
            email = demo_email(name, role)
            user = User.objects.filter(email=email).first() or User.objects.create_user(
                email=email, password=DEMO_PASSWORD, full_name=f"{role.title()} of {name}")
            Membership.objects.get_or_create(team=team, user=user, defaults={"role": role})
        return team

    def _register_sandbox_accounts(self, teams: dict, describe: dict) -> None:
        """Give each demo team sandbox accounts, and validate them against the sandbox."""
        by_name = {item["name"]: item for item in describe["accounts"]}
        for team_name, names in SANDBOX_ACCOUNTS.items():
            for name in names:
                self._register(teams[team_name], by_name[name])

    def _register(self, team: Team, item: dict) -> None:
        label = f"{item['name']}-{item['region']}"
        if CloudAccount.objects.filter(team=team, label=label).exists():
            return
        admin = Membership.objects.get(team=team, role=Role.ADMIN, user__email=demo_email(team.name, "admin"))
        access = TeamAccess(user=admin.user, team=team, membership=admin)
        with job_context(job_id="cmd-seed-demo", actor=admin.user):
            account = services.cloud_account_create(
                access=access, label=label, region=item["region"], access_key=item["access_key"],
                secret_key=item["secret_key"], export_bucket=item["bucket"], accepts_incoming_shares=True,
            )
            account = services.cloud_account_validate(access=access, account=account)
        if not account.is_valid:
            return  # nothing to confirm yet: the keys can be checked, then confirmed, on the Cloud accounts page
        # Registered by the admin, confirmed as the team's own by someone else (INS-02), as in real use.
        approver = Membership.objects.get(team=team, user__email=demo_email(team.name, "approver"))
        with job_context(job_id="cmd-seed-demo", actor=approver.user):
            services.cloud_account_confirm_ownership(
                access=TeamAccess(user=approver.user, team=team, membership=approver), account=account)


def _refuse_unless_demo_data() -> None:
    # Demo users share one published password; created in a real database they would be accounts
    # anyone can sign in to, in teams with real people beside them.
    users = User.objects.exclude(email__in=DEMO_EMAILS).count()
    teams = Team.objects.exclude(name__in=TEAMS).count()
    if users or teams:
        raise CommandError(NOT_A_DEMO_DATABASE.format(users=users, teams=teams))
