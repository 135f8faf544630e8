"""What a job will cost before it is paid for: calls, input/output tokens and dollars per teacher, low-high.

Two ways:
- from the call pattern (free): the units the instructor plans, the calls per unit it declares
  (`Instructor.calls_per_unit`, from its options; one call per teacher role otherwise: expected calls with a
  range of 0.75x-1.5x, or a low-high pair) and the token size of the units' inputs;
  output is bounded by each teacher's `max_tokens`. A wide range: it only knows the shape of the work.
- from a sample (`--sample N`, charged): N units really run in a scratch job (its own temporary database), and
  their measured calls, tokens, dollars and rejections are extrapolated to every unit, with a range from the
  spread between units (mean +- 1.64 standard errors, floored at zero).

The estimate a job was created with is kept (gen_meta key `estimate:<job id>`) so `gen status` shows it beside
the actual cost.
"""
from __future__ import annotations

import itertools
import json
import math
import statistics
import tempfile
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from gen.config import JobSpec
from gen.instructors import Instructor
from gen.instructors.base import MAX_UNITS
from gen.types import estimate_tokens

if TYPE_CHECKING:  # pragma: no cover
    from gen.store import Store

PROMPT_OVERHEAD_TOKENS = 120   # instructions and formatting an instructor adds around a unit's input
SAMPLED_INPUTS = 200           # units whose input size is measured for the pattern estimate
RUN_START_LIMIT = 100_000     # units counted for the estimate line at the start of gen run / gen enqueue
Z = 1.64                       # ~90% two-sided


@dataclass
class Range:
    low: float
    high: float

    @property
    def mid(self) -> float:
        return (self.low + self.high) / 2

    def scaled(self, factor: float) -> "Range":
        return Range(self.low * factor, self.high * factor)


@dataclass
class TeacherEstimate:
    teacher: str
    calls: Range
    input_tokens: Range
    output_tokens: Range
    usd: Range


@dataclass
class JobEstimate:
    job: str
    units: int
    method: str                       # "pattern" | "sample"
    teachers: list[TeacherEstimate]
    sampled_units: int = 0
    sample_usd: float = 0.0           # what the sample cost (it was paid for)
    rejection_rate: float | None = None
    records_per_unit: float | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def usd(self) -> Range:
        return Range(sum(t.usd.low for t in self.teachers), sum(t.usd.high for t in self.teachers))

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["usd"] = asdict(self.usd)
        return data

    def one_line(self) -> str:
        calls = Range(sum(t.calls.low for t in self.teachers), sum(t.calls.high for t in self.teachers))
        first = "the first " if any("covers the first" in n for n in self.notes) else ""
        return (f"estimate ({self.method}): {first}{self.units} units, {_n(calls.low)}-{_n(calls.high)} calls, "
                f"{_usd(self.usd.low)}-{_usd(self.usd.high)}")

    def lines(self) -> list[str]:
        head = f"job '{self.job}': {self.units} units; estimate from the call pattern"
        if self.method == "sample":
            head = (f"job '{self.job}': {self.units} units; estimate from a sample of {self.sampled_units} units "
                    f"(the sample cost {_usd(self.sample_usd)})")
        out = [head, f"  {'TEACHER':12} {'CALLS':>15} {'INPUT TOKENS':>19} {'OUTPUT TOKENS':>19} {'DOLLARS':>21}"]
        for t in self.teachers:
            out.append(f"  {t.teacher[:12]:12} {_n(t.calls.low):>7}-{_n(t.calls.high):<7} "
                       f"{_n(t.input_tokens.low):>9}-{_n(t.input_tokens.high):<9} "
                       f"{_n(t.output_tokens.low):>9}-{_n(t.output_tokens.high):<9} "
                       f"{_usd(t.usd.low):>10}-{_usd(t.usd.high):<10}")
        out.append(f"  {'total':12} {'':>15} {'':>19} {'':>19} {_usd(self.usd.low):>10}-{_usd(self.usd.high):<10}")
        if self.rejection_rate is not None:
            out.append(f"  units rejected in the sample: {self.rejection_rate:.0%}; records per unit: "
                       f"{self.records_per_unit:.2f}")
        out += [f"  note: {n}" for n in self.notes]
        return out


def _n(value: float) -> str:
    value = float(value)
    if value >= 1e6:
        return f"{value / 1e6:.1f}M"
    if value >= 1e4:
        return f"{value / 1e3:.0f}k"
    return f"{value:.0f}"


def _usd(value: float) -> str:
    return f"${value:.4f}" if value < 10 else f"${value:,.2f}"


