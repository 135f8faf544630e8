"""The fleet against `gen simulate` on this machine: workers, Redis, PostgreSQL and the simulator share it.

    python bench/fleet.py rate      # 600 units, teacher limit 1200 RPM, latency 0.5 s, 2 workers: time vs ideal
    python bench/fleet.py latency   # 3000 units, no limit, latency 0.5 s: persisted units per second, CPU per unit
    python bench/fleet.py memory    # one worker's RSS after 2,000 and after 20,000 calls

Uses the machine's PostgreSQL (a fresh database `gen_bench`) and Redis (database 9, flushed), as the README's
fleet section starts them. Prints its figures; asserts nothing.
"""
from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from datetime import timezone
from pathlib import Path

PG_ADMIN = os.environ.get("GEN_BENCH_PG_ADMIN", "postgresql://postgres@127.0.0.1:5432/postgres")
DB_NAME = os.environ.get("GEN_BENCH_DB", "gen_bench")
DB_URL = PG_ADMIN.rsplit("/", 1)[0].replace("postgresql://", "postgresql+psycopg://") + "/" + DB_NAME
REDIS_URL = os.environ.get("GEN_BENCH_REDIS", "redis://127.0.0.1:6379/9")
TICKS = os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def fresh_state() -> None:
    import psycopg
    import redis

    with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{DB_NAME}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{DB_NAME}"')
        if os.environ.get("GEN_BENCH_SYNCHRONOUS_COMMIT") == "off":  # to measure what the WAL flushes cost
            conn.execute(f'ALTER DATABASE "{DB_NAME}" SET synchronous_commit = off')
    redis.Redis.from_url(REDIS_URL).flushdb()


def start_simulator(latency: float, rpm: int) -> tuple[subprocess.Popen, str]:
    port = free_port()
    args = [sys.executable, "-m", "gen", "simulate", "--port", str(port), "--latency", str(latency), "--jitter", "0"]
    if rpm:
        args += ["--rpm", str(rpm)]
    proc = subprocess.Popen(args, stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}/v1"
    for _ in range(200):
        try:
            urllib.request.urlopen(base + "/models", timeout=1).read()
            return proc, base
        except OSError:
            time.sleep(0.05)
    raise SystemExit("the simulator did not start")


def start_workers(n: int, concurrency: int, folder: Path) -> list[subprocess.Popen]:
    env = {**os.environ, "GEN_DATABASE_URL": DB_URL, "GEN_REDIS_URL": REDIS_URL}
    procs, logs = [], []
    for i in range(n):
        log = folder / f"worker{i}.log"
        logs.append(log)
        procs.append(subprocess.Popen([sys.executable, "-m", "gen", "worker", "-c", str(concurrency), "-n",
                                       f"bench{i}@%h"], stdout=open(log, "w"), stderr=subprocess.STDOUT,
                                      env={**env, "GEN_WORKER_NAME": f"bench{i}"}))
    deadline = time.monotonic() + 60
    while not all(" ready." in log.read_text() for log in logs):
        if time.monotonic() > deadline:
            raise SystemExit("workers did not start:\n" + "\n".join(log.read_text()[-2000:] for log in logs))
        time.sleep(0.1)
    time.sleep(1.0)  # let the runtime (event loop, Redis client) come up
    return procs


def write_job(folder: Path, base: str, units: int, rpm: int, concurrency: int) -> Path:
    with open(folder / "prompts.jsonl", "w") as f:
        for i in range(units):
            f.write(json.dumps({"prompt": f"Benchmark prompt {i}: say something about the number {i}."}) + "\n")
    limit = f"    rpm: {rpm}\n" if rpm else ""
    job = folder / "job.yml"
    job.write_text("name: bench\ninstructor:\n  type: respond\n  prompts_file: prompts.jsonl\nteachers:\n  main:\n"
                   f"    provider: openai-compatible\n    model: sim-1\n    base_url: {base}\n"
                   f"    max_concurrency: {concurrency}\n    max_tokens: 256\n{limit}")
    return job


