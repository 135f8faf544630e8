"""What `gen status` and `gen jobs` print, from the database alone (any machine can ask)."""
from __future__ import annotations

from typing import Any

from gen.core.progress import format_seconds
from gen.store import Job, Store, UnitState
from gen.store.states import JobState


STALL_NOTICE_SECONDS = 120.0


def effective_status(job: Job, units: dict[str, int]) -> str:
    """`active` jobs with nothing pending or running are finished, whichever driver ran them."""
    if job.status in (JobState.ACTIVE, JobState.BLOCKED) and job.planning_done and not units[UnitState.PENDING] \
            and not units[UnitState.RUNNING]:
        return JobState.FINISHED
    return job.status


def status_dict(store: Store, job: Job) -> dict[str, Any]:
    stats = store.stats(job.id)
    calls_last_min, units_last_min = store.recent_activity(job.id, 60.0)
    remaining = stats.units[UnitState.PENDING] + stats.units[UnitState.RUNNING]
    eta = remaining / units_last_min * 60 if units_last_min and remaining else (0 if not remaining else None)
    return {
        "id": job.id, "name": job.name, "instructor": job.instructor, "status": effective_status(job, stats.units),
        "status_reason": job.status_reason, "created_at": job.created_at.isoformat(),
        "units": stats.units, "total_units": stats.total_units, "records": stats.records,
        "duplicates": stats.duplicates, "calls": stats.calls, "failed_calls": stats.failed_calls,
        "rate_limited": stats.rate_limited, "prompt_tokens": stats.prompt_tokens,
        "completion_tokens": stats.completion_tokens, "cost_usd": round(stats.cost_usd, 6),
        "calls_per_minute": calls_last_min, "units_per_minute": units_last_min, "eta_seconds": eta,
        "budget_usd": (job.spec.get("run") or {}).get("budget_usd"), "queue": job.queue,
        "near_duplicates": store.near_duplicates(job.id),
        "planned_units": job.planned_units, "planning_done": job.planning_done,
        "waiting_without_message": store.waiting_without_message(job.id, older_than=STALL_NOTICE_SECONDS)
        if job.status == JobState.ACTIVE and not units_last_min else 0,
        **_cost_fields(store, job),
    }


def _cost_fields(store: Store, job: Job) -> dict[str, Any]:
    """Batches in flight, the estimate the job was created with, target mode (gen.batching, gen.core.estimate,
    gen.core.target)."""
    from gen.core.estimate import saved_estimate
    from gen.core.target import accepted_records
    from gen.store import batches

    target = job.spec.get("target")
    return {"batches_in_flight": len(batches.submissions(store, job_id=job.id, in_flight_only=True)),
            "estimate": saved_estimate(store, job.id), "target": target,
            "accepted": accepted_records(store, job.id) if target else None}


def status_lines(store: Store, job: Job) -> list[str]:
    d = status_dict(store, job)
    u = d["units"]
    finished = u[UnitState.DONE] + u[UnitState.REJECTED]
    lines = [
        f"job {d['id']}  {d['name']}  ({d['instructor']})  {d['status']}"
        + (f": {d['status_reason']}" if d["status_reason"] else ""),
        f"  units    {finished}/{d['total_units']} finished: done {u['done']}, rejected {u['rejected']}, "
        f"failed {u['failed']}, running {u['running']}, pending {u['pending']}",
        f"  records  {d['records']} ({d['duplicates']} duplicates dropped)",
        f"  near-dup {d['near_duplicates']} near-duplicates dropped",
        f"  calls    {d['calls']} ({d['failed_calls']} failed, {d['rate_limited']} rate limited)",
        f"  tokens   {d['prompt_tokens']} in, {d['completion_tokens']} out",
        f"  cost     ${d['cost_usd']:.4f}" + (f" of ${d['budget_usd']:.2f} budget" if d["budget_usd"] else ""),
        f"  rate     {d['calls_per_minute']} calls/min, {d['units_per_minute']} units/min over the last minute; "
        f"ETA {format_seconds(d['eta_seconds']) if d['eta_seconds'] is not None else '?'}",
    ]
    if not d["planning_done"]:
        lines.insert(2, f"  planning {d['planned_units']} units planned so far (planning continues; `gen resume` "
                        "or `gen run` finishes an interrupted plan)")
    if d["waiting_without_message"]:
        lines.append(f"  waiting  {d['waiting_without_message']} pending units have had no queue message for over "
                     f"{STALL_NOTICE_SECONDS:.0f}s and nothing ran in the last minute: is a worker running? (workers "
                     "re-send them by themselves: a restarted Redis or a database outage costs a delay)")
    from gen.batching.report import batch_status_lines

    lines += batch_status_lines(store, job.id)  # mode: batch teachers: batches in flight
    from gen.core.estimate import estimate_status_line

    lines += estimate_status_line(store, job.id, d["cost_usd"])  # the estimate the job was created with
    from gen.core.target import target_status_line

    lines += target_status_line(store, job.id, job.spec.get("target"))  # target mode: accepted / target
    problems = store.units(job.id, UnitState.REJECTED)[:3] + store.units(job.id, UnitState.FAILED)[:3]
    for unit in problems:
        lines.append(f"  {unit.state} unit {unit.key}: {unit.last_error}")
    return lines


def jobs_table(store: Store) -> list[str]:
    jobs = store.list_jobs()
    if not jobs:
        return ["no jobs yet (start one with `gen run FILE`)"]
    lines = [f"{'ID':12}  {'NAME':24}  {'INSTRUCTOR':10}  {'STATUS':9}  {'UNITS':>13}  {'RECORDS':>7}  CREATED"]
    for job in jobs:
        stats = store.stats(job.id)
        units = f"{stats.finished_units}/{stats.total_units}"
        status = effective_status(job, stats.units)
        lines.append(f"{job.id:12}  {job.name[:24]:24}  {job.instructor[:10]:10}  {status[:9]:9}  {units:>13}  "
                     f"{stats.records:>7}  {job.created_at:%Y-%m-%d %H:%M}")
    return lines
