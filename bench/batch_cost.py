"""The README's cost example: one SystemChat job online, then the same job with `mode: batch`, against the simulator.

Prints calls, batches, wall time and dollars (from the job file's prices) of each run. The simulator answers
online calls after --latency seconds and finishes a batch --batch-delay seconds after it is created.

    python bench/batch_cost.py --count 16 --latency 0.3 --batch-delay 2
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

PRICES = {"input_per_million": 0.15, "output_per_million": 0.60}   # gpt-4o-mini's list price, per teacher
SYSTEM_PROMPTS = [
    "You are Jeeves, a polite Victorian butler who never uses modern slang.",
    "You help only with houseplants and steer every other topic back to plants.",
    "Format every reply as a short bullet list.",
]


def job_text(name: str, base_url: str, count: int, mode: str, window: float) -> str:
    teachers = "".join(
        f"  {role}:\n    provider: openai-compatible\n    model: sim-{role}\n    base_url: {base_url}\n"
        f"    max_concurrency: 64\n    timeout: 30\n    mode: {mode}\n    batch_window: {window}\n"
        f"    prices: {json.dumps(PRICES)}\n" for role in ("user", "assistant", "judge"))
    prompts = "".join(f"    - {json.dumps(p)}\n" for p in SYSTEM_PROMPTS)
    return (f"name: {name}\ninstructor:\n  type: systemchat\n  count: {count}\n  system_prompts:\n{prompts}"
            f"  min_turns: 3\n  max_turns: 4\n  no_system_ratio: 0\n  judge_rule: mean\n  judge_threshold: 1\n"
            f"teachers:\n{teachers}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=16, help="conversations (units)")
    parser.add_argument("--latency", type=float, default=0.3, help="seconds per online answer")
    parser.add_argument("--batch-delay", type=float, default=2.0, help="seconds until a batch is complete")
    parser.add_argument("--window", type=float, default=0.5, help="batch_window of the batch run")
    args = parser.parse_args()

    from gen.simulator import SimConfig, Simulator
    from gen.store import Store
    from gen.store import batches as batch_db

    with tempfile.TemporaryDirectory(prefix="gen-bench-") as tmp, \
            Simulator(SimConfig(latency=args.latency, seed=11)) as sim:
        request = urllib.request.Request(f"{sim.server_url}/sim/batch/config", method="POST",
                                         data=json.dumps({"delay": args.batch_delay}).encode())
        urllib.request.urlopen(request, timeout=5).read()
        db = f"sqlite:///{Path(tmp) / 'gen.db'}"
        env = {**os.environ, "GEN_DATABASE_URL": db}
        rows = []
        for mode in ("online", "batch"):
            path = Path(tmp) / f"{mode}.yml"
            path.write_text(job_text(f"chat-{mode}", sim.base_url, args.count, mode, args.window), encoding="utf-8")
            started = time.monotonic()
            result = subprocess.run([sys.executable, "-m", "gen", "run", str(path), "-q"], env=env,
                                    capture_output=True, text=True)
            wall = time.monotonic() - started
            if result.returncode not in (0, 1):
                raise SystemExit(result.stderr)
            store = Store(db)
            job = next(j for j in store.list_jobs() if j.name == f"chat-{mode}")
            stats = store.stats(job.id)
            batches = len(batch_db.submissions(store, job_id=job.id))
            rows.append((mode, stats.units["done"], stats.records, stats.calls, batches, wall,
                         stats.prompt_tokens, stats.completion_tokens, stats.cost_usd))
            store.close()
    print(f"SystemChat, {args.count} conversations of 3-4 exchanges + a judge call; simulator latency "
          f"{args.latency}s online, {args.batch_delay}s per batch; prices ${PRICES['input_per_million']}/"
          f"${PRICES['output_per_million']} per million tokens in/out (batch: half)")
    print(f"{'mode':7} {'units':>5} {'records':>7} {'calls':>5} {'batches':>7} {'wall s':>7} {'tokens in':>9} "
          f"{'tokens out':>10} {'dollars':>9}")
    for mode, units, records, calls, batches, wall, tin, tout, usd in rows:
        print(f"{mode:7} {units:>5} {records:>7} {calls:>5} {batches:>7} {wall:>7.1f} {tin:>9} {tout:>10} "
              f"${usd:>8.5f}")


if __name__ == "__main__":
    main()