def run(units: int, rpm: int, latency: float, workers: int, concurrency: int, in_flight: int,
        memory_marks: list[int]) -> None:
    os.environ["GEN_DATABASE_URL"] = DB_URL
    os.environ["GEN_REDIS_URL"] = REDIS_URL
    from sqlalchemy import text

    from gen.store import Store
    from gen.core.fleet import enqueue_job_file
    from worker.app import get_app
    from worker.dispatch import CeleryDispatcher

    fresh_state()
    folder = Path(tempfile.mkdtemp(prefix="gen-fleet-bench-"))
    sim, base = start_simulator(latency, rpm)
    procs = start_workers(workers, concurrency, folder)
    try:
        job_file = write_job(folder, base, units, rpm, in_flight)
        cpu0 = {p.pid: cpu_seconds(p.pid) for p in procs}
        sim_cpu0 = cpu_seconds(sim.pid)
        store = Store(DB_URL)
        rss: dict[int, float] = {}
        started_wall = time.time()
        started = time.monotonic()
        job = enqueue_job_file(DB_URL, job_file, CeleryDispatcher(get_app(), os.environ["GEN_REDIS_URL"]))
        enqueued = time.monotonic() - started
        stats_url = base.rsplit("/v1", 1)[0] + "/sim/stats"
        while json.load(urllib.request.urlopen(stats_url))["requests"] == 0 and time.monotonic() - started < 30:
            time.sleep(0.005)
        first_request = time.monotonic() - started
        done = 0
        while done < units:
            time.sleep(0.2)
            with store.engine.connect() as conn:
                done = conn.execute(text("SELECT count(*) FROM records WHERE job_id = :j"), {"j": job.id}).scalar()
                open_units = conn.execute(text("SELECT count(*) FROM units WHERE job_id = :j AND state IN "
                                               "('pending', 'running')"), {"j": job.id}).scalar()
            for mark in memory_marks:
                if mark not in rss and done >= mark:
                    rss[mark] = rss_mb(procs[0].pid)
            if not open_units:
                break
            if time.monotonic() - started > 900:
                raise SystemExit(f"gave up: {done} of {units} after 900 s")
        if done < units:
            print(f"warning: only {done} of {units} units stored: {store.stats(job.id).units}")
        with store.engine.connect() as conn:
            last = conn.execute(text("SELECT max(created_at) FROM records WHERE job_id = :j"), {"j": job.id}).scalar()
        last = last.replace(tzinfo=timezone.utc) if last.tzinfo is None else last
        elapsed = last.timestamp() - started_wall
        cpu = sum(cpu_seconds(p.pid) - cpu0[p.pid] for p in procs)
        sim_cpu = cpu_seconds(sim.pid) - sim_cpu0
        served = json.load(urllib.request.urlopen(base.rsplit("/v1", 1)[0] + "/sim/stats"))
        stats = store.stats(job.id)
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            p.wait(timeout=30)
        sim.terminate()
    print(f"units={units} workers={workers} concurrency={concurrency} in_flight={in_flight} rpm={rpm or 'none'} "
          f"latency={latency}s")
    print(f"enqueue={enqueued:.2f}s first_request={first_request:.2f}s elapsed(enqueue->last record)={elapsed:.2f}s "
          f"units_per_s={done / elapsed:.1f} served_429={served['served_429']} failed={stats.units['failed']} "
          f"worker_cpu_ms_per_unit={cpu / units * 1000:.2f} simulator_cpu_ms_per_unit={sim_cpu / units * 1000:.2f}")
    if rpm:
        ideal = (units - 1) * 60 / rpm + latency
        print(f"ideal={ideal:.2f}s overhead={(elapsed / ideal - 1) * 100:+.1f}%")
    if rss:
        marks = sorted(rss)
        print("worker RSS: " + ", ".join(f"{rss[m]:.1f} MB after {m} units" for m in marks)
              + (f"; growth {(rss[marks[-1]] / rss[marks[0]] - 1) * 100:+.1f}%" if len(marks) > 1 else ""))


def main() -> None:
    parser = argparse.ArgumentParser(description="gen fleet benchmarks")
    parser.add_argument("mode", choices=["rate", "latency", "memory"])
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--concurrency", type=int, default=20, help="task messages per worker process")
    parser.add_argument("--in-flight", type=int, default=200, help="the teacher's max_concurrency per process")
    parser.add_argument("--units", type=int, default=None, help="rate: 600, latency: 3000 by default")
    args = parser.parse_args()
    if args.mode == "rate":
        run(args.units or 600, 1200, 0.5, args.workers, args.concurrency, args.in_flight, [])
    elif args.mode == "latency":
        run(args.units or 3000, 0, 0.5, args.workers, args.concurrency, args.in_flight, [])
    else:
        run(20000, 0, 0.05, 1, args.concurrency, args.in_flight, [2000, 20000])


if __name__ == "__main__":
    main()
