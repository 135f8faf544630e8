"""The instructor plugin surface: typed options, `plan()` and `run()`, and the services the core hands in.

An instructor never knows which driver runs it (`gen run` or a Celery worker) nor which provider answers:
`run()` receives the unit and a mapping of teacher name -> `gen.types.Teacher`, and returns records. It must
be deterministic given its inputs and the replies it gets, so a unit that is run again replays the calls
already made instead of paying for them twice (seed any randomness from `unit.key`).

Instructors never open the database. What they need from it reaches them as `JobServices`, built by the
execution core: `earlier` reads earlier jobs' conversations (at plan time), `seen` is the job's near-duplicate
index shared by every worker (at run time).

A plugin in one screen::

    class EchoOptions(InstructorOptions):
        prompts: list[str]

    class Echo(Instructor[EchoOptions]):
        name = "echo"
        Options = EchoOptions

        def plan(self):
            for i, p in enumerate(self.options.prompts):
                yield PlannedUnit(f"p{i}", {"prompt": p})

        async def run(self, unit, teachers):
            reply = await teachers["main"].chat([{"role": "user", "content": unit.payload["prompt"]}])
            return [NewRecord(unit.key, [{"role": "user", "content": unit.payload["prompt"]},
                                         {"role": "assistant", "content": reply.text}])]
"""
from __future__ import annotations

import random
from abc import ABC, abstractmethod
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Generic, Protocol, TypeVar

from pydantic import BaseModel, ConfigDict, ValidationError

from gen.config import JobSpec
from gen.errors import JobFileError
from gen.types import NewRecord, Teacher

if TYPE_CHECKING:
    from gen.sources import SourceConversation


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


class SeenTexts(Protocol):
    """The job's near-duplicate index, shared by every worker of the job (gen.neardup.NearDupIndex)."""

    async def add_if_new(self, scope: str, text: str, *, key: str | None = None, threshold: float = 0.8) -> bool:
        """True (and remembered) when no text of `scope` seen so far in the job is a near-duplicate of `text`."""
        ...

    async def remember(self, scope: str, items: list[tuple[str, str]], *, threshold: float = 0.8) -> None:
        """Count `(key, text)` items (earlier jobs' texts) as seen in `scope`, without checking them."""
        ...


class EarlierJobs(Protocol):
    """Earlier jobs' records, read at plan time (gen.core.services.DatabaseEarlierJobs)."""

    def conversations(self, ref: str, *, label: str, option: str) -> "list[SourceConversation]":
        """The conversation records of job `ref` (id or name); JobFileError naming `option` when there are none."""
        ...


@dataclass
class JobServices:
    """What the execution core hands an instructor instead of a database."""

    earlier: EarlierJobs | None = None
    seen: SeenTexts | None = None


O = TypeVar("O", bound=InstructorOptions)

MAX_UNITS = 100_000_000  # units per job; a larger dataset is several jobs (and `gen assemble`)


class Instructor(ABC, Generic[O]):
    name: ClassVar[str]
    summary: ClassVar[str] = ""
    Options: ClassVar[type[InstructorOptions]] = InstructorOptions
    teacher_roles: ClassVar[tuple[str, ...]] = ("main",)
    # Expected teacher calls per unit by teacher role, for `gen estimate` (gen.core.estimate reads it from the
    # instance): a class attribute, or a property when the calls depend on the options (riddles' verification,
    # roleplay's turns). A number is the expected calls (the estimate's range is 0.75x-1.5x of it); a (low, high)
    # pair bounds calls that may not happen at all (a judge asked only sometimes). A role left out counts one
    # call per unit, unless the instructor declares none.
    calls_per_unit: dict[str, float | tuple[float, float]] = {}

    def __init__(self, options: O, job: JobSpec, services: JobServices | None = None):
        self.options: O = options
        self.job = job
        self.services = services or JobServices()

    def earlier_conversations(self, ref: str, *, option: str) -> "list[SourceConversation]":
        """An earlier job's conversations, through the services the core gave (never a database of our own)."""
        if self.services.earlier is None:
            raise JobFileError(self.job.source, [f"{option}: reading job '{ref}' needs the gen database, "
                                                 "which this command does not open"])
        return self.services.earlier.conversations(ref, label=self.job.source, option=option)

    async def is_new_text(self, scope: str, text: str, *, key: str | None = None,
                          threshold: float | None) -> bool:
        """True unless the job's near-duplicate index already holds a near-duplicate of `text` (always True
        when the core gave no index or the threshold is None: near-duplicate removal off)."""
        if self.services.seen is None or threshold is None:
            return True
        return await self.services.seen.add_if_new(scope, text, key=key, threshold=threshold)

    @classmethod
    def from_job(cls, job: JobSpec, services: JobServices | None = None) -> "Instructor[Any]":
        """Validate the job's instructor block against `Options` and check the teachers it needs exist."""
        try:
            options = cls.Options.model_validate(job.instructor)
        except ValidationError as exc:
            raise JobFileError(job.source, [_describe(e) for e in exc.errors()]) from None
        count = getattr(options, "count", None)
        if isinstance(count, (int, float)) and count > MAX_UNITS:
            raise JobFileError(job.source, [f"instructor.count: at most {MAX_UNITS:,} units per job "
                                            f"(got {count:,.0f}); split a larger dataset into several jobs"])
        for role, problem in cls.required_teachers(options).items():
            if role not in job.teachers:
                raise JobFileError(job.source, [problem])
        return cls(options, job, services)

    @classmethod
    def required_teachers(cls, options: Any) -> dict[str, str]:
        """Teacher name -> the error shown when the job file lacks it. Override to add teachers that only
        some options need (a judge, a solver)."""
        uses = ", ".join(cls.teacher_roles)
        return {role: f"teachers: instructor '{cls.name}' needs a teacher named '{role}' (it uses: {uses})"
                for role in cls.teacher_roles}

    @abstractmethod
    def plan(self) -> Iterator[PlannedUnit]:
        """The units of work, each with a key unique within the job. Called once, when the job is created."""

    @abstractmethod
    async def run(self, unit: UnitInput, teachers: Mapping[str, Teacher]) -> list[NewRecord]:
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
