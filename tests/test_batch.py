"""Batch APIs: the simulator speaks OpenAI's and Mistral's (driven by the real SDKs), and `mode: batch` teachers
run jobs through them: same records as online at half the price, multi-turn over several rounds, failures
resubmitted, limits split, crashes resubmit nothing, `gen cancel` cancels, `gen status` shows them."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request

import openai
import pytest
from mistralai.client import Mistral

from conftest import gen_cmd, sim_job, write_job
from gen.simulator import SimConfig, Simulator
from gen.store import Store, UnitState
from gen.store import batches as batch_db
from test_fleet import fleet  # noqa: F401  (the fixture)


def batch_config(sim, **patch) -> dict:
    req = urllib.request.Request(f"{sim.server_url}/sim/batch/config", data=json.dumps(patch).encode(),
                                 method="POST", headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=5) as response:
        return json.loads(response.read())


def batch_stats(sim) -> dict:
    return sim.stats()["batch"]


def db(tmp_path) -> Store:
    return Store(f"sqlite:///{tmp_path / 'gen.db'}")


def teacher_extra(*, window: float = 0.2, max_requests: int | None = None) -> str:
    extra = f"    mode: batch\n    batch_window: {window}\n"
    if max_requests:
        extra += f"    batch_max_requests: {max_requests}\n"
    return extra


PRICES = "    prices:\n      input_per_million: 1.0\n      output_per_million: 4.0\n"


def openai_lines(n: int) -> bytes:
    return "".join(json.dumps({"custom_id": f"r{i}", "method": "POST", "url": "/v1/chat/completions", "body": {
        "model": "sim-1", "messages": [{"role": "user", "content": f"question {i}"}]}}) + "\n"
        for i in range(n)).encode()


# -- the simulator ----------------------------------------------------------------------------------------------
def test_simulator_answers_an_openai_batch_through_the_sdk_out_of_order_with_failures_in_the_error_file(sim):
    batch_config(sim, delay=0.1, failure_rate=0.3)
    client = openai.OpenAI(api_key="none", base_url=sim.base_url, max_retries=0)
    uploaded = client.files.create(file=("in.jsonl", openai_lines(20)), purpose="batch")
    batch = client.batches.create(input_file_id=uploaded.id, endpoint="/v1/chat/completions",
                                  completion_window="24h")
    assert batch.status == "in_progress"
    time.sleep(0.15)
    batch = client.batches.retrieve(batch.id)
    assert batch.status == "completed"
    assert batch.request_counts.total == 20 and batch.request_counts.failed > 0
    out = [json.loads(line) for line in client.files.content(batch.output_file_id).text.splitlines()]
    err = [json.loads(line) for line in client.files.content(batch.error_file_id).text.splitlines()]
    ids = [line["custom_id"] for line in out]
    assert sorted(ids + [line["custom_id"] for line in err], key=lambda c: int(c[1:])) == [f"r{i}" for i in range(20)]
    assert ids != sorted(ids, key=lambda c: int(c[1:]))  # not in input order
    assert all(line["response"]["body"]["choices"][0]["message"]["content"] for line in out)
    assert all(line["response"]["status_code"] == 500 for line in err)
    stats = batch_stats(sim)
    assert stats["batches_created"] == 1 and stats["requests_in_batches"] == 20
    assert stats["endpoints"]["POST /v1/files"] == 1 and stats["endpoints"]["GET /v1/files/{id}/content"] == 2
    assert client.batches.cancel(batch.id).status == "completed"  # a finished batch stays finished


def test_simulator_refuses_files_over_its_limits_and_cancels_a_running_batch(sim):
    batch_config(sim, max_requests=5, max_bytes=10_000, delay=30)
    client = openai.OpenAI(api_key="none", base_url=sim.base_url, max_retries=0)
    too_many = client.files.create(file=("in.jsonl", openai_lines(6)), purpose="batch")
    with pytest.raises(openai.BadRequestError, match="limit is 5"):
        client.batches.create(input_file_id=too_many.id, endpoint="/v1/chat/completions", completion_window="24h")
    with pytest.raises(openai.BadRequestError, match="the limit is 10000"):
        client.files.create(file=("big.jsonl", b"x" * 10_001), purpose="batch")
    ok = client.files.create(file=("in.jsonl", openai_lines(5)), purpose="batch")
    batch = client.batches.create(input_file_id=ok.id, endpoint="/v1/chat/completions", completion_window="24h")
    assert client.batches.cancel(batch.id).status == "cancelled"
    assert client.batches.retrieve(batch.id).status == "cancelled"
    assert batch_stats(sim)["batches_cancelled"] == 1


def test_simulator_answers_a_mistral_batch_job_through_the_sdk(sim):
    batch_config(sim, delay=0.1)
    client = Mistral(api_key="none", server_url=sim.server_url)
    lines = "".join(json.dumps({"custom_id": f"m{i}", "body": {"messages": [{"role": "user", "content": f"hi {i}"}],
                                                               "max_tokens": 50}}) + "\n" for i in range(4))
    uploaded = client.files.upload(file={"file_name": "in.jsonl", "content": lines.encode()}, purpose="batch")
    job = client.batch.jobs.create(input_files=[uploaded.id], model="sim-m", endpoint="/v1/chat/completions")
    assert job.status == "RUNNING" and job.total_requests == 4
    time.sleep(0.15)
    job = client.batch.jobs.get(job_id=job.id)
    assert job.status == "SUCCESS" and job.succeeded_requests == 4
    out = [json.loads(line) for line in client.files.download(file_id=job.output_file).read().splitlines()]
    assert {line["custom_id"] for line in out} == {f"m{i}" for i in range(4)}
    assert {line["response"]["body"]["model"] for line in out} == {"sim-m"}
    assert client.batch.jobs.cancel(job_id=job.id).status == "SUCCESS"
    assert batch_stats(sim)["endpoints"]["POST /v1/batch/jobs"] == 1


# -- mode: batch ------------------------------------------------------------------------------------------------
def scripted_answers(sim, n: int) -> None:
    sim.script([{"match": f"Question number {i}:", "answers": [f"The answer to question {i} is {2 * i}."]}
                for i in range(n)])


def run_ok(job, *args: str) -> str:
    result = gen_cmd("run", str(job), "-q", *args)
    assert result.returncode == 0, result.stderr
    return result.stderr


def test_a_batch_job_makes_the_same_records_as_online_at_half_the_cost(tmp_path):
    with Simulator(SimConfig(latency=0.01, seed=3)) as sim:
        scripted_answers(sim, 8)
        online = write_job(tmp_path / "online.yml", sim_job(sim.base_url, name="online", prompts=8,
                                                            extra_teacher=PRICES))
        run_ok(online)
        assert batch_stats(sim)["requests_in_batches"] == 0
        scripted_answers(sim, 8)
        batch_config(sim, delay=0.1)
        batched = write_job(tmp_path / "batch.yml", sim_job(sim.base_url, name="batch", prompts=8,
                                                            extra_teacher=teacher_extra() + PRICES))
        run_ok(batched)
        stats = batch_stats(sim)
    assert stats["batches_created"] >= 1 and stats["requests_in_batches"] == 8
    store = db(tmp_path)
    jobs = {job.name: job for job in store.list_jobs()}
    records = {name: sorted((r.key, json.dumps(r.conversation)) for r in store.iter_records(job.id))
               for name, job in jobs.items()}
    assert len(records["online"]) == 8 and records["batch"] == records["online"]
    online_cost, batch_cost = (store.stats(jobs[n].id).cost_usd for n in ("online", "batch"))
    assert online_cost > 0 and batch_cost == pytest.approx(online_cost / 2)
    status = gen_cmd("status", "batch")
    assert status.returncode == 0 and "batches  " in status.stdout and "0 in flight" in status.stdout


def test_a_batch_teacher_is_not_paced_by_its_online_limits_and_fills_one_batch(tmp_path):
    # rpm/tpm and max_concurrency are online limits: twelve units waiting on a batch teacher go in one batch,
    # not two at a time at 30 requests a minute.
    with Simulator(SimConfig(latency=0.01, seed=3)) as sim:
        job = write_job(tmp_path / "b.yml", sim_job(sim.base_url, prompts=12, rpm=30, concurrency=2,
                                                    extra_teacher=teacher_extra(window=1.0)))
        run_ok(job)
        stats = batch_stats(sim)
    assert stats["requests_in_batches"] == 12 and stats["batches_created"] == 1
    assert db(tmp_path).stats(db(tmp_path).list_jobs()[0].id).records == 12


def test_batch_prices_can_be_set_instead_of_half(tmp_path):
    with Simulator(SimConfig(latency=0.0, seed=3)) as sim:
        batch_config(sim, delay=0.05)
        prices = PRICES + "      batch_input_per_million: 0.1\n      batch_output_per_million: 0.4\n"
        job = write_job(tmp_path / "b.yml", sim_job(sim.base_url, prompts=3, extra_teacher=teacher_extra() + prices))
        run_ok(job)
    store = db(tmp_path)
    stats = store.stats(store.list_jobs()[0].id)
    assert stats.cost_usd == pytest.approx((stats.prompt_tokens * 0.1 + stats.completion_tokens * 0.4) / 1e6)


def test_a_systemchat_job_in_batch_mode_advances_one_turn_per_round(tmp_path):
    from test_systemchat import PROMPTS, SENTINEL, MAY_END_MARK, chat_job

    with Simulator(SimConfig(latency=0.0, seed=2)) as sim:
        batch_config(sim, delay=0.05)
        sim.script([{"match": MAY_END_MARK, "answers": [f"Thanks, that is all I needed. {SENTINEL}"]}])
        text = chat_job(sim.base_url, PROMPTS + "  count: 4\n  min_turns: 3\n  max_turns: 4\n  no_system_ratio: 0\n"
                        "  judge_rule: mean\n  judge_threshold: 1\n")
        text = text.replace("    timeout: 10\n", "    timeout: 10\n" + teacher_extra(window=0.1))
        run_ok(write_job(tmp_path / "c.yml", text))
        stats = batch_stats(sim)
        online_requests = sim.stats()["requests"]
    store = db(tmp_path)
    job_id = store.list_jobs()[0].id
    assert store.stats(job_id).units[UnitState.DONE] == 4
    records = list(store.iter_records(job_id, kind="conversation"))
    assert len(records) == 4 and all(sum(m["role"] == "assistant" for m in r.conversation) >= 3 for r in records)
    assert online_requests == 0
    # user and assistant alternate: at least 3 turns x 2 teachers + the judge, one round each
    assert stats["batches_created"] >= 7
    assert stats["requests_in_batches"] == len(store.calls_for_job(job_id))


def test_requests_failing_inside_a_batch_are_sent_again_in_a_later_batch(tmp_path):
    with Simulator(SimConfig(latency=0.0, seed=5)) as sim:
        batch_config(sim, delay=0.05, failure_rate=0.4)
        job = write_job(tmp_path / "f.yml", sim_job(sim.base_url, prompts=10, extra_teacher=teacher_extra()))
        run_ok(job)
        stats = batch_stats(sim)
    store = db(tmp_path)
    job_id = store.list_jobs()[0].id
    assert store.stats(job_id).units[UnitState.DONE] == 10
    calls = store.calls_for_job(job_id)
    failed = [c for c in calls if c.error]
    assert failed and all("failed inside the batch" in c.error for c in failed)
    assert all(c.attempt >= 2 for c in calls if not c.error and any(f.unit_id == c.unit_id for f in failed))
    assert stats["requests_in_batches"] == len(calls) == 10 + len(failed)
    assert stats["batches_created"] >= 2


def test_a_batch_larger_than_the_provider_limit_is_split(tmp_path):
    with Simulator(SimConfig(latency=0.0, seed=5)) as sim:
        batch_config(sim, delay=0.05, max_requests=4)  # the simulated provider refuses larger files
        job = write_job(tmp_path / "s.yml", sim_job(sim.base_url, prompts=10, concurrency=16,
                                                    extra_teacher=teacher_extra(window=1.0, max_requests=4)))
        run_ok(job)
        stats = batch_stats(sim)
    store = db(tmp_path)
    job_id = store.list_jobs()[0].id
    assert store.stats(job_id).units[UnitState.DONE] == 10
    sizes = [s.requests for s in batch_db.submissions(store, job_id=job_id)]
    assert stats["requests_in_batches"] == sum(sizes) == 10 and stats["batches_created"] == len(sizes) >= 3
    assert max(sizes) == 4  # full batches flushed at the limit, the rest after the window


def start_run(job) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "gen", "run", str(job), "-q"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=dict(os.environ))


def wait_for(predicate, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out waiting"
        time.sleep(0.05)


def test_gen_run_killed_with_batches_in_flight_resubmits_nothing_when_run_again(tmp_path):
    with Simulator(SimConfig(latency=0.0, seed=5)) as sim:
        batch_config(sim, delay=2.0)
        job = write_job(tmp_path / "k.yml", sim_job(sim.base_url, prompts=6, extra_teacher=teacher_extra()))
        proc = start_run(job)
        try:
            wait_for(lambda: batch_stats(sim)["requests_in_batches"] == 6)
            time.sleep(0.3)  # the submission is recorded right after the batch is created
        finally:
            proc.send_signal(signal.SIGKILL)
            proc.wait(10)
        store = db(tmp_path)
        job_id = store.list_jobs()[0].id
        assert store.stats(job_id).units[UnitState.DONE] == 0
        assert [s.status for s in batch_db.submissions(store, job_id=job_id)] == ["submitted"]
        run_ok(job)
        stats = batch_stats(sim)
    assert stats["requests_in_batches"] == 6 and stats["batches_created"] == 1  # nothing sent twice
    assert store.stats(job_id).units[UnitState.DONE] == 6 and store.stats(job_id).records == 6


def test_gen_cancel_cancels_the_providers_batches(tmp_path):
    with Simulator(SimConfig(latency=0.0, seed=5)) as sim:
        batch_config(sim, delay=60.0)
        job = write_job(tmp_path / "c.yml", sim_job(sim.base_url, prompts=4, extra_teacher=teacher_extra()))
        proc = start_run(job)
        try:
            store = db(tmp_path)
            wait_for(lambda: store.list_jobs() and batch_db.submissions(store, job_id=store.list_jobs()[0].id))
            job_id = store.list_jobs()[0].id
            status = gen_cmd("status", job_id)
            assert "1 in flight" in status.stdout and "4 requests, age" in status.stdout
            result = gen_cmd("cancel", job_id)
            assert result.returncode == 0, result.stderr
            assert "1 provider batches cancelled" in result.stderr
            proc.wait(30)
        finally:
            if proc.poll() is None:
                proc.kill()
        stats = batch_stats(sim)
    assert stats["batches_cancelled"] == 1 and stats["batches_created"] == 1  # nothing resubmitted after cancel
    assert [s.status for s in batch_db.submissions(store, job_id=job_id)] == ["cancelled"]
    assert store.stats(job_id).units[UnitState.DONE] == 0


def test_a_worker_killed_with_batches_in_flight_resubmits_nothing_on_the_fleet(fleet, tmp_path):  # noqa: F811
    with Simulator(SimConfig(latency=0.0, seed=5)) as sim:
        batch_config(sim, delay=3.0)
        victim, = fleet.start(1)
        job_id = fleet.enqueue(write_job(tmp_path / "f.yml", sim_job(sim.base_url, prompts=6,
                                                                     extra_teacher=teacher_extra(window=0.3))))
        wait_for(lambda: batch_db.submissions(fleet.store, job_id=job_id)
                 and sum(s.requests for s in batch_db.submissions(fleet.store, job_id=job_id)) == 6, timeout=60)
        victim.kill()
        assert fleet.store.stats(job_id).units[UnitState.DONE] == 0, "the kill must land while batches are in flight"
        fleet.start(1)
        units = fleet.wait_finished(job_id)
        stats = batch_stats(sim)
    assert units[UnitState.DONE] == 6 and fleet.store.stats(job_id).records == 6
    assert stats["requests_in_batches"] == 6  # the new worker waited for the killed worker's batches
    assert all(s.status == "completed" for s in batch_db.submissions(fleet.store, job_id=job_id))


def test_a_batch_over_the_byte_limit_is_split_into_files_under_it(tmp_path, sim):
    import asyncio

    from gen.batching.provider import BatchingProvider
    from gen.batching.scope import CURRENT_UNIT, UnitScope
    from gen.config import TeacherSpec
    from gen.types import ChatRequest

    batch_config(sim, delay=0.05, max_bytes=2_000)  # the simulated provider refuses larger files
    store = Store(f"sqlite:///{tmp_path / 'b.db'}")
    spec = TeacherSpec(name="main", provider="openai-compatible", model="sim-1", base_url=sim.base_url,
                       mode="batch", batch_window=0.2)

    async def ask_all() -> list:
        provider = BatchingProvider(spec)
        provider.api.max_bytes = 2_000  # what this provider's files may hold
        CURRENT_UNIT.set(UnitScope(store, "job1", 1))
        try:
            return await asyncio.gather(*(provider.complete(ChatRequest(
                "sim-1", [{"role": "user", "content": f"question {i}: " + "x" * 300}])) for i in range(12)))
        finally:
            await provider.aclose()

    answers = asyncio.run(ask_all())
    assert len(answers) == 12 and all(a.text for a in answers)
    sizes = [s.requests for s in batch_db.submissions(store, job_id="job1")]
    assert sum(sizes) == 12 and len(sizes) >= 3 and batch_stats(sim)["batches_created"] == len(sizes)


def test_a_mistral_teacher_in_batch_mode_goes_through_mistral_batch_jobs(tmp_path, sim, monkeypatch):
    import asyncio

    from gen.batching.provider import BatchingProvider
    from gen.batching.scope import CURRENT_UNIT, UnitScope
    from gen.config import TeacherSpec
    from gen.types import ChatRequest

    monkeypatch.setenv("MISTRAL_API_KEY", "sim-key")
    batch_config(sim, delay=0.05)
    store = Store(f"sqlite:///{tmp_path / 'm.db'}")
    spec = TeacherSpec(name="user", provider="mistral", model="mistral-medium-latest", base_url=sim.server_url,
                       mode="batch", batch_window=0.1)

    async def ask() -> list:
        provider = BatchingProvider(spec)
        CURRENT_UNIT.set(UnitScope(store, "job2", 7))
        try:
            return await asyncio.gather(*(provider.complete(ChatRequest(
                spec.model, [{"role": "user", "content": f"hello {i}"}], {"max_tokens": 40})) for i in range(3)))
        finally:
            await provider.aclose()

    answers = asyncio.run(ask())
    assert [a.model for a in answers] == ["mistral-medium-latest"] * 3 and all(a.text for a in answers)
    endpoints = batch_stats(sim)["endpoints"]
    assert endpoints["POST /v1/batch/jobs"] == 1 and "POST /v1/batches" not in endpoints
