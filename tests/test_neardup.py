"""Near-duplicate detection (gen.neardup) on the real database, SQLite and PostgreSQL: sequential and concurrent.

`run_directly` runs a whole job through the job lifecycle (gen.core.lifecycle), which gives the instructor the
job's near-duplicate index through its services.
"""
from __future__ import annotations

import asyncio
import json
import logging
import os
import random
import re
import threading
from pathlib import Path

import pytest
from sqlalchemy import text

from conftest import gen_cmd, sim_job, write_job
from gen.config import read_job_file
from gen.core.jobs import load_instructor
from gen.core.lease import LeaseKeeper
from gen.core.lifecycle import JobRun, open_job, plan_units
from gen.core.report import status_dict, status_lines
from gen.instructors.coding.instructor import CodingOptions
from gen.instructors.riddles import RiddlesOptions, riddle_key
from gen.instructors.systemchat.similarity import NearDuplicates, text_key as prompt_key
from gen.instructors.systemchat.system_prompts import SystemPromptsOptions
from gen.neardup import DEFAULT_THRESHOLD, NearDupIndex, estimated_jaccard, lsh_bands, signature, stored_scope
from gen.store import Store, UnitState
from gen.teacher import Meter
from gen.text import normalise, text_key

PAIRS = Path(__file__).parent / "data" / "neardup_pairs.jsonl"


def new_job(store: Store, name: str = "nd") -> str:
    return store.create_job(name=name, instructor="riddles", spec={}, spec_hash="x", units=[]).id


def run_directly(tmp_path, job_text: str, *, neardup: bool = True):
    """Every unit of the job, one after another, through the execution core; returns (store, job_id, results)."""
    spec = read_job_file(write_job(tmp_path / "job.yml", job_text))
    instructor = load_instructor(spec)
    store = Store(os.environ["GEN_DATABASE_URL"])
    job_id = open_job(store, spec, instructor, resume=False).job.id
    plan_units(store, job_id, instructor, start=0)

    async def go():
        run = JobRun(store, job_id, spec, instructor, leases=LeaseKeeper(store, "test", 300.0))
        if not neardup:
            instructor.services.seen = None
        try:
            return [await run.run_unit(uid) for uid in store.runnable_unit_ids(job_id, max_attempts=3)]
        finally:
            await run.close()

    return store, job_id, asyncio.run(go())


KEYS = "What has keys but cannot open a single lock?"
KEYS_AGAIN = "What has many keys but cannot open a single lock?"
TOWEL = "What gets wetter and wetter the more it dries?"


def test_signatures_estimate_similarity_and_bands_follow_the_threshold():
    assert estimated_jaccard(signature(KEYS), signature(KEYS)) == 1.0
    assert estimated_jaccard(signature(KEYS), signature(KEYS_AGAIN)) >= 0.8
    assert estimated_jaccard(signature(KEYS), signature(TOWEL)) < 0.3
    # what datasketch's MinHashLSH picks for 128 permutations, weights 0.05 (false positives) / 0.95 (misses)
    assert lsh_bands(0.8) == (16, 8)
    assert lsh_bands(0.8, fp_weight=0.5, fn_weight=0.5) == (9, 13)


def test_a_near_duplicate_is_dropped_recorded_and_shown_by_status(db_url):
    store = Store(db_url)
    job_id = new_job(store)
    index = NearDupIndex(store, job_id)
    assert asyncio.run(index.add_if_new("riddles", KEYS)) is True
    assert asyncio.run(index.add_if_new("riddles", KEYS_AGAIN)) is False
    assert index.add_if_new_sync("riddles", TOWEL) is True
    assert index.add_if_new_sync("coding:python", KEYS_AGAIN) is True, "scopes are separate"
    # the same item again (a unit that is run again) is not its own near-duplicate
    assert index.add_if_new_sync("riddles", KEYS) is True
    # dropping the same near-duplicate again (a rerun) counts it once
    assert index.add_if_new_sync("riddles", KEYS_AGAIN) is False
    [dropped] = index.near_duplicates()
    assert (dropped.scope, dropped.text, dropped.similarity >= 0.8) == ("riddles", KEYS_AGAIN, True)
    assert store.near_duplicates(job_id) == 1
    job = store.get_job(job_id)
    assert status_dict(store, job)["near_duplicates"] == 1
    assert "  near-dup 1 near-duplicates dropped" in status_lines(store, job)
    # nothing of a dropped text stays in the index: only the three kept texts have signatures
    with store.engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM neardup_signatures")).scalar() == 3
    store.close()


