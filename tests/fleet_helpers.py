"""Real fleet parts for tests: a redis-server of the test's own, and `gen worker` processes."""
from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class RedisServer:
    def __init__(self, folder: Path):
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        binary = shutil.which("redis-server")
        if binary is None:
            raise RuntimeError("redis-server is not installed")
        self.proc = subprocess.Popen([binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
                                      "--appendonly", "no", "--dir", str(folder)],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("redis-server did not start")

    def client(self):
        import redis

        return redis.Redis.from_url(self.url)

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=10)


class Worker:
    """A `gen worker` process; its log is a file, read to know it is ready."""

    def __init__(self, env: dict[str, str], log: Path, name: str, concurrency: int = 20):
        self.log = log
        self.name = name
        self.handle = open(log, "w")
        self.proc = subprocess.Popen([sys.executable, "-m", "gen", "worker", "-c", str(concurrency), "-n",
                                      f"{name}@%h"], stdout=self.handle, stderr=subprocess.STDOUT,
                                     env={**os.environ, **env, "GEN_WORKER_NAME": name}, start_new_session=True)

    def wait_ready(self, timeout: float = 60) -> "Worker":
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if " ready." in self.text():
                return self
            if self.proc.poll() is not None:
                raise RuntimeError(f"worker {self.name} exited:\n{self.text()}")
            time.sleep(0.1)
        raise RuntimeError(f"worker {self.name} never became ready:\n{self.text()}")

    def text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def alive(self) -> bool:
        return self.proc.poll() is None

    def kill(self) -> None:
        os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=10)

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.kill()
        self.handle.close()


class ThrowawayPostgres:
    """A PostgreSQL server of the test's own (initdb in a temporary folder, its own port), so a test can stop and
    start it without touching the machine's shared one. Runs as the `postgres` OS user when started as root."""

    def __init__(self):
        import glob
        import pwd
        import tempfile

        bins = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"))
        if not bins:
            raise RuntimeError("PostgreSQL server binaries are not installed")
        self.bin = Path(bins[-1]).parent
        self.port = free_port()
        self.folder = Path(tempfile.mkdtemp(prefix="gen-pg-"))
        self.data = self.folder / "data"
        self.as_user: list[str] = []
        if os.geteuid() == 0:
            pw = pwd.getpwnam("postgres")
            os.chown(self.folder, pw.pw_uid, pw.pw_gid)
            self.as_user = ["runuser", "-u", "postgres", "--"]
        self._run(str(self.bin / "initdb"), "-A", "trust", "-U", "postgres", "-D", str(self.data), "--no-sync")
        self.url = f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/postgres"
        self.start()

    def _run(self, *argv: str) -> None:
        subprocess.run([*self.as_user, *argv], check=True, capture_output=True, timeout=60)

    def start(self) -> None:
        self._run(str(self.bin / "pg_ctl"), "-D", str(self.data), "-w", "-l", str(self.folder / "log"),
                  "-o", f"-p {self.port} -k {self.folder} -c listen_addresses=127.0.0.1 -c fsync=off", "start")

    def stop(self) -> None:
        self._run(str(self.bin / "pg_ctl"), "-D", str(self.data), "-w", "-m", "immediate", "stop")

    def destroy(self) -> None:
        try:
            self.stop()
        except Exception:
            pass
        shutil.rmtree(self.folder, ignore_errors=True)


def paid_after_kill(sim, timeout: float = 15.0) -> int:
    """The simulator's answered (200) count once the requests a killed worker had in flight are over: those are
    answered (and paid) after the kill, though nobody reads them, so they belong to what was paid before it."""
    deadline = time.monotonic() + timeout
    while sim.stats()["in_flight"] and time.monotonic() < deadline:
        time.sleep(0.02)
    return sim.stats()["by_status"].get("200", 0)


def calls_since(store, job_id: str, after_id: int, before_accepted: list[int]) -> tuple[int, int]:
    """After a kill: (answered calls recorded with an id above `after_id`, and how many of those asked again a
    turn whose answer was accepted before the kill: `before_accepted`)."""
    from sqlalchemy import text

    with store.engine.connect() as conn:
        answered = conn.execute(text("SELECT count(*) FROM calls WHERE job_id = :j AND id > :a AND status = 200"),
                                {"j": job_id, "a": after_id}).scalar()
        repeated = conn.execute(text(
            "SELECT count(*) FROM calls c JOIN calls b ON b.unit_id = c.unit_id AND b.request_key = c.request_key "
            "AND b.occurrence = c.occurrence WHERE c.job_id = :j AND c.id > :a AND b.id = ANY(:ids)"),
            {"j": job_id, "a": after_id, "ids": list(before_accepted)}).scalar()
    return answered, repeated
