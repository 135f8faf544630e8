"""The refusal and AI-disclaimer detector shared by `gen export` and the instructors' turn filters.

A refusal is recognised by how refusals are phrased, not by words that merely occur in them:

- **AI disclaimers** (kind `disclaimer`): "As an AI / a (large) language model, ..." as a phrase that opens a
  clause, "I'm just an AI", "I was trained by OpenAI", knowledge-cutoff and "I don't have personal opinions"
  statements, and requests said to break "my guidelines" / "our content policy" / "my programming".
- **Plain refusals** (kind `refusal`): a clause that *starts* with a first-person modal of inability or
  unwillingness followed by a verb of helping ("I can't help with that.", "I'm not able to provide ...",
  "I must decline to ..."), optionally after an apology or "Unfortunately,"; "That's not something I can help
  with"; an apology followed by a bare "I can't." at the end of the sentence.

Texts that only mention the trigger words pass: "as an aid", "OpenAI's content policy says ...", "I can't wait
to help", "I can't help but smile", "Sorry for the delay! Here's the fix". Speech inside quotes attributed to a
character (`"I'm sorry, but I can't let you through," he said.`) is removed before matching: a character
refusing in a story is not the assistant refusing.

Callers choose which kinds count: SystemChat's turn filter drops disclaimers only (under a guardrail system
prompt a plain refusal is the obedient answer), `gen export` drops both. Jobs extend the detector with extra
phrases (matched as whole words, case-insensitively) and extra regular expressions.
"""
from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass

from ahocorasick_rs import AhoCorasick, BytesAhoCorasick

DISCLAIMER, REFUSAL = "disclaimer", "refusal"
KINDS = (DISCLAIMER, REFUSAL)

# after NFKC (which already maps full-width quotes and no-break spaces)
_STRAIGHTENED = (("\u2019", "'"), ("\u2018", "'"), ("\u02bc", "'"),
                 ("\u201c", '"'), ("\u201d", '"'), ("\u201e", '"'), ("\u00ab", '"'), ("\u00bb", '"'))
# The only characters besides A-Z whose lower case holds an ASCII character (İ, the Kelvin sign): checked by
# tests/test_export_lines.py over every code point
LOWER_CASE_HOLDS_ASCII = ("\u0130", "\u212a")
_SPACES = re.compile(r"[ \t]{2,}|\t")

# --- quoted speech ------------------------------------------------------------------------------------------
_SPEECH_VERBS = frozenset("""
    said says say asked asks replied replies answered whispered whispers shouted shouts muttered mutters snapped told
    tells added adds continued cried called yelled murmured insisted explained admitted sighed laughed growled hissed
    repeated warned declared protested stammered pleaded retorted responded wrote writes texted barked grumbled
    mumbled announced confessed began interrupted offered apologized apologised objected conceded bellowed sobbed
    breathed croaked chirped teased joked exclaimed noted saying replying answering shouting whispering muttering
    telling writing reading read""".split())
_WORD = re.compile(r"[\w'.]+")
_DOUBLE_QUOTED = re.compile(r'"[^"\n]{1,600}"')
# single quotes that are not apostrophes: an opening one after no letter, a closing one before none
_SINGLE_OPEN = re.compile(r"(?<![\w'])'(?=\S)")
_SINGLE_CLOSE = re.compile(r"(?<=\S)'(?![\w'])")


def _said_after(after: str) -> bool:
    """A verb of saying among the first five words after the quote: `"...," he said` / `"..." said Mara`."""
    if after[:1].isalnum():
        return False  # the quote runs into a word: not a quotation mark
    words = _WORD.findall(after[:60])[:5]
    return any(w.lower().rstrip(".") in _SPEECH_VERBS for w in words)


def _said_before(before: str) -> bool:
    """The clause before the quote ends with a verb of saying, then at most a few words and a comma or colon:
    `He said: "..."`, `she shook her head and whispered, "..."`."""
    clause = re.split(r'[\n"]', before[-80:])[-1].rstrip()
    words = list(_WORD.finditer(clause))
    for word in reversed(words):
        if word.group(0).lower().rstrip(".,") in _SPEECH_VERBS:
            rest = clause[word.end():]
            return not rest or rest.endswith((",", ":")) and len(rest) <= 60
    return False