def planned_units(instructor: Instructor, limit: int = MAX_UNITS) -> tuple[int, list[Any]]:
    """How many units the instructor plans (counting stops past `limit`), and the payloads of the first few."""
    first: list[Any] = []
    count = 0
    for unit in itertools.islice(instructor.plan(), limit + 1):
        if count < SAMPLED_INPUTS:
            first.append(unit.payload)
        count += 1
    return count, first


def pattern_estimate(spec: JobSpec, instructor: Instructor, *, limit: int = MAX_UNITS) -> JobEstimate:
    """`limit`: count at most this many units (the line at the start of a run must not read a huge plan twice)."""
    units, payloads = planned_units(instructor, limit)
    notes = []
    if units > limit:
        units = limit
        notes.append(f"the plan holds more than {limit:,} units: this covers the first {limit:,} only")
    if spec.target is not None:
        units = min(units, spec.target)  # target mode: at one record per unit (a sample measures the yield)
    sizes = [estimate_tokens(json.dumps(p, ensure_ascii=False)) for p in payloads] or [0]
    per_call_in = statistics.fmean(sizes) + PROMPT_OVERHEAD_TOKENS
    declared = dict(instructor.calls_per_unit)
    teachers = []
    for name, teacher in spec.teachers.items():
        low, high = calls_range(declared.get(name, 1.0 if name in type(instructor).teacher_roles or not declared
                                             else 0.0))
        if high <= 0:
            continue
        calls = (low + high) / 2 if isinstance(declared.get(name), (tuple, list)) else high / 1.5
        calls_r = Range(units * low, units * high)
        # Multi-call units send the conversation so far: input grows with the turns (the high end).
        inp = Range(calls_r.low * per_call_in, calls_r.high * per_call_in * max(1.0, calls / 2))
        out = Range(calls_r.low * min(teacher.max_tokens, 50), calls_r.high * teacher.max_tokens)
        usd = Range(teacher.call_cost(int(inp.low), int(out.low)), teacher.call_cost(int(inp.high), int(out.high)))
        teachers.append(TeacherEstimate(name, calls_r, inp, out, usd))
    return JobEstimate(spec.name, units, "pattern", teachers,
                       notes=notes + ["from the call pattern only: run `gen estimate FILE --sample N` for a measured range"])


def calls_range(declared: float | tuple[float, float]) -> tuple[float, float]:
    """Calls per unit, low-high: an expected number with 0.75x-1.5x around it (retries, early ends), or the
    instructor's own (low, high)."""
    if isinstance(declared, (tuple, list)):
        return float(declared[0]), float(declared[1])
    return float(declared) * 0.75, float(declared) * 1.5


class FirstUnits:
    """The instructor with its plan cut to the first `n` units (the scratch job of a sample)."""

    def __init__(self, inner: Instructor, n: int):
        self._inner, self._n = inner, n

    def plan(self):
        return itertools.islice(self._inner.plan(), self._n)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


async def sample_estimate(spec: JobSpec, instructor: Instructor, n: int) -> JobEstimate:
    """Run the first `n` units for real in a scratch database, then extrapolate to every unit."""
    from gen.core.lifecycle import open_job
    from gen.core.local import run_job_locally
    from gen.store import Store, UnitState

    units, _ = planned_units(instructor)
    with tempfile.TemporaryDirectory(prefix="gen-estimate-") as scratch:
        store = Store(f"sqlite:///{Path(scratch) / 'sample.db'}")
        try:
            sample_spec = replace(spec, name=f"{spec.name}-sample", target=None)
            sampled = FirstUnits(instructor, n)
            job = open_job(store, sample_spec, sampled, resume=False).job  # type: ignore[arg-type]
            job = store.get_job(job.id) or job
            await run_job_locally(store, job, sample_spec, sampled, quiet=True)  # type: ignore[arg-type]
            stats = store.stats(job.id)
            done_units = [u for u in store.units(job.id) if u.state in (UnitState.DONE, UnitState.REJECTED)]
            calls = store.calls_for_job(job.id)
        finally:
            store.close()
    ran = max(1, len(done_units))
    per_unit: dict[str, dict[int, list[float]]] = {}
    for call in calls:
        row = per_unit.setdefault(call.teacher, {}).setdefault(call.unit_id, [0, 0, 0, 0.0])
        row[0] += 1
        row[1] += call.prompt_tokens
        row[2] += call.completion_tokens
        row[3] += call.cost_usd
    unit_ids = [u.id for u in done_units] or [0]
    teachers = []
    for name in spec.teachers:
        rows = per_unit.get(name, {})
        columns = [[rows.get(uid, [0, 0, 0, 0.0])[i] for uid in unit_ids] for i in range(4)]
        ranges = [_extrapolate(col, units) for col in columns]
        if ranges[0].high == 0:
            continue
        teachers.append(TeacherEstimate(name, *ranges))
    rejected = stats.units[UnitState.REJECTED]
    if spec.target is not None and stats.records:  # target mode: the units the target needs at the sample's yield
        needed = min(units, math.ceil(spec.target * ran / stats.records))
        teachers = [TeacherEstimate(t.teacher, *(r.scaled(needed / units) for r in
                                                  (t.calls, t.input_tokens, t.output_tokens, t.usd)))
                    for t in teachers]
        units = needed
    return JobEstimate(spec.name, units, "sample", teachers, sampled_units=len(done_units),
                       sample_usd=stats.cost_usd, rejection_rate=rejected / ran, records_per_unit=stats.records / ran)


