"""Turning a job file into a job in the database, or finding the job it already is."""
from __future__ import annotations

from dataclasses import dataclass

from gen.config import JobSpec
from gen.instructors import Instructor, instructor_class
from gen.instructors.base import JobServices
from gen.store import Job, Store


def load_instructor(spec: JobSpec, *, database_url: str | None = None) -> Instructor:
    """The job's instructor with its options validated (JobFileError on a bad option), given the services it may
    use: earlier jobs' records from `database_url` (default: the configured database)."""
    from gen.config import load_settings
    from gen.core.services import DatabaseEarlierJobs

    services = JobServices(earlier=DatabaseEarlierJobs(database_url or load_settings().database_url))
    return instructor_class(spec.instructor_type, source=spec.source).from_job(spec, services)


@dataclass
class OpenedJob:
    job: Job
    instructor: Instructor
    created: bool


def open_job(store: Store, spec: JobSpec, instructor: Instructor, *, resume: bool = True) -> OpenedJob:
    """The job this spec already is (same name, same spec: resume), or a new one with all its units planned."""
    if resume:
        existing = store.find_resumable(spec.name, spec.spec_hash)
        if existing is not None:
            return OpenedJob(existing, instructor, created=False)
    units = [(u.key, u.payload) for u in instructor.plan()]
    job = store.create_job(name=spec.name, instructor=spec.instructor_type, spec=spec.to_json(),
                           spec_hash=spec.spec_hash, units=units)
    return OpenedJob(job, instructor, created=True)


def spec_of(job: Job) -> JobSpec:
    return JobSpec.from_json(job.spec)
