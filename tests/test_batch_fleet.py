"""`mode: batch` on the fleet: one submitter per (job, teacher) gathers every worker's queued requests from the
database, any worker polls and collects, a killed submitter is replaced when its lease runs out, and a process
killed between the provider creating a batch and the database recording it never has that batch sent twice."""
from __future__ import annotations

import asyncio
import json
import signal

from sqlalchemy import text

from conftest import sim_job, write_job
from gen.simulator import SimConfig, Simulator
from gen.store import Store, UnitState
from gen.store import batches as batch_db
from test_batch import batch_config, batch_stats, db, run_ok, scripted_answers, start_run, teacher_extra, wait_for
from test_fleet import fleet  # noqa: F401  (the fixture)


def records(store: Store, job_id: str) -> list[tuple[str, str]]:
    return sorted((r.key, json.dumps(r.conversation)) for r in store.iter_records(job_id))


def queued_or_sent(store: Store, job_id: str) -> dict[str, int]:
    with store.engine.connect() as conn:
        rows = conn.execute(text("SELECT state, count(*) FROM batch_requests WHERE job_id = :j GROUP BY state"),
                            {"j": job_id}).all()
    return dict(rows)


def submitter_pid(store: Store, job_id: str) -> int | None:
    with store.engine.connect() as conn:
        row = conn.execute(text("SELECT holder FROM batch_submitters WHERE job_id = :j"), {"j": job_id}).first()
    return int(row[0].split(":")[1]) if row else None


def test_two_workers_share_one_submitter_and_make_the_same_records_as_online(fleet, tmp_path):  # noqa: F811
    prompts = 24
    with Simulator(SimConfig(latency=0.01, seed=3)) as sim:
        fleet.start(2)
        scripted_answers(sim, prompts)
        online_id = fleet.enqueue(write_job(tmp_path / "online.yml", sim_job(sim.base_url, name="online",
                                                                             prompts=prompts)))
        fleet.wait_finished(online_id)
        scripted_answers(sim, prompts)
        batch_config(sim, delay=0.3)
        batch_id = fleet.enqueue(write_job(tmp_path / "batch.yml", sim_job(
            sim.base_url, name="batch", prompts=prompts, concurrency=100, extra_teacher=teacher_extra(window=2.5))))
        units = fleet.wait_finished(batch_id)
        stats = batch_stats(sim)
    assert units[UnitState.DONE] == prompts
    assert {u.worker for u in fleet.store.units(batch_id)} == {"w0", "w1"}, "both workers ran units"
    # one submitter for the fleet: both workers' requests went into one batch, not one batch per worker
    assert stats["batches_created"] == 1 and stats["requests_in_batches"] == prompts
    assert stats["repeated_requests"] == 0
    assert records(fleet.store, batch_id) == records(fleet.store, online_id)
    assert len(records(fleet.store, batch_id)) == prompts


def test_a_killed_submitter_is_replaced_and_its_queued_requests_are_sent_once(fleet, tmp_path):  # noqa: F811
    prompts = 16
    with Simulator(SimConfig(latency=0.0, seed=5)) as sim:
        batch_config(sim, delay=0.3)
        workers = fleet.start(2)
        job = sim_job(sim.base_url, prompts=prompts, concurrency=100, extra_teacher=teacher_extra(window=4.0))
        job_id = fleet.enqueue(write_job(tmp_path / "k.yml", job))
        wait_for(lambda: queued_or_sent(fleet.store, job_id).get("queued", 0) == prompts
                 and submitter_pid(fleet.store, job_id) is not None, timeout=60)
        holder = submitter_pid(fleet.store, job_id)
        victim = next(w for w in workers if w.proc.pid == holder)
        assert {u.worker for u in fleet.store.units(job_id) if u.state == UnitState.RUNNING} == {"w0", "w1"}
        victim.kill()  # the submitter dies before its window ends: nothing of the job was sent yet
        assert batch_stats(sim)["batches_created"] == 0
        units = fleet.wait_finished(job_id, timeout=120)
        stats = batch_stats(sim)
    assert units[UnitState.DONE] == prompts and fleet.store.stats(job_id).records == prompts
    # the other worker took the lease over and sent every queued request, the dead worker's too, once
    assert stats["requests_in_batches"] == prompts and stats["repeated_requests"] == 0
    assert submitter_pid(fleet.store, job_id) in (None, next(w for w in workers if w is not victim).proc.pid)


