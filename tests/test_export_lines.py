"""The export's fast path is exact: a valid export asks the JSON Schema validator about no line, the per-format
checks accept exactly the lines the schema accepts, and the refusal filter's one-scan hint search finds exactly
what checking each hint in each turn finds. (tests/test_export_golden.py: the same bytes as before.)"""
from __future__ import annotations

import json

import jsonschema
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gen import refusals
from gen.errors import UsageError
from gen.export import FORMATS, RefusalFilter, export_job, line_validator
from gen.export_lines import CHECKED_TEXT, SUFFICIENT
from gen.store import Store
from gen.text_templates import TEMPLATES, NotAChat
from gen.types import NewRecord


def _conversation(i: int) -> list[dict[str, str]]:
    return [{"role": "system", "content": f"System {i} — café"}, {"role": "user", "content": f"Question {i}?"},
            {"role": "assistant", "content": f"Answer {i}: \u201cquoted\u201d."}]


def test_a_valid_export_asks_the_schema_validator_about_no_line(tmp_path, monkeypatch):
    store = Store(f"sqlite:///{tmp_path / 'gen.db'}")
    job = store.create_job(name="many", instructor="respond", spec={}, spec_hash="h",
                           units=[(f"u{i}", {}) for i in range(60)])
    for i, unit in enumerate(store.units(job.id)):
        store.finish_unit_with_records(job.id, unit.id, [NewRecord(f"k{i}", _conversation(i))], [])
    for fmt in ("messages", "sharegpt", "alpaca", "text"):
        line_validator(fmt)  # built (and the schema checked) once, before the spy: then only lines are counted
    asked = []
    real = jsonschema.Draft202012Validator.iter_errors

    def counting(self, instance, *args, **kwargs):  # a spy: counts, then validates as always
        asked.append(instance)
        return real(self, instance, *args, **kwargs)

    monkeypatch.setattr(jsonschema.Draft202012Validator, "iter_errors", counting)
    for fmt, extra in [("messages", {}), ("sharegpt", {}), ("alpaca", {}), ("text", {"all_templates": True})]:
        out = tmp_path / f"{fmt}.jsonl"
        report = export_job(store, job.id, str(out), fmt, refusal_filter=RefusalFilter(), **extra)
        assert report.written == 60 * (len(TEMPLATES) if fmt == "text" else 1)
        assert asked == [], f"{fmt}: the schema validator was asked about {len(asked)} lines"
    monkeypatch.undo()
    for fmt in ("messages", "sharegpt", "alpaca", "text"):  # and every line is valid all the same
        validator = line_validator(fmt)
        for line in (tmp_path / f"{fmt}.jsonl").read_text(encoding="utf-8").splitlines():
            assert not list(validator.iter_errors(json.loads(line)))


JSON_VALUES = st.one_of(st.none(), st.booleans(), st.integers(-2, 2), st.just(0.5), st.just(""), st.just(" "),
                        st.text(max_size=3), st.lists(st.just("x"), max_size=1), st.just({"a": 1}))
ROLES = st.one_of(st.sampled_from(["system", "user", "assistant", "tool", "human", "gpt", "User"]), JSON_VALUES)
MESSAGES = st.lists(st.fixed_dictionaries({"role": ROLES, "content": st.one_of(st.text(max_size=4), JSON_VALUES)}),
                    max_size=5)


def _rows(fmt: str, conversation):
    try:
        if fmt == "text":
            return [{"text": render(conversation)} for render in TEMPLATES.values()]
        return [FORMATS[fmt](conversation)]
    except (KeyError, TypeError, NotAChat, UsageError):  # the format cannot make a line of it: nothing to check
        return []


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(conversation=MESSAGES, fmt=st.sampled_from(sorted(SUFFICIENT)))
def test_each_format_check_accepts_exactly_the_lines_the_schema_accepts(conversation, fmt):
    validator = line_validator(fmt)
    for row in _rows(fmt, conversation):
        assert SUFFICIENT[fmt](row) == (not list(validator.iter_errors(row))), row


