"""`gen serve` and `gen report` over plain HTTP: the token guard, pages and plots carrying the job's numbers,
keyset paging and filters, review marks honoured by `gen export`, PostgreSQL reads in read-only transactions.
The browser walk-through is in test_serve_browser.py."""
from __future__ import annotations

import json
import re
import subprocess
import sys
import urllib.error
import urllib.parse
import urllib.request
from contextlib import contextmanager
from html import unescape

import pytest

from conftest import gen_cmd, sim_job, write_job
from gen.store import NewRecord, Store, UnitState

JUDGE_MARK = "You are grading how faithfully"  # only in the judge's messages

PROMPTS = """  system_prompts:
    - You are Jeeves, a polite Victorian butler who never uses modern slang.
    - {prompt: "You help only with houseplants and steer every other topic back to plants.", category: purpose}
"""


def judge_answer(n: int, score: int) -> str:
    return json.dumps({"turns": [{"reason": f"Scored {score}: keeps to the prompt.", "score": score}] * n})


def chat_job(base_url: str, *, count: int = 4, name: str = "chat") -> str:
    """A systemchat job on the simulator: 2 exchanges per conversation, every turn must score 4+."""
    teachers = "teachers:\n" + "".join(
        f"  {n}:\n    provider: openai-compatible\n    model: sim-{n}\n    base_url: {base_url}\n"
        f"    max_concurrency: 8\n    timeout: 10\n    prices: {{input_per_million: 0.4, output_per_million: 2.0}}\n"
        for n in ("user", "assistant", "judge"))
    return (f"name: {name}\ninstructor:\n  type: systemchat\n{PROMPTS}  count: {count}\n  min_turns: 2\n"
            f"  max_turns: 2\n  no_system_ratio: 0\n  judge_rule: any_turn\n  judge_threshold: 4\n{teachers}")


def run_chat_job(sim, tmp_path, *, kept: int = 2, rejected: int = 2) -> str:
    """Run a systemchat job whose judge keeps `kept` conversations and rejects `rejected` (scores 5 or 1)."""
    sim.script([{"match": JUDGE_MARK, "answers": [judge_answer(2, 5)] * kept + [judge_answer(2, 1)] * rejected}])
    job = write_job(tmp_path / "chat.yml", chat_job(sim.base_url, count=kept + rejected))
    result = gen_cmd("run", str(job), "-q")
    assert result.returncode == 0, result.stderr
    return Store(f"sqlite:///{tmp_path / 'gen.db'}").list_jobs()[0].id


@contextmanager
def serving(*args: str, db: str | None = None):
    """`gen serve` as a real subprocess on a free port; yields its base URL."""
    cmd = [sys.executable, "-m", "gen", *(["--db", db] if db else []), "serve", "--port", "0", *args]
    proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True)
    try:
        line = proc.stderr.readline()
        found = re.search(r"(http://\S+?:\d+)/", line)
        assert found, f"gen serve did not start: {line}{proc.stderr.read() if proc.poll() is not None else ''}"
        yield found.group(1)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


class NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args, **kwargs):
        return None


def get(url: str, headers: dict | None = None, *, data: bytes | None = None, follow: bool = True):
    """(status, headers, body) of one request; HTTP errors are returned, not raised."""
    opener = urllib.request.build_opener() if follow else urllib.request.build_opener(NoRedirect)
    request = urllib.request.Request(url, headers=headers or {}, data=data)
    try:
        with opener.open(request, timeout=30) as response:
            return response.status, response.headers, response.read().decode("utf-8")
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers, exc.read().decode("utf-8")


def plot_values(html: str, name: str) -> dict[str, float]:
    """data-label -> data-value of the bars of one plot on a page."""
    svg = re.search(rf'<svg class="plot" data-plot="{name}".*?</svg>', html, re.S)
    assert svg, f"no plot {name}"
    return {unescape(label): float(value) for label, value in
            re.findall(r'<rect class="bar"[^>]*data-label="([^"]*)" data-value="([^"]*)"', svg.group(0))}


