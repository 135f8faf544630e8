"""Near-duplicate detection (gen.neardup) on the real database, SQLite and PostgreSQL: sequential and concurrent.

`run_directly` runs a whole job through the job lifecycle (gen.core.lifecycle), which gives the instructor the
job's near-duplicate index through its services.
"""
from __future__ import annotations

import asyncio
import os
import random
import threading

import pytest
from sqlalchemy import text

from conftest import write_job
from gen.config import read_job_file
from gen.core.jobs import load_instructor
from gen.core.lease import LeaseKeeper
from gen.core.lifecycle import JobRun, open_job, plan_units
from gen.core.report import status_dict, status_lines
from gen.neardup import NearDupIndex, estimated_jaccard, lsh_bands, signature
from gen.store import Store
from gen.teacher import Meter


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


WORDS = ("river lantern copper whistle meadow orbit canvas pebble thunder violet harbor saddle glacier "
         "falcon ember quartz willow cobalt tundra marble").split()
ROUND_TEXTS = [" ".join(random.Random(r).sample(WORDS, 12)) for r in range(25)]


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


