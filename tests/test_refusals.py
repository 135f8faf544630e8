"""The refusal/disclaimer detector: measured on the labelled set in tests/data/refusals.jsonl, shared by
`gen export` and SystemChat's turn filter, extensible per job."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from gen.instructors.systemchat.filters import TurnFilter
from gen.instructors.systemchat.systemchat import SystemChatOptions
from gen.refusals import DISCLAIMER, REFUSAL, RefusalDetector, without_quoted_speech

DATA = Path(__file__).parent / "data" / "refusals.jsonl"


def labelled() -> list[dict]:
    with DATA.open(encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def test_precision_and_recall_on_the_labelled_set_are_at_least_095():
    rows = labelled()
    positives = [r for r in rows if r["refusal"]]
    negatives = [r for r in rows if not r["refusal"]]
    assert len(positives) >= 150 and len(negatives) >= 150
    assert any("\u2019" in r["text"] for r in positives) and any("\u201c" in r["text"] for r in negatives)
    detector = RefusalDetector()
    caught = [r for r in positives if detector.match(r["text"])]
    false_alarms = [r["text"] for r in negatives if detector.match(r["text"])]
    precision = len(caught) / (len(caught) + len(false_alarms))
    recall = len(caught) / len(positives)
    print(f"\nrefusal detector on {len(rows)} labelled texts: precision {precision:.3f}, recall {recall:.3f}")
    missed = [r["text"] for r in positives if not detector.match(r["text"])]
    assert precision >= 0.95, false_alarms
    assert recall >= 0.95, missed


@pytest.mark.parametrize("text", [
    "I can't help with that.", "I'm not able to help with that request.",
    "As a large language model, I don't have access to today's news.",
    "I\u2019m sorry, but I can\u2019t assist with that.", "That's not something I can help with.",
    "Unfortunately, I must decline this request.", "I won't be able to provide that information.",
])
def test_refusals_the_old_export_filter_let_through_are_caught(text):
    assert RefusalDetector().match(text)


@pytest.mark.parametrize("text", [
    '"I\'m sorry, but I can\'t let you through," he said.',
    "\u201cI\u2019m sorry, but I can\u2019t let you through,\u201d the guard said.",
    "Use a mnemonic as an aid to memory.", "She worked as an airline pilot.",
    "OpenAI released ChatGPT in 2022.", "A content policy is a set of rules a platform publishes.",
    "I logged my training data in a spreadsheet.", "I can't wait to help you plan the trip!",
    "I can't help but notice the loop never ends.", "Sorry for the confusion! Here's the corrected code.",
    "As an AI researcher, she studies robustness.",
])
def test_legitimate_texts_with_trigger_words_pass(text):
    assert RefusalDetector().match(text) is None


def test_quoted_speech_is_removed_only_when_a_character_says_it():
    story = '"I can\'t help you," Mara whispered. Then she left.'
    assert "help you" not in without_quoted_speech(story)
    self_quote = 'I can\'t help with that: "hacking" someone\'s account is illegal.'
    assert without_quoted_speech(self_quote) == self_quote
    assert RefusalDetector().match(self_quote)
    # a character's line does not hide the assistant's own refusal after it
    assert RefusalDetector().match('"Stop!" she shouted. I\'m sorry, but I can\'t continue this story.')


def test_kinds_separate_disclaimers_from_plain_refusals():
    disclaimers_only = RefusalDetector([DISCLAIMER])
    assert disclaimers_only.match("As an AI language model, I cannot have opinions.").kind == DISCLAIMER
    assert disclaimers_only.match("I'm sorry, I can't discuss that.") is None
    assert RefusalDetector([REFUSAL]).match("I'm sorry, I can't discuss that.").kind == REFUSAL
    with pytest.raises(ValueError, match="unknown refusal kind"):
        RefusalDetector(["rudeness"])


def test_extra_phrases_match_whole_words_and_extra_patterns_are_regular_expressions():
    detector = RefusalDetector(extra_phrases=["delve"], extra_patterns=[r"\bfeel free to ask\b"])
    assert detector.match("Let's delve into it.").rule == "delve"
    assert detector.match("Delved, delving and delves are other words.") is None
    assert detector.match("Feel free to ask more!").kind == "pattern"
    with pytest.raises(ValueError, match="not a valid regular expression"):
        RefusalDetector(extra_patterns=["(unclosed"])


def test_only_assistant_turns_of_a_conversation_are_checked():
    detector = RefusalDetector()
    conv = [{"role": "system", "content": "If asked for dosages, say: I can't help with that."},
            {"role": "user", "content": "As an AI, what do you think?"},
            {"role": "assistant", "content": "Here is a balanced summary of both views."}]
    assert detector.match_conversation(conv) is None
    conv.append({"role": "assistant", "content": "Sorry, I can't help with that."})
    assert detector.match_conversation(conv).kind == REFUSAL


def test_the_systemchat_turn_filter_keeps_ordinary_turns_and_plain_refusals_and_drops_disclaimers():
    f = TurnFilter()
    ordinary = ["What does OpenAI's content policy say about images?", "Is ChatGPT free to use?",
                "Think of the checklist as an aid.", "As an airline, we follow the rules on batteries.",
                "How is training data collected for a model?", "My training data shows I'm faster this month.",
                "The company's content policy bans spam.", "Compare ChatGPT and Claude for coding.",
                "OpenAI was founded in 2015.", "He was an aide to the senator.",
                "I'm sorry, I can't discuss that."]  # a guardrail's obedient answer stays
    assert [t for t in ordinary if f.problem(t)] == []
    assert "disclaimer" in f.problem("As an AI language model, I don't have personal opinions.")
    assert "disclaimer" in f.problem("I\u2019m just an AI, so I can\u2019t taste food.")


def test_systemchat_options_take_extra_phrases_and_patterns_and_refuse_a_bad_pattern():
    base = {"count": 1, "no_system_ratio": 1}
    opts = SystemChatOptions(**base, filter_phrases=["delve"], filter_patterns=[r"^certainly!"])
    f = TurnFilter(opts.filter_phrases, extra_patterns=opts.filter_patterns)
    assert f.problem("Let us delve in.") == "filtered phrase 'delve'"
    assert f.problem("Certainly! Here it is.") == "filtered pattern '^certainly!'"
    with pytest.raises(ValueError, match="not a valid regular expression"):
        SystemChatOptions(**base, filter_patterns=["(unclosed"])