def line_last(html: str, name: str) -> dict[str, float]:
    """series -> its last value in one line plot."""
    svg = re.search(rf'<svg class="plot" data-plot="{name}".*?</svg>', html, re.S).group(0)
    last: dict[str, float] = {}
    for series, value in re.findall(r'<circle class="point"[^>]*data-series="([^"]*)"[^>]*data-value="([^"]*)"', svg):
        last[unescape(series)] = float(value)
    return last


# the token guard ---------------------------------------------------------------------------------------------
def test_a_non_loopback_bind_without_a_token_is_refused_in_one_line():
    result = gen_cmd("serve", "--host", "0.0.0.0", "--port", "0", timeout=30)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("gen: error: --host 0.0.0.0 is not a loopback address")
    assert "--token" in lines[0]


def test_every_request_must_carry_the_token(sim, tmp_path):
    job_id = run_chat_job(sim, tmp_path, kept=1, rejected=1)
    token = "s3cret-token-for-tests"
    store = Store(f"sqlite:///{tmp_path / 'gen.db'}")
    record_id = next(store.iter_records(job_id)).id
    with serving("--token", token) as url:
        for path in ("/", f"/jobs/{job_id}", f"/jobs/{job_id}/records", f"/records/{record_id}"):
            status, _, body = get(url + path)
            assert status == 401, path
            assert "run" not in body and job_id not in body
        assert get(url + "/", {"X-Gen-Token": "wrong-token-here"})[0] == 401
        # a mark posted without the token is refused and not stored
        status, _, _ = get(f"{url}/records/{record_id}/review", data=b"action=exclude&reason=spam")
        assert status == 401
        from gen.store.reviews import review_history
        assert review_history(store, record_id) == []

        status, _, body = get(url + "/", {"X-Gen-Token": token})
        assert status == 200 and job_id in body
        assert get(url + "/", {"Authorization": f"Bearer {token}"})[0] == 200
        # ?token= once: a cookie, and the address without the token
        status, headers, _ = get(f"{url}/jobs/{job_id}?token={token}", follow=False)
        assert status == 303 and headers["location"] == f"/jobs/{job_id}"
        cookie = headers["set-cookie"].split(";")[0]
        assert "httponly" in headers["set-cookie"].lower()
        status, _, body = get(f"{url}/jobs/{job_id}", {"Cookie": cookie})
        assert status == 200 and 'data-plot="units"' in body


def test_serve_on_a_busy_port_is_one_line():
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        Store("sqlite:///gen.db").close()
        result = gen_cmd("serve", "--port", str(port), timeout=30)
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [result.stderr.strip()]
    assert result.stderr.startswith(f"gen: error: cannot listen on 127.0.0.1:{port}")


