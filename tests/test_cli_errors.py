"""Every failure a user can cause: one clear line, the right exit code, and nothing written."""
from __future__ import annotations

import socket

import pytest

from conftest import gen_cmd, sim_job, write_job

GOOD = """name: ok
instructor:
  type: riddles
  count: 4
teachers:
  main:
    provider: openai
    model: gpt-4o-mini
"""


def run_and_check(tmp_path, text: str, code: int, *needles: str, env: dict | None = None):
    job = write_job(tmp_path / "job.yml", text)
    result = gen_cmd("run", str(job), env=env)
    assert result.returncode == code, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert lines and lines[-1].startswith("gen: error: "), result.stderr
    for needle in needles:
        assert needle in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "gen.db").exists(), "a refused run must write nothing"
    return result


def test_malformed_yaml(tmp_path):
    run_and_check(tmp_path, "name: x\ninstructor: [type: respond\n", 2, "job.yml", "invalid YAML", "line")


def test_unknown_instructor(tmp_path):
    run_and_check(tmp_path, GOOD.replace("type: riddles", "type: poems"), 2,
                  "instructor.type: unknown instructor 'poems'", "respond", "riddles")


def test_unknown_field_suggests_the_right_one(tmp_path):
    run_and_check(tmp_path, GOOD.replace("model:", "modle:"), 2,
                  "teachers.main.modle: unknown field (did you mean 'model'?)")


def test_wrong_type(tmp_path):
    run_and_check(tmp_path, GOOD + "    rpm: fast\n", 2, "teachers.main.rpm: must be a number")


def test_out_of_range(tmp_path):
    run_and_check(tmp_path, GOOD + "    rpm: 0\n", 2, "teachers.main.rpm: must be > 0")


def test_instructor_option_checked_by_the_instructor(tmp_path):
    run_and_check(tmp_path, GOOD.replace("count: 4", "count: 0"), 2, "instructor.count: must be > 0")
    run_and_check(tmp_path, GOOD.replace("count: 4", "count: 4\n  colour: red"), 2,
                  "instructor.colour: unknown field")


def test_missing_key_names_the_variable(tmp_path):
    result = run_and_check(tmp_path, GOOD, 2, "OPENAI_API_KEY", "teacher 'main'")
    assert "--dry-run" in result.stderr


def test_empty_key_counts_as_missing(tmp_path):
    run_and_check(tmp_path, GOOD, 2, "OPENAI_API_KEY", env={"OPENAI_API_KEY": "  "})


def test_unreachable_teacher(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again on exit: nothing listens there
    run_and_check(tmp_path, sim_job(f"http://127.0.0.1:{port}/v1"), 1, "unreachable", f"127.0.0.1:{port}")


def test_missing_file(tmp_path):
    result = gen_cmd("run", "nope.yml")
    assert result.returncode == 2 and "nope.yml: no such file" in result.stderr


def test_validate_reports_ok_and_errors(tmp_path):
    job = write_job(tmp_path / "job.yml", GOOD)
    ok = gen_cmd("validate", str(job))
    assert ok.returncode == 0 and "ok: job 'ok', instructor riddles, 1 units" in ok.stdout
    bad = write_job(tmp_path / "bad.yml", GOOD.replace("provider: openai", "provider: anthropic"))
    result = gen_cmd("validate", str(bad))
    assert result.returncode == 2
    assert 'teachers.main.provider: must be one of "openai", "mistral", "openai-compatible"' in result.stderr


def test_prompts_file_bad_line_is_named(tmp_path):
    (tmp_path / "p.jsonl").write_text('{"prompt": "a"}\n{"text": "b"}\n')
    job = write_job(tmp_path / "job.yml", GOOD.replace("type: riddles\n  count: 4",
                                                       "type: respond\n  prompts_file: p.jsonl"))
    result = gen_cmd("validate", str(job))
    assert result.returncode == 2 and "line 2: no 'prompt' or 'instruction' text" in result.stderr


@pytest.mark.parametrize("command", [["status", "nope"], ["export", "nope", "-o", "x.jsonl"], ["jobs"]])
def test_reading_commands_do_not_create_a_database(tmp_path, command):
    result = gen_cmd(*command)
    assert result.returncode == 2 and "no gen database at" in result.stderr
    assert not (tmp_path / "gen.db").exists()


@pytest.mark.parametrize("command", [["status", "nope"], ["export", "nope", "-o", "x.jsonl"]])
def test_unknown_job(tmp_path, command):
    from gen.store import Store

    Store(f"sqlite:///{tmp_path / 'gen.db'}").close()
    result = gen_cmd(*command)
    assert result.returncode == 2 and "no job with id or name 'nope'" in result.stderr


def test_enqueue_with_the_queue_unreachable_writes_nothing(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    job = write_job(tmp_path / "job.yml", sim_job("http://127.0.0.1:9/v1"))
    result = gen_cmd("enqueue", str(job), env={"GEN_REDIS_URL": f"redis://:hunter2@127.0.0.1:{port}/0"})
    assert result.returncode == 1, result.stderr
    assert "cannot reach the queue at redis://:***@127.0.0.1" in result.stderr and "hunter2" not in result.stderr
    assert "Traceback" not in result.stderr and not (tmp_path / "gen.db").exists()
