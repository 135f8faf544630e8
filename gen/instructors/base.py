"""The instructor plugin surface: options, `plan()` and `run()`.

An instructor never knows which driver runs it (`gen run` or a Celery worker) nor which provider answers:
`run()` receives the unit and a mapping of teacher name -> teacher, and returns records. It must be
deterministic given its inputs and the replies it gets, so a unit that is run again replays the calls
already made instead of paying for them twice (seed any randomness from `unit.key`).
"""
from __future__ import annotations

import random
from abc import ABC, abstractmethod
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, ValidationError

from gen.config import JobSpec
from gen.errors import JobFileError
from gen.types import NewRecord


class InstructorOptions(BaseModel):
    """Base of every instructor's options: unknown fields are refused."""

    model_config = ConfigDict(extra="forbid")


@dataclass(frozen=True)
class PlannedUnit:
    key: str
    payload: dict[str, Any]


@dataclass(frozen=True)
class UnitInput:
    key: str
    seq: int
    payload: dict[str, Any]

    def rng(self) -> random.Random:
        """Randomness that is the same every time this unit runs."""
        return random.Random(self.key)


class Instructor(ABC):
    name: ClassVar[str]
    summary: ClassVar[str] = ""
    Options: ClassVar[type[InstructorOptions]] = InstructorOptions
    teacher_roles: ClassVar[tuple[str, ...]] = ("main",)

    def __init__(self, options: InstructorOptions, job: JobSpec):
        self.options = options
        self.job = job

    @classmethod
    def from_job(cls, job: JobSpec) -> "Instructor":
        """Validate the job's instructor block against `Options` and check the teachers it needs exist."""
        try:
            options = cls.Options.model_validate(job.instructor)
        except ValidationError as exc:
            raise JobFileError(job.source, [_describe(e) for e in exc.errors()]) from None
        for role, problem in cls.required_teachers(options).items():
            if role not in job.teachers:
                raise JobFileError(job.source, [problem])
        return cls(options, job)

    @classmethod
    def required_teachers(cls, options: InstructorOptions) -> dict[str, str]:
        """Teacher name -> the error shown when the job file lacks it. Override to add teachers that only
        some options need (a judge, a solver)."""
        uses = ", ".join(cls.teacher_roles)
        return {role: f"teachers: instructor '{cls.name}' needs a teacher named '{role}' (it uses: {uses})"
                for role in cls.teacher_roles}

    @abstractmethod
    def plan(self) -> Iterator[PlannedUnit]:
        """The units of work, each with a key unique within the job. Called once, when the job is created."""

    @abstractmethod
    async def run(self, unit: UnitInput, teachers: Mapping[str, Any]) -> list[NewRecord]:
        """Do one unit with the teachers given and return its records (raise OutputRejected to reject it)."""


def _describe(err: dict[str, Any]) -> str:
    path = "instructor" + "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in err["loc"])
    kind, ctx = err["type"], err.get("ctx") or {}
    messages = {
        "extra_forbidden": "unknown field",
        "missing": "is required",
        "greater_than": f"must be > {ctx.get('gt')}",
        "greater_than_equal": f"must be >= {ctx.get('ge')}",
        "less_than_equal": f"must be <= {ctx.get('le')}",
        "less_than": f"must be < {ctx.get('lt')}",
        "int_type": "must be an integer",
        "int_parsing": "must be an integer",
        "float_type": "must be a number",
        "float_parsing": "must be a number",
        "string_type": "must be a string",
        "list_type": "must be a list",
        "bool_type": "must be true or false",
        "bool_parsing": "must be true or false",
        "too_short": f"must have at least {ctx.get('min_length')} items",
    }
    return f"{path}: {messages.get(kind, err['msg'][0].lower() + err['msg'][1:])}"
