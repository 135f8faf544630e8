"""SystemChat's mechanical constraint checks: the issue's examples, and a hypothesis property for each check."""
from __future__ import annotations

import json
import math
import string

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gen.instructors.systemchat.constraints import CHECKS, parse_constraint, parse_constraints
from gen.instructors.systemchat.tokens import sentences, words

settings.register_profile("gen", max_examples=150, deadline=None)
settings.load_profile("gen")


def ok(spec, text: str) -> bool:
    return parse_constraint(spec).check(text) is None


# The holes the issue found (point 6) ----------------------------------------------------------------------
@pytest.mark.parametrize("text, n", [
    ("It costs 3.50 today.", 4), ("We sold 1,000 copies.", 4), ("She moved to the U.S. last year.", 7),
    ("Use a tool, e.g. a hammer.", 6), ("See https://example.com/a?b=1, then rest.", 4),
    ("Write to ada@example.co.uk now.", 4), ("A state-of-the-art car.", 3), ("Don't stop, it's fine.", 4),
    ("At 10:30 p.m. Dr. Who left.", 6), ("1,000,000.75 dollars", 2),
])
def test_word_count_counts_numbers_abbreviations_urls_emails_hyphens_and_contractions_as_one_word(text, n):
    assert len(words(text)) == n, words(text)
    assert ok({"word_count": n}, text) and not ok({"word_count": n + 1}, text)


@pytest.mark.parametrize("text", ["Café", "naïve ëxtra", "Ｅcho", "ＥＣＨＯ", "\uff45", "Bien sûr, élève", "oeuvre œ"])
def test_no_letter_catches_accented_and_full_width_forms(text):
    assert not ok({"no_letter": "e"}, text)


@pytest.mark.parametrize("text", ['{"a": NaN}', '{"a": Infinity}', '[-Infinity]', '{"a": 1} trailing',
                                  '{"a": 1}{"b": 2}', '{"a": 1, "a": 2}', '"a string"', "```json\n{} x\n```"])
def test_json_only_is_strict(text):
    assert not ok("json_only", text)


def test_examples_that_used_to_be_refused_now_pass():
    assert ok("all_caps", "42") and ok("all_caps", "3.14 + 2 = 5.14!") and ok("all_caps", "...")
    assert ok("ends_with_question", "本当ですか？") and ok("ends_with_question", 'He asked, "why?"')
    assert ok("ends_with_question", "Is it (really?)") and ok("ends_with_question", "Really?\u201d")
    assert not ok("all_caps", "") and not ok("ends_with_question", "Why? Because.")


@pytest.mark.parametrize("spec, good, bad", [
    ("no_exclamation", "Fine, Captain.", "Fine, Captain!"), ("no_exclamation", "Yes.", "Yes\uff01"),
    ({"address_as": "Captain"}, "Aye, captain, the tide is in.", "Aye, the tide is in."),
    ({"address_as": ["sir", "madam"]}, "Very good, Madam.", "Very good, Sirius."),
    ("bullets_only", "- one\n- two\n  continued\n* three", "Here you go:\n- one\n- two"),
    ({"max_bullets": 2}, "- one\n- two", "- one\n- two\n- three"),
    ({"sentence_count": 2}, "Mr. Smith paid 3.50 in the U.S. shop. He left!", "One. Two. Three."),
    ({"max_sentences": 1}, "Just one, e.g. this.", "One. Two."),
    ({"allowed_punctuation": "."}, "I don't know. Maybe later.", "Well, maybe."),
    ({"acrostic": "HELP"}, "Hold on\nEvery day\nLook up\nPlease", "Hold on\nEvery day\nPlease"),
])
def test_the_rules_seed_prompts_use_are_checked(spec, good, bad):
    assert ok(spec, good), parse_constraint(spec).check(good)
    assert not ok(spec, bad)


def test_new_ids_are_canonical_and_bad_arguments_refused():
    assert [c.id for c in parse_constraints(["no_exclamation", {"address_as": ["sir", "madam"]},
                                             "sentence_count: 2", {"acrostic": "HELP"}])] == \
        ["no_exclamation", "address_as:sir,madam", "sentence_count:2", "acrostic:HELP"]
    for bad, says in (({"acrostic": "H E"}, "one word"), ({"max_bullets": 0}, "whole number"),
                      ("address_as", "needs an argument"), ({"no_exclamation": "x"}, "takes no argument")):
        with pytest.raises(ValueError, match=says):
            parse_constraints(bad)


# Properties ----------------------------------------------------------------------------------------------
LOWER = string.ascii_lowercase
plain_words = st.text(alphabet=LOWER + "ÀÉÎÕÜàéîõüß", min_size=1, max_size=8)
numbers = st.one_of(
    st.decimals(min_value=0, max_value=10**7, places=2, allow_nan=False, allow_infinity=False).map(str),
    st.integers(min_value=1000, max_value=10**9).map(lambda n: f"{n:,}"),
    st.floats(min_value=0, max_value=10**6, allow_nan=False).map(lambda x: f"{x:,.2f}"))