def _extrapolate(values: list[float], units: int) -> Range:
    mean = statistics.fmean(values)
    spread = Z * statistics.stdev(values) / math.sqrt(len(values)) if len(values) > 1 else mean * 0.5
    return Range(max(0.0, mean - spread) * units, (mean + spread) * units)


def save_estimate(store: "Store", job_id: str, estimate: JobEstimate) -> None:
    from gen.store.models import Meta

    with store.session() as s:
        s.merge(Meta(key=f"estimate:{job_id}", value=json.dumps(estimate.to_json())))
        s.commit()


def saved_estimate(store: "Store", key: str) -> dict[str, Any] | None:
    from gen.store.models import Meta

    with store.session() as s:
        row = s.get(Meta, f"estimate:{key}")
        return json.loads(row.value) if row else None


def estimate_for_new_job(store: "Store", job_id: str, spec: JobSpec, instructor: Instructor, *,
                         file_hash: str) -> JobEstimate | dict:
    """At job creation: the last sampled estimate of this job file (`gen estimate --sample`, saved under the
    file's spec hash) if there is one, else the call-pattern one; kept with the job for `gen status`."""
    sampled = saved_estimate(store, file_hash)
    if sampled is not None:
        with store.session() as s:
            from gen.store.models import Meta

            s.merge(Meta(key=f"estimate:{job_id}", value=json.dumps(sampled)))
            s.commit()
        return sampled
    estimate = pattern_estimate(spec, instructor, limit=RUN_START_LIMIT)
    save_estimate(store, job_id, estimate)
    return estimate


def run_estimate_command(db_url: str, file: Path, *, sample: int = 0, dry_run: bool = False,
                         sim_latency: float = 0.2) -> JobEstimate:
    """`gen estimate FILE`: the call-pattern estimate, or with `sample` a measured one (saved in the database
    under the file's spec hash, so the job created from this file next keeps it for `gen status`)."""
    import asyncio
    import contextlib

    from gen.config import read_job_file
    from gen.core.jobs import load_instructor

    spec = read_job_file(file)
    file_hash = spec.spec_hash
    instructor = load_instructor(spec, database_url=db_url)
    next(iter(instructor.plan()), None)
    if not sample:
        return pattern_estimate(spec, instructor)
    with contextlib.ExitStack() as stack:
        if dry_run:
            from gen.simulator import SimConfig, Simulator

            sim = stack.enter_context(Simulator(SimConfig(latency=sim_latency, jitter=sim_latency / 2, seed=0)))
            spec = spec.with_simulator(sim.base_url)
            instructor = load_instructor(spec, database_url=db_url)
        spec.check_keys()
        estimate = asyncio.run(sample_estimate(spec, instructor, sample))
    from gen.store import Store

    store = Store(db_url)
    try:
        save_estimate(store, file_hash, estimate)
    finally:
        store.close()
    return estimate


def estimate_status_line(store: "Store", job_id: str, actual_usd: float) -> list[str]:
    data = saved_estimate(store, job_id)
    if data is None:
        return []
    usd = data.get("usd") or {}
    return [f"  estimate {_usd(usd.get('low', 0))}-{_usd(usd.get('high', 0))} ({data.get('method')}) "
            f"beside ${actual_usd:.4f} actual"]


def one_line(data: JobEstimate | dict) -> str:
    if isinstance(data, JobEstimate):
        return data.one_line()
    usd = data.get("usd") or {}
    return (f"estimate ({data.get('method')}): {data.get('units')} units, "
            f"{_usd(usd.get('low', 0))}-{_usd(usd.get('high', 0))}")