# pages and plots ---------------------------------------------------------------------------------------------
def test_job_page_plots_carry_the_jobs_numbers(sim, tmp_path):
    job_id = run_chat_job(sim, tmp_path, kept=3, rejected=2)
    store = Store(f"sqlite:///{tmp_path / 'gen.db'}")
    stats = store.stats(job_id)
    with serving() as url:
        status, _, jobs = get(url + "/")
        assert status == 200
        row = re.search(rf'<tr class="job" data-job="{job_id}">.*?</tr>', jobs, re.S).group(0)
        assert re.search(r'data-state="done">3<', row) and re.search(r'data-state="rejected">2<', row)
        assert 'http-equiv="refresh"' not in jobs  # nothing is running
        status, _, page = get(f"{url}/jobs/{job_id}")
    assert status == 200
    names = re.findall(r'<svg class="plot" data-plot="([^"]+)" data-points="(\d+)"', page)
    assert [n for n, _ in names] == ["units", "calls", "cost", "judge-scores", "turns", "tokens", "rejections",
                                     "duplicates", "code-checks"]
    assert all(int(points) > 0 for n, points in names if n not in ("duplicates", "code-checks"))
    # cumulative units: the last points are the job's totals
    assert line_last(page, "units") == {"done": 3, "rejected": 2, "failed": 0}
    # calls over time: the buckets' calls add up to the job's calls (per-minute rate x bucket width)
    width = float(re.search(r"\(([\d.]+) s buckets\)", page).group(1))
    svg = re.search(r'<svg class="plot" data-plot="calls".*?</svg>', page, re.S).group(0)
    rates = [float(v) for v in re.findall(r'data-series="calls/min"[^>]*data-value="([^"]*)"', svg)]
    assert round(sum(r * width / 60 for r in rates)) == stats.calls
    # cost by teacher: one line per teacher
    cost = line_last(page, "cost")
    assert set(cost) == {"user", "assistant", "judge"}
    assert sum(cost.values()) == pytest.approx(stats.cost_usd, rel=0.01) and stats.cost_usd > 0
    # judge scores of kept records only: 3 conversations x 2 turns, all scored 5
    assert plot_values(page, "judge-scores") == {"5": 6}
    assert plot_values(page, "turns") == {"2": 3}
    assert sum(plot_values(page, "tokens").values()) == 3
    reasons = plot_values(page, "rejections")
    assert sum(reasons.values()) == 2 and all(label.startswith("judge:") for label in reasons)


def test_the_jobs_page_of_a_live_job_refreshes_itself(tmp_path):
    store = Store(f"sqlite:///{tmp_path / 'gen.db'}")
    store.create_job(name="live", instructor="respond", spec={}, spec_hash="x", units=[("a", {}), ("b", {})])
    job_id = store.list_jobs()[0].id
    with serving() as url:
        _, _, page = get(url + "/")
        status, _, job_page = get(f"{url}/jobs/{job_id}")
    assert 'http-equiv="refresh"' in page and "running" in page
    # a job with nothing done yet: every plot is there, empty, and says so
    assert status == 200 and 'http-equiv="refresh"' in job_page
    assert re.findall(r'data-points="(\d+)"', job_page) == ["0"] * 9 and "nothing yet" in job_page


def make_records(store: Store, n: int, *, kinds=("conversation",)) -> str:
    """A job with one unit holding n records (categories alternate, every 7th is 'rejected')."""
    job = store.create_job(name="many", instructor="respond", spec={}, spec_hash="h", units=[("u", {})])
    unit = store.units(job.id)[0]
    records = [NewRecord(key=f"k{i}", kind="rejected" if i % 7 == 0 else kinds[i % len(kinds)],
                         conversation=[{"role": "user", "content": f"question {i} about {'owls' if i % 5 == 0 else 'cats'}"},
                                       {"role": "assistant", "content": f"answer {i}"}],
                         meta={"category": "even" if i % 2 == 0 else "odd", "constraints": ["all_caps"] if i % 3 == 0 else [],
                               "judge": {"mean": (i % 5) + 1}, "verified": i % 4 == 0,
                               "language": "python" if i % 2 else "go",
                               **({"rejected_because": "ruff rejects the code:\nE999" if i % 14 == 0 else "judge: low"}
                                  if i % 7 == 0 else {"code_check": "passed" if i % 3 else "unchecked"})})
               for i in range(n)]
    store.finish_unit_with_records(job.id, unit.id, records, [])
    return job.id


def listed(html: str) -> list[int]:
    return [int(i) for i in re.findall(r'<tr class="record" data-record="(\d+)">', html)]


