"""The job file's instructor, with the services the core gives it (gen.core.lifecycle opens and plans jobs)."""
from __future__ import annotations

from gen.config import JobSpec
from gen.instructors import Instructor, instructor_class
from gen.instructors.base import JobServices


def load_instructor(spec: JobSpec, *, database_url: str | None = None) -> Instructor:
    """The job's instructor with its options validated (JobFileError on a bad option), given the services it may
    use: earlier jobs' records from `database_url` (default: the configured database)."""
    from gen.config import load_settings
    from gen.core.services import DatabaseEarlierJobs

    services = JobServices(earlier=DatabaseEarlierJobs(database_url or load_settings().database_url))
    return instructor_class(spec.instructor_type, source=spec.source).from_job(spec, services)