def without_quoted_speech(text: str) -> str:
    """`text` with every quoted span that a speech verb attributes to someone replaced by a placeholder.

    A span counts as speech when a verb of saying follows it within a few words (`"...," he said`) or ends the
    clause just before it (`The guard shook his head and said: "..."`). Quotes with no attribution stay: an
    assistant that quotes itself is still speaking."""
    out, last = [], 0
    for start, end in _quoted_spans(text):
        if start < last:
            continue  # inside a span already replaced
        before, after = text[max(0, start - 80):start], text[end:end + 60]
        if _said_after(after) or _said_before(before):
            out.append(text[last:start] + '"\u2026"')
            last = end
    out.append(text[last:])
    return "".join(out)


def _quoted_spans(text: str) -> list[tuple[int, int]]:
    """(start, end) of every double-quoted span, and of single-quoted ones (contractions inside allowed)."""
    spans = [m.span() for m in _DOUBLE_QUOTED.finditer(text)] if '"' in text else []
    opening = _SINGLE_OPEN.search(text) if "'" in text else None
    while opening:
        closing = _SINGLE_CLOSE.search(text, opening.end(), min(len(text), opening.end() + 400))
        if closing and "\n" not in text[opening.end():closing.start()]:
            spans.append((opening.start(), closing.end()))
            opening = _SINGLE_OPEN.search(text, closing.end())
        else:
            opening = _SINGLE_OPEN.search(text, opening.end())
    return sorted(spans)


def normalise(text: str) -> str:
    """NFKC, straight apostrophes and double quotes, single spaces: the form every pattern is written for."""
    text = unicodedata.normalize("NFKC", text)
    if not text.isascii():
        for curly, straight in _STRAIGHTENED:
            text = text.replace(curly, straight)
    return _SPACES.sub(" ", text) if "  " in text or "\t" in text else text


# --- the patterns ---------------------------------------------------------------------------------------------
_AI_NOUN = (r"(?:an? |just an? |only an? |merely an? |simply an? )?(?:(?:large |ai |artificial intelligence )?"
            r"language model|llm|ai(?: language model| model| assistant| chatbot| system| program)?|"
            r"a\.i\.(?: chatbot| assistant| model)?|artificial intelligence|chatbot|machine learning model|"
            r"virtual assistant|digital assistant)")
# after "as an AI ..." a disclaimer goes on with a comma, "I", "developed by ...", or ends the sentence
_AI_TAIL = (r"(?=\s*(?:[,.;:!?)\u2014]|$|\s*(?:i|i'm|my|myself|(?:that|which|who) (?:is |was )?(?:trained|developed|"
            r"created|made|built)|developed|created|trained|made|built|designed|and i|without|with no|"
            r"i don't|i do not|i can't|i cannot|and)\b))")
_MODALS = (r"(?:can't|cannot|can not|won't|will not|am not able to|'m not able to|am unable to|'m unable to|"
           r"won't be able to|will not be able to|am not going to|'m not going to|must decline to|have to decline "
           r"to|need to decline to|must respectfully decline to|must refuse to|am not allowed to|'m not allowed to|"
           r"am not permitted to|'m not permitted to|would rather not|'d rather not|would prefer not to|"
           r"'d prefer not to|shouldn't|should not|'m afraid i can't|am afraid i cannot|don't think i can|"
           r"do not think i can|"
           r"can't and won't|cannot and will not|won't and can't)")
_FILLER = r"(?:(?:really|actually|in good conscience|ethically|directly|personally|further|safely|responsibly|"\
          r"currently|legally|simply|honestly|help you|assist you|be of (?:any )?help|be of (?:any )?assistance)\s+)*"
