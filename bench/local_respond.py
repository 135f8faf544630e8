"""Throughput of `gen run` (the in-process driver) on the respond workload against `gen simulate`.

Starts the simulator as its own process on a free port, writes N prompts, runs the job in this process with
SQLite persistence, and prints units per second end to end and CPU seconds per unit of the gen process.

    python bench/local_respond.py --units 2000 --latency 0.5 --concurrency 200
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_ready(url: str, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(url + "/models", timeout=1).read()
            return
        except OSError:
            time.sleep(0.1)
    raise SystemExit("the simulator did not start")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--units", type=int, default=2000)
    parser.add_argument("--latency", type=float, default=0.5)
    parser.add_argument("--concurrency", type=int, default=200)
    parser.add_argument("--rpm", type=float, default=None, help="the teacher's stated RPM (and the simulator's)")
    args = parser.parse_args()

    from gen.core.run_command import run_job_file
    from gen.store import Store

    work = Path(tempfile.mkdtemp(prefix="gen-bench-"))
    port = free_port()
    sim_args = [sys.executable, "-m", "gen", "simulate", "--port", str(port), "--latency", str(args.latency),
                "--jitter", "0"]
    if args.rpm:
        sim_args += ["--rpm", str(int(args.rpm))]
    sim = subprocess.Popen(sim_args, stderr=subprocess.DEVNULL)
    try:
        base = f"http://127.0.0.1:{port}/v1"
        wait_ready(base)
        with open(work / "prompts.jsonl", "w") as f:
            for i in range(args.units):
                f.write(json.dumps({"prompt": f"Benchmark prompt {i}: say something about the number {i}."}) + "\n")
        rpm = f"    rpm: {args.rpm}\n" if args.rpm else ""
        (work / "job.yml").write_text(
            "name: bench\ninstructor:\n  type: respond\n  prompts_file: prompts.jsonl\nteachers:\n  main:\n"
            f"    provider: openai-compatible\n    model: sim-1\n    base_url: {base}\n"
            f"    max_concurrency: {args.concurrency}\n    max_tokens: 256\n{rpm}")
        db_url = f"sqlite:///{work / 'gen.db'}"
        cpu0 = resource.getrusage(resource.RUSAGE_SELF)
        started = time.monotonic()
        if os.environ.get("GEN_BENCH_PROFILE"):
            import cProfile
            prof = cProfile.Profile()
            code = prof.runcall(run_job_file, db_url, work / "job.yml", quiet=True)
            prof.dump_stats(os.environ["GEN_BENCH_PROFILE"])
        else:
            code = run_job_file(db_url, work / "job.yml", quiet=True)
        elapsed = time.monotonic() - started
        cpu1 = resource.getrusage(resource.RUSAGE_SELF)
        store = Store(db_url)
        stats = store.stats(store.list_jobs()[0].id)
        sim_stats = json.load(urllib.request.urlopen(f"http://127.0.0.1:{port}/sim/stats"))
        served_429, peak = sim_stats["served_429"], sim_stats.get("peak_in_flight", 0)
    finally:
        sim.terminate()
        sim.wait()
    cpu = (cpu1.ru_utime - cpu0.ru_utime) + (cpu1.ru_stime - cpu0.ru_stime)
    print(f"units={args.units} latency={args.latency}s concurrency={args.concurrency} rpm={args.rpm or 'none'}")
    print(f"exit={code} records={stats.records} elapsed={elapsed:.2f}s units_per_s={stats.records / elapsed:.1f} "
          f"cpu_ms_per_unit={cpu / max(stats.records, 1) * 1000:.2f} served_429={served_429} peak_in_flight={peak}")
    if args.rpm:
        ideal = (args.units - 1) * 60 / args.rpm + args.latency
        print(f"ideal={ideal:.2f}s overhead={(elapsed / ideal - 1) * 100:.1f}%")


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    main()
