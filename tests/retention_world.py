"""Retention's share of the audit-coverage walk (tests/test_audit_coverage.py): its tracked rows and its
steps, kept here so the walk only calls them."""

import outscale
from accounts.keys import credentials_for
from distribution.jobs.retention import retention_delete_job
from distribution.models import (
    Family,
    FamilyVersion,
    InventoryEntry,
    RetentionItem,
    RetentionPolicy,
    RetentionRun,
    Subscription,
)
from tests.transfer_world import image_id

PUBLIC = "Ubuntu-24.04-2025.01.15-0"  # copied into gamma under each version's copy name

# What retention's pages and job change: each change must come with an audit event.
RETENTION_TRACKED = {
    RetentionPolicy: ["keep_last", "delete_after_end_of_life", "changed_by_id"],
    RetentionRun: ["state", "confirmed_by_id", "cancelled_by_id"],
    RetentionItem: ["state", "entry_id"],
}


def walk_retention(w, cloud, client, post, audited) -> None:
    """The destination team's rule for a family of the source team (keep the last version): proposed by its
    admin, cancelled by its approver, proposed again and confirmed by the approver (the admin set the rule); the
    job deletes the older copy in gamma. The source team sets a version's end of life."""
    src, dst = {"team_id": w.source.public_id}, {"team_id": w.dest.public_id}
    family = Family.objects.create(team=w.source, source_account=w.alpha, name="walk-retention", match="name",
                                   name_pattern="walk-ret-*", created_by=w.src_member)
    Subscription.objects.create(family=family, team=w.dest, created_by=w.dst_member).accounts.set([w.gamma])
    creds = credentials_for(w.gamma, purpose="walk")
    versions = []
    for n in (1, 2):
        version = FamilyVersion.objects.create(family=family, number=n, image_id=f"ami-5000000{n}",
                                               image_name=f"walk-ret-{n}")
        copy = outscale.copy_image(creds=creds, source_image_id=image_id(cloud, "gamma", PUBLIC), name=f"walk-ret-v{n}")
        InventoryEntry.objects.create(team=w.dest, account=w.gamma, image_id=copy.image_id, family=family,
                                      version=version, cloud_state="available", is_latest=n == 2)
        versions.append(version)
    fam = {"family_id": family.public_id, **dst}
    client.force_login(w.dst_admin)
    post("distribution:retention-rule", {"keep_last": "1"}, **fam)
    post("distribution:retention-propose", **fam)
    client.force_login(w.dst_approver)
    post("distribution:retention-cancel", run_id=RetentionRun.objects.get(policy__family=family).public_id, **dst)
    post("distribution:retention-propose", **fam)
    run = RetentionRun.objects.get(policy__family=family, state="proposed")
    post("distribution:retention-confirm", run_id=run.public_id, **dst)
    with audited("job distribution retention_delete_job"):
        retention_delete_job(str(run.public_id))  # the queued one, run again later, finds nothing to do
    assert RetentionRun.objects.get(pk=run.pk).state == "done"
    assert RetentionItem.objects.get(run=run).state == "deleted"
    client.force_login(w.src_member)
    post("distribution:retention-end-of-life-set", {"end_of_life": "2030-01-01"}, version_id=versions[0].public_id,
         **src)
    assert str(FamilyVersion.objects.get(pk=versions[0].pk).end_of_life) == "2030-01-01"