def test_record_browser_pages_by_cursor_and_filters(tmp_path):
    store = Store(f"sqlite:///{tmp_path / 'gen.db'}")
    job_id = make_records(store, 130)
    all_ids = [r.id for r in store.iter_records(job_id)]
    with serving() as url:
        seen, query = [], ""
        while True:
            status, _, page = get(f"{url}/jobs/{job_id}/records?{query}")
            assert status == 200
            ids = listed(page)
            assert ids and len(ids) <= 50
            seen += ids
            nxt = re.search(r'<a id="next" href="\?([^"]*)"', page)
            if not nxt:
                break
            query = unescape(nxt.group(1))
            assert f"after={ids[-1]}" in query  # the cursor is the last id shown, not an offset
        assert seen == all_ids

        def ids_for(**params) -> list[int]:
            """Every id the browser lists for these filters, following its next-page links."""
            ids, query = [], urllib.parse.urlencode(params)
            while True:
                page = get(f"{url}/jobs/{job_id}/records?{query}")[2]
                ids += listed(page)
                nxt = re.search(r'<a id="next" href="\?([^"]*)"', page)
                if not nxt:
                    return ids
                query = unescape(nxt.group(1))

        records = {r.id: r for r in store.iter_records(job_id)}
        rejected = [i for i, r in records.items() if r.kind == "rejected"]
        assert ids_for(kind="rejected") == rejected and len(rejected) == 19
        assert ids_for(kind="kept") == [i for i in records if i not in rejected]
        assert ids_for(category="odd", q="OWLS") == [i for i, r in records.items() if r.meta["category"] == "odd"
                                                     and "owls" in r.conversation[0]["content"]]
        assert ids_for(constraint="all_caps") == [i for i, r in records.items() if r.meta["constraints"]]
        assert ids_for(min_score="5") == [i for i, r in records.items() if r.meta["judge"]["mean"] >= 5]
        assert ids_for(verified="yes") == [i for i, r in records.items() if r.meta["verified"]]
        assert ids_for(verified="no", kind="rejected") == [i for i in rejected if not records[i].meta["verified"]]
        assert ids_for(q="no such words") == []
        assert ids_for(code_check="unchecked", language="go") == [
            i for i, r in records.items() if r.meta.get("code_check") == "unchecked" and r.meta["language"] == "go"]
        # the job page counts the code checks in SQL
        page = get(f"{url}/jobs/{job_id}")[2]
        kept = [r for r in records.values() if r.kind != "rejected"]
        assert plot_values(page, "code-checks") == {
            "kept: passed": sum(r.meta["code_check"] == "passed" for r in kept),
            "kept: unchecked": sum(r.meta["code_check"] == "unchecked" for r in kept),
            "rejected: check failed": sum("rejects the code" in r.meta.get("rejected_because", "")
                                          for r in records.values())}
        assert get(f"{url}/jobs/{job_id}/records?min_score=high")[0] == 400


def test_record_page_shows_the_conversation_and_its_lineage(sim, tmp_path):
    job_id = run_chat_job(sim, tmp_path, kept=1, rejected=0)
    store = Store(f"sqlite:///{tmp_path / 'gen.db'}")
    record = next(store.iter_records(job_id))
    calls = {c.id: c for c in store.calls_for_job(job_id)}
    with serving() as url:
        status, _, page = get(f"{url}/records/{record.id}")
        assert get(f"{url}/records/999999")[0] == 404
    assert status == 200
    bubbles = re.findall(r'<div class="bubble role-(\w+)"', page)
    assert bubbles == [m["role"] for m in record.conversation] and bubbles[0] == "system"
    shown = [int(i) for i in re.findall(r'<details class="call" data-call="(\d+)"', page)]
    assert shown == sorted(record.call_ids) and len(shown) == 5  # 2 user + 2 assistant + 1 judge
    answers = [unescape(a) for a in re.findall(r'<pre class="answer">(.*?)</pre>', page, re.S)]
    assert answers == [calls[i].text for i in shown]
    assert "judge: 5/5" in page


