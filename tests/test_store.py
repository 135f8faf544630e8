"""The store on SQLite and on the machine's PostgreSQL: the same behaviour on both."""
from __future__ import annotations

import pytest
from sqlalchemy import text

from gen.errors import StoreError, UnknownJobError
from gen.store import Store, UnitState
from gen.types import NewRecord


def make_job(store: Store, n: int = 3):
    return store.create_job(name="demo", instructor="respond", spec={"name": "demo"}, spec_hash="abc",
                            units=[(f"u{i}", {"prompt": f"p{i}"}) for i in range(n)])


def conv(q: str, a: str = "answer"):
    return [{"role": "user", "content": q}, {"role": "assistant", "content": a}]


def test_job_and_units_are_created_together_and_found_by_id_or_name(db_url):
    store = Store(db_url)
    job = make_job(store)
    assert store.find_job(job.id).id == job.id
    assert store.find_job("demo").id == job.id
    assert store.find_resumable("demo", "abc").id == job.id
    assert store.find_resumable("demo", "other") is None
    with pytest.raises(UnknownJobError):
        store.find_job("nope")
    assert [u.key for u in store.units(job.id)] == ["u0", "u1", "u2"]
    assert store.stats(job.id).units[UnitState.PENDING] == 3


def test_a_unit_is_claimed_once(db_url):
    store = Store(db_url)
    job = make_job(store)
    uid = store.runnable_unit_ids(job.id, max_attempts=3)[0]
    first = store.claim_unit(uid, worker="a")
    assert first is not None and first.state == UnitState.RUNNING and first.attempts == 1
    assert store.claim_unit(uid, worker="b") is None
    assert uid not in store.runnable_unit_ids(job.id, max_attempts=3)
    assert store.release_running(job.id, worker_prefix="a") == 1
    assert uid in store.runnable_unit_ids(job.id, max_attempts=3)


def test_records_are_written_once_per_key_whatever_is_retried(db_url):
    store = Store(db_url)
    job = make_job(store)
    a, b = store.runnable_unit_ids(job.id, max_attempts=3)[:2]
    store.claim_unit(a)
    inserted, dups = store.finish_unit_with_records(job.id, a, [NewRecord("k1", conv("q1")),
                                                                NewRecord("k2", conv("q2"))], [])
    assert (inserted, dups) == (2, 0)
    store.claim_unit(b)
    inserted, dups = store.finish_unit_with_records(job.id, b, [NewRecord("k2", conv("q2 again")),
                                                                NewRecord("k3", conv("q3"))], [])
    assert (inserted, dups) == (1, 1)
    # Re-running a finished unit's write (a redelivery) adds nothing.
    inserted, dups = store.finish_unit_with_records(job.id, b, [NewRecord("k3", conv("q3"))], [])
    assert (inserted, dups) == (0, 1)
    keys = [r.key for r in store.iter_records(job.id, batch=2)]
    assert keys == ["k1", "k2", "k3"]
    stats = store.stats(job.id)
    assert stats.records == 3 and stats.units[UnitState.DONE] == 2


def test_calls_are_recorded_and_accepted_ones_replayable(db_url):
    store = Store(db_url)
    job = make_job(store, 1)
    uid = store.runnable_unit_ids(job.id, max_attempts=3)[0]
    store.claim_unit(uid)
    base = dict(job_id=job.id, unit_id=uid, teacher="main", model="m", params={"max_tokens": 5},
                messages=[{"role": "user", "content": "hi"}], request_key="k", occurrence=0)
    bad = store.add_call(**base, attempt=1, status=429, error="rate limited", error_kind="RateLimited")
    good = store.add_call(**base, attempt=2, status=200, text="hello", prompt_tokens=3, completion_tokens=2,
                          cost_usd=0.5, accepted=True)
    assert store.accepted_calls(uid) == [(good, "k", 0, "hello")]
    stats = store.stats(job.id)
    assert (stats.calls, stats.rate_limited, stats.failed_calls) == (2, 1, 1)
    assert (stats.prompt_tokens, stats.completion_tokens, stats.cost_usd) == (3, 2, 0.5)
    assert bad < good


def test_failed_units_are_retried_until_attempts_run_out(db_url):
    store = Store(db_url)
    job = make_job(store, 1)
    uid = store.runnable_unit_ids(job.id, max_attempts=2)[0]
    store.claim_unit(uid)
    store.finish_unit(uid, UnitState.FAILED, error="boom")
    assert store.runnable_unit_ids(job.id, max_attempts=2) == [uid]
    store.claim_unit(uid)
    store.finish_unit(uid, UnitState.FAILED, error="boom")
    assert store.runnable_unit_ids(job.id, max_attempts=2) == []


def test_a_database_upgraded_by_a_newer_gen_is_refused_with_a_clear_message(db_url):
    store = Store(db_url)
    with store.engine.begin() as conn:
        conn.execute(text("INSERT INTO gen_migrations (name, applied_at) VALUES ('9999_from_the_future', "
                          "CURRENT_TIMESTAMP)"))
    store.close()
    with pytest.raises(StoreError, match="upgraded by a newer gen .migration 9999_from_the_future.: upgrade gen"):
        Store(db_url)


