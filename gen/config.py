"""Job files and settings. A job file is YAML validated against `schemas/job.schema.json` before anything runs."""
from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import yaml

from gen.errors import JobFileError, MissingKeyError
from gen.schemas import schema_problems, validator_for

DEFAULT_KEY_ENV = {"openai": "OPENAI_API_KEY", "mistral": "MISTRAL_API_KEY"}
DEFAULT_BASE_URL = {"openai": "https://api.openai.com/v1", "mistral": "https://api.mistral.ai"}


@dataclass(frozen=True)
class Prices:
    input_per_million: float = 0.0
    output_per_million: float = 0.0
    # Batch APIs (mode: batch): default half the online price, as OpenAI and Mistral charge.
    batch_input_per_million: float | None = None
    batch_output_per_million: float | None = None

    def cost(self, prompt_tokens: int, completion_tokens: int) -> float:
        return (prompt_tokens * self.input_per_million + completion_tokens * self.output_per_million) / 1e6

    def batch_cost(self, prompt_tokens: int, completion_tokens: int) -> float:
        inp = self.input_per_million / 2 if self.batch_input_per_million is None else self.batch_input_per_million
        out = self.output_per_million / 2 if self.batch_output_per_million is None else self.batch_output_per_million
        return (prompt_tokens * inp + completion_tokens * out) / 1e6


@dataclass(frozen=True)
class TeacherSpec:
    """One teacher as the job file states it. Holds the *name* of the key variable, never the key."""

    name: str
    provider: str
    model: str
    base_url: str | None = None
    api_key_env: str | None = None
    temperature: float | None = None
    top_p: float | None = None
    max_tokens: int = 1024
    seed: int | None = None
    rpm: float | None = None
    tpm: float | None = None
    max_concurrency: int = 64
    timeout: float = 120.0
    max_retries: int = 6
    structured_output: str = "auto"
    prices: Prices = field(default_factory=Prices)
    mode: str = "online"            # "batch": requests go through the provider's batch API (gen.batching)
    batch_window: float = 5.0       # seconds a batch gathers requests before it is sent
    batch_max_requests: int = 50_000

    def call_cost(self, prompt_tokens: int, completion_tokens: int) -> float:
        """The priced cost of one call in this teacher's mode (batch prices in batch mode)."""
        if self.mode == "batch":
            return self.prices.batch_cost(prompt_tokens, completion_tokens)
        return self.prices.cost(prompt_tokens, completion_tokens)

    @property
    def key_env(self) -> str | None:
        return self.api_key_env or DEFAULT_KEY_ENV.get(self.provider)

    @property
    def endpoint(self) -> str:
        return self.base_url or DEFAULT_BASE_URL.get(self.provider, "")

    def api_key(self) -> str:
        """The key from the environment. openai-compatible servers without `api_key_env` need none."""
        env = self.key_env
        if env is None:
            return "none"
        value = os.environ.get(env, "")
        if not value.strip():
            raise MissingKeyError(self.name, env)
        return value

    def sampling(self) -> dict[str, Any]:
        params: dict[str, Any] = {"max_tokens": self.max_tokens}
        for key in ("temperature", "top_p", "seed"):
            value = getattr(self, key)
            if value is not None:
                params[key] = value
        return params


@dataclass(frozen=True)
class RunSettings:
    output_attempts: int = 3
    unit_attempts: int = 3
    budget_usd: float | None = None


@dataclass(frozen=True)
class JobSpec:
    """A validated job file. `instructor` holds the instructor block as written (type, count, options)."""

    name: str
    instructor_type: str
    instructor: dict[str, Any]
    teachers: dict[str, TeacherSpec]
    run: RunSettings = field(default_factory=RunSettings)
    description: str = ""
    source: str = "<job>"
    base_dir: str = "."
    dry_run: bool = False
    target: int | None = None  # instructor.target: plan in waves until this many records pass (gen.core.target)

    def to_json(self) -> dict[str, Any]:
        """What the database keeps of the job: the spec as validated (key variable names only, never keys)."""
        data = asdict(self)
        data.pop("source")
        return data

    @property
    def spec_hash(self) -> str:
        """What makes a job the same job: everything but where its file lives and how it is run
        (`run:` settings such as budget_usd may change between runs of the same job)."""
        data = self.to_json()
        data.pop("base_dir")
        data.pop("run")
        return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:16]

    def resolve_path(self, path: str) -> Path:
        """A path written in the job file is relative to the job file's folder."""
        p = Path(path).expanduser()
        return p if p.is_absolute() else Path(self.base_dir) / p

    def with_simulator(self, base_url: str) -> "JobSpec":
        """The same job with every teacher pointed at a simulator: no keys needed."""
        teachers = {
            name: replace(t, provider="openai-compatible", base_url=base_url, api_key_env=None)
            for name, t in self.teachers.items()
        }
        return replace(self, teachers=teachers, dry_run=True)

    def check_keys(self) -> None:
        """Fail before any work starts if a teacher's key variable is unset."""
        for teacher in self.teachers.values():
            teacher.api_key()

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "JobSpec":
        teachers = {
            name: TeacherSpec(**{**t, "prices": Prices(**t.get("prices") or {})})
            for name, t in data["teachers"].items()
        }
        return cls(
            name=data["name"], instructor_type=data["instructor_type"], instructor=data["instructor"],
            teachers=teachers, run=RunSettings(**data.get("run") or {}), description=data.get("description", ""),
            base_dir=data.get("base_dir", "."), dry_run=data.get("dry_run", False), target=data.get("target"),
        )


def read_job_file(path: str | Path) -> JobSpec:
    """Read and validate a job file. Raises JobFileError naming the file and the path inside it."""
    path = Path(path)
    label = str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise JobFileError(label, ["no such file"]) from None
    except (IsADirectoryError, PermissionError, UnicodeDecodeError) as exc:
        raise JobFileError(label, [f"cannot read: {exc.__class__.__name__}"]) from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        problem = getattr(exc, "problem", None) or "not valid YAML"
        raise JobFileError(label, [f"{where}invalid YAML ({problem})"]) from None
    return parse_job(data, label=label, base_dir=str(path.resolve().parent))


def parse_job(data: Any, *, label: str = "<job>", base_dir: str = ".") -> JobSpec:
    if data is None:
        raise JobFileError(label, ["the file is empty"])
    problems = schema_problems(validator_for("job"), data)
    if problems:
        raise JobFileError(label, problems)
    teachers = {}
    for name, raw in data["teachers"].items():
        prices = Prices(**(raw.get("prices") or {}))
        teachers[name] = TeacherSpec(name=name, **{**raw, "prices": prices})
    target = data["instructor"].get("target")
    instructor = {k: v for k, v in data["instructor"].items() if k not in ("type", "target")}
    if target is not None and "count" not in instructor:
        instructor["count"] = target * 10  # target mode: the plan may hold up to 10 units (or items) per record
    return JobSpec(
        name=data["name"],
        instructor_type=data["instructor"]["type"],
        instructor=instructor,
        target=target,
        teachers=teachers,
        run=RunSettings(**(data.get("run") or {})),
        description=data.get("description", ""),
        source=label,
        base_dir=base_dir,
    )


@dataclass(frozen=True)
class Settings:
    """Environment-driven settings, read when asked for (never at import)."""

    database_url: str
    redis_url: str


def load_settings() -> Settings:
    return Settings(
        database_url=os.environ.get("GEN_DATABASE_URL") or "sqlite:///gen.db",
        redis_url=os.environ.get("GEN_REDIS_URL") or "redis://127.0.0.1:6379/0",
    )
