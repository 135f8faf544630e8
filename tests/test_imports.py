"""Each command imports what it uses: `gen --help` and `gen validate` load neither the database layer, the SDKs,
Celery nor the simulator's HTTP server (start-up time is what users feel on every command)."""
from __future__ import annotations

import subprocess
import sys

HEAVY = ("sqlalchemy", "sqlmodel", "openai", "mistralai", "aiohttp", "celery", "redis", "datasketch")


def loaded_after(code: str) -> set[str]:
    probe = code + "\nimport sys\nprint(' '.join(sorted({m.split('.')[0] for m in sys.modules})))"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60)
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
