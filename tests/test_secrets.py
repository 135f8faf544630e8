"""Keys never leak: a canary key echoed by the teacher in 401 and 500 bodies (whole and masked, through the real
openai and mistralai SDKs) is found zero times in the database, the output of `gen run`, `gen status`,
`gen status --json`, the logs and an export; on the fleet path in the worker's log, PostgreSQL and `gen status`.
URL passwords are redacted however they are written."""
from __future__ import annotations

import json
import logging
import re
import sqlite3
import time
import uuid

import pytest
from sqlalchemy import text

from conftest import gen_cmd, sim_job, write_job
from fleet_helpers import RedisServer, Worker
from gen.secrets import ScrubFilter, forget_secrets, redact_url, register_secret, scrub
from gen.store import Store

KEY_VAR = "GEN_TEST_CANARY_KEY"


def canary() -> str:
    return f"sk-proj-CANARY{uuid.uuid4().hex}Wq7Z"


def leaks(key: str, text_: str) -> list[str]:
    """Every form of `key` found in `text_`: whole, its random core, masked forms, its last 4 characters."""
    core = key[len("sk-proj-CANARY"):-4]
    forms = {"whole": key, "core": core, "core-start": core[:12], "masked": f"{key[:3]}***{key[-4:]}",
             "long-masked": f"{key[:8]}{'*' * 20}{key[-4:]}", "last4": key[-4:]}
    return [name for name, form in forms.items() if form in text_]


@pytest.fixture
def clean_registry():
    forget_secrets()
    yield
    forget_secrets()


# the scrubber itself ---------------------------------------------------------------------------------------
def test_scrub_hides_the_key_and_its_masked_forms(clean_registry):
    key = canary()
    assert scrub(key) == key  # nothing registered: nothing changes
    register_secret(key)
    samples = [key, f"Bearer {key}", f"Incorrect API key provided: {key[:6]}***{key[-4:]}.",
               f"{key[:8]}{'*' * 20}{key[-4:]}", f"{key[:7]}...{key[-4:]}", f"{key[:5]}\u2026{key[-4:]}",
               key.replace("-", "%2D"), json.dumps({"k": key})]
    for sample in samples:
        assert leaks(key, scrub(sample)) == [], sample
    assert scrub("sk-proj and an ordinary sentence") == "sk-proj and an ordinary sentence"
    register_secret("none")  # too short to be a secret: ordinary words stay
    assert scrub("none of these") == "none of these"


@pytest.mark.parametrize("url, password", [
    ("postgresql+psycopg://gen:p@ss:w/rd@db.example:5432/gen", "p@ss:w/rd"),
    ("postgresql://gen:p%40ss%3Aw%2Frd@db.example/gen", "p%40ss%3Aw%2Frd"),
    ("redis://:s3cr@t/x@cache:6379/0", "s3cr@t/x"),
    ("redis://default:plainpassword@cache:6379/0", "plainpassword"),
    ("postgresql://gen@db.example/gen?password=qu3ryS3cret&sslmode=require", "qu3ryS3cret"),
])
def test_redact_url_hides_the_password_however_written(url, password, clean_registry):
    shown = redact_url(url)
    assert password not in shown
    for piece in re.split(r"[@:/%]", password):
        if len(piece) >= 3:
            assert piece not in shown, (piece, shown)
    assert "***" in shown


def test_log_filter_scrubs_messages_arguments_and_tracebacks(clean_registry):
    key = canary()
    register_secret(key)
    logger = logging.getLogger("gen.test.secrets")
    record = logger.makeRecord(logger.name, logging.ERROR, __file__, 1, "refused %s (%r)", (key, {"k": key}), None)
    ScrubFilter().filter(record)
    assert leaks(key, record.getMessage()) == []
    try:
        raise RuntimeError(f"the proxy said {key}")
    except RuntimeError:
        import sys

        record = logger.makeRecord(logger.name, logging.ERROR, __file__, 1, "boom", (), sys.exc_info())
    ScrubFilter().filter(record)
    assert leaks(key, logging.Formatter().format(record)) == []


# gen run end to end ----------------------------------------------------------------------------------------
def _teacher(provider: str, sim) -> tuple[str, str]:
    """(base_url, extra teacher lines) for a teacher whose key is the canary."""
    if provider == "mistral":  # the Mistral SDK takes the host root; gen also accepts .../v1
        return sim.server_url, f"    provider: mistral\n    api_key_env: {KEY_VAR}\n    max_retries: 1\n"
    return sim.base_url, f"    api_key_env: {KEY_VAR}\n    max_retries: 1\n"


def _job(tmp_path, sim, provider: str, name: str):
    base_url, extra = _teacher(provider, sim)
    body = sim_job(base_url, name=name, prompts=4, concurrency=4, extra_teacher=extra,
                   run="run:\n  unit_attempts: 1\n")
    if provider == "mistral":
        body = body.replace("    provider: openai-compatible\n", "")
    return write_job(tmp_path / f"{name}.yml", body)