_HELP_VERBS = (r"(?:help(?!\s+(?:but|it\b|myself|\w+ing\b))|assist|provide|comply|fulfill|fulfil|create|write|"
               r"generate|produce|give|share|engage|support|complete|answer|discuss|offer|continue|participate|"
               r"draft|describe|explain|go along|role-?play|pretend|encourage|facilitate|promote|condone|disclose|"
               r"reveal|contribute|browse|do (?:that|this|so|it)\b|do(?=\s*(?:[.!?,;]|$))|do what you|"
               r"be (?:of )?(?:any )?help|be (?:of )?(?:any )?assistance|be part of|take part|grant|"
               r"process (?:that|this|your)|accommodate|honou?r (?:that|this|your)|perform|carry out|"
               r"follow (?:that|this|those|these|your)|look up|verify|retrieve|track|locate|access)"
               # a hedge, not a refusal: "I can't answer that with certainty", "... give enough praise"
               r"(?![^.!?,]{0,25}\b(?:with (?:certainty|confidence)|for (?:sure|certain)|definitively|enough)\b)")
_OPENERS = (r"(?:(?:i'm|i am|i'm really|i'm so|i am so|i'm very|i'm truly|i am truly) sorry|sorry|so sorry|"
            r"i apologi[sz]e|apologies|my apologies|unfortunately|regrettably|sadly|i'm afraid|i am afraid|"
            r"however|but|thanks for (?:asking|understanding|reaching out)|thank you for (?:asking|understanding"
            r"|reaching out)|i understand(?: [^,.!?]{0,60})?|while i understand(?: [^,.!?]{0,60})?|hmm|ah|oh|"
            r"well|honestly|no|nope|"
            r"i'm sorry to disappoint(?: you)?|i hear you|i appreciate (?:the|your) [^,.!?]{0,40})")
_OPENING = rf"(?:(?:{_OPENERS})(?:\s*[,.!;:\u2014\u2013-]+\s*|\s+)(?:but\s+)?)*"

_DISCLAIMER_PATTERNS = {
    "as an AI": rf"\b(?:as|being) (?:an? )?{_AI_NOUN}{_AI_TAIL}",
    "I am an AI": (rf"\b(?:i'm|i am|i'm only|i am only|i'm just|i am just|since i'm|because i'm) {_AI_NOUN}"
                   rf"{_AI_TAIL}"),
    "made by a lab": (r"\bi (?:was|am|have been|'ve been) (?:trained|developed|created|made|built|designed) by "
                      r"(?:openai|anthropic|google|deepmind|meta|mistral|microsoft|a team|the team)"),
    "knowledge cutoff": (r"\b(?:my (?:knowledge|training)(?: data)? (?:cutoff|cut-off|cuts off|only (?:goes|"
                         r"extends|runs)|(?:goes|extends|runs) (?:up )?(?:to|until|through))|as of my (?:last )?"
                         r"(?:knowledge |training )?(?:update|cutoff|cut-off|training)|i (?:don't|do not) have "
                         r"(?:access to )?(?:real-time|current|live) (?:information|data|internet|browsing)|"
                         r"i (?:can't|cannot|am unable to|'m unable to) (?:browse|access) the (?:internet|web))"),
    "no opinions": (r"\bi (?:don't|do not) (?:have|possess|hold|experience) (?:personal )?(?:opinions|feelings|"
                    r"emotions|beliefs|preferences|personal experiences|a physical body|consciousness)"
                    r"(?=[ ,.;:!]|$)(?! (?:for|about|toward|towards|on) (?:him|her|them|you|this|that)\b)"
                    r"(?:[^.!?]{0,40}\b(?:like|as|the way) (?:humans|a human|people|you) do)?"),
    "policy": (r"\b(?:(?:goes|go|is|are|would be|would go|runs) against|violates?|would violate|breach(?:es)?|"
               r"not (?:allowed|permitted) (?:by|under)|prohibited by|outside) "
               r"(?:(?:my|our|openai's) |(?:the|openai) (?=(?:content|usage|use case) polic))(?:own )?"
               r"(?:guidelines|policies|content polic(?:y|ies)|usage polic(?:y|ies)|use case polic(?:y|ies)|"
               r"programming|principles|ethical guidelines|safety guidelines|terms of (?:use|service)|"
               r"values|rules)\b(?![^.!?]{0,30}\b(?:said|says|argue[sd]?|claim(?:s|ed)?)\b)"),
    "programmed": (r"\bi(?:'m| am| was| have been|'ve been) (?:programmed|designed|built|trained) "
                   r"(?:not to|to (?:avoid|refuse|decline|not))\b"),
}
# Words without which a pattern cannot match (checked with `in`, far cheaper than a regular expression scan):
# most texts contain none, and skip the quote, sentence and pattern work.
_AI_HINTS = (" ai", " a.i.", "language model", " llm", "artificial intelligence", "chatbot", "machine learning model",
             "virtual assistant", "digital assistant")
