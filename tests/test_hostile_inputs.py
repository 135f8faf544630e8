"""Hostile inputs get one `gen: error:` line and the right exit code (2: the user's input), and write nothing:
binary or UTF-16 input files, empty prompts files, ports out of range, YAML alias bombs and oversized job
files, `gen export -o` onto folders, FIFOs, devices and unwritable paths. A symlink to a regular file is
written through; a Mistral teacher whose base_url ends in /v1 works."""
from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest

from conftest import gen_cmd, sim_job, write_job
from gen.simulator import SimConfig, Simulator
from gen.store import Store

SIM = "http://127.0.0.1:9/v1"  # never called: every case below is refused before any call


def one_line_error(result, code: int = 2) -> str:
    lines = result.stderr.strip().splitlines()
    assert result.returncode == code, (result.returncode, result.stderr)
    assert len(lines) == 1 and lines[0].startswith("gen: error: "), result.stderr
    assert "Traceback" not in result.stderr
    return lines[0]


def respond_job(prompts_file: str) -> str:
    return sim_job(SIM, instructor=f"  type: respond\n  prompts_file: {prompts_file}\n")


def systemchat_job(prompts_file: str) -> str:
    teachers = "".join(f"  {n}:\n    provider: openai-compatible\n    model: sim-1\n    base_url: {SIM}\n"
                       for n in ("user", "assistant", "judge"))
    return (f"name: chat\ninstructor:\n  type: systemchat\n  count: 2\n  system_prompts_file: {prompts_file}\n"
            f"teachers:\n{teachers}")


def dpo_job(source_file: str) -> str:
    return (f"name: pairs\ninstructor:\n  type: dpo_reroll\n  source_file: {source_file}\nteachers:\n"
            f"  reroll:\n    provider: openai-compatible\n    model: sim-1\n    base_url: {SIM}\n")


def alias_bomb() -> str:
    lines = ['a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    for level in "bcdefghij":
        previous = chr(ord(level) - 1)
        lines.append(f"{level}: &{level} [" + ",".join([f"*{previous}"] * 9) + "]")
    return "\n".join(lines) + "\nname: *j\n"


UTF16_JSONL = '{"prompt": "What is two plus two?"}\n'.encode("utf-16")
BINARY = bytes(range(256)) * 4
NUL_TEXT = b"a prompt\n\x00\x00\x00\x00 more\n"

# (id, job file text, {input file name: bytes}, words the error line must hold)
JOB_FILE_CASES = [
    ("respond-binary-prompts", respond_job("prompts.txt"), {"prompts.txt": BINARY}, "not UTF-8"),
    ("respond-nul-prompts", respond_job("prompts.txt"), {"prompts.txt": NUL_TEXT}, "binary"),
    ("respond-utf16-prompts", respond_job("prompts.jsonl"), {"prompts.jsonl": UTF16_JSONL}, "UTF-16"),
    ("respond-empty-prompts", respond_job("prompts.txt"), {"prompts.txt": b""}, "no prompts"),
    ("respond-blank-prompts", respond_job("prompts.txt"), {"prompts.txt": b"\n  \n\n"}, "no prompts"),
    ("systemchat-binary-file", systemchat_job("system.txt"), {"system.txt": BINARY}, "not UTF-8"),
    ("systemchat-utf16-file", systemchat_job("system.yaml"), {"system.yaml": "- Be a pirate.\n".encode("utf-16")},
     "UTF-16"),
    ("systemchat-empty-file", systemchat_job("system.txt"), {"system.txt": b""}, "empty"),
    ("systemchat-yaml-bomb", systemchat_job("system.yaml"), {"system.yaml": alias_bomb().encode()}, "expands"),
    ("dpo-utf16-source", dpo_job("chats.jsonl"), {"chats.jsonl": json.dumps(
        {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]}
    ).encode("utf-16")}, "UTF-16"),
    ("dpo-binary-source", dpo_job("chats.jsonl"), {"chats.jsonl": BINARY}, "not UTF-8"),
    ("base-url-port-too-big", sim_job("http://127.0.0.1:99999/v1"), {}, "port '99999'"),
    ("base-url-port-zero", sim_job("http://127.0.0.1:0/v1"), {}, "port '0'"),
    ("base-url-port-not-a-number", sim_job("http://127.0.0.1:8o8o/v1"), {}, "port '8o8o'"),
    ("yaml-alias-bomb", alias_bomb(), {}, "expands to more than"),
    ("job-file-over-1mb", sim_job(SIM) + "description: \"" + "x" * 1_100_000 + "\"\n", {}, "larger than 1 MB"),
    ("job-file-nested-deeply", "name: " + "[" * 50_000 + "]" * 50_000 + "\n", {}, "job.yml"),
    ("job-file-utf16", None, {}, "not UTF-8"),
]


