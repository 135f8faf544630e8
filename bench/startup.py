"""Start-up times of the `gen` command: `gen --help` and `gen validate` of every worked example, against targets.

    python bench/startup.py                 # 10 timed runs each (after one warm-up), median wall and CPU time
    python bench/startup.py --runs 20 --compile

Each run is a fresh `python -m gen ...` process timed from outside (start to exit, interpreter start-up
included); CPU is the child's user + system time, which moves less than wall time on a busy machine. Runs are
made in an empty temporary directory, so the examples that read an earlier job (systemchat, dpo_reroll) stop at
"no gen database" after reading and checking their file: what `gen validate` does before any job has run.

Python compiles gen's modules on every start when their bytecode is absent or stale and cannot be written
(PYTHONDONTWRITEBYTECODE=1): the script says so. `--compile` writes it first, as installing a wheel does.
Prints its figures; asserts nothing.
"""
from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
HELP_TARGET, VALIDATE_TARGET = 0.2, 0.4  # seconds, issue #11


def timed(argv: list[str], cwd: Path) -> tuple[float, float, int]:
    """(wall seconds, CPU seconds, exit code) of one run."""
    started = time.perf_counter()
    proc = subprocess.Popen(argv, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - started
    proc.returncode = os.waitstatus_to_exitcode(status)
    return wall, usage.ru_utime + usage.ru_stime, proc.returncode


def measure(argv: list[str], runs: int, cwd: Path) -> tuple[float, float, float, float, set[int]]:
    """Median and max wall time, median CPU time, min wall time, and the exit codes seen."""
    timed(argv, cwd)  # warm-up: file cache, bytecode when it can be written
    walls, cpus, codes = [], [], set()
    for _ in range(runs):
        wall, cpu, code = timed(argv, cwd)
        walls.append(wall)
        cpus.append(cpu)
        codes.add(code)
    return statistics.median(walls), max(walls), statistics.median(cpus), min(walls), codes


def main() -> None:
    parser = argparse.ArgumentParser(description="start-up times of the gen command")
    parser.add_argument("--runs", type=int, default=10, help="timed runs per command (default 10)")
    parser.add_argument("--compile", action="store_true", help="write gen's bytecode first (as a wheel install does)")
    parser.add_argument("files", nargs="*", type=Path, help="job files (default: instructors/*.yml)")
    args = parser.parse_args()
    if args.compile:
        subprocess.run([sys.executable, "-m", "compileall", "-q", str(ROOT / "gen")], check=True,
                       env={k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"})
    if os.environ.get("PYTHONDONTWRITEBYTECODE"):
        print("note: PYTHONDONTWRITEBYTECODE is set: modules whose bytecode is missing or stale are compiled on "
              "every start" + ("" if args.compile else " (--compile writes it first)"))
    files = args.files or sorted((ROOT / "instructors").glob("*.yml"))
    gen = [sys.executable, "-m", "gen"]
    print(f"{'command':44} {'median wall':>11} {'max':>6} {'min':>6} {'median CPU':>10} {'target':>6}  verdict")
    worst = 0.0
    with tempfile.TemporaryDirectory(prefix="gen-startup-") as here:
        cwd = Path(here)
        for label, argv, target in [("gen --help", gen + ["--help"], HELP_TARGET)] + [
                (f"gen validate {f.relative_to(ROOT) if f.is_relative_to(ROOT) else f}",
                 gen + ["validate", str(f.resolve())], VALIDATE_TARGET) for f in files]:
            median, high, cpu, low, codes = measure(argv, args.runs, cwd)
            worst = max(worst, median / target)
            exits = "" if codes == {0} else f"  (exit {','.join(map(str, sorted(codes)))})"
            verdict = "met" if median <= target else "NOT met"
            print(f"{label:44} {median:10.3f}s {high:5.2f}s {low:5.2f}s {cpu:9.3f}s {target:5.1f}s  {verdict}{exits}",
                  flush=True)
    print(f"worst median / target: {worst:.2f} ({args.runs} runs each; wall times on a busy machine run high)")


if __name__ == "__main__":
    main()