_DISCLAIMER_HINTS = {
    "as an AI": _AI_HINTS, "I am an AI": _AI_HINTS,
    "made by a lab": ("by openai", "by anthropic", "by google", "by deepmind", "by meta", "by mistral",
                      "by microsoft", "by a team", "by the team"),
    "knowledge cutoff": ("my knowledge", "my training", "as of my", "real-time", "current", "live", "browse the",
                         "access the"),
    "no opinions": ("i don't ", "i do not "),
    "policy": ("against", "violat", "breach", "allowed", "permitted", "prohibited", "outside"),
    "programmed": ("programmed", "designed", "built", "trained"),
}
_REFUSAL_HINTS = ("can't", "cannot", "can not", "won't", "will not", "unable", "not able", "not going", "decline",
                  "refuse", "pass", "rather not", "prefer not", "shouldn't", "should not", "not allowed",
                  "not permitted", "think i can", "isn't", "not something", "not a ", "not an ", "not what",
                  "for me to", "comfortable", "not in a position")

# Plain refusals open a sentence, after optional openers ("Sorry,", "Unfortunately,"): each is matched as
# `^{_OPENING}PATTERN` against every sentence.
_REFUSAL_PATTERNS = {
    "I can't help with that": rf"i ?{_MODALS} {_FILLER}{_HELP_VERBS}",
    "not something I can do": (rf"(?:(?:that's|that is|this is|it's|it is) not|(?:this|that|it) "
                               r"isn't) (?:something|a request|a topic|a task|an area|what) (?:that )?"
                               rf"(?:i(?:'m| am) comfortable|i feel comfortable|i ?(?:can|could|am able to|'m "
                               rf"able to|will|should|would) {_FILLER}{_HELP_VERBS})"),
    "sorry, I can't.": (r"(?:(?:i'm|i am|so|really|very|truly) )*(?:sorry|afraid|apologi[sz]e)[^.!?]{0,40}?"
                        r"\bi ?(?:can't|cannot|can not|won't|will not|am unable|'m unable|am not able|'m not able)"
                        r"(?: (?:do|help with|assist with|comply with|go along with|answer|provide|share) "
                        r"(?:that|this|it|so|them))?(?: (?:for you|here|right now|today))?\s*(?:[.!]|$)"),
    "I must decline": (rf"i ?(?:(?:must|have to|need to|will have to|'ll have to|am going to have to|"
                       r"'m going to have to|'m going to|am going to|flatly|simply|'d like to|would like to|"
                       r"respectfully|must respectfully|have to respectfully) )?(?:respectfully )?"
                       r"(?:decline|refuse|pass)(?=\s*(?:[.!,;:]|$|"
                       rf"(?:this|that|your|these|those|to {_FILLER}{_HELP_VERBS}|"
                       r"on (?:this|that|it|the request))\b))"),
    "I'd like to help, but": (r"(?:while )?i(?:'d| would) (?:really )?(?:like|love) to help"
                              r"[^.!?]{0,40}\bbut\b[^.!?]{0,30}\bi ?(?:can't|cannot|won't|am unable|'m unable|"
                              r"am not able|'m not able)"),
    "it wouldn't be appropriate": (r"(?:it|that|this) (?:wouldn't|would not|isn't|is not|"
                                   r"would be in|is in)(?: be)? ?(?:appropriate|responsible|ethical|right|"
                                   r"appropriate or responsible) for me to\b"),
    "I'm not comfortable": (r"i ?(?:'m not|am not|don't feel|do not feel) (?:entirely |really |very )?"
                            r"comfortable (?:with (?:this|that|it|the request|your request)|\w+ing\b)"),
    "a request I can't help with": (rf"(?:that's|that is|this is|it's|it is) (?:a|an|the (?:kind|sort) "
                                    r"of) (?:request|question|task|topic|thing|area)s? (?:that )?i ?(?:can't|cannot|"
                                    r"won't|am unable to|'m unable to|am not able to|'m not able to|'m not going to)"
                                    rf" {_FILLER}{_HELP_VERBS}"),
    "I'm not in a position to": r"i(?:'m| am) not in a position to\b",
}