@pytest.mark.parametrize("case", JOB_FILE_CASES, ids=[c[0] for c in JOB_FILE_CASES])
def test_bad_job_inputs_are_one_line_usage_errors_that_write_nothing(case, tmp_path):
    _id, text, files, words = case
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
    job = tmp_path / "job.yml"
    if text is None:
        job.write_bytes(sim_job(SIM).encode("utf-16"))
    else:
        write_job(job, text)
    line = one_line_error(gen_cmd("run", str(job), timeout=60))
    assert words in line
    assert not (tmp_path / "gen.db").exists()


URL_CASES = [
    ("db-option-port", ["--db", "postgresql://postgres@127.0.0.1:99999/gen", "jobs"], {}, "port '99999'"),
    ("db-env-port", ["jobs"], {"GEN_DATABASE_URL": "postgresql://postgres@127.0.0.1:65536/gen"}, "GEN_DATABASE_URL"),
    ("db-env-port-letters", ["jobs"], {"GEN_DATABASE_URL": "postgresql://u:p@127.0.0.1:abc/gen"}, "port 'abc'"),
    ("redis-env-port-worker", ["worker"], {"GEN_REDIS_URL": "redis://127.0.0.1:99999/0"}, "GEN_REDIS_URL"),
    ("redis-env-port-enqueue", ["enqueue", "JOB"], {"GEN_REDIS_URL": "redis://:pw@127.0.0.1:70000/0"},
     "GEN_REDIS_URL"),
    ("worker-malloc-arenas", ["worker"], {"GEN_WORKER_MALLOC_ARENAS": "two"}, "GEN_WORKER_MALLOC_ARENAS"),
]


@pytest.mark.parametrize("case", URL_CASES, ids=[c[0] for c in URL_CASES])
def test_ports_out_of_range_in_database_and_redis_urls_are_usage_errors(case, tmp_path):
    _id, args, env, words = case
    job = write_job(tmp_path / "job.yml", sim_job(SIM))
    args = [str(job) if a == "JOB" else a for a in args]
    line = one_line_error(gen_cmd(*args, env=env, timeout=60))
    assert words in line
    assert "pw@" not in line
    assert not (tmp_path / "gen.db").exists()


# gen export -o ---------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def finished_job(tmp_path_factory):
    folder = tmp_path_factory.mktemp("exported")
    db_url = f"sqlite:///{folder / 'gen.db'}"
    with Simulator(SimConfig(latency=0.01, seed=3)) as sim:
        job = write_job(folder / "job.yml", sim_job(sim.base_url, prompts=2))
        result = gen_cmd("--db", db_url, "run", str(job), "-q")
        assert result.returncode == 0, result.stderr
    store = Store(db_url)
    job_id = store.list_jobs()[0].id
    store.close()
    return db_url, job_id


def _folder(tmp_path: Path) -> str:
    (tmp_path / "a-folder").mkdir()
    return str(tmp_path / "a-folder")


def _fifo(tmp_path: Path) -> str:
    os.mkfifo(tmp_path / "pipe")
    return str(tmp_path / "pipe")


