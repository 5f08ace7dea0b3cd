"""Release jobs: thin, like views. They take a version's id, re-read it and call one service, and
are safe to run twice (the release claims its version in the share's transaction)."""

from rq import get_current_job

from audit.context import job_context
from distribution.services import releases


def release_job(version_id) -> None:
    """``version_id``: the FamilyVersion's public id (or its primary key)."""
    job = get_current_job()
    with job_context(job_id=job.id if job else f"family-version-release-{version_id}"):
        releases.version_release(version_id=version_id)
