"""`gen export` beside the plain-Python floor, in one run, on SQLite databases of N multi-turn records.

    python bench/export_speed.py --sizes 10k,100k,1m [--formats messages,sharegpt] [--rounds 1]

Each database (one job of N records: a system prompt and three exchanges, ~1.7 KB of JSON) is built once through
the store (executemany), each record checked and screened as the core stores it (gen.record_screen), and cached
under /tmp/gen-export-bench/. Then, per size and format, it times

- `gen export JOB -o FILE --format FMT`: the real command, as a subprocess (its start-up included), and
- the floor: a subprocess that reads the same rows from the same database (sqlite3, one streamed SELECT) and
  writes the same bytes (orjson.loads when installed, json.dumps), with no checks at all,

and prints lines/s for both, their ratio (wall time; and CPU time, steadier on a shared machine), each
process's peak RSS (os.wait4, through a small launcher), and whether the two files are
byte-identical (they must be: the floor is only a floor if it writes what gen writes)."""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

CACHE = Path("/tmp/gen-export-bench")
CHUNK = 10_000
WORDS = ("the river model answer token lattice garden signal quiet number prime window café naïve ünïcode "
         "résumé — 東京 stream record export trainer careful honest plain simple gradient batch cache paper "
         "value order system reason because example detail moment evening bright").split()


def parse_size(text: str) -> int:
    text = text.strip().lower()
    scale = {"k": 1_000, "m": 1_000_000}.get(text[-1:], 1)
    return int(float(text[:-1] if scale > 1 else text) * scale)


def _sentence(rng: random.Random, words: int) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(words)).capitalize() + "."


def conversation(i: int) -> list[dict[str, str]]:
    rng = random.Random(i)
    conv = [{"role": "system", "content": f"You are assistant #{i % 97}. " + _sentence(rng, 14)}]
    for turn in range(3):
        conv.append({"role": "user", "content": f"Question {i}.{turn}: " + _sentence(rng, 18)})
        conv.append({"role": "assistant", "content": " ".join(_sentence(rng, 16) for _ in range(4))
                     + ("\nSecond paragraph: \"quoted\" text." if turn == 1 else "")})
    return conv


def build(n: int) -> tuple[str, str]:
    """(database URL, job id) of a cached database of n records, built through the store if missing."""
    CACHE.mkdir(parents=True, exist_ok=True)
    from gen.record_screen import screen_version

    path = CACHE / f"records-{n}-{screen_version()}.db"  # rebuilt when the checks records are stored with change
    done = path.with_suffix(".job")
    if path.exists() and done.exists():
        return f"sqlite:///{path}", done.read_text().strip()
    for stale in (path, done):
        stale.unlink(missing_ok=True)
    from gen.conversation import conversation_problem
    from gen.core.execute import screened
    from gen.store import Store
    from gen.store.models import Record
    from gen.types import NewRecord

    store = Store(f"sqlite:///{path}")
    job = store.create_job(name="export-bench", instructor="respond", spec={}, spec_hash="bench",
                           planning_done=False)
    started = time.perf_counter()
    for first in range(0, n, CHUNK):
        count = min(CHUNK, n - first)
        ids = store.add_units(job.id, first, [(f"u{first + i}", {}) for i in range(count)])
        # as the core stores a record (gen.core.execute): checked, then screened (gen.record_screen)
        made = [NewRecord(f"r{first + i}", conversation(first + i), {"teacher": "main", "model": "sim-1"})
                for i in range(count)]
        assert all(conversation_problem(r.conversation) is None for r in made)
        rows = [{"job_id": job.id, "unit_id": uid, "key": r.key, "kind": r.kind, "conversation": r.conversation,
                 "meta": r.meta, "call_ids": [], "screen": r.screen}
                for uid, r in zip(ids, map(screened, made))]
        with store.engine.begin() as conn:
            conn.execute(Record.__table__.insert(), rows)
    store.finish_planning(job.id)
    store.close()
    done.write_text(job.id)
    print(f"built {n:,} records in {time.perf_counter() - started:.0f} s: {path}", flush=True)
    return f"sqlite:///{path}", job.id