def test_the_threshold_decides_how_loose_a_paraphrase_is_still_a_duplicate(db_url):
    store = Store(db_url)
    a = "Write a Python function that merges two sorted lists into one sorted list."
    b = "Write a Python function that merges two sorted lists into a single sorted list."  # estimated 0.78
    strict, loose = NearDupIndex(store, new_job(store, "strict")), NearDupIndex(store, new_job(store, "loose"))
    assert strict.add_if_new_sync("t", a, threshold=0.8) is True
    assert strict.add_if_new_sync("t", b, threshold=0.8) is True
    assert loose.add_if_new_sync("t", a, threshold=0.7) is True
    assert loose.add_if_new_sync("t", b, threshold=0.7) is False
    store.close()


def random_words(seed: int, n: int = 12) -> str:
    """n made-up words: texts of different seeds share almost no character 3-grams."""
    rng = random.Random(seed)
    return " ".join("".join(rng.choices("abcdefghijklmnopqrstuvwxyz", k=rng.randint(4, 8))) for _ in range(n))


ROUND_TEXTS = [random_words(r) for r in range(25)]  # one new text per round, unlike every other round's


@pytest.mark.timeout(90)
def test_two_workers_adding_near_duplicates_at_once_exactly_one_wins(db_url):
    """Two workers (own engines, own connections) add near-identical texts at the same instant, many times."""
    stores = [Store(db_url), Store(db_url)]
    job_id = new_job(stores[0])
    indexes = [NearDupIndex(s, job_id) for s in stores]
    for index in indexes:
        index.add_if_new_sync("warmup", "tables and imports ready")
    rounds = len(ROUND_TEXTS)
    wins: list[list[bool]] = [[], []]
    barrier = threading.Barrier(2)

    def worker(i: int) -> None:
        for r in range(rounds):
            texts = (ROUND_TEXTS[r] + " quickly.", ROUND_TEXTS[r] + " quietly.")  # near-identical, new each round
            barrier.wait()
            wins[i].append(indexes[i].add_if_new_sync("race", texts[i]))

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(80)
    assert all(len(w) == rounds for w in wins), "a worker did not finish (deadlock?)"
    per_round = [a + b for a, b in zip(*wins)]
    assert per_round == [1] * rounds, f"rounds where both or neither won: {per_round}"
    assert stores[0].near_duplicates(job_id) == rounds
    for s in stores:
        s.close()


def labelled_pairs() -> list[dict]:
    return [json.loads(line) for line in PAIRS.read_text(encoding="utf-8").splitlines() if line.strip()]


def test_the_default_threshold_measures_on_the_labelled_set(tmp_path, capsys):
    """Every labelled pair through the exact key and the real index (each pair its own scope): >= 90% of
    near-verbatim variants dropped, <= 2% of distinct items of the same kind wrongly dropped, with the
    instructors' default threshold."""
    rows = labelled_pairs()
    duplicates = [r for r in rows if r["duplicate"]]
    distinct = [r for r in rows if not r["duplicate"]]
    assert len(duplicates) >= 150 and len(distinct) >= 150
    assert {r["kind"] for r in rows} == {"riddle", "coding", "system_prompt"}
    assert {r["variant"] for r in duplicates} == {"paraphrase", "one_word", "surface", "reordered"}
    for options in (RiddlesOptions(count=1), CodingOptions(count=1), SystemPromptsOptions(count=1)):
        threshold = getattr(options, "job_near_duplicate_threshold", None) or options.near_duplicate_threshold
        assert threshold == DEFAULT_THRESHOLD
    assert SystemPromptsOptions(count=1).near_duplicate_threshold == DEFAULT_THRESHOLD

    store = Store(f"sqlite:///{tmp_path / 'pairs.db'}")
    index = NearDupIndex(store, new_job(store))
    dropped = {True: 0, False: 0}
    by_variant: dict[str, list[int]] = {}
    for n, row in enumerate(rows):
        assert index.add_if_new_sync(f"pair{n}", row["a"]) is True
        # as in the instructors: the same identity form is the same record key (an exact duplicate, which the
        # store drops), anything else is asked of the index
        same_text = text_key(row["a"]) == text_key(row["b"])
        was_dropped = same_text or not index.add_if_new_sync(f"pair{n}", row["b"])
        dropped[row["duplicate"]] += was_dropped
        by_variant.setdefault(row["variant"], [0, 0])[0] += was_dropped
        by_variant[row["variant"]][1] += 1
    store.close()
    caught = dropped[True] / len(duplicates)
    wrongly = dropped[False] / len(distinct)
    with capsys.disabled():
        print(f"\nnear-duplicates at threshold {DEFAULT_THRESHOLD}: {caught:.1%} of {len(duplicates)} variants caught, "
              f"{wrongly:.1%} of {len(distinct)} distinct pairs wrongly dropped; by variant (dropped/pairs): "
              + ", ".join(f"{v} {d}/{t}" for v, (d, t) in sorted(by_variant.items())))
    assert caught >= 0.90
    assert wrongly <= 0.02
    # the smaller systemchat measure, used within a batch of prompts, agrees with the index
    batch = NearDuplicates(SystemPromptsOptions(count=1).near_duplicate_threshold)
    prompts = [r for r in duplicates if r["kind"] == "system_prompt" and r["variant"] == "paraphrase"]
    for row in prompts:
        batch.add(row["a"])
    assert sum(batch.near(r["b"]) is not None for r in prompts) >= 0.9 * len(prompts)