@pytest.mark.parametrize("provider", ["openai-compatible", "mistral"])
def test_a_key_echoed_in_401_and_500_bodies_is_never_stored_logged_shown_or_exported(provider, sim, tmp_path):
    key = canary()
    env = {KEY_VAR: key}
    outputs: list[str] = []

    def gen(*args: str):
        result = gen_cmd(*args, env=env)
        outputs.extend([result.stdout, result.stderr])
        return result

    sim.script([{"match": "Question number 0", "answers": [f"The proxy forwarded Authorization: Bearer {key}"]}])
    answered = gen("run", str(_job(tmp_path, sim, provider, "answered")), "-q")  # an answer quoting the key
    assert answered.returncode == 0, answered.stderr
    sim.configure(echo_key_status=500, echo_key_rate=0.5)  # half the calls: a 500 quoting the key, retried
    served = gen("-v", "run", str(_job(tmp_path, sim, provider, "served")), "-q")
    sim.configure(echo_key_status=401, echo_key_rate=1.0)  # every call: a 401 quoting the key
    refused = gen("-v", "run", str(_job(tmp_path, sim, provider, "refused")), "-q")
    assert served.returncode in (0, 1), served.stderr
    assert refused.returncode != 0 and "refused (HTTP 401)" in refused.stderr.strip().splitlines()[-1]

    store = Store(f"sqlite:///{tmp_path / 'gen.db'}")
    try:
        jobs = {job.name: job for job in store.list_jobs()}
        with store.engine.connect() as conn:
            errors = [row[0] for row in conn.execute(text("SELECT error FROM calls WHERE error IS NOT NULL"))]
        records = store.stats(jobs["served"].id).records
    finally:
        store.close()
    assert any("HTTP 500" in e for e in errors) and any("HTTP 401" in e for e in errors), errors
    assert records > 0  # the export below has lines to look in
    for job in jobs.values():
        gen("status", job.id)
        gen("status", job.id, "--json")
    gen("jobs")
    exports = {}
    for name in ("answered", "served"):
        out = tmp_path / f"{name}.jsonl"
        assert gen("export", jobs[name].id, "-o", str(out), "--meta").returncode == 0
        exports[name] = out.read_text(encoding="utf-8")
    assert "The proxy forwarded Authorization: Bearer ***" in exports["answered"]  # the answer was kept, scrubbed
    outputs.extend(exports.values())

    with sqlite3.connect(tmp_path / "gen.db") as conn:
        dump = "\n".join(conn.iterdump())
    assert "Incorrect API key provided" in dump  # the echoing bodies did reach the database, scrubbed
    everything = "\n".join([dump, *outputs])
    assert leaks(key, everything) == []


# the fleet -------------------------------------------------------------------------------------------------
def test_the_fleet_never_stores_logs_or_shows_an_echoed_key(sim, tmp_path, pg_url):
    key = canary()
    redis_server = RedisServer(tmp_path)
    env = {"GEN_DATABASE_URL": pg_url, "GEN_REDIS_URL": redis_server.url, KEY_VAR: key,
           "GEN_LEASE_SECONDS": "3", "GEN_SWEEP_SECONDS": "1"}
    worker = Worker(env, tmp_path / "worker.log", "w0")
    store = Store(pg_url)
    try:
        worker.wait_ready()
        sim.configure(echo_key_status=500, echo_key_rate=1.0)
        job_file = write_job(tmp_path / "fleet.yml", sim_job(sim.base_url, name="fleet", prompts=3,
                                                             extra_teacher=f"    api_key_env: {KEY_VAR}\n"
                                                                           "    max_retries: 1\n"))
        sent = gen_cmd("enqueue", str(job_file), env=env)
        assert sent.returncode == 0, sent.stderr
        job_id = sent.stdout.strip()
        deadline = time.monotonic() + 60
        while store.stats(job_id).units["failed"] < 3 and time.monotonic() < deadline:
            time.sleep(0.2)
        assert store.stats(job_id).units["failed"] == 3
        sim.configure(echo_key_status=401)
        second = write_job(tmp_path / "fleet401.yml", sim_job(sim.base_url, name="fleet401", prompts=2,
                                                              extra_teacher=f"    api_key_env: {KEY_VAR}\n"))
        sent = gen_cmd("enqueue", str(second), env=env)
        assert sent.returncode == 0, sent.stderr
        blocked_id = sent.stdout.strip()
        while store.get_job(blocked_id).status != "blocked" and time.monotonic() < deadline:
            time.sleep(0.2)
        assert "HTTP 401" in (store.get_job(blocked_id).status_reason or "")
        shown = [gen_cmd(*args, env=env) for args in (("status", job_id), ("status", job_id, "--json"),
                                                       ("status", blocked_id), ("status", blocked_id, "--json"))]
        with store.engine.connect() as conn:
            tables = [row[0] for row in conn.execute(text(
                "SELECT tablename FROM pg_tables WHERE schemaname = 'public'"))]
            dump = "\n".join(row[0] for table in tables
                             for row in conn.execute(text(f'SELECT row_to_json(t)::text FROM "{table}" t')))
        time.sleep(0.5)  # the worker's last log lines
        log = worker.text()
    finally:
        worker.stop()
        store.close()
        redis_server.stop()
    assert "Incorrect API key provided" in dump
    assert "HTTP 401" in log or "HTTP 500" in log, log[-2000:]
    everything = "\n".join([dump, log, *(r.stdout + r.stderr for r in shown)])
    assert leaks(key, everything) == []