def test_a_worker_killed_with_batches_in_flight_on_two_workers_sends_nothing_twice(fleet, tmp_path):  # noqa: F811
    prompts = 12
    with Simulator(SimConfig(latency=0.0, seed=5)) as sim:
        batch_config(sim, delay=3.0)
        w0, w1 = fleet.start(2)
        job = sim_job(sim.base_url, prompts=prompts, concurrency=100, extra_teacher=teacher_extra(window=0.5))
        job_id = fleet.enqueue(write_job(tmp_path / "f.yml", job))
        wait_for(lambda: queued_or_sent(fleet.store, job_id).get("submitted", 0) == prompts, timeout=60)
        w0.kill()
        assert fleet.store.stats(job_id).units[UnitState.DONE] == 0, "the kill must land while batches are in flight"
        units = fleet.wait_finished(job_id, timeout=120)
        stats = batch_stats(sim)
    assert units[UnitState.DONE] == prompts and fleet.store.stats(job_id).records == prompts
    assert stats["requests_in_batches"] == prompts and stats["repeated_requests"] == 0
    assert all(s.status == "completed" for s in batch_db.submissions(fleet.store, job_id=job_id))


def test_gen_run_killed_between_batch_creation_and_its_record_resubmits_nothing(tmp_path):
    prompts = 6
    with Simulator(SimConfig(latency=0.0, seed=5)) as sim:
        batch_config(sim, delay=0.2, create_hold=30.0)  # the batch exists; its creator never hears so
        job = write_job(tmp_path / "w.yml", sim_job(sim.base_url, prompts=prompts, extra_teacher=teacher_extra()))
        proc = start_run(job)
        try:
            wait_for(lambda: batch_stats(sim)["batches_created"] == 1)
        finally:
            proc.send_signal(signal.SIGKILL)
            proc.wait(10)
        store = db(tmp_path)
        job_id = store.list_jobs()[0].id
        assert queued_or_sent(store, job_id) == {"submitting": prompts}, "killed before the batch was recorded"
        batch_config(sim, create_hold=0.0)
        run_ok(job)
        stats = batch_stats(sim)
    assert stats["batches_created"] == 1 and stats["requests_in_batches"] == prompts  # found, not sent again
    assert stats["repeated_requests"] == 0 and stats["endpoints"]["GET /v1/batches"] >= 1
    assert store.stats(job_id).units[UnitState.DONE] == prompts and store.stats(job_id).records == prompts
    assert [s.status for s in batch_db.submissions(store, job_id=job_id)] == ["completed"]


def recover_with_a_new_submitter(store: Store, spec, job_id: str) -> None:  # noqa: ANN001
    from gen.batching.apis import make_batch_api
    from gen.batching.fleet import JobTeacherBatches, holder_name

    async def recover() -> None:
        api = make_batch_api(spec)
        part = JobTeacherBatches(spec, api, store, job_id, holder_name(), 100)
        try:
            await part.recover()
        finally:
            await api.aclose()

    asyncio.run(recover())


def test_an_intent_the_provider_never_saw_is_queued_again_and_one_it_saw_is_recorded(tmp_path, sim, monkeypatch):
    """Both ends of the crash window, for both providers' list APIs: an intent whose batch was never created
    goes back to queued; one whose batch was created (found by its marker) becomes that batch."""
    from gen.batching.apis import make_batch_api
    from gen.config import TeacherSpec

    monkeypatch.setenv("MISTRAL_API_KEY", "sim-key")
    store = Store(f"sqlite:///{tmp_path / 'r.db'}")
    specs = [TeacherSpec(name="oa", provider="openai-compatible", model="sim-1", base_url=sim.base_url, mode="batch"),
             TeacherSpec(name="mi", provider="mistral", model="sim-m", base_url=sim.server_url, mode="batch")]
    for spec in specs:
        for n in range(4):
            cid = f"{spec.name}-{n}"
            line = make_batch_api(spec).line(cid, {"model": spec.model, "messages": [
                {"role": "user", "content": f"{spec.name} {n}"}]}).decode()
            batch_db.queue_request(store, custom_id=cid, identity=cid, job_id="j", unit_id=n, teacher=spec.name,
                                   line=line)
        assert batch_db.take_submitter(store, job_id="j", teacher=spec.name, holder="dead", seconds=60)
        never = batch_db.open_intent(store, job_id="j", teacher=spec.name, provider="x", holder="dead",
                                     marker=f"never-{spec.name}", max_requests=2, max_bytes=10**6, lease_seconds=60)
        seen = batch_db.open_intent(store, job_id="j", teacher=spec.name, provider="x", holder="dead",
                                    marker=f"seen-{spec.name}", max_requests=2, max_bytes=10**6, lease_seconds=60)
        assert len(never) == len(seen) == 2

        async def create_seen(spec=spec, seen=seen) -> str:
            api = make_batch_api(spec)
            try:
                return await api.submit([line.encode() for _, line in seen], f"seen-{spec.name}")
            finally:
                await api.aclose()

        created = asyncio.run(create_seen())
        recover_with_a_new_submitter(store, spec, "j")
        states = {c: batch_db.open_requests(store, identity=c)[0] for c in [f"{spec.name}-{n}" for n in range(4)]}
        assert {c: s[1] for c, s in states.items() if c in dict(never)} == {c: "queued" for c, _ in never}
        assert {c: (s[1], s[2]) for c, s in states.items() if c in dict(seen)} == {
            c: ("submitted", created) for c, _ in seen}
        assert [s.id for s in batch_db.submissions(store, job_id="j") if s.teacher == spec.name] == [created]
    endpoints = batch_stats(sim)["endpoints"]
    assert endpoints["GET /v1/batches"] >= 2 and endpoints["GET /v1/batch/jobs"] >= 2
    assert batch_stats(sim)["batches_created"] == 2


