"""Group commit: many units' writes in one transaction, every fence kept per write, a failed transaction retried
one write at a time, and a worker killed between a commit and its queue acknowledgement replaying nothing twice.

On SQLite and PostgreSQL for real; the fleet test runs real `gen worker` processes on Redis and PostgreSQL."""
from __future__ import annotations

import asyncio

import pytest
from sqlalchemy import text

from conftest import sim_job, write_job
from gen.errors import LeaseLost
from gen.simulator import SimConfig, Simulator
from gen.store import Store, UnitState
from gen.store import writes as w
from gen.store.group_commit import GroupCommit
from gen.types import NewRecord
from test_fleet import fleet  # noqa: F401  (the fixture)


def _job(store: Store, n: int) -> tuple[str, list[int]]:
    job = store.create_job(name="gc", instructor="respond", spec={}, spec_hash="gc",
                           units=[(f"u{i}", {"prompt": f"p{i}"}) for i in range(n)])
    return job.id, store.runnable_unit_ids(job.id, max_attempts=3)


def _call(job_id: str, unit_id: int, key: str = "rk") -> dict:
    return dict(job_id=job_id, unit_id=unit_id, teacher="main", model="m", params={}, messages=[], request_key=key,
                occurrence=0, attempt=1, status=200, text="answer", finish_reason="stop", latency_ms=5,
                prompt_tokens=3, completion_tokens=4, cost_usd=0.001, error=None, error_kind=None, accepted=True,
                reject_reason=None)


def _record(key: str, meta: dict | None = None) -> NewRecord:
    return NewRecord(key=key, conversation=[{"from": "human", "value": "q"}, {"from": "gpt", "value": "a"}],
                     meta=meta or {})


def test_one_transaction_of_many_units_keeps_every_fence(db_url):
    store = Store(db_url)
    job_id, ids = _job(store, 5)
    a, b, c, d, e = ids
    # One batch: five claims, one of them a redelivered duplicate of another.
    claimed = store.apply_writes([w.Claim(i, job_id, "w1", 60) for i in ids] + [w.Claim(a, job_id, "w1", 60)])
    assert [r.id for r in claimed[:5]] == ids and claimed[5] is None, "a unit named twice is claimed once"
    token = {r.id: r.lease_token for r in claimed[:5]}
    stolen = store.claim_unit(e, job_id=job_id, worker="w2", lease_seconds=60) is None  # held: not claimable
    assert stolen
    store.finish_unit(e, UnitState.PENDING)  # e's lease goes away; a new claim makes the old token stale
    assert store.claim_unit(e, job_id=job_id, worker="w2", lease_seconds=60).lease_token == token[e] + 1
    # One batch: calls under live and stale leases, then settles (two units offering the same record key).
    results = store.apply_writes([w.AddCall(_call(job_id, u), (u, token[u])) for u in (a, b, e)])
    assert all(isinstance(r, int) for r in results[:2]) and isinstance(results[2], LeaseLost)
    results = store.apply_writes([
        w.Settle(job_id, a, [_record("same"), _record("a-only")], [results[0]], token[a]),
        w.Settle(job_id, b, [_record("same")], [results[1]], token[b]),
        w.Settle(job_id, c, [], [], token[c], UnitState.REJECTED, "judged poor", "raw"),
        w.Settle(job_id, e, [_record("e")], [], token[e]),
        w.Finish(d, UnitState.FAILED, token[d], "teacher error"),
    ])
    assert results[:3] == [(2, 0), (0, 1), (0, 0)] and isinstance(results[3], LeaseLost) and results[4] is True
    units = {u.id: u for u in store.units(job_id)}
    assert [units[i].state for i in ids] == [UnitState.DONE, UnitState.DONE, UnitState.REJECTED, UnitState.FAILED,
                                             UnitState.RUNNING]
    assert units[b].duplicates == 1 and units[c].last_error == "judged poor"
    assert sorted(store.record_keys(job_id)) == ["a-only", "same"], "nothing of e's stale settle was stored"
    with store.engine.connect() as conn:
        late = conn.execute(text("SELECT unit_id, accepted, error_kind FROM calls WHERE job_id = :j AND unit_id = :u"),
                            {"j": job_id, "u": e}).all()
    assert late == [(e, None, "LeaseLost")], "the stale call is kept for its cost, never replayed"
    store.close()


