"""The review UI in a real browser: Debian's Chromium, headless, driven by Playwright (never a downloaded browser).

Walks what a reviewer does: jobs page -> job plots -> records -> a record's lineage -> exclude it -> `gen export`
leaves it out. Saves the screenshots the README shows (tests/screenshots/)."""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from conftest import ROOT, gen_cmd
from gen.store import Store
from test_serve import JUDGE_MARK, run_chat_job, serving

CHROMIUM = os.environ.get("GEN_TEST_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
SCREENSHOTS = ROOT / "tests" / "screenshots"


def _no_browser() -> str | None:
    if not (Path(CHROMIUM).exists() or shutil.which(CHROMIUM)):
        return f"no Chromium at {CHROMIUM} (apt-get install chromium; .ci/run installs it)"
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "playwright is not installed (pip install '.[test]')"
    return None


@pytest.fixture
def browser_page():
    problem = _no_browser()
    if problem:
        pytest.skip(problem)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.set_default_timeout(30_000)
            yield page
        finally:
            browser.close()


def test_a_reviewer_follows_a_job_to_its_plots_and_a_record_to_its_calls_then_excludes_it(sim, tmp_path,
                                                                                          browser_page):
    page = browser_page
    sim.configure(latency=0.05, jitter=0.04)  # spread the job over some time buckets, for the plots' sake
    job_id = run_chat_job(sim, tmp_path, kept=5, rejected=3)
    store = Store(f"sqlite:///{tmp_path / 'gen.db'}")
    calls = {c.id: c for c in store.calls_for_job(job_id)}
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)

    with serving("--reviewer", "alice") as url:
        # the jobs page lists the job with its units by state
        page.goto(url + "/")
        row = page.locator(f'tr.job[data-job="{job_id}"]')
        assert row.locator('td[data-state="done"]').inner_text() == "5"
        assert row.locator('td[data-state="rejected"]').inner_text() == "3"

        # ...and leads to the job page, whose plots are SVG carrying their data
        row.locator("a").first.click()
        page.wait_for_url(f"**/jobs/{job_id}")
        plots = page.locator("svg.plot")
        names = [plots.nth(i).get_attribute("data-plot") for i in range(plots.count())]
        assert names == ["units", "calls", "cost", "judge-scores", "turns", "tokens", "rejections", "duplicates",
                         "code-checks"]
        for name in ("units", "calls", "cost", "judge-scores", "turns", "tokens", "rejections"):
            svg = page.locator(f'svg.plot[data-plot="{name}"]')
            assert int(svg.get_attribute("data-points")) > 0, name
            assert svg.bounding_box()["height"] > 50, name  # drawn, not just present
        bars = page.locator('svg.plot[data-plot="judge-scores"] rect.bar')
        assert [(bars.nth(i).get_attribute("data-label"), bars.nth(i).get_attribute("data-value"))
                for i in range(bars.count())] == [("5", "10")]
        assert page.locator('svg.plot[data-plot="judge-scores"] rect.bar title').first.text_content() == "5: 10"
        reasons = page.locator('svg.plot[data-plot="rejections"] rect.bar')
        assert sum(int(reasons.nth(i).get_attribute("data-value")) for i in range(reasons.count())) == 3
        page.screenshot(path=str(SCREENSHOTS / "job.png"))

        # the record browser, filtered to kept records, leads to a record
        page.click("#browse")
        page.select_option('select[name="kind"]', "kept")
        page.click('form.filters button[type="submit"]')
        page.wait_for_url("**kind=kept**")
        listed = page.locator("tr.record")
        assert listed.count() == 5
        assert all(listed.nth(i).locator(".kind").inner_text() == "conversation" for i in range(5))
        record_id = int(listed.first.get_attribute("data-record"))
        listed.first.locator("a").click()
        page.wait_for_url(f"**/records/{record_id}")

        # the conversation as bubbles, system prompt first, and its lineage: every call, in order, with its text
        record = next(r for r in store.iter_records(job_id) if r.id == record_id)
        roles = page.locator(".chat .bubble")
        assert [roles.nth(i).get_attribute("data-role") for i in range(roles.count())] == \
            [m["role"] for m in record.conversation]
        assert page.locator(".bubble.role-system .text").inner_text() == record.conversation[0]["content"]
        shown = page.locator("#lineage details.call")
        ids = [int(shown.nth(i).get_attribute("data-call")) for i in range(shown.count())]
        assert ids == sorted(record.call_ids) and len(ids) == 5
        for i, call_id in enumerate(ids):
            assert shown.nth(i).locator("pre.answer").inner_text() == calls[call_id].text
            assert f"attempt {calls[call_id].attempt}" in shown.nth(i).locator("summary.head").inner_text()
        page.evaluate("window.scrollTo(0, 0)")
        page.screenshot(path=str(SCREENSHOTS / "record.png"))
        page.locator("#lineage").screenshot(path=str(SCREENSHOTS / "lineage.png"))
        judge_call = shown.nth(len(ids) - 1)  # the messages sent are one click away
        assert not judge_call.locator(".msgs").is_visible()
        judge_call.locator("details.sent summary").click()
        assert JUDGE_MARK in judge_call.locator(".msgs").inner_text()
        assert page.locator("#export-state").inner_text() == "in export"

        # exclude it, with a reason: the page says so and shows who did it
        page.fill("#reason", "the butler uses modern slang")
        page.click("#exclude")
        page.wait_for_selector("#notice")
        assert page.locator("#notice").inner_text() == "marked: excluded from export"
        assert page.locator("#export-state").inner_text() == "not in export"
        history = page.locator("#history tbody tr td")
        assert [history.nth(i).inner_text() for i in range(1, 4)] == ["alice", "exclude", "the butler uses modern slang"]

        # the browser shows the mark too
        page.goto(f"{url}/jobs/{job_id}/records?kind=kept")
        assert page.locator(f'tr.record[data-record="{record_id}"] .mark').inner_text() == "excluded"

    result = gen_cmd("export", job_id, "-o", "out.jsonl", "--meta", "--format", "messages", "--no-filter")
    assert result.returncode == 0, result.stderr
    with open("out.jsonl", encoding="utf-8") as f:
        exported = [json.loads(line)["metadata"]["record_id"] for line in f]
    kept = [r.id for r in store.iter_records(job_id, kind="conversation")]
    assert exported == [i for i in kept if i != record_id] and len(exported) == 4
