"""The tag keys a team's copies carry from their source (Team.copy_tag_allowlist), set on the team's
settings page: keys checked, stored as a list, the change in the trail."""

import pytest
from django.core.exceptions import ValidationError
from django.urls import reverse

from accounts import services as account_services
from accounts import tag_keys
from accounts.models import Team
from accounts.selectors import TeamAccess
from audit.models import AuditEvent


def _settings(world, **changes):
    team = world.alpha
    data = {"request_expiry_days": team.request_expiry_days, "approval_lifetime_days": team.approval_lifetime_days,
            "export_disk_format": getattr(team, "export_disk_format", "qcow2"), **changes}
    return data


def _url(world):
    return reverse("accounts:team-settings", kwargs={"team_id": world.alpha.public_id})


def test_it_saves_the_keys_one_per_line(world, login):
    client = login(world.admin)
    response = client.post(_url(world), _settings(world, copy_tag_allowlist="env\r\n cost-centre \r\n\r\nenv\r\n"))
    assert response.status_code == 302
    assert Team.objects.get(pk=world.alpha.pk).copy_tag_allowlist == ["env", "cost-centre"]
    event = AuditEvent.objects.get(action="team.settings_changed")
    assert event.details["after"]["copy_tag_allowlist"] == ["env", "cost-centre"]
    assert event.details["before"]["copy_tag_allowlist"] == []
    page = client.get(_url(world)).content.decode()
    assert "env\ncost-centre</textarea>" in page


@pytest.mark.parametrize("keys, message", [
    ("omiportal:share", tag_keys.RESERVED.format(key="omiportal:share")),
    ("AWS:Name", tag_keys.RESERVED.format(key="AWS:Name")),
    ("k" * 256, tag_keys.TOO_LONG.format(key="k" * 40 + "...")),
    ("\n".join(f"key-{n}" for n in range(tag_keys.MAX_KEYS + 1)), tag_keys.TOO_MANY),
])
def test_it_refuses_keys_a_copy_cannot_carry(world, login, keys, message):
    response = login(world.admin).post(_url(world), _settings(world, copy_tag_allowlist=keys))
    assert response.status_code == 400
    assert message in [str(e) for e in response.context["form"].errors["copy_tag_allowlist"]]
    assert Team.objects.get(pk=world.alpha.pk).copy_tag_allowlist == []


def test_the_service_holds_the_same_rule(world):
    from accounts.models import Membership

    access = TeamAccess(user=world.admin, team=world.alpha,
                        membership=Membership.objects.get(user=world.admin, team=world.alpha))
    with pytest.raises(ValidationError) as refused:
        account_services.team_settings_change(access=access, copy_tag_allowlist=["omiportal:share"])
    assert tag_keys.RESERVED.format(key="omiportal:share") in str(refused.value)
    team = account_services.team_settings_change(access=access, copy_tag_allowlist=[" env ", "env"])
    assert team.copy_tag_allowlist == ["env"]


def test_a_member_cannot_change_it(world, login):
    response = login(world.member).post(_url(world), _settings(world, copy_tag_allowlist="env"))
    assert response.status_code == 403
    assert Team.objects.get(pk=world.alpha.pk).copy_tag_allowlist == []
