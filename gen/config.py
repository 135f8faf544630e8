"""Job files and settings. A job file is YAML validated against `schemas/job.schema.json` before anything runs."""
from __future__ import annotations

import hashlib
import json
import os
import re
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import yaml

from gen.errors import JobFileError, MissingKeyError, UsageError
from gen.secrets import redact_url, register_secret, register_url_password

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
    def calls_at_once(self) -> int:
        """How many of this teacher's requests may be open at once. Online: `max_concurrency`. In batch mode the
        waiting requests are what fill a batch, and none is on the wire: up to a batch (`batch_max_requests`)."""
        return max(self.max_concurrency, self.batch_max_requests) if self.mode == "batch" else self.max_concurrency

    @property
    def key_env(self) -> str | None:
        return self.api_key_env or DEFAULT_KEY_ENV.get(self.provider)

    @property
    def endpoint(self) -> str:
        return self.base_url or DEFAULT_BASE_URL.get(self.provider, "")

    def api_key(self) -> str:
        """The key from the environment (registered as a secret). openai-compatible servers without
        `api_key_env` need none."""
        register_url_password(self.base_url)  # a base_url may carry credentials too
        env = self.key_env
        if env is None:
            return "none"
        value = os.environ.get(env, "")
        if not value.strip():
            raise MissingKeyError(self.name, env)
        register_secret(value)  # from now on scrubbed from every error, log line and stored text
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


# --- retry policy: every retry, backoff and timeout setting of a teacher, in one place -----------------------
@dataclass(frozen=True)
class RetryPolicy:
    """How one teacher's calls are retried, built from the job file. Providers, `TeacherClient` and `UnitTeacher`
    read their settings here and nowhere else (the SDKs' own retries stay off: gen retries one layer up).

    attempts: retries of a failed call (5xx, timeouts, connection errors, malformed or cut answers), after the
      first (`teachers.X.max_retries`); 429s do not use them up.
    backoff_base / backoff_cap: exponential backoff with jitter between those retries, in seconds.
    call_timeout: seconds one HTTP call may take (`teachers.X.timeout`).
    max_rate_limited_waits: 429s one call may wait out before it gives up.
    output_attempts: answers asked for before an output that fails validation rejects the unit
      (`run.output_attempts`).
    """

    attempts: int = 6
    backoff_base: float = 0.5
    backoff_cap: float = 30.0
    call_timeout: float = 120.0
    max_rate_limited_waits: int = 200
    output_attempts: int = 3

    @classmethod
    def of(cls, teacher: TeacherSpec, run: RunSettings | None = None) -> "RetryPolicy":
        run = run or RunSettings()
        return cls(attempts=teacher.max_retries, call_timeout=teacher.timeout, output_attempts=run.output_attempts)


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


MAX_JOB_FILE_BYTES = 1_000_000   # a job file is a page of YAML; prompts belong in a prompts file
MAX_YAML_NODES = 100_000         # nodes once every alias is expanded: a "billion laughs" file is refused


class BoundedLoader(yaml.SafeLoader):
    """SafeLoader that refuses a document whose aliases expand past MAX_YAML_NODES nodes, before building it."""

    def get_single_node(self):
        node = super().get_single_node()
        if node is not None:
            expanded_size(node)
        return node


def expanded_size(node: yaml.Node) -> int:
    """How many nodes the document has with every alias expanded; raises ValueError past MAX_YAML_NODES."""
    sizes: dict[int, int] = {}
    stack: list[tuple[yaml.Node, bool]] = [(node, False)]
    while stack:  # iterative post-order walk, memoised by node: shared (aliased) nodes are sized once
        current, children_done = stack.pop()
        if id(current) in sizes:
            continue
        children: list[yaml.Node] = []
        if isinstance(current, yaml.SequenceNode):
            children = list(current.value)
        elif isinstance(current, yaml.MappingNode):
            children = [part for pair in current.value for part in pair]
        if not children_done:
            stack.append((current, True))
            stack.extend((child, False) for child in children if id(child) not in sizes)
            continue
        total = 1 + sum(sizes.get(id(child), 1) for child in children)
        if total > MAX_YAML_NODES:
            raise ValueError(f"the YAML expands to more than {MAX_YAML_NODES:,} values (aliases of aliases?)")
        sizes[id(current)] = total
    return sizes[id(node)]


def read_job_file(path: str | Path) -> JobSpec:
    """Read and validate a job file. Raises JobFileError naming the file and the path inside it."""
    path = Path(path)
    label = str(path)
    try:
        with open(path, "rb") as handle:
            raw = handle.read(MAX_JOB_FILE_BYTES + 1)
    except FileNotFoundError:
        raise JobFileError(label, ["no such file"]) from None
    except OSError as exc:
        raise JobFileError(label, [f"cannot read: {exc.strerror or exc.__class__.__name__}"]) from None
    if len(raw) > MAX_JOB_FILE_BYTES:
        raise JobFileError(label, [f"larger than {MAX_JOB_FILE_BYTES // 1_000_000} MB: a job file holds settings; "
                                   "put prompts in a prompts_file"])
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise JobFileError(label, ["not UTF-8 text"]) from None
    try:
        data = yaml.load(text, Loader=BoundedLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        problem = getattr(exc, "problem", None) or "not valid YAML"
        raise JobFileError(label, [f"{where}invalid YAML ({problem})"]) from None
    except ValueError as exc:
        raise JobFileError(label, [str(exc)]) from None
    except RecursionError:
        raise JobFileError(label, ["the YAML is nested too deeply"]) from None
    return parse_job(data, label=label, base_dir=str(path.resolve().parent))


def check_url_port(url: str, *, what: str) -> None:
    """A URL whose port is not a number in 1..65535 is a UsageError naming `what` (e.g. `teachers.main.base_url`)."""
    match = re.match(r"^[A-Za-z][A-Za-z0-9+.\-]*://(.*)$", url or "", re.S)
    if not match:
        return
    rest = match.group(1)
    hostport = re.split(r"[/?#]", rest[rest.rfind("@") + 1:], maxsplit=1)[0]  # after the userinfo, however written
    if hostport.startswith("["):
        port = hostport.split("]", 1)[1][1:] if "]:" in hostport else None
    else:
        port = hostport.rsplit(":", 1)[1] if ":" in hostport else None
    if port is None or port == "":
        return
    if not port.isdigit() or not 1 <= int(port) <= 65535:
        raise UsageError(f"{what}: port {port!r} is not a number between 1 and 65535 in {redact_url(url)}")


def parse_job(data: Any, *, label: str = "<job>", base_dir: str = ".") -> JobSpec:
    from gen.schemas import schema_problems, validator_for  # jsonschema: only when a job file is read

    if data is None:
        raise JobFileError(label, ["the file is empty"])
    problems = schema_problems(validator_for("job"), data)
    if problems:
        raise JobFileError(label, problems)
    teachers = {}
    for name, raw in data["teachers"].items():
        if raw.get("base_url"):
            try:
                check_url_port(raw["base_url"], what=f"teachers.{name}.base_url")
            except UsageError as exc:
                raise JobFileError(label, [str(exc)]) from None
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
    """The settings from the environment; URL passwords are registered as secrets (ports are checked where
    each URL is opened: `gen.store.db.make_engine`, `worker.dispatch.check_broker`)."""
    settings = Settings(
        database_url=os.environ.get("GEN_DATABASE_URL") or "sqlite:///gen.db",
        redis_url=os.environ.get("GEN_REDIS_URL") or "redis://127.0.0.1:6379/0",
    )
    register_url_password(settings.database_url)
    register_url_password(settings.redis_url)
    return settings