# review marks and export ---------------------------------------------------------------------------------------
def export_ids(job_id: str, *extra: str) -> list[int]:
    result = gen_cmd("export", job_id, "-o", "out.jsonl", "--meta", "--format", "messages", "--no-filter", *extra)
    assert result.returncode == 0, result.stderr
    with open("out.jsonl", encoding="utf-8") as f:
        return [json.loads(line)["metadata"]["record_id"] for line in f]


def test_export_honours_review_marks_made_through_the_app_and_keeps_honouring_them(sim, tmp_path):
    from gen.store.reviews import review_history

    job_id = run_chat_job(sim, tmp_path, kept=2, rejected=2)
    store = Store(f"sqlite:///{tmp_path / 'gen.db'}")
    kept = [r.id for r in store.iter_records(job_id, kind="conversation")]
    rejected = [r.id for r in store.iter_records(job_id, kind="rejected")]
    assert len(kept) == 2 and len(rejected) == 2
    assert export_ids(job_id) == kept
    with serving("--reviewer", "alice") as url:
        def mark(record_id: int, action: str, reason: str) -> str:
            body = urllib.parse.urlencode({"action": action, "reason": reason}).encode()
            status, _, page = get(f"{url}/records/{record_id}/review", data=body)
            assert status == 200
            return page

        page = mark(kept[0], "exclude", "answers in modern slang")
        assert "marked: excluded from export" in page and "not in export" in page
        assert "excluding a record needs a reason" in mark(kept[1], "exclude", "  ")
        page = mark(rejected[0], "include", "the judge was too strict")
        assert "marked: included in export" in page
        # a form posted from another site is refused
        status, _, _ = get(f"{url}/records/{kept[1]}/review", {"Origin": "http://evil.example"},
                           data=b"action=exclude&reason=x")
        assert status == 403
    history = review_history(store, kept[0])
    assert [(h.action, h.reason, h.who) for h in history] == [("exclude", "answers in modern slang", "alice")]
    assert review_history(store, kept[1]) == []
    for _ in range(2):  # marks are not used up by an export
        assert export_ids(job_id) == [kept[1], rejected[0]]
    assert export_ids(job_id, "--rejected") == [rejected[1]]
    # taking a mark back is another row; the newest one decides
    from gen.store.reviews import add_review
    add_review(store, record_id=kept[0], action="include", reason="on second thought, fine", who="bob")
    assert export_ids(job_id) == [*kept, rejected[0]]
    assert [h.who for h in review_history(store, kept[0])] == ["alice", "bob"]


def test_report_is_one_self_contained_file_with_plots_and_records(sim, tmp_path):
    job_id = run_chat_job(sim, tmp_path, kept=2, rejected=1)
    result = gen_cmd("report", job_id, "-o", "report.html")
    assert result.returncode == 0, result.stderr
    html = (tmp_path / "report.html").read_text(encoding="utf-8")
    assert len(re.findall(r'<svg class="plot"', html)) == 9
    assert plot_values(html, "turns") == {"2": 2}
    sections = re.findall(r'<section class="sample" data-record="(\d+)">', html)
    assert len(sections) == 3
    assert "<style>" in html
    # nothing to fetch: no scripts, stylesheets, images or links back to a server
    assert not re.search(r'<(script|link|img|iframe)\b', html)
    assert not re.search(r'(href|src)="/', html)
    missing = gen_cmd("report", "no-such-job", "-o", "r.html")
    assert missing.returncode == 2 and missing.stderr.startswith("gen: error: ")


