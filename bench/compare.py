"""gen beside the bare SDK, interleaved in one window on this machine: the figures the README's Performance
section quotes.

    python bench/compare.py                       # 3,000 calls latency-bound, 600 calls at 1,200 RPM; 2 rounds
    python bench/compare.py --calls 600 --rounds 1 --no-fleet     # a quick look
    python bench/rate.py                                          # the rate-bound part alone

Each round runs, one after the other against a fresh simulator (latency 0.5 s +- 0.1):
- bare: the openai SDK with a semaphore of 200, nothing persisted (bench/bare_sdk.py)
- gen run: the respond job on SQLite, 200 in flight (bench/local_respond.py)
- fleet: 2 workers on PostgreSQL + Redis (bench/fleet.py; skipped with --no-fleet)
Latency-bound, it prints units or calls per second, the ratio to the bare SDK, CPU ms per unit and 429s. Then the
same three rate-bound (600 calls, 1,200 RPM stated and enforced by the simulator at a 1 s grain) as bench/rate.py
runs them: each started as a command and timed from its start, with the simulator's arrival times splitting the
total into start-up, pacing (and the RPM achieved) and tail. Asserts nothing."""
from __future__ import annotations

import argparse
import re
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import rate  # noqa: E402  (bench/rate.py: the rate-bound runs, timed from each command's start)


def figures(text: str) -> dict[str, float]:
    return {k: float(v.rstrip("s%")) for k, v in re.findall(r"([a-z_0-9]+)=([-+0-9.]+s?%?)(?=\s|$)", text)}


def run(argv: list[str]) -> dict[str, float]:
    out = subprocess.run([sys.executable, *argv], capture_output=True, text=True, timeout=1800)
    if out.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} failed:\n{out.stdout[-2000:]}\n{out.stderr[-2000:]}")
    return figures(out.stdout)


def bare(calls: int, rpm: float | None, latency: float) -> dict[str, float]:
    """The bare SDK against a simulator of its own (started like the others)."""
    from fleet import start_simulator  # noqa: E402  (bench/fleet.py)

    sim, base = start_simulator(latency, int(rpm or 0))
    try:
        argv = [str(HERE / "bare_sdk.py"), "--base-url", base, "--calls", str(calls), "--concurrency", "200"]
        if rpm:
            argv += ["--rpm", str(rpm)]
        return run(argv)
    finally:
        sim.terminate()
        sim.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=3000)
    parser.add_argument("--rate-calls", type=int, default=600)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--latency", type=float, default=0.5)
    parser.add_argument("--no-fleet", action="store_true")
    args = parser.parse_args()
    rows: list[tuple[str, str, dict[str, float]]] = []
    rate_rows: list[tuple[str, str]] = []
    for r in range(args.rounds):
        rows.append((f"round {r + 1}", "bare SDK", bare(args.calls, None, args.latency)))
        rows.append((f"round {r + 1}", "gen run", run([str(HERE / "local_respond.py"), "--units", str(args.calls),
                                                        "--latency", str(args.latency), "--concurrency", "200"])))
        if not args.no_fleet:
            rows.append((f"round {r + 1}", "fleet", run([str(HERE / "fleet.py"), "latency", "--units",
                                                         str(args.calls)])))
        for key in ("bare", "gen-run") if args.no_fleet else ("bare", "gen-run", "fleet"):
            rate_rows.append((f"round {r + 1}", rate.measure(key, args.rate_calls)))
    print(f"{'round':8} {'tool':20} {'per s':>8} {'vs bare':>8} {'CPU ms/unit':>12} {'429s':>5}")
    for label, tool, f in rows:
        reference = next(g for lab, t, g in rows if lab == label and t == "bare SDK")
        per_s = f.get("units_per_s", f.get("calls_per_s", 0.0))
        ref = reference.get("calls_per_s", 0.0)
        cpu = f.get("cpu_ms_per_unit", f.get("cpu_ms_per_call", f.get("worker_cpu_ms_per_unit", 0.0)))
        print(f"{label:8} {tool:20} {per_s:8.1f} {per_s / ref if ref else 0:8.2f} {cpu:12.2f} "
              f"{int(f.get('served_429', 0)):5d}")
    ideal = (args.rate_calls - 1) * 60 / rate.RPM + rate.LATENCY
    print(f"\nrate-bound: {args.rate_calls} calls at {rate.RPM} RPM, latency {rate.LATENCY} s, ideal {ideal:.2f} s, "
          "timed from each command's start (bench/rate.py)")
    print(f"{'round':8} {rate.HEADER}")
    for label, line in rate_rows:
        print(f"{label:8} {line}")


if __name__ == "__main__":
    main()