def floor(db_path: str, job_id: str, fmt: str, out: str) -> None:
    """The plain loop: same rows, same bytes, no checks."""
    try:
        from orjson import loads
    except ImportError:
        from json import loads
    dumps = json.dumps
    role = {"system": "system", "user": "human", "assistant": "gpt"}
    conn = sqlite3.connect(db_path)
    rows = conn.execute("SELECT conversation FROM records WHERE job_id = ? AND kind = 'conversation' ORDER BY id",
                        (job_id,))
    with open(out, "w", encoding="utf-8") as f:
        for (text,) in rows:
            conv = loads(text)
            if fmt == "sharegpt":
                line = {"conversations": [{"from": role[m["role"]], "value": m["content"]} for m in conv]}
            else:
                line = {"messages": [{"role": m["role"], "content": m["content"]} for m in conv]}
            f.write(dumps(line, ensure_ascii=False) + "\n")


def timed(cmd: list[str], env: dict[str, str] | None = None) -> tuple[float, float, float]:
    """(wall seconds, CPU seconds, peak RSS in MB) of one child process, measured by a small launcher process:
    a child forked from this (bigger) process would report this process's peak as its own."""
    launcher = [sys.executable, __file__, "--measure", json.dumps(cmd)]
    done = subprocess.run(launcher, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(cmd[:5])}...: {done.stderr.strip()}")
    wall, cpu, rss = json.loads(done.stdout)
    return wall, cpu, rss


def measure(cmd: list[str]) -> None:
    """Run `cmd`; print [wall s, CPU s, peak RSS MB] as JSON (the launcher side of `timed`)."""
    started = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    err = proc.stderr.read().decode() if proc.stderr else ""
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - started
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"exited {os.waitstatus_to_exitcode(status)}: {err.strip()}")
    print(json.dumps([wall, usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 1024]))


def digest(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="10k,100k,1m", help="record counts, e.g. 10k,100k,1m")
    parser.add_argument("--formats", default="messages,sharegpt")
    parser.add_argument("--rounds", type=int, default=1, help="best of this many runs of each side")
    parser.add_argument("--floor", nargs=4, metavar=("DB", "JOB", "FMT", "OUT"), help=argparse.SUPPRESS)
    parser.add_argument("--measure", metavar="JSON_ARGV", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.measure:
        measure(json.loads(args.measure))
        return
    if args.floor:
        floor(*args.floor)
        return
    out_dir = CACHE / "out"
    out_dir.mkdir(parents=True, exist_ok=True)
    print(f"{'records':>9} {'format':>9} {'gen lines/s':>12} {'floor lines/s':>14} {'ratio':>6} {'CPU ratio':>9} "
          f"{'gen RSS MB':>11} {'floor RSS MB':>13} {'same bytes':>11}", flush=True)
    for n in (parse_size(s) for s in args.sizes.split(",")):
        url, job_id = build(n)
        env = {**os.environ, "GEN_DATABASE_URL": url}
        for fmt in args.formats.split(","):
            gen_out, floor_out = out_dir / f"gen-{n}-{fmt}.jsonl", out_dir / f"floor-{n}-{fmt}.jsonl"
            gen_runs = [timed([sys.executable, "-m", "gen", "export", job_id, "-o", str(gen_out), "--format", fmt],
                              env) for _ in range(args.rounds)]
            floor_runs = [timed([sys.executable, __file__, "--floor", url.removeprefix("sqlite:///"), job_id, fmt,
                                 str(floor_out)]) for _ in range(args.rounds)]
            gen_s, gen_cpu, gen_rss = min(r[0] for r in gen_runs), min(r[1] for r in gen_runs), \
                max(r[2] for r in gen_runs)
            floor_s, floor_cpu, floor_rss = min(r[0] for r in floor_runs), min(r[1] for r in floor_runs), \
                max(r[2] for r in floor_runs)
            same = digest(gen_out) == digest(floor_out)
            print(f"{n:>9,} {fmt:>9} {n / gen_s:>12,.0f} {n / floor_s:>14,.0f} {floor_s / gen_s:>6.2f} "
                  f"{floor_cpu / gen_cpu:>9.2f} "
                  f"{gen_rss:>11.0f} {floor_rss:>13.0f} {'yes' if same else 'NO':>11}", flush=True)
            gen_out.unlink()
            floor_out.unlink()


if __name__ == "__main__":
    main()
