"""Each command imports what it uses: `gen --help` and `gen validate` load neither the database layer, the SDKs,
Celery, the servers nor numpy (start-up time is what users feel on every command; `python bench/startup.py`)."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

HEAVY = ("sqlalchemy", "sqlmodel", "openai", "mistralai", "aiohttp", "celery", "redis", "datasketch", "starlette",
         "numpy")
EXAMPLES = sorted((Path(__file__).parent.parent / "instructors").glob("*.yml"))


def loaded_after(code: str, *, cwd: Path | None = None) -> set[str]:
    probe = code + "\nimport sys\nprint(' '.join(sorted({m.split('.')[0] for m in sys.modules})))"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, cwd=cwd)
    assert out.returncode == 0, out.stderr
    return set(out.stdout.split())


def test_help_loads_nothing_heavy():
    code = "from gen.cli import cli, _add_simulator\n_add_simulator()\ntry:\n    cli(['--help'])\nexcept SystemExit:\n    pass"
    assert not loaded_after(code) & set(HEAVY + ("jsonschema",))


def test_validate_reads_the_file_without_the_database_or_the_sdks(tmp_path):
    job = tmp_path / "v.yml"
    job.write_text("name: v\ninstructor:\n  type: respond\n  prompts: [hi]\nteachers:\n"
                   "  main: {provider: openai-compatible, model: m, base_url: 'http://127.0.0.1:9/v1'}\n")
    code = (f"from gen.cli import cli\ntry:\n    cli(['validate', {str(job)!r}])\nexcept SystemExit as e:\n"
            "    assert e.code in (0, None), e.code")
    assert not loaded_after(code) & set(HEAVY)


@pytest.mark.parametrize("example", EXAMPLES, ids=lambda p: p.name)
def test_validating_each_example_loads_nothing_heavy(example, tmp_path):
    """Every worked example validates (or, for those that read an earlier job, says that job's database is not
    there yet) without the database layer, the SDKs, Celery, the servers or numpy."""
    code = (f"import sys\nfrom gen.cli import cli\ntry:\n    cli(['validate', {str(example)!r}])\n"
            "except SystemExit as e:\n    print('exit', e.code, file=sys.stderr)\n"
            "print(' '.join(sorted({m.split('.')[0] for m in sys.modules})))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                         cwd=tmp_path)  # no gen.db here (conftest's GEN_DATABASE_URL names one under tmp_path)
    assert out.returncode == 0, out.stderr
    assert "exit 0" in out.stderr or "no gen database at" in out.stderr, out.stderr
    loaded = set(out.stdout.splitlines()[-1].split())  # after the "ok: ..." line validate prints
    assert not loaded & set(HEAVY), f"{example.name}: {sorted(loaded & set(HEAVY))}"


def test_run_loads_neither_the_queue_clients_nor_an_sdk_it_does_not_use(tmp_path, sim):
    """`gen run` of an OpenAI-compatible job imports no Redis client (its budget is in-process), no Celery, no
    Mistral SDK and no server: everything it imports is start-up paid before its first teacher request
    (`python bench/rate.py --only gen-run`)."""
    job = tmp_path / "r.yml"
    job.write_text(f"name: r\ninstructor:\n  type: respond\n  prompts: [hi, ho]\nteachers:\n  main:\n"
                   f"    provider: openai-compatible\n    model: m\n    base_url: {sim.base_url}\nrun:\n"
                   "    budget_usd: 5\n")
    code = (f"from gen.cli import cli\ntry:\n    cli(['run', {str(job)!r}, '-q'])\nexcept SystemExit as e:\n"
            "    assert e.code == 0, e.code")
    loaded = loaded_after(code, cwd=tmp_path)
    assert "openai" in loaded and "sqlalchemy" in loaded
    assert not loaded & {"redis", "celery", "kombu", "mistralai", "starlette", "uvicorn", "numpy", "datasketch"}


def test_enqueue_loads_none_of_the_running_side(tmp_path, pg_url, sim):
    """`gen enqueue` records, plans and dispatches a job: it imports neither the unit executor, the teachers, the
    SDKs nor their HTTP clients (the workers run the units), which its start-up paid for before its first dispatch."""
    from fleet_helpers import RedisServer

    redis_server = RedisServer(tmp_path)
    job = tmp_path / "e.yml"
    job.write_text(f"name: e\ninstructor:\n  type: respond\n  prompts: [hi, ho]\nteachers:\n  main:\n"
                   f"    provider: openai-compatible\n    model: m\n    base_url: {sim.base_url}\n")
    code = (f"import os, sys\nos.environ.update(GEN_DATABASE_URL={pg_url!r}, GEN_REDIS_URL={redis_server.url!r})\n"
            f"from gen.cli import cli\ntry:\n    cli(['enqueue', {str(job)!r}])\nexcept SystemExit as e:\n"
            "    assert e.code == 0, e.code\n"
            "print(' '.join(m for m in sys.modules if m.startswith('gen.')))")
    try:
        loaded = loaded_after(code, cwd=tmp_path)  # the package names, and gen's modules by their full names
    finally:
        redis_server.stop()
    assert "celery" in loaded and "sqlalchemy" in loaded
    running = {"gen.core.execute", "gen.core.journal", "gen.teacher", "gen.core.teachers", "gen.neardup",
               "gen.record_screen", "gen.budget", "gen.ratelimit", "gen.providers.openai_provider"}
    assert not loaded & (running | {"openai", "mistralai", "aiohttp", "httpx2", "ahocorasick_rs"})


def test_every_schema_gen_ships_is_a_valid_json_schema():
    """`gen.schemas.validator_for` no longer checks gen's own schemas against the metaschema on every start-up
    (40 ms of `gen validate`): this test does, once, for all of them."""
    from jsonschema import Draft202012Validator

    from gen.schemas import load_schema, schemas_dir, validator_for

    names = sorted(p.name.removesuffix(".schema.json") for p in schemas_dir().glob("*.schema.json"))
    assert "job" in names
    for name in names:
        Draft202012Validator.check_schema(load_schema(name))
        assert validator_for(name).schema == load_schema(name)