@settings(max_examples=300, deadline=None)
@given(row=st.recursive(JSON_VALUES, lambda inner: st.one_of(
    st.lists(inner, max_size=3),
    st.dictionaries(st.sampled_from(["messages", "conversations", "role", "content", "from", "value", "text",
                                     "instruction", "input", "output", "system", "extra"]), inner, max_size=5)),
    max_leaves=12), fmt=st.sampled_from(sorted(SUFFICIENT)))
def test_no_check_accepts_a_line_the_schema_refuses(row, fmt):
    if SUFFICIENT[fmt](row):
        assert not list(line_validator(fmt).iter_errors(row)), row


TRICKY = st.sampled_from(["a", "I", "i", " ", "  ", "\t", "\n", "\x00", "'", "\u2019", "\u201c", "\u0301", "\u0307",
                          "\u03a3", "\u0391", "\u0130", "\u212a", "\uff21", "\ufb01", "\u1100", "\u1161", "e",
                          "As an AI", "can't", "CAN\u2019T", " ai", "LANGUAGE MODEL", "not a ", "by OpenAI", ".",
                          "\u00a0"])
TEXTS = st.lists(st.lists(TRICKY, max_size=8).map("".join), min_size=1, max_size=4)


@settings(max_examples=500, deadline=None)
@given(texts=TEXTS)
def test_normalising_texts_joined_with_nul_is_normalising_each(texts):
    joined = refusals.normalise("\x00".join(texts)).lower()
    assert joined == "\x00".join(refusals.normalise(t).lower() for t in texts)


@settings(max_examples=500, deadline=None)
@given(texts=TEXTS, kinds=st.sampled_from([refusals.KINDS, (refusals.DISCLAIMER,)]))
def test_the_one_scan_hint_search_finds_what_checking_each_hint_in_each_turn_finds(texts, kinds):
    detector = refusals.RefusalDetector(kinds)
    hints = [h for _, words, _ in detector.disclaimers for h in words]
    hints += list(refusals._REFUSAL_HINTS) if refusals.REFUSAL in kinds else []
    lows = [refusals.normalise(t).lower() for t in texts]
    assert detector.has_hint("\x00".join(texts)) == any(h in low for low in lows for h in hints)
    conversation = [{"role": "assistant", "content": t} for t in texts]
    first = next((m for m in (detector.match(t) for t in texts) if m), None)
    assert detector.match_conversation(conversation) == first


def test_the_characters_whose_lower_case_holds_ascii_are_the_ones_the_filter_knows():
    import sys

    found = [chr(i) for i in range(128, sys.maxunicode + 1) if any(ord(x) < 128 for x in chr(i).lower())]
    assert tuple(found) == refusals.LOWER_CASE_HOLDS_ASCII


CHARS = st.sampled_from(['"', "\\", "\n", "\t", "\x00", "\x01", "\x1f", "\x7f", "\u2028", "\ud800", "é", "😀", "a", " "])
CONTENT = st.one_of(st.lists(CHARS, max_size=6).map("".join), st.text(max_size=5), JSON_VALUES)


@settings(max_examples=400, deadline=None)
@given(conversation=st.lists(st.fixed_dictionaries({"role": ROLES, "content": CONTENT}), max_size=5),
       fmt=st.sampled_from(sorted(CHECKED_TEXT)), reverse_keys=st.booleans())
def test_a_line_put_together_is_json_dumps_byte_for_byte(conversation, fmt, reverse_keys):
    for row in _rows(fmt, conversation):
        if reverse_keys:  # a turn whose keys come in the other order: json.dumps follows the dict's order
            key = next(iter(row))
            row = {key: [dict(reversed(list(turn.items()))) for turn in row[key]]}
        text = CHECKED_TEXT[fmt](row)
        if text is not None:
            assert text == json.dumps(row, ensure_ascii=False)
        assert (text is not None) == (SUFFICIENT[fmt](row) and not reverse_keys)