def test_a_batch_created_after_its_intent_was_taken_over_is_cancelled(tmp_path, sim):
    """The submitter that stalled past its lease: the next one found no batch and queued the requests again;
    when the stalled one's create finally succeeds it finds its intent gone and cancels the late batch."""
    from gen.batching.apis import make_batch_api
    from gen.batching.fleet import JobTeacherBatches
    from gen.config import TeacherSpec

    batch_config(sim, delay=30)
    store = Store(f"sqlite:///{tmp_path / 's.db'}")
    spec = TeacherSpec(name="oa", provider="openai-compatible", model="sim-1", base_url=sim.base_url, mode="batch")
    line = make_batch_api(spec).line("c1", {"model": "sim-1", "messages": [{"role": "user", "content": "hi"}]})
    batch_db.queue_request(store, custom_id="c1", identity="c1", job_id="j", unit_id=1, teacher="oa",
                           line=line.decode())
    assert batch_db.take_submitter(store, job_id="j", teacher="oa", holder="stalled", seconds=60)
    chunk = batch_db.open_intent(store, job_id="j", teacher="oa", provider="openai", holder="stalled", marker="m1",
                                 max_requests=10, max_bytes=10**6, lease_seconds=60)
    assert chunk == [("c1", line.decode())]
    batch_db.drop_intent(store, marker="m1")  # what the next submitter's recovery did, finding no batch

    async def late_create() -> None:
        api = make_batch_api(spec)
        try:
            await JobTeacherBatches(spec, api, store, "j", "stalled", 10).create("m1", [line])
        finally:
            await api.aclose()

    asyncio.run(late_create())
    stats = batch_stats(sim)
    assert stats["batches_created"] == 1 and stats["batches_cancelled"] == 1
    assert batch_db.open_requests(store, identity="c1")[0][1] == "queued" and not batch_db.submissions(store, job_id="j")


def test_a_batch_recorded_after_gen_cancel_listed_the_jobs_batches_is_cancelled(tmp_path, sim):
    """`gen cancel` cancels the batches recorded so far; a submitter whose create was under way then records its
    batch, sees the job cancelled, and cancels that batch too: nothing keeps answering a cancelled job."""
    from gen.batching.apis import make_batch_api
    from gen.batching.fleet import JobTeacherBatches
    from gen.config import TeacherSpec
    from gen.store.states import JobState

    batch_config(sim, delay=30)
    store = Store(f"sqlite:///{tmp_path / 'c.db'}")
    job = store.create_job(name="c", instructor="respond", spec={}, spec_hash="c", planning_done=True)
    spec = TeacherSpec(name="oa", provider="openai-compatible", model="sim-1", base_url=sim.base_url, mode="batch")
    line = make_batch_api(spec).line("c1", {"model": "sim-1", "messages": [{"role": "user", "content": "hi"}]})
    batch_db.queue_request(store, custom_id="c1", identity="c1", job_id=job.id, unit_id=1, teacher="oa",
                           line=line.decode())
    assert batch_db.take_submitter(store, job_id=job.id, teacher="oa", holder="s", seconds=60)
    assert batch_db.open_intent(store, job_id=job.id, teacher="oa", provider="openai", holder="s", marker="m1",
                                max_requests=10, max_bytes=10**6, lease_seconds=60)
    store.set_job_status(job.id, JobState.ACTIVE)
    store.set_job_status(job.id, JobState.CANCELLED)  # gen cancel: no batch recorded yet, none to cancel

    async def create() -> None:
        api = make_batch_api(spec)
        try:
            await JobTeacherBatches(spec, api, store, job.id, "s", 10).create("m1", [line])
        finally:
            await api.aclose()

    asyncio.run(create())
    stats = batch_stats(sim)
    assert stats["batches_created"] == 1 and stats["batches_cancelled"] == 1
    assert [s.status for s in batch_db.submissions(store, job_id=job.id)] == ["cancelled"]
