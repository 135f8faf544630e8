"""roleplay: a dry run exports valid records; turns that speak for another character are refused; the user's
character is `user` with names kept in metadata; a run killed mid-conversation resumes at the turn it reached."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

from conftest import ROOT, gen_cmd, sim_job, write_job
from gen.export import line_validator
from gen.schemas import first_problem
from gen.simulator import SimConfig, Simulator
from gen.store import Store, UnitState
from test_neardup import run_directly

SCENE = ("  scenes:\n    - characters:\n"
         "        - {name: Mara, card: \"A blunt ship's engineer who hates being interrupted.\"}\n"
         "        - {name: Ilse, card: \"The station's proud commander, hiding that she is scared.\"}\n"
         "      scene: \"The reactor is failing; Mara needs Ilse's codes.\"\n")


def roleplay_job(base_url: str, turns: int, extra: str = "") -> str:
    return sim_job(base_url, name="rp", instructor=f"  type: roleplay\n  count: 1\n  turns: {turns}\n{SCENE}{extra}",
                   run="run:\n  output_attempts: 2\n")


def test_dry_run_exports_valid_sharegpt_and_messages_with_character_names(tmp_path):
    result = gen_cmd("run", str(ROOT / "instructors" / "roleplay.yml"), "--dry-run", "--sim-latency", "0.0", "-q")
    assert result.returncode == 0, result.stderr
    for fmt in ("sharegpt", "messages"):
        out = tmp_path / f"{fmt}.jsonl"
        exported = gen_cmd("export", "roleplay-demo", "-o", str(out), "--format", fmt, "--meta")
        assert exported.returncode == 0, exported.stderr
        lines = [json.loads(x) for x in out.read_text().splitlines()]
        assert len(lines) == 4
        validator = line_validator(fmt)
        for line in lines:
            meta = line.pop("metadata")
            assert first_problem(validator, line) is None
            assert meta["user_character"] == meta["characters"][0]["name"]
            assert len(meta["speakers"]) == 8 and meta["speakers"][0] == meta["user_character"]
    fixed = json.loads((tmp_path / "messages.jsonl").read_text().splitlines()[0])
    assert fixed["metadata"]["user_character"] == "Mara"  # the worked example's fixed scene comes first
    assert [m["role"] for m in fixed["messages"]] == ["system"] + ["user", "assistant"] * 4


def test_turns_alternate_characters_and_a_turn_speaking_for_another_is_asked_again(sim, tmp_path):
    sim.script([
        {"match": "You are Mara, in a roleplay.", "answers": [
            "Mara: *slams the panel* Codes. Now.\nIlse: Fine, take them.",  # writes Ilse's line: refused
            "Mara: *slams the panel* Codes. Now.", "*grabs the tablet* Thank you."]},
        {"match": "You are Ilse, in a roleplay.", "answers": ["*straightens* You will ask properly, engineer."]},
    ])
    store, job_id, results = run_directly(tmp_path, roleplay_job(sim.base_url, 4))
    assert [r.state for r in results] == [UnitState.DONE]
    [record] = store.iter_records(job_id)
    assert record.conversation[0]["role"] == "system"
    assert record.conversation[0]["content"].startswith("You are Ilse in a roleplay with Mara.")
    assert record.conversation[1:] == [
        {"role": "user", "content": "*slams the panel* Codes. Now."},  # its own name label removed
        {"role": "assistant", "content": "*straightens* You will ask properly, engineer."},
        {"role": "user", "content": "*grabs the tablet* Thank you."},
        {"role": "assistant", "content": "*straightens* You will ask properly, engineer."},
    ]
    assert record.meta["speakers"] == ["Mara", "Ilse", "Mara", "Ilse"]
    assert record.meta["user_character"] == "Mara" and record.meta["assistant_characters"] == ["Ilse"]
    refused = [c for c in store.calls_for_job(job_id) if c.accepted is False]
    assert len(refused) == 1 and "Mara's turn speaks for Ilse" in (refused[0].reject_reason or "")
    # each character saw the other's turns as the other side, named
    ilse_last = [c for c in store.calls_for_job(job_id) if "You are Ilse" in json.dumps(c.messages)][-1]
    assert ilse_last.messages[-1] == {"role": "user", "content": "Mara: *grabs the tablet* Thank you."}


def test_a_turn_refused_on_every_attempt_rejects_the_unit_naming_the_turn(sim, tmp_path):
    sim.script([{"match": "You are Mara, in a roleplay.", "answers": ["As an AI, I cannot roleplay."]}])
    store, job_id, results = run_directly(tmp_path, roleplay_job(sim.base_url, 4))
    assert [r.state for r in results] == [UnitState.REJECTED]
    assert store.units(job_id)[0].last_error.startswith("turn 1 (Mara): filtered disclaimer 'As an AI'")


def test_a_run_killed_mid_conversation_resumes_at_the_turn_it_reached(tmp_path):
    turns = 12
    with Simulator(SimConfig(latency=0.25, seed=3)) as sim:
        job = write_job(tmp_path / "rp.yml", roleplay_job(sim.base_url, turns))
        proc = subprocess.Popen([sys.executable, "-m", "gen", "run", str(job), "-q"], stderr=subprocess.PIPE,
                                text=True, env=os.environ.copy())
        store = Store(f"sqlite:///{tmp_path / 'gen.db'}")
        deadline, accepted = time.monotonic() + 60, []
        while time.monotonic() < deadline:
            try:
                jobs = store.list_jobs()
                accepted = [c for c in store.calls_for_job(jobs[0].id) if c.accepted] if jobs else []
            except Exception:  # the database is being created
                accepted = []
            if len(accepted) >= 4:
                break
            time.sleep(0.05)
        proc.send_signal(signal.SIGKILL)
        proc.communicate(timeout=30)
        job_id = store.list_jobs()[0].id
        before = [c for c in store.calls_for_job(job_id) if c.accepted]
        assert 4 <= len(before) < turns, "the kill must land mid-conversation"
        assert store.stats(job_id).units[UnitState.DONE] == 0
        paid_at_kill = sim.stats()["by_status"].get("200", 0)

        again = gen_cmd("run", str(job), "-q")
        assert again.returncode == 0, again.stderr
        paid_total = sim.stats()["by_status"].get("200", 0)

    [record] = store.iter_records(job_id)
    texts = [m["content"] for m in record.conversation[1:]]
    assert len(texts) == turns
    # the turns made before the kill are in the record as they were answered, and were not paid for again
    assert texts[: len(before)] == [c.text.strip() for c in sorted(before, key=lambda c: c.id)]
    # ...and only the turns not yet made were bought after the kill (a turn a check refused is asked again, so
    # answers refused after the kill count too, but none repeats a turn answered before it)
    after = [c for c in store.calls_for_job(job_id) if c.accepted and c.id > max(b.id for b in before)]
    assert len(after) == turns - len(before)
    assert not {(c.request_key, c.occurrence) for c in after} & {(c.request_key, c.occurrence) for c in before}
    refused_after = [c for c in store.calls_for_job(job_id) if c.accepted is False and c.id > max(b.id for b in before)]
    assert paid_total - paid_at_kill == len(after) + len(refused_after)
