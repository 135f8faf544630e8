"""Rate-bound runs, timed from the command's start, with the simulator's arrival times as the ground truth.

    python bench/rate.py                    # bare SDK, gen run, fleet (2 workers): 600 calls at 1,200 RPM
    python bench/rate.py --only gen-run --rounds 3

Each run gets a fresh simulator (latency 0.5 s, no jitter, 1,200 RPM enforced in one-second buckets) and is
started as a command, the way a user starts it: `python bench/bare_sdk.py`, `python -m gen run`, and
`python -m gen enqueue` with 2 workers already waiting (PostgreSQL + Redis, as bench/fleet.py sets them up).
The ideal is (calls - 1) x 60 / RPM + latency = 30.45 s: calls evenly paced from the first, the last one's answer.

Per run it prints where the time goes, from `GET /sim/arrivals`:
- start:   command start -> first request at the simulator (interpreter, imports, checks, planning);
- pacing:  first -> last request, and the achieved RPM over it ((n - 1) x 60 / that), the steady state;
- first_s: requests in the first second after the first one (the stated RPM / 60 is the most allowed);
- tail:    last request -> the end (its answer, the last writes; the command's exit, or the fleet's last record);
- total:   command start -> the end, vs the ideal (the headline: what a user waits), and the window from the first
  request to the end vs the ideal (what pacing and the tail cost, without start-up);
- CPU ms:  CPU per call of the command (bare SDK, gen run) or of the workers (fleet; `gen enqueue` not counted).
Asserts nothing. Figures are noisy on a shared machine.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
import urllib.request
from datetime import timezone
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
# A database and a Redis database of its own: bench/fleet.py (gen_bench, Redis 9) may be running beside it.
os.environ.setdefault("GEN_BENCH_DB", "gen_bench_rate")
os.environ.setdefault("GEN_BENCH_REDIS", "redis://127.0.0.1:6379/12")
import fleet  # noqa: E402  (bench/fleet.py: the simulator, PostgreSQL, Redis and workers, started alike)

RPM, LATENCY = 1200, 0.5
CHECKOUT: str | None = None  # --checkout: run gen from another checkout's source (before/after comparisons)


def gen_env(**extra: str) -> dict[str, str]:
    env = {**os.environ, **extra}
    if CHECKOUT:
        env["PYTHONPATH"] = CHECKOUT
    return env


def arrivals(base: str) -> list[tuple[float, bool]]:
    url = base.rsplit("/v1", 1)[0] + "/sim/arrivals"
    return [(t, ok) for t, ok in json.load(urllib.request.urlopen(url))["arrivals"]]


class RunFailed(Exception):
    """A run that did not finish; its row says why."""


def measure(key: str, calls: int) -> str:
    name, run = RUNS[key]
    try:
        return row(name, run(calls))
    except RunFailed as exc:
        return f"{name:10} failed: {exc}"


def children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def figures(started: float, ended: float, seen: list[tuple[float, bool]], calls: int) -> dict[str, float]:
    ideal = (calls - 1) * 60 / RPM + LATENCY
    times = sorted(t for t, _ in seen)
    first, last = times[0], times[-1]
    return {
        "start": first - started,
        "pacing": last - first,
        "rpm": (len(times) - 1) * 60 / (last - first) if last > first else 0.0,
        "first_s": sum(1 for t in times if t < first + 1.0),
        "tail": ended - last,
        "total": ended - started,
        "vs_ideal": (ended - started) / ideal - 1,
        "window_vs_ideal": (ended - first) / ideal - 1,
        "served_429": sum(1 for _, ok in seen if not ok),
        "requests": len(times),
    }


def job_file(folder: Path, base: str, calls: int) -> Path:
    return fleet.write_job(folder, base, calls, RPM, 200)


def bare(calls: int) -> dict[str, float]:
    sim, base = fleet.start_simulator(LATENCY, RPM)
    try:
        cpu, started = children_cpu(), time.time()
        out = subprocess.run([sys.executable, str(HERE / "bare_sdk.py"), "--base-url", base, "--calls",
                              str(calls), "--concurrency", "200", "--rpm", str(RPM)], capture_output=True, text=True)
        ended = time.time()
        if out.returncode != 0:  # it has no retries: a 429 (a loaded machine bunches its calls) ends it
            refused = sum(1 for _, ok in arrivals(base) if not ok)
            raise RunFailed(f"exit {out.returncode}, {refused} 429s: {out.stderr.strip().splitlines()[-1][:120]}")
        return {**figures(started, ended, arrivals(base), calls), "cpu_ms": (children_cpu() - cpu) / calls * 1000}
    finally:
        sim.terminate()
        sim.wait()


def gen_run(calls: int) -> dict[str, float]:
    sim, base = fleet.start_simulator(LATENCY, RPM)
    folder = Path(tempfile.mkdtemp(prefix="gen-rate-"))
    try:
        job = job_file(folder, base, calls)
        env = gen_env(GEN_DATABASE_URL=f"sqlite:///{folder / 'gen.db'}")
        cpu, started = children_cpu(), time.time()
        out = subprocess.run([sys.executable, "-m", "gen", "run", str(job), "--quiet"], env=env, cwd=folder,
                             capture_output=True, text=True)
        ended = time.time()
        if out.returncode != 0:
            raise RunFailed(f"exit {out.returncode}: {out.stderr.strip().splitlines()[-1][:120]}")
        return {**figures(started, ended, arrivals(base), calls), "cpu_ms": (children_cpu() - cpu) / calls * 1000}
    finally:
        sim.terminate()
        sim.wait()


def fleet_run(calls: int, workers: int = 2) -> dict[str, float]:
    from sqlalchemy import text

    from gen.store import Store

    fleet.fresh_state()
    folder = Path(tempfile.mkdtemp(prefix="gen-rate-fleet-"))
    sim, base = fleet.start_simulator(LATENCY, RPM)
    env = gen_env(GEN_DATABASE_URL=fleet.DB_URL, GEN_REDIS_URL=fleet.REDIS_URL)
    saved, here = dict(os.environ), os.getcwd()
    os.environ.update(env)  # the workers start with it, outside any checkout (`python -m` looks in its cwd first)
    os.chdir(folder)
    try:
        procs = fleet.start_workers(workers, 20, folder)
    finally:
        os.chdir(here)
        os.environ.clear()
        os.environ.update(saved)
    try:
        job = job_file(folder, base, calls)
        cpu0 = {p.pid: fleet.cpu_seconds(p.pid) for p in procs}
        started = time.time()
        out = subprocess.run([sys.executable, "-m", "gen", "enqueue", str(job), "--no-key-check"], env=env,
                             cwd=folder, capture_output=True, text=True)
        returned = time.time()
        if out.returncode != 0:
            raise RunFailed(f"gen enqueue: exit {out.returncode}: {out.stderr.strip().splitlines()[-1][:120]}")
        job_id = out.stdout.split()[0]
        store = Store(fleet.DB_URL)
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            with store.engine.connect() as conn:
                open_units = conn.execute(text("SELECT count(*) FROM units WHERE job_id = :j AND state IN "
                                               "('pending', 'running')"), {"j": job_id}).scalar()
            if not open_units:
                break
            time.sleep(0.2)
        with store.engine.connect() as conn:
            last = conn.execute(text("SELECT max(created_at) FROM records WHERE job_id = :j"),
                                {"j": job_id}).scalar()
        store.close()
        cpu = sum(fleet.cpu_seconds(p.pid) - cpu0[p.pid] for p in procs)
        last = last.replace(tzinfo=timezone.utc) if last.tzinfo is None else last
        return {**figures(started, last.timestamp(), arrivals(base), calls), "enqueue": returned - started,
                "cpu_ms": cpu / calls * 1000}
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            p.wait(timeout=30)
        sim.terminate()
        sim.wait()


RUNS = {"bare": ("bare SDK", bare), "gen-run": ("gen run", gen_run), "fleet": ("fleet", fleet_run)}
HEADER = (f"{'tool':10} {'start':>7} {'pacing':>7} {'RPM':>7} {'1st s':>5} {'tail':>6} {'total':>7} "
          f"{'vs ideal':>9} {'window':>8} {'429s':>5} {'CPU ms':>7}")


def row(name: str, f: dict[str, float]) -> str:
    return (f"{name:10} {f['start']:6.2f}s {f['pacing']:6.2f}s {f['rpm']:7.1f} {f['first_s']:5d} "
            f"{f['tail']:5.2f}s {f['total']:6.2f}s {f['vs_ideal'] * 100:+8.1f}% "
            f"{f['window_vs_ideal'] * 100:+7.1f}% {f['served_429']:5d} {f.get('cpu_ms', 0.0):7.2f}"
            + (f"   (gen enqueue returned after {f['enqueue']:.2f}s)" if "enqueue" in f else ""))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=600)
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--only", choices=list(RUNS), action="append", help="one of the runs (repeatable)")
    parser.add_argument("--checkout", help="run gen (gen run, gen enqueue, the workers) from this checkout's source")
    args = parser.parse_args()
    global CHECKOUT
    CHECKOUT = args.checkout
    chosen = [key for key in RUNS if not args.only or key in args.only]
    ideal = (args.calls - 1) * 60 / RPM + LATENCY
    print(f"{args.calls} calls at {RPM} RPM, latency {LATENCY} s: ideal {ideal:.2f} s")
    print(HEADER)
    for _ in range(args.rounds):
        for key in chosen:
            print(measure(key, args.calls), flush=True)


if __name__ == "__main__":
    main()