def test_a_failed_transaction_is_retried_one_write_at_a_time(db_url):
    store = Store(db_url)
    job_id, ids = _job(store, 11)

    async def run() -> list:
        group = GroupCommit(store)
        units = await asyncio.gather(*(group.claim(i, job_id=job_id, worker="w", lease_seconds=60) for i in ids))
        assert group.transactions == 1, "eleven claims that arrived together went in one transaction"
        settles = [w.Settle(job_id, u.id, [_record(f"r{u.id}")], [], u.lease_token) for u in units]
        # An instructor bug: a record whose meta is not JSON. Its write fails; the ten others must not.
        settles[4] = w.Settle(job_id, units[4].id, [_record("bad", {"oops": {1, 2}})], [], units[4].lease_token)
        outcomes = await asyncio.gather(*(group.write(op) for op in settles), return_exceptions=True)
        return [units, outcomes, group.transactions]

    units, outcomes, transactions = asyncio.run(run())
    assert isinstance(outcomes[4], Exception) and "JSON" in f"{type(outcomes[4]).__name__} {outcomes[4]}"
    assert [o for i, o in enumerate(outcomes) if i != 4] == [(1, 0)] * 10
    assert transactions == 1 + 10, "the failed batch was applied again one write at a time"
    assert store.stats(job_id).records == 10
    assert store.record_keys(job_id) == {f"r{u.id}" for i, u in enumerate(units) if i != 4}
    bad = store.get_unit(units[4].id)
    assert bad.state == UnitState.RUNNING and bad.lease_token == units[4].lease_token, "still held: it is retried"
    # Written again (a redelivery, a retry): nothing twice.
    again = store.apply_writes([w.Settle(job_id, u.id, [_record(f"r{u.id}")], [], u.lease_token) for u in units])
    assert sum(isinstance(r, LeaseLost) for r in again) == 10 and again[4] == (1, 0)
    assert store.stats(job_id).records == 11
    store.close()


def test_a_worker_killed_between_a_commit_and_its_ack_replays_and_stores_nothing_twice(fleet, tmp_path):  # noqa: F811
    follow_ups = "  follow_ups: [\"Tell me more.\", \"Summarise.\"]\n"
    with Simulator(SimConfig(latency=0.2)) as sim:
        victim = fleet.start_with({"GEN_FAILPOINT": "after-commit:12"})
        job = sim_job(sim.base_url, prompts=30, concurrency=30).replace("  prompts:\n", follow_ups + "  prompts:\n")
        job_id = fleet.enqueue(write_job(tmp_path / "j.yml", job))
        victim.proc.wait(timeout=60)  # the failpoint: SIGKILL right after its 12th commit, before telling anyone
        assert victim.proc.returncode == -9
        mid = fleet.store.stats(job_id)
        assert mid.units[UnitState.RUNNING] > 0 and mid.units[UnitState.DONE] < 30, "the kill landed mid-job"
        with fleet.store.engine.connect() as conn:
            committed = conn.execute(text("SELECT count(*) FROM calls WHERE job_id = :j AND accepted"),
                                     {"j": job_id}).scalar()
        assert committed > 0
        fleet.start(1)
        units = fleet.wait_finished(job_id)
    assert units[UnitState.DONE] == 30
    stats = fleet.store.stats(job_id)
    assert stats.records == 30 and stats.duplicates == 0
    assert set(fleet.accepted_per_unit(job_id).values()) == {3}, "each turn accepted once: committed ones replayed"
    with fleet.store.engine.connect() as conn:
        replayed = conn.execute(text("SELECT count(*) FROM units WHERE job_id = :j AND attempts > 1"),
                                {"j": job_id}).scalar()
        twice = conn.execute(text("SELECT unit_id, request_key, occurrence, count(*) FROM calls WHERE job_id = :j "
                                  "AND accepted GROUP BY 1, 2, 3 HAVING count(*) > 1"), {"j": job_id}).all()
    assert replayed > 0, "the killed worker's units were run again"
    assert twice == []


@pytest.mark.parametrize("flushers", [1, 2])
def test_writes_wait_for_their_commit_and_gather_while_one_runs(tmp_path, flushers):
    store = Store(f"sqlite:///{tmp_path / 'g.db'}")
    job_id, ids = _job(store, 40)

    async def run() -> GroupCommit:
        group = GroupCommit(store, flushers=flushers)
        first = await group.claim(ids[0], job_id=job_id, worker="w", lease_seconds=60)
        assert store.get_unit(first.id).state == UnitState.RUNNING, "committed before the writer resumed"
        await asyncio.gather(*(group.claim(i, job_id=job_id, worker="w", lease_seconds=60) for i in ids[1:]))
        return group

    group = asyncio.run(run())
    assert group.ops == 40 and group.transactions <= 1 + flushers
    assert store.stats(job_id).units[UnitState.RUNNING] == 40
    store.close()
