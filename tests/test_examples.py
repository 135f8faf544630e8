"""Every worked example in instructors/ runs as a dry run (the real `gen run --dry-run`, the simulator over
real HTTP) and exports records; the SystemChat example, judged by the strict rule, shows rejected
conversations with their reasons in `gen status`.

The examples run as copies with smaller counts (and shorter conversations), written beside a copy of
instructors/data so their relative paths hold. Examples that read an earlier job (dpo_reroll reads
respond-demo, systemchat reads system-prompts-demo) get it run first in the same database, as the README says.
"""
from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path

import pytest
import yaml

from conftest import ROOT, gen_cmd
from gen.store import Store

EXAMPLES = sorted(p.stem for p in (ROOT / "instructors").glob("*.yml"))
NEEDS = {"dpo_reroll": ["respond"], "systemchat": ["system_prompts"]}
SMALLER = {  # instructor option -> value, applied where the example sets a larger one
    "respond": {"count": 6},
    "riddles": {"count": 10},
    "coding": {"count": 6},
    "system_prompts": {"count": 16},
    "systemchat": {"count": 10, "min_turns": 3, "max_turns": 5},
    "dpo_reroll": {"count": 4},
}
SHOWS_REJECTIONS = {"systemchat"}  # examples whose dry run must show rejected units with reasons
EXPORT_FORMAT = {"dpo_reroll": "dpo-trl"}


def small_copy(example: str, folder: Path) -> Path:
    """The example job file with smaller counts, in `folder` beside a copy of instructors/data."""
    if not (folder / "data").exists():
        shutil.copytree(ROOT / "instructors" / "data", folder / "data")
    job = yaml.safe_load((ROOT / "instructors" / f"{example}.yml").read_text())
    for option, value in SMALLER.get(job["instructor"]["type"], {}).items():
        current = job["instructor"].get(option)
        job["instructor"][option] = value if current is None or option.endswith("_turns") else min(current, value)
    path = folder / f"{example}.yml"
    path.write_text(yaml.safe_dump(job, sort_keys=False))
    return path


def dry_run(example: str, folder: Path):
    done = gen_cmd("run", str(small_copy(example, folder)), "--dry-run", "--sim-latency", "0.01", "-q")
    assert done.returncode == 0, done.stderr[-2000:]
    return re.search(r"job (\w+)", done.stderr).group(1)


def test_every_instructor_has_a_worked_example():
    types = {yaml.safe_load((ROOT / "instructors" / f"{e}.yml").read_text())["instructor"]["type"] for e in EXAMPLES}
    assert types >= {"respond", "riddles", "coding", "system_prompts", "systemchat", "dpo_reroll"}


@pytest.mark.parametrize("example", EXAMPLES)
def test_the_worked_example_dry_run_exports_records(example, tmp_path):
    for earlier in NEEDS.get(example, []):
        dry_run(earlier, tmp_path)
    job_id = dry_run(example, tmp_path)

    out = tmp_path / "out.jsonl"
    exported = gen_cmd("export", job_id, "-o", str(out), "--format", EXPORT_FORMAT.get(example, "messages"))
    assert exported.returncode == 0, exported.stderr
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert rows, f"{example}: the dry run exported nothing"

    status = gen_cmd("status", job_id, "--json")
    assert status.returncode == 0, status.stderr
    units = json.loads(status.stdout)["units"]
    assert units["failed"] == 0 and units["done"] > 0
    if example in SHOWS_REJECTIONS:
        assert units["rejected"] > 0, f"{example}: the dry run rejected nothing"
        lines = gen_cmd("status", job_id).stdout.splitlines()
        reasons = [line for line in lines if line.strip().startswith("rejected unit")]
        assert reasons and all(re.search(r"rejected unit \S+: \w.{10,}", line) for line in reasons), lines
        print(f"\n{example}: " + "\n".join(reasons))


def test_the_coding_example_writes_code_in_the_language_asked_and_refuses_fenced_plainformat(tmp_path):
    job_id = dry_run("coding", tmp_path)
    out = tmp_path / "code.jsonl"
    assert gen_cmd("export", job_id, "-o", str(out), "--meta", "--format", "messages").returncode == 0
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    languages = {row["metadata"]["language"] for row in rows}
    assert len(languages) >= 2
    checked = [row for row in rows if row["metadata"]["code_check"] == "passed"]
    assert checked, "no answer passed its syntax check"
    plain = [row for row in rows if row["metadata"]["variant"] == "plainformat"]
    assert plain and all("```" not in row["messages"][-1]["content"] for row in plain)
    # the simulator fenced some PLAINFORMAT answers or broke their syntax: the checks refused those calls with
    # their reasons and asked again
    store = Store(os.environ["GEN_DATABASE_URL"])
    reasons = [c.reject_reason for c in store.calls_for_job(job_id) if c.accepted is False]
    store.close()
    assert any("PLAINFORMAT" in r and "fence" in r for r in reasons), reasons