abbreviations = st.sampled_from(["U.S.", "e.g.", "i.e.", "a.m.", "p.m.", "U.K.", "Mr.", "Dr.", "vs."])
domains = st.lists(st.text(alphabet=LOWER + string.digits, min_size=1, max_size=6), min_size=2, max_size=3)
urls = st.builds(lambda d, path: f"https://{'.'.join(d)}/{path}", domains, st.text(alphabet=LOWER + "/_-", max_size=8))
emails = st.builds(lambda user, d: f"{user}@{'.'.join(d)}", st.text(alphabet=LOWER + "._", min_size=1, max_size=6)
                   .filter(lambda u: u[0].isalpha()), domains)
hyphenated = st.lists(plain_words, min_size=2, max_size=4).map("-".join)
contractions = st.builds(lambda w, tail: w + tail, plain_words, st.sampled_from(["'s", "'t", "'re", "\u2019ll", "'ve"]))
one_word = st.one_of(plain_words, numbers, abbreviations, urls, emails, hyphenated, contractions)
separators = st.sampled_from([" ", ", ", "; ", " - ", " \u2014 ", "  ", "\n", " (", ") "])


@given(st.lists(st.tuples(one_word, separators), min_size=1, max_size=12), st.sampled_from(["", ".", "!", "?"]))
def test_property_every_kind_of_word_counts_once(items, end):
    text = "".join(w + sep for w, sep in items).rstrip() + end
    n = len(items)
    assert len(words(text)) == n, (text, words(text))
    assert ok({"word_count": n}, text) and ok({"max_words": n}, text)
    assert not ok({"word_count": n + 1}, text) and (n == 1 or not ok({"max_words": n - 1}, text))


LETTER_VARIANTS = {"e": ["e", "E", "é", "è", "ê", "ë", "É", "Ë", "\uff25", "\uff45", "e\u0301"],
                   "a": ["a", "A", "á", "à", "â", "ä", "å", "Å", "\uff21", "\uff41", "æ"],
                   "o": ["o", "O", "ó", "ö", "ô", "Ö", "\uff2f", "\uff4f", "ø", "œ"]}


@given(st.sampled_from(sorted(LETTER_VARIANTS)), st.data())
def test_property_no_letter_catches_every_form_of_the_letter_anywhere(letter, data):
    clean = data.draw(st.text(alphabet=st.characters(codec="utf-8", exclude_categories=["Cs"])).filter(
        lambda t: ok({"no_letter": letter}, t)))
    assert ok({"no_letter": letter}, clean)
    variant = data.draw(st.sampled_from(LETTER_VARIANTS[letter]))
    at = data.draw(st.integers(min_value=0, max_value=len(clean)))
    assert not ok({"no_letter": letter}, clean[:at] + variant + clean[at:])


caps_text = st.text(alphabet=string.ascii_uppercase + string.digits + string.punctuation + " \nÉÀÜ", min_size=1).filter(str.strip)


@given(caps_text, st.sampled_from(LOWER + "éàüß"), st.data())
def test_property_all_caps_passes_without_lower_case_and_fails_with_any(text, lower, data):
    assert ok("all_caps", text)
    at = data.draw(st.integers(min_value=0, max_value=len(text)))
    assert not ok("all_caps", text[:at] + lower + text[at:])
    assert ok("all_lowercase", text.lower()) and (ok("all_lowercase", text) == (text.lower() == text))


closers = st.text(alphabet="\"'\u201d\u2019\u00bb)]* ", max_size=4)


@given(st.text(), st.sampled_from(["?", "\uff1f"]), closers)
def test_property_ends_with_question_allows_closers_after_the_mark(body, mark, tail):
    assert ok("ends_with_question", body + mark + tail)
    assert not ok("ends_with_question", body + mark + tail + " ok.")


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=4),
    max_leaves=12)
containers = st.one_of(st.lists(json_values, max_size=4), st.dictionaries(st.text(max_size=6), json_values, max_size=4))


@given(containers, st.sampled_from(["x", "{}", "]", "// note", "Sure!"]))
def test_property_json_only_accepts_any_json_container_and_refuses_anything_after_it(value, garbage):
    text = json.dumps(value, indent=2)
    assert ok("json_only", text) and ok("json_only", f"```json\n{text}\n```")
    assert not ok("json_only", text + "\n" + garbage)
    assert not ok("json_only", json.dumps([value, math.nan]))  # Python's json writes NaN; JSON has none


@given(st.lists(st.sampled_from(["meow", "purr", "MEOW", "Purr"]), min_size=1, max_size=8), separators,
       plain_words.filter(lambda w: w not in ("meow", "purr")))
def test_property_only_words_refuses_any_other_word(said, sep, other):
    text = sep.join(said)
    assert ok({"only_words": ["meow", "purr"]}, text)
    assert not ok({"only_words": ["meow", "purr"]}, f"{text} {other}")


@given(st.text(alphabet=string.ascii_letters + " ,.;:?"), st.sampled_from(["!", "\uff01", "\u00a1"]))
def test_property_no_exclamation(text, mark):
    assert ok("no_exclamation", text) and not ok("no_exclamation", text + mark)