@dataclass(frozen=True)
class Match:
    kind: str       # disclaimer | refusal | phrase | pattern
    rule: str       # which rule matched
    text: str       # the words that matched

    def __str__(self) -> str:
        return f"{self.kind} {self.text.strip()!r}" if self.kind in KINDS else f"{self.kind} {self.rule!r}"


_ITEM_MARK = re.compile(r"^(?:[-*\u2022>#]+|\d+[.)])\s*|^[\"'(*_]+")
_SENTENCE_END = re.compile(r"(?<=[.!?])[\"')\]]*\s+|\n+|(?<=[:;])\s+(?=[A-Z\"])|,\s+(?=(?:so|and|but) i\b)")


def sentences(text: str) -> list[str]:
    """Clauses a refusal could open: sentences, lines, and list items (markers stripped)."""
    parts = (p.strip() for p in _SENTENCE_END.split(text))
    return [_ITEM_MARK.sub("", p) for p in parts if p]


def _apostrophes(hint: str) -> list[str]:
    """`hint` with each apostrophe in every form `normalise` straightens to one."""
    forms = ["'"] + [curly for curly, straight in _STRAIGHTENED if straight == "'"]
    variants = [""]
    for char in hint:
        variants = [v + c for v in variants for c in (forms if char == "'" else [char])]
    return variants