def test_sqlite_runs_in_wal_mode(tmp_path):
    store = Store(f"sqlite:///{tmp_path / 'wal.db'}")
    with store.engine.connect() as conn:
        assert conn.execute(text("PRAGMA journal_mode")).scalar() == "wal"


def test_a_unit_held_by_a_lost_worker_can_be_claimed_after_its_lease(db_url):
    store = Store(db_url)
    job = make_job(store, 2)
    live, lost = store.runnable_unit_ids(job.id, max_attempts=3)
    held = store.claim_unit(live, worker="w1", lease_seconds=60)
    assert held is not None
    gone = store.claim_unit(lost, worker="w2", lease_seconds=-1)  # its lease has already passed
    assert gone is not None
    assert store.claim_unit(live, worker="w3") is None
    assert store.undispatched_unit_ids(job.id, max_attempts=3) == [lost]
    assert store.renew_leases([(live, held.lease_token), (lost, gone.lease_token)], worker="w1",
                              lease_seconds=60) == {live}
    assert store.reclaim_expired([job.id]) == [(job.id, lost)]
    again = store.claim_unit(lost, worker="w3")
    assert again is not None and again.worker == "w3" and again.attempts == 2


def test_many_processes_opening_a_new_database_at_once_all_succeed(db_url):
    """Workers scaled up together on a fresh database (docker compose up --scale worker=4) must not race."""
    import subprocess
    import sys

    code = f"from gen.store import Store; Store({db_url!r}).close(); print('ok')"
    procs = [subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True) for _ in range(6)]
    results = [p.communicate(timeout=60) for p in procs]
    assert all(p.returncode == 0 for p in procs), [err[-500:] for _, err in results]
    store = Store(db_url)
    with store.engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM gen_meta")).scalar() == 1


def test_a_worker_that_lost_its_lease_writes_nothing_more(db_url):
    """Fencing: every call, record and settle carries the claim's lease token; an old token writes nothing."""
    from gen.errors import LeaseLost

    store = Store(db_url)
    job = make_job(store, 1)
    uid = store.runnable_unit_ids(job.id, max_attempts=3)[0]
    stale = store.claim_unit(uid, worker="frozen", lease_seconds=-1)  # then frozen past its lease
    fresh = store.claim_unit(uid, worker="alive", lease_seconds=60)
    assert fresh is not None and fresh.lease_token == stale.lease_token + 1
    call = dict(job_id=job.id, unit_id=uid, teacher="main", model="m", params={}, messages=[], request_key="k",
                occurrence=0, attempt=1, status=200, text="late", accepted=True, cost_usd=0.5)
    with pytest.raises(LeaseLost):
        store.add_call(fence=(uid, stale.lease_token), **call)
    with pytest.raises(LeaseLost):
        store.finish_unit_with_records(job.id, uid, [NewRecord("stale", conv("q"))], [], token=stale.lease_token)
    assert store.finish_unit(uid, UnitState.FAILED, token=stale.lease_token) is False
    assert store.accepted_calls(uid) == [], "the late answer is kept for its cost but never replayed"
    assert store.job_cost(job.id) == 0.5
    assert store.renew_leases([(uid, stale.lease_token)], worker="frozen", lease_seconds=60) == set()
    # The live holder's writes go through, once.
    cid = store.add_call(fence=(uid, fresh.lease_token), **{**call, "text": "fresh"})
    assert [c[0] for c in store.accepted_calls(uid)] == [cid]
    assert store.finish_unit_with_records(job.id, uid, [NewRecord("k", conv("q"))], [cid],
                                          token=fresh.lease_token) == (1, 0)
    assert store.stats(job.id).records == 1 and store.get_unit(uid).state == UnitState.DONE


def test_a_claim_names_its_job(db_url):
    store = Store(db_url)
    a, b = make_job(store, 1), make_job(store, 1)
    unit_of_b = store.runnable_unit_ids(b.id, max_attempts=3)[0]
    assert store.claim_unit(unit_of_b, job_id=a.id) is None
    assert store.claim_unit(unit_of_b, job_id=b.id) is not None


def test_two_planners_at_the_same_position_plan_it_once(db_url):
    from gen.errors import PlannedElsewhere

    store = Store(db_url)
    job = store.create_job(name="p", instructor="respond", spec={}, spec_hash="p", planning_done=False)
    first = store.add_units(job.id, 0, [(f"k{i}", {"i": i}) for i in range(3)])
    with pytest.raises(PlannedElsewhere):  # a second supervisor, or a wave racing `gen enqueue`'s first chunk
        store.add_units(job.id, 0, [(f"x{i}", {"i": i}) for i in range(3)])
    second = store.add_units(job.id, 3, [("k3", {"i": 3})])
    job = store.get_job(job.id)
    assert len(first) == 3 and len(second) == 1
    assert (job.planned_units, job.unit_count) == (4, 4)
    assert sorted(u.key for u in store.units(job.id)) == ["k0", "k1", "k2", "k3"]
    store.close()
