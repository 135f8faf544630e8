"""Named migrations: a database made by the previous release (schema version 1, before named migrations) is
upgraded in place, keeps its jobs and records, and ends with exactly the schema a new database gets."""
from __future__ import annotations

import gzip
import shutil
import sqlite3
import subprocess
from pathlib import Path

import pytest
from sqlalchemy import inspect, text

from conftest import gen_cmd, sim_job, write_job
from gen.errors import StoreError
from gen.store import Store
from gen.store.migrations import MIGRATIONS

DATA = Path(__file__).parent / "data"


def schema_of(store: Store) -> dict[str, set[str]]:
    insp = inspect(store.engine)
    return {t: {c["name"] for c in insp.get_columns(t)} for t in insp.get_table_names()}


def old_sqlite(path: Path, *, without_index_tables: bool = False) -> str:
    """The riddles dry run as the previous release (0.1.0, schema version 1) stored it."""
    conn = sqlite3.connect(path)
    conn.executescript(gzip.decompress((DATA / "v1_riddles.sqlite.sql.gz").read_bytes()).decode())
    if without_index_tables:  # a database made before the near-duplicate index existed
        conn.executescript("DROP TABLE near_duplicates; DROP TABLE neardup_bands; DROP TABLE neardup_signatures;")
    conn.close()
    return f"sqlite:///{path}"


def old_postgresql(url: str) -> str:
    psql = shutil.which("psql")
    if psql is None:
        pytest.skip("psql is not installed")
    dump = gzip.decompress((DATA / "v1_riddles.postgresql.sql.gz").read_bytes())
    plain = url.replace("postgresql+psycopg://", "postgresql://")
    subprocess.run([psql, "-q", "-v", "ON_ERROR_STOP=1", plain], input=dump, check=True, capture_output=True)
    return url


@pytest.mark.parametrize("without_index_tables", [False, True])
def test_a_previous_release_sqlite_database_is_upgraded_in_place(tmp_path, without_index_tables):
    url = old_sqlite(tmp_path / "old.db", without_index_tables=without_index_tables)
    store = Store(url)
    with store.engine.connect() as conn:
        applied = [r[0] for r in conn.execute(text("SELECT name FROM gen_migrations ORDER BY name"))]
        jobs = conn.execute(text("SELECT id, unit_count, planned_units, planning_done FROM jobs")).all()
        tokens = conn.execute(text("SELECT DISTINCT lease_token FROM units")).all()
    assert applied == [m.name for m in MIGRATIONS]
    assert len(jobs) == 1 and jobs[0][1] == 12 and jobs[0][3] in (1, True)
    assert tokens == [(0,)]
    fresh = Store(f"sqlite:///{tmp_path / 'new.db'}")
    assert schema_of(store) == schema_of(fresh), "an upgraded database has the schema of a new one"
    job_id = jobs[0][0]
    assert store.stats(job_id).records == 60
    store.close()
    # The old job's records still export, and a new job runs on the upgraded database.
    out = gen_cmd("--db", url, "export", job_id, "-o", str(tmp_path / "old.jsonl"))
    assert out.returncode == 0, out.stderr
    assert len((tmp_path / "old.jsonl").read_text().splitlines()) > 0


def test_opening_twice_applies_nothing_more(tmp_path):
    url = old_sqlite(tmp_path / "old.db")
    Store(url).close()
    store = Store(url)
    with store.engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM gen_migrations")).scalar() == len(MIGRATIONS)
        assert conn.execute(text("SELECT value FROM gen_meta WHERE key = 'schema_version'")).scalar() \
            == str(len(MIGRATIONS))


def test_a_previous_release_postgresql_database_is_upgraded_in_place(pg_url, tmp_path, sim):
    url = old_postgresql(pg_url)
    store = Store(url)
    with store.engine.connect() as conn:
        applied = [r[0] for r in conn.execute(text("SELECT name FROM gen_migrations ORDER BY name"))]
        job_id = conn.execute(text("SELECT id FROM jobs")).scalar()
    assert applied == [m.name for m in MIGRATIONS]
    assert store.stats(job_id).records == 60
    store.close()
    job = write_job(tmp_path / "j.yml", sim_job(sim.base_url, prompts=3))
    run = gen_cmd("--db", url, "run", str(job), "-q")
    assert run.returncode == 0, run.stderr


def test_a_database_holding_tables_gen_did_not_make_is_refused(tmp_path):
    path = tmp_path / "other.db"
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE jobs (id TEXT)")
    conn.close()
    with pytest.raises(StoreError, match="holds tables that gen did not make"):
        Store(f"sqlite:///{path}")