def test_one_identity_form_nfkc_casefold_punctuation_as_word_boundaries():
    assert normalise("Wait—what…now?") == "wait what now"
    assert normalise("wait -- what ... now") == normalise("Wait—what…now?")
    assert normalise("a---b") == normalise("a b") == normalise("A-B")
    assert normalise("ＷＨＡＴ is ﬁne ?") == "what is fine"   # full width, ligature, nbsp
    assert normalise("STRASSE") == normalise("straße")                           # casefold, not lower
    assert normalise("can’t") == normalise("can't") == normalise("cant")
    assert normalise("résumé") != normalise("resume")                       # accents are letters
    a, b = "What has keys—but can't open locks?", "WHAT HAS KEYS... BUT CAN’T OPEN LOCKS"
    # every exact key in gen is this one form
    assert riddle_key(a) == riddle_key(b)
    assert prompt_key("p:", a) == prompt_key("p:", b)
    assert text_key(a) == text_key(b)


def test_signatures_of_an_earlier_representation_are_kept_apart_and_said_so(tmp_path, caplog):
    store = Store(f"sqlite:///{tmp_path / 'old.db'}")
    job_id = new_job(store)
    with store.engine.begin() as conn:  # an index an earlier gen wrote: same texts, the bare scope
        conn.execute(text("INSERT INTO neardup_signatures (job_id, scope, item_key, signature, created_at) "
                          "VALUES (:j, 'riddles', 'old', :sig, CURRENT_TIMESTAMP)"),
                     {"j": job_id, "sig": json.dumps(signature(KEYS))})
    index = NearDupIndex(store, job_id)
    with caplog.at_level(logging.WARNING, logger="gen.neardup"):
        assert index.add_if_new_sync("riddles", KEYS_AGAIN) is True
        assert index.add_if_new_sync("riddles", KEYS) is False
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "earlier version of gen" in warnings[0] and "'riddles'" in warnings[0]
    with store.engine.connect() as conn:
        scopes = sorted(row[0] for row in conn.execute(text("SELECT scope FROM neardup_signatures")))
    assert scopes == ["riddles", stored_scope("riddles")]
    store.close()


def riddles_job_text(base_url: str, name: str, extra: str = "") -> str:
    return sim_job(base_url, name=name, instructor=f"  type: riddles\n  count: 2\n  batch_size: 2\n{extra}")


def riddle_batch(*questions: str) -> str:
    return json.dumps({"riddles": [{"question": q, "answer": "an answer"} for q in questions]})


def test_texts_of_earlier_jobs_named_in_dedup_against_jobs_count_as_seen(sim, tmp_path):
    sim.script([{"match": "This is batch 1 of", "answers": [
        riddle_batch(KEYS, TOWEL),
        riddle_batch("WHAT HAS MANY KEYS -- BUT CANNOT OPEN A SINGLE LOCK", "What has a neck but no head?")]}])
    for folder in ("a", "b"):
        (tmp_path / folder).mkdir()
    store, first, _ = run_directly(tmp_path / "a", riddles_job_text(sim.base_url, "first"))
    assert store.stats(first).records == 2
    store, second, results = run_directly(tmp_path / "b", riddles_job_text(
        sim.base_url, "second", "  dedup_against_jobs: [first]\n"))
    assert [r.state for r in results] == [UnitState.DONE]
    kept = [r.conversation[0]["content"] for r in store.iter_records(second)]
    assert kept == ["What has a neck but no head?"]
    assert store.near_duplicates(second) == 1 and store.near_duplicates(first) == 0
    # the earlier job's texts were read through the job services into the second job's index, not counted there
    with store.engine.connect() as conn:
        keys = [row[0] for row in conn.execute(text(
            "SELECT item_key FROM neardup_signatures WHERE job_id = :j"), {"j": second})]
    assert sum(k.startswith(f"earlier:{first}:") for k in keys) == 2


def test_dedup_against_an_unknown_job_is_a_job_file_error_before_anything_runs(sim, tmp_path):
    done = gen_cmd("run", str(write_job(tmp_path / "job.yml", riddles_job_text(
        sim.base_url, "second", "  dedup_against_jobs: [nowhere]\n"))))
    assert done.returncode == 2
    assert re.search(r"gen: error: .*instructor\.dedup_against_jobs: no (job|gen database).*nowhere", done.stderr)
    assert sim.stats()["requests"] == 0