# PostgreSQL --------------------------------------------------------------------------------------------------
def test_postgresql_reads_are_read_only_and_marks_are_written(pg_url):
    from sqlalchemy import text
    from sqlalchemy.exc import DBAPIError

    from gen.serve.reading import reading

    store = Store(pg_url)
    job_id = make_records(store, 12)
    with pytest.raises(DBAPIError, match="read-only transaction"):
        with reading(store) as conn:
            conn.execute(text("UPDATE jobs SET name = 'x'"))
    record_id = next(store.iter_records(job_id)).id
    with serving("--reviewer", "carol", db=pg_url) as url:
        assert job_id in get(url + "/")[2]
        assert listed(get(f"{url}/jobs/{job_id}/records?kind=kept")[2])[:1] == [record_id + 1]
        records = {r.id: r for r in store.iter_records(job_id)}
        for params, keep in (
                ({"constraint": "all_caps"}, lambda r: bool(r.meta["constraints"])),
                ({"min_score": "4"}, lambda r: r.meta["judge"]["mean"] >= 4),
                ({"verified": "yes"}, lambda r: r.meta["verified"]),
                ({"verified": "no", "category": "odd"}, lambda r: not r.meta["verified"] and r.meta["category"] == "odd"),
                ({"code_check": "passed", "language": "python"},
                 lambda r: r.meta.get("code_check") == "passed" and r.meta["language"] == "python"),
                ({"q": "OWLS"}, lambda r: "owls" in r.conversation[0]["content"])):
            shown = listed(get(f"{url}/jobs/{job_id}/records?{urllib.parse.urlencode(params)}")[2])
            assert shown == [i for i, r in records.items() if keep(r)], params
        assert 'data-plot="code-checks" data-points="3"' in get(f"{url}/jobs/{job_id}")[2]
        body = urllib.parse.urlencode({"action": "exclude", "reason": "duplicate"}).encode()
        assert get(f"{url}/records/{record_id + 1}/review", data=body)[0] == 200
    from gen.store.reviews import review_overrides
    assert review_overrides(store, job_id) == ({record_id + 1}, set())
    assert store.get_job(job_id).name == "many"


def test_serve_reads_and_takes_marks_while_a_job_writes_to_postgresql(sim, pg_url, tmp_path):
    import time

    sim.configure(latency=0.5)  # slow teachers: the job is still running while we look
    job = write_job(tmp_path / "slow.yml", sim_job(sim.base_url, name="slow", prompts=40, concurrency=2))
    runner = subprocess.Popen([sys.executable, "-m", "gen", "--db", pg_url, "run", str(job), "-q"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    store = Store(pg_url)
    try:
        with serving("--reviewer", "dora", db=pg_url) as url:
            deadline = time.monotonic() + 60
            while True:
                jobs = store.list_jobs()
                if jobs and store.record_counts(jobs[0].id).get("conversation", 0) >= 2:
                    break
                assert runner.poll() is None and time.monotonic() < deadline, runner.stderr.read()
                time.sleep(0.1)
            job_id = jobs[0].id
            status, _, page = get(url + "/")
            assert status == 200 and 'http-equiv="refresh"' in page  # a live job: the page refreshes itself
            row = re.search(rf'<tr class="job" data-job="{job_id}">.*?</tr>', page, re.S).group(0)
            assert int(re.search(r'data-state="pending">(\d+)<', row).group(1)) > 0
            assert get(f"{url}/jobs/{job_id}")[0] == 200
            record_id = next(store.iter_records(job_id)).id
            body = urllib.parse.urlencode({"action": "exclude", "reason": "seen mid-run"}).encode()
            status, _, page = get(f"{url}/records/{record_id}/review", data=body)
            assert status == 200 and "marked: excluded from export" in page
            assert runner.poll() is None  # the mark went in while the job was writing
            sim.configure(latency=0.0)
            assert runner.wait(timeout=90) == 0, runner.stderr.read()
    finally:
        if runner.poll() is None:
            runner.kill()
            runner.wait()
    assert store.stats(job_id).units[UnitState.DONE] == 40
    result = gen_cmd("--db", pg_url, "export", job_id, "-o", "out.jsonl", "--meta", "--no-filter")
    assert result.returncode == 0, result.stderr
    with open("out.jsonl", encoding="utf-8") as f:
        exported = [json.loads(line)["metadata"]["record_id"] for line in f]
    assert len(exported) == 39 and record_id not in exported