def _device(tmp_path: Path) -> str:
    if os.geteuid() != 0:
        pytest.skip("making a device node needs root")
    os.mknod(tmp_path / "null", 0o666 | stat.S_IFCHR, os.makedev(1, 3))
    return str(tmp_path / "null")


def _link_to_fifo(tmp_path: Path) -> str:
    os.symlink(_fifo(tmp_path), tmp_path / "link")
    return str(tmp_path / "link")


def _dangling_link(tmp_path: Path) -> str:
    os.symlink(tmp_path / "nowhere" / "x.jsonl", tmp_path / "link")
    return str(tmp_path / "link")


def _under_a_file(tmp_path: Path) -> str:
    (tmp_path / "file.txt").write_text("not a folder")
    return str(tmp_path / "file.txt" / "out.jsonl")


def _missing_folder(tmp_path: Path) -> str:
    return str(tmp_path / "missing" / "out.jsonl")


def _unwritable(tmp_path: Path) -> str:
    return "/proc/gen-export-test.jsonl"  # not writable, even by root


EXPORT_REFUSALS = [("existing-folder", _folder, "a folder"), ("fifo", _fifo, "FIFO"), ("device", _device, "device"),
                   ("symlink-to-fifo", _link_to_fifo, "symlink to a FIFO"),
                   ("dangling-symlink", _dangling_link, "does not exist"),
                   ("path-under-a-file", _under_a_file, "not a folder"),
                   ("missing-folder", _missing_folder, "does not exist"), ("unwritable", _unwritable, "cannot write")]


def _kind(path: str) -> tuple[bool, int | None]:
    try:
        return os.path.islink(path), stat.S_IFMT(os.lstat(path).st_mode)
    except OSError:  # missing, or a path under a file
        return False, None


@pytest.mark.parametrize("case", EXPORT_REFUSALS, ids=[c[0] for c in EXPORT_REFUSALS])
def test_export_refuses_anything_but_a_regular_file_and_leaves_it_as_it_was(case, finished_job, tmp_path):
    _id, make, words = case
    db_url, job_id = finished_job
    output = make(tmp_path)
    before = _kind(output)
    line = one_line_error(gen_cmd("--db", db_url, "export", job_id, "-o", output, timeout=60))
    assert words in line
    assert _kind(output) == before
    assert not [p for p in tmp_path.rglob("*.part")]


def test_export_writes_through_a_symlink_to_a_regular_file(finished_job, tmp_path):
    db_url, job_id = finished_job
    target = tmp_path / "data" / "train.jsonl"
    target.parent.mkdir()
    target.write_text("old\n")
    os.chmod(target, 0o640)
    os.symlink(target, tmp_path / "train.jsonl")
    result = gen_cmd("--db", db_url, "export", job_id, "-o", str(tmp_path / "train.jsonl"))
    assert result.returncode == 0, result.stderr
    assert os.path.islink(tmp_path / "train.jsonl")
    lines = target.read_text().splitlines()
    assert len(lines) == 2 and all("messages" in json.loads(line) for line in lines)
    assert stat.S_IMODE(os.stat(target).st_mode) == 0o640


# Mistral and /v1 -------------------------------------------------------------------------------------------
def test_a_mistral_teacher_whose_base_url_ends_in_v1_works(sim, tmp_path):
    """The Mistral SDK appends /v1 itself: gen drops the extra one (and says so once) instead of a 404 per call."""
    job = write_job(tmp_path / "m.yml", sim_job(sim.base_url + "/", prompts=3).replace(
        "provider: openai-compatible", "provider: mistral\n    api_key_env: GEN_TEST_MISTRAL_KEY"))
    result = gen_cmd("run", str(job), "-q", env={"GEN_TEST_MISTRAL_KEY": "mistral-test-key-123456"})
    assert result.returncode == 0, result.stderr
    assert result.stderr.count("ends in /v1") == 1
    store = Store(f"sqlite:///{tmp_path / 'gen.db'}")
    try:
        assert store.stats(store.list_jobs()[0].id).records == 3
    finally:
        store.close()