@given(st.lists(plain_words, min_size=1, max_size=6).map(" ".join), st.sampled_from(["Captain", "captain", "CAPTAIN"]),
       st.sampled_from(["{}, ", "Yes, {}. ", "Aye {}! "]))
def test_property_address_as_finds_the_name_as_a_word_only(body, name, form):
    assert ok({"address_as": "Captain"}, form.format(name) + body)
    assert not ok({"address_as": "Captain"}, body.replace("captain", "") + " Captains")


items = st.lists(st.text(alphabet=string.ascii_letters + " ,.", min_size=1).map(str.strip).filter(bool),
                 min_size=1, max_size=8)


@given(items, st.sampled_from(["-", "*", "+", "\u2022"]), st.integers(min_value=1, max_value=8))
def test_property_bullets_only_and_max_bullets(texts, marker, limit):
    text = "\n".join(f"{marker} {t}" for t in texts)
    assert ok("bullets_only", text)
    assert ok({"max_bullets": limit}, text) == (len(texts) <= limit)
    assert not ok("bullets_only", "Here is the list:\n" + text)
    assert not ok("bullets_only", text + "\n\nHope that helps.")


sentence_words = st.lists(one_word, min_size=1, max_size=6).map(" ".join)


@given(st.lists(st.tuples(sentence_words, st.sampled_from([".", "!", "?", "...", "?!"])), min_size=1, max_size=6))
def test_property_sentences_end_only_at_marks_between_words(parts):
    text = " ".join(s + mark for s, mark in parts)
    assert len(sentences(text)) == len(parts), (text, sentences(text))
    assert ok({"sentence_count": len(parts)}, text) and ok({"max_sentences": len(parts)}, text)


@given(st.lists(plain_words, min_size=1, max_size=8).map(" ".join), st.sampled_from(",;:!?\"()-"))
def test_property_allowed_punctuation(text, other):
    assert ok({"allowed_punctuation": "."}, text + ". " + "don't.")
    assert not ok({"allowed_punctuation": "."}, text + other + " end.")


@given(st.text(alphabet=string.ascii_uppercase, min_size=1, max_size=6), st.lists(plain_words, min_size=6, max_size=6))
def test_property_acrostic(word, tails):
    lines = [f"{letter.lower() if i % 2 else letter}{tail}" for i, (letter, tail) in enumerate(zip(word, tails))]
    assert ok({"acrostic": word}, "\n".join(lines))
    wrong = "Q" if word[-1] != "Q" else "R"
    assert not ok({"acrostic": word}, "\n".join([*lines[:-1], wrong + lines[-1]]))
    assert not ok({"acrostic": word}, "\n".join(lines[:-1])) or len(word) == 0


@given(st.text(), st.text(alphabet=string.ascii_letters + ":;", min_size=1, max_size=6))
def test_property_starts_with(body, prefix):
    assert ok({"starts_with": prefix}, "  " + prefix + body)
    assert not ok({"starts_with": prefix}, "0" + prefix + body)


def test_every_check_has_a_property_test_here():
    tested = {"word_count", "max_words", "no_letter", "all_caps", "all_lowercase", "ends_with_question",
              "json_only", "only_words", "no_exclamation", "address_as", "bullets_only", "max_bullets",
              "sentence_count", "max_sentences", "allowed_punctuation", "acrostic", "starts_with"}
    assert tested == set(CHECKS)


# Constraints read from a system prompt's words (for sources that carry no ids) ------------------------------
def seed_entries():
    import yaml

    from conftest import ROOT
    for name in ("system_prompts.yaml", "mechanical_constraints.yaml"):
        yield from yaml.safe_load((ROOT / "instructors" / "data" / name).read_text(encoding="utf-8"))


def test_constraints_read_from_the_seed_prompts_words_are_never_more_than_the_seeds_declare():
    from gen.instructors.systemchat.prompt_constraints import constraints_in_prompt
    same = extra = 0
    for entry in seed_entries():
        declared = {c.id for c in parse_constraints(entry.get("constraint"))}
        found = {c.id for c in constraints_in_prompt(entry["prompt"])}
        extra += len(found - declared)
        same += found == declared
    assert extra == 0
    assert same >= 36  # of 41 entries; the rest are said in ways left to the judge (or a looser starts_with)


@pytest.mark.parametrize("prompt, ids", [
    ("You answer briefly.", []), ("First restate the question in one sentence, then answer it.", []),
    ("Keep it under 50 words and never use an exclamation mark.", ["max_words:50", "no_exclamation"]),
    ("Reply in no more than three sentences.", ["max_sentences:3"]),
    ("Write entirely in lower case. Never use the letter \u201cz\u201d.", ["no_letter:z", "all_lowercase"]),
    ("Respond with valid JSON only.", ["json_only"]),
])
def test_constraints_read_from_plain_words(prompt, ids):
    from gen.instructors.systemchat.prompt_constraints import constraints_in_prompt
    assert sorted(c.id for c in constraints_in_prompt(prompt)) == sorted(ids)