class RefusalDetector:
    """Finds refusals and AI disclaimers in one message (`match`) or in a conversation's assistant turns."""

    def __init__(self, kinds: Iterable[str] = KINDS, *, extra_phrases: Iterable[str] = (),
                 extra_patterns: Iterable[str] = ()):
        self.kinds = tuple(kinds)
        unknown = set(self.kinds) - set(KINDS)
        if unknown:
            raise ValueError(f"unknown refusal kind(s): {', '.join(sorted(unknown))} (known: {', '.join(KINDS)})")
        # Patterns are written in lower case and matched against the lower-cased text (re.IGNORECASE makes them
        # several times slower). Disclaimers are searched one pattern at a time (each keeps its own fast scan);
        # refusals, anchored at a sentence start, are one expression whose alternatives are named g0, g1, ...
        self.disclaimers = [(name, _DISCLAIMER_HINTS[name], re.compile(pattern))
                            for name, pattern in _DISCLAIMER_PATTERNS.items()] if DISCLAIMER in self.kinds else []
        # Every hint of those rules in one Aho-Corasick automaton: most texts hold none, and one scan of the text
        # says so (checking the hints one `in` at a time was most of `gen export`'s time).
        hints = [h for _, words, _ in self.disclaimers for h in words]
        hints += list(_REFUSAL_HINTS) if REFUSAL in self.kinds else []
        hints = list(dict.fromkeys(hints))
        self.hints = AhoCorasick(hints) if hints else None
        self.byte_hints = BytesAhoCorasick([v.encode("utf-8") for h in hints for v in _apostrophes(h)]) \
            if hints else None
        self.refusal_names: dict[str, str] = {}
        self.refusals = self._anchored(_REFUSAL_PATTERNS) if REFUSAL in self.kinds else None
        self.phrases = [(p, re.compile(r"(?<!\w)" + re.escape(normalise(p).strip().lower()) + r"(?!\w)"))
                        for p in dict.fromkeys(extra_phrases) if p.strip()]
        self.patterns = []
        for p in dict.fromkeys(extra_patterns):
            try:
                self.patterns.append((p, re.compile(p, re.I)))
            except re.error as exc:
                raise ValueError(f"refusal pattern {p!r} is not a valid regular expression: {exc}") from None

    def match(self, text: str) -> Match | None:
        """The first refusal, disclaimer, extra phrase or extra pattern in `text` (outside quoted speech)."""
        norm = normalise(text)
        low = norm.lower()
        if not (self.phrases or self.patterns or self.hints is not None and self.hints.find_matches_as_indexes(low)):
            return None  # no hint of any rule in the text: what the checks below would conclude, in one scan
        disclaimers = [(name, rx) for name, hints, rx in self.disclaimers if any(h in low for h in hints)]
        refusals = self.refusals is not None and any(h in low for h in _REFUSAL_HINTS)
        if not (disclaimers or refusals or self.phrases or self.patterns):
            return None
        flat = without_quoted_speech(norm) if '"' in norm or "'" in norm else norm
        low = flat.lower() if flat is not norm else low
        same = len(low) == len(flat)  # then a span in `low` is the same span in `flat`
        for phrase, rx in self.phrases:
            if rx.search(low):
                return Match("phrase", phrase, phrase)
        for pattern, rx in self.patterns:
            if rx.search(flat):
                return Match("pattern", pattern, pattern)
        for name, rx in disclaimers:
            found = rx.search(low)
            if found:
                return Match(DISCLAIMER, name, (flat if same else low)[found.start():found.end()])
        if refusals and self.refusals is not None:
            for sentence in sentences(flat):
                lowered = sentence.lower()
                if not any(h in lowered for h in _REFUSAL_HINTS):
                    continue
                found = self.refusals.match(lowered)
                if found and found.lastgroup:
                    start, end = found.span(found.lastgroup)
                    return Match(REFUSAL, self.refusal_names[found.lastgroup],
                                 sentence[start:end] if len(sentence) == len(lowered) else found.group(0))
        return None

    def has_hint(self, text: str) -> bool:
        """Whether a hint of any rule is in the text (once normalised), without which no rule matches.

        Texts joined with NUL are scanned in one go: NUL ends every context normalising and lower-casing look at
        (NFKC composes nothing with it, runs of spaces and Greek final sigma stop at it) and is in no hint, so a
        hint is in the joined text exactly when it is in one of the texts."""
        if self.hints is None:
            return False
        # `normalise` without straightening the quotes: the byte hints hold each apostrophe in all its forms
        norm = unicodedata.normalize("NFKC", text)
        if "  " in norm or "\t" in norm:
            norm = _SPACES.sub(" ", norm)
        if LOWER_CASE_HOLDS_ASCII[0] in norm or LOWER_CASE_HOLDS_ASCII[1] in norm:
            return bool(self.hints.find_matches_as_indexes(normalise(norm).lower()))
        # Hints are ASCII, and no other character lower-cases to ASCII: lowering only the ASCII bytes of the text
        # finds the same hints, faster than str.lower on text that is not all ASCII
        return bool(self.byte_hints.find_matches_as_indexes(norm.encode("utf-8", "surrogatepass").lower()))

    def _anchored(self, patterns: dict[str, str]) -> re.Pattern[str]:
        alternatives = []
        for name, pattern in patterns.items():
            group = f"g{len(self.refusal_names)}"
            self.refusal_names[group] = name
            alternatives.append(f"(?P<{group}>{pattern})")
        return re.compile(f"^{_OPENING}(?:" + "|".join(alternatives) + ")")

    def match_conversation(self, conversation: Iterable[dict[str, str]]) -> Match | None:
        """The first match in the conversation's assistant turns (user and system turns are not checked)."""
        if not isinstance(conversation, list):
            conversation = list(conversation)
        if not (self.phrases or self.patterns):
            try:
                if not self.has_hint("\x00".join([m["content"] for m in conversation if m["role"] == "assistant"])):
                    return None
            except (KeyError, TypeError):
                pass  # a turn without role or content, or content that is not text: the turn-by-turn search decides
        for message in conversation:
            if message.get("role") == "assistant":
                found = self.match(message.get("content") or "")
                if found:
                    return found
        return None
