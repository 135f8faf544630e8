"""`gen run`, `gen enqueue` and `gen worker` pause the cyclic garbage collector while they start up, then resume it
with the start-up heap frozen (gen.collector): whatever happens, what follows runs with the collector on, and a
library caller's collector is left as it is."""
from __future__ import annotations

import gc
import os
import subprocess
import sys

from conftest import sim_job, write_job
from fleet_helpers import RedisServer
from gen import collector
from gen.core.run_command import run_job_file

COMMAND = """
import gc, sys
from gen.cli import main
sys.argv = ['gen', *{args!r}]
try:
    main()
except SystemExit as exc:
    print('exit', exc.code, file=sys.stderr)
print(gc.isenabled(), gc.get_freeze_count())
"""

START_UP_OBJECTS = 50_000  # the SDK, SQLAlchemy and pydantic alone leave some 200,000


def collector_after(*args: str, cwd, env: dict[str, str] | None = None) -> tuple[bool, int, str]:
    """(collector on, objects frozen, stderr) right after `gen ARGS` returns, in the same process."""
    out = subprocess.run([sys.executable, "-c", COMMAND.format(args=list(args))], capture_output=True, text=True,
                         timeout=120, cwd=cwd, env={**os.environ, **(env or {})})
    enabled, frozen = out.stdout.split()[-2:]
    return enabled == "True", int(frozen), out.stderr


def test_gen_run_goes_on_with_the_collector_and_its_start_up_heap_frozen(tmp_path, sim):
    job = write_job(tmp_path / "j.yml", sim_job(sim.base_url, prompts=3))
    enabled, frozen, err = collector_after("run", str(job), "-q", cwd=tmp_path)
    assert "exit 0" in err, err
    assert enabled and frozen > START_UP_OBJECTS


def test_a_refused_gen_run_leaves_the_collector_on(tmp_path):
    job = write_job(tmp_path / "j.yml", "name: k\ninstructor:\n  type: respond\n  prompts: [hi]\nteachers:\n"
                    "  main: {provider: openai, model: gpt-4o-mini}\n")
    enabled, _, err = collector_after("run", str(job), cwd=tmp_path)
    assert "exit 2" in err and "OPENAI_API_KEY" in err, err
    assert enabled


def test_gen_enqueue_goes_on_with_the_collector_and_its_start_up_heap_frozen(tmp_path, pg_url, sim):
    redis_server = RedisServer(tmp_path)
    try:
        job = write_job(tmp_path / "j.yml", sim_job(sim.base_url, prompts=3))
        enabled, frozen, err = collector_after("enqueue", str(job), cwd=tmp_path, env={
            "GEN_DATABASE_URL": pg_url, "GEN_REDIS_URL": redis_server.url})
    finally:
        redis_server.stop()
    assert "exit 0" in err and "3 units sent" in err, err
    assert enabled and frozen > START_UP_OBJECTS


def test_a_worker_runtime_starts_with_the_collector_on_and_its_redis_connections_open(tmp_path, pg_url):
    """`gen worker` pauses the collector; its runtime resumes it once up. Before any job, the runtime has opened
    its Redis connections, so a job's first units, all asking the fleet's rate limiter at once, do not wait for
    them."""
    redis_server = RedisServer(tmp_path)
    probe = subprocess.Popen([sys.executable, "-c", (
        "import gc, sys\nfrom gen import collector\ncollector.pause()\nfrom worker.app import get_app\n"
        "from worker.runtime import get_runtime\nget_runtime(get_app())\n"
        "print(gc.isenabled(), gc.get_freeze_count(), flush=True)\nsys.stdin.readline()\n")],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=tmp_path,
        env={**os.environ, "GEN_DATABASE_URL": pg_url, "GEN_REDIS_URL": redis_server.url,
             "GEN_WORKER_NAME": "probe"})
    try:
        line = probe.stdout.readline()
        connected = len(redis_server.client().client_list()) - 1  # the test's own connection
        probe.communicate("\n", timeout=30)
    finally:
        if probe.poll() is None:
            probe.kill()
        redis_server.stop()
    enabled, frozen = line.split()
    assert enabled == "True" and int(frozen) > START_UP_OBJECTS
    assert connected >= 64


def test_a_library_caller_keeps_its_collector(tmp_path, sim):
    job = write_job(tmp_path / "j.yml", sim_job(sim.base_url, prompts=2))
    frozen = gc.get_freeze_count()
    assert run_job_file(f"sqlite:///{tmp_path / 'gen.db'}", job, quiet=True) == 0
    assert gc.isenabled() and gc.get_freeze_count() == frozen, "only the gen command pauses and freezes"
    gc.disable()
    try:
        collector.pause()  # disabled by its caller: not paused by gen, so not resumed by gen either
        collector.resume()
        assert not gc.isenabled() and gc.get_freeze_count() == frozen
    finally:
        gc.enable()
