"""The pages: each function reads what it shows (gen.serve.jobs, gen.serve.records) and renders a Jinja2 template to HTML.

The same job page, rendered with `standalone=True`, is what `gen report` writes: styles inline, no links out.
"""
from __future__ import annotations

import functools
import json
from typing import Any

from jinja2 import Environment, PackageLoader, select_autoescape
from markupsafe import Markup

from gen.serve import jobs, records, svg
from gen.store.models import UnitState
from gen.store.reviews import latest_reviews

LIVE_REFRESH_SECONDS = 5


@functools.cache
def environment() -> Environment:
    env = Environment(loader=PackageLoader("gen.serve", "templates"), autoescape=select_autoescape(["html"]),
                      trim_blocks=True, lstrip_blocks=True)
    env.filters["usd"] = lambda v: f"${v:,.4f}" if v < 1 else f"${v:,.2f}"
    env.filters["pretty_json"] = lambda v: json.dumps(v, indent=2, ensure_ascii=False, default=str)
    env.filters["when"] = lambda d: d.strftime("%Y-%m-%d %H:%M:%S") if d else ""
    return env


def render(template: str, **context: Any) -> str:
    return environment().get_template(template).render(**context)


def not_found(what: str) -> str:
    return render("message.html", title="Not found", message=what)


def jobs_page(store) -> str:
    rows = jobs.jobs_overview(store)
    return render("jobs.html", title="Jobs", jobs=rows, states=UnitState.ALL,
                  refresh=LIVE_REFRESH_SECONDS if any(j.live for j in rows) else None)


def job_plots(store, job_id: str) -> tuple[list[Markup], jobs.Distributions]:
    """Every plot of the job page, as SVG markup, in the order shown."""
    units = jobs.units_over_time(store, job_id)
    calls = jobs.calls_over_time(store, job_id)
    cost = jobs.cost_over_time(store, job_id)
    dist = jobs.record_distributions(store, job_id)
    sample = f" (newest {dist.sampled} records)" if dist.capped else ""
    plots = [
        svg.line_chart("units", "Units finished over time (cumulative: done, rejected, failed)", units.x, units.series),
        svg.line_chart("calls", f"Calls per minute and 429s per minute ({units_width(calls.width)} buckets)",
                       calls.x, calls.series),
        svg.line_chart("cost", "Cost over time by teacher (cumulative USD)", cost.x, cost.series),
        svg.bar_chart("judge-scores", f"Judge scores{sample}", sorted_bins(dist.judge_scores),
                      empty="no judge scores in this job's records"),
        svg.bar_chart("turns", f"Exchanges per conversation{sample}", sorted_bins(dist.turns),
                      empty="no kept records yet"),
        svg.bar_chart("tokens", f"Tokens per record (its calls' prompt + completion){sample}",
                      svg.histogram_bins(dist.tokens), empty="no kept records with calls yet"),
        svg.hbar_chart("rejections", f"Rejection reasons (top {jobs.TOP_REASONS})",
                       jobs.rejection_reasons(store, job_id), empty="no unit rejected or failed"),
        svg.hbar_chart("duplicates", "Duplicates dropped", jobs.duplicates_dropped(store, job_id),
                       empty="no duplicates dropped"),
        svg.hbar_chart("code-checks", "Code-check outcomes", jobs.code_check_outcomes(store, job_id),
                       empty="no code was checked in this job"),
    ]
    return plots, dist


def units_width(width: float) -> str:
    return f"{svg.number(width)} s" if width < 120 else f"{svg.number(width / 60)} min"


def sorted_bins(counter) -> list[tuple[str, float]]:
    return [(svg.number(k), float(v)) for k, v in sorted(counter.items())]


def job_page(store, job_ref: str, *, standalone: bool = False, sample: list | None = None) -> str | None:
    job = jobs.find_job(store, job_ref)
    if job is None:
        return None
    plots, _ = job_plots(store, job.id)
    return render("job.html", title=f"Job {job.name}", job=job, states=UnitState.ALL, plots=plots,
                  standalone=standalone, sample=sample or [],
                  refresh=LIVE_REFRESH_SECONDS if job.live and not standalone else None)


def records_page(store, job_ref: str, flt: records.RecordFilter) -> str | None:
    job = jobs.find_job(store, job_ref, counts=False)  # no counts: a page costs the same on 1M records
    if job is None:
        return None
    rows, next_after = records.browse_records(store, job.id, flt)
    return render("records.html", title=f"Records of {job.name}", job=job, rows=rows, flt=flt,
                  next_query=flt.query(after=next_after) if next_after else None,
                  first_query=flt.query(after=0) if flt.after else None,
                  facets=records.facets(store, job.id))


def record_page(store, record_id: int, *, message: str | None = None) -> str | None:
    detail = records.record_detail(store, record_id)
    if detail is None:
        return None
    rec = detail.record
    ends_with_answer = bool(rec.conversation) and rec.conversation[-1].get("role") == "assistant"
    return render("record.html", title=f"Record {rec.id}", d=detail, rec=rec, message=message,
                  judge_turns=judge_turns(rec.meta or {}), ends_with_answer=ends_with_answer,
                  in_export=in_export(rec.kind, detail.review))


def in_export(kind: str, review) -> bool:
    """Whether `gen export` (default, conversation formats) writes this record, given its newest mark."""
    if review is not None:
        return review.action == "include"
    return kind != "rejected"


def judge_turns(meta: dict[str, Any]) -> dict[int, dict[str, Any]]:
    """Per assistant turn (1-based): judge score, reason, constraint violations, as systemchat stores them."""
    return {row["turn"]: row for row in meta.get("turn_scores") or [] if isinstance(row, dict) and "turn" in row}


def report_html(store, job_ref: str, *, sample_size: int = 20) -> str | None:
    """One self-contained HTML file: the job page's plots and a sample of records (for `gen report`)."""
    job = jobs.find_job(store, job_ref)
    if job is None:
        return None
    chosen = records.sample_records(store, job.id, sample_size)
    marks = latest_reviews(store, job.id, [r.id for r in chosen]) if chosen else {}
    sample = [{"record": r, "review": marks.get(r.id), "turns": judge_turns(r.meta or {})} for r in chosen]
    return job_page(store, job.id, standalone=True, sample=sample)
