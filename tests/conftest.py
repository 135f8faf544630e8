"""Shared fixtures: every test runs in its own folder with its own SQLite file; PostgreSQL gets a fresh database."""
from __future__ import annotations

import os
import uuid
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PG_ADMIN = os.environ.get("GEN_TEST_PG_ADMIN", "postgresql://postgres@127.0.0.1:5432/postgres")


@pytest.fixture(autouse=True)
def isolated(tmp_path, monkeypatch):
    """No test sees the user's database, keys or working folder."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("GEN_DATABASE_URL", f"sqlite:///{tmp_path / 'gen.db'}")
    for var in ("OPENAI_API_KEY", "MISTRAL_API_KEY", "OPENAI_BASE_URL"):
        monkeypatch.delenv(var, raising=False)
    return tmp_path


@pytest.fixture
def sim():
    from gen.simulator import SimConfig, Simulator

    with Simulator(SimConfig(latency=0.01, seed=7)) as running:
        yield running


def _pg_available() -> str | None:
    try:
        import psycopg

        with psycopg.connect(PG_ADMIN, connect_timeout=3):
            return None
    except Exception as exc:  # pragma: no cover - depends on the machine
        return f"PostgreSQL not reachable at {PG_ADMIN}: {exc}"


@pytest.fixture
def pg_url():
    """A fresh PostgreSQL database for one test, dropped afterwards."""
    import psycopg

    problem = _pg_available()
    if problem:
        if os.environ.get("CI"):
            pytest.fail(problem)
        pytest.skip(problem)
    name = f"gen_test_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    base = PG_ADMIN.rsplit("/", 1)[0].replace("postgresql://", "postgresql+psycopg://")
    yield f"{base}/{name}"
    with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request, tmp_path):
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'store.db'}"
    return request.getfixturevalue("pg_url")


def write_job(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def gen_cmd(*args: str, env: dict | None = None, timeout: float = 120, input: str | None = None):
    """Run the real `gen` command (python -m gen) and return the CompletedProcess."""
    import subprocess
    import sys

    return subprocess.run([sys.executable, "-m", "gen", *args], capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, **(env or {})}, input=input)


def sim_job(base_url: str, *, name: str = "job", prompts: int = 5, rpm: float | None = None,
            concurrency: int = 8, extra_teacher: str = "", instructor: str | None = None, run: str = "") -> str:
    """A respond job file whose teacher is a simulator (openai-compatible, no key)."""
    instructor = instructor or "  type: respond\n  prompts:\n" + "".join(
        f"    - \"Question number {i}: what is {i} plus {i}?\"\n" for i in range(prompts))
    limits = f"    rpm: {rpm}\n" if rpm else ""
    return (f"name: {name}\ninstructor:\n{instructor}teachers:\n  main:\n    provider: openai-compatible\n"
            f"    model: sim-1\n    base_url: {base_url}\n    max_concurrency: {concurrency}\n    timeout: 10\n"
            f"{limits}{extra_teacher}{run}")
