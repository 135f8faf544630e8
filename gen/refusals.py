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

DISCLAIMER, REFUSAL = "disclaimer", "refusal"
KINDS = (DISCLAIMER, REFUSAL)

_APOSTROPHES = str.maketrans({"\u2019": "'", "\u2018": "'", "\u02bc": "'", "\uff07": "'", "`": "'"})
_QUOTES = str.maketrans({"\u201c": '"', "\u201d": '"', "\u201e": '"', "\u00ab": '"', "\u00bb": '"'})

# --- quoted speech ------------------------------------------------------------------------------------------
_SPEECH_VERBS = (
    r"said|says|say|asked|asks|replied|replies|answered|whispered|whispers|shouted|shouts|muttered|mutters|"
    r"snapped|told|tells|added|adds|continued|cried|called|yelled|murmured|insisted|explained|admitted|sighed|"
    r"laughed|growled|hissed|repeated|warned|declared|protested|stammered|pleaded|retorted|responded|wrote|"
    r"writes|texted|barked|grumbled|mumbled|announced|confessed|began|interrupted|offered|apologi[sz]ed|"
    r"objected|conceded|bellowed|sobbed|breathed|croaked|chirped|teased|joked|exclaimed|noted|went on|saying|"
    r"replying|answering|shouting|whispering|muttering|telling|writing|reading|read"
)
# double quotes, or single quotes that are not apostrophes (a quote may hold contractions: 'I can't')
_QUOTED = re.compile(r'"([^"\n]{1,600})"|(?<!\w)\'((?:[^\'\n]|(?<=\w)\'(?=\w)){1,400}?)\'(?!\w)')
_SPEECH_AFTER = re.compile(r"^[\s,.!?;:\u2014\u2013-]{0,3}(?:[\w'.]+\s+){0,4}?(?:" + _SPEECH_VERBS + r")\b", re.I)
_SPEECH_BEFORE = re.compile(r"\b(?:" + _SPEECH_VERBS + r")\b(?:[^\n\"]{0,60}?[,:])?\s*$", re.I)


def without_quoted_speech(text: str) -> str:
    """`text` with every double-quoted span that a speech verb attributes to someone replaced by a placeholder.

    A span counts as speech when a verb of saying follows it within a few words (`"...," he said`) or ends the
    clause just before it (`The guard shook his head and said: "..."`). Quotes with no attribution stay: an
    assistant that quotes itself is still speaking."""
    out, last = [], 0
    for m in _QUOTED.finditer(text):
        before, after = text[max(0, m.start() - 80):m.start()], text[m.end():m.end() + 60]
        if _SPEECH_AFTER.match(after) or _SPEECH_BEFORE.search(before):
            out.append(text[last:m.start()] + '"\u2026"')
            last = m.end()
    out.append(text[last:])
    return "".join(out)


def normalise(text: str) -> str:
    """NFKC, straight apostrophes and double quotes, single spaces: the form every pattern is written for."""
    text = unicodedata.normalize("NFKC", text).translate(_APOSTROPHES).translate(_QUOTES)
    return re.sub(r"[ \t\u00a0]+", " ", text)


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
_REFUSAL_PATTERNS = {
    "I can't help with that": rf"^{_OPENING}i ?{_MODALS} {_FILLER}{_HELP_VERBS}",
    "not something I can do": (rf"^{_OPENING}(?:(?:that's|that is|this is|it's|it is) not|(?:this|that|it) "
                               r"isn't) (?:something|a request|a topic|a task|an area|what) (?:that )?"
                               rf"(?:i(?:'m| am) comfortable|i feel comfortable|i ?(?:can|could|am able to|'m "
                               rf"able to|will|should|would) {_FILLER}{_HELP_VERBS})"),
    "sorry, I can't.": (r"^(?:(?:i'm|i am|so|really|very|truly) )*(?:sorry|afraid|apologi[sz]e)[^.!?]{0,40}?"
                        r"\bi ?(?:can't|cannot|can not|won't|will not|am unable|'m unable|am not able|'m not able)"
                        r"(?: (?:do|help with|assist with|comply with|go along with|answer|provide|share) "
                        r"(?:that|this|it|so|them))?(?: (?:for you|here|right now|today))?\s*(?:[.!]|$)"),
    "I must decline": (rf"^{_OPENING}i ?(?:(?:must|have to|need to|will have to|'ll have to|am going to have to|"
                       r"'m going to have to|'m going to|am going to|flatly|simply|'d like to|would like to|"
                       r"respectfully|must respectfully|have to respectfully) )?(?:respectfully )?"
                       r"(?:decline|refuse|pass)(?=\s*(?:[.!,;:]|$|"
                       rf"(?:this|that|your|these|those|to {_FILLER}{_HELP_VERBS}|"
                       r"on (?:this|that|it|the request))\b))"),
    "I'd like to help, but": (rf"^{_OPENING}(?:while )?i(?:'d| would) (?:really )?(?:like|love) to help"
                              r"[^.!?]{0,40}\bbut\b[^.!?]{0,30}\bi ?(?:can't|cannot|won't|am unable|'m unable|"
                              r"am not able|'m not able)"),
    "it wouldn't be appropriate": (rf"^{_OPENING}(?:it|that|this) (?:wouldn't|would not|isn't|is not|"
                                   r"would be in|is in)(?: be)? ?(?:appropriate|responsible|ethical|right|"
                                   r"appropriate or responsible) for me to\b"),
    "I'm not comfortable": (rf"^{_OPENING}i ?(?:'m not|am not|don't feel|do not feel) (?:entirely |really |very )?"
                            r"comfortable (?:with (?:this|that|it|the request|your request)|\w+ing\b)"),
    "a request I can't help with": (rf"^{_OPENING}(?:that's|that is|this is|it's|it is) (?:a|an|the (?:kind|sort) "
                                    r"of) (?:request|question|task|topic|thing|area)s? (?:that )?i ?(?:can't|cannot|"
                                    r"won't|am unable to|'m unable to|am not able to|'m not able to|'m not going to)"
                                    rf" {_FILLER}{_HELP_VERBS}"),
    "I'm not in a position to": rf"^{_OPENING}i(?:'m| am) not in a position to\b",
}


@dataclass(frozen=True)
class Match:
    kind: str       # disclaimer | refusal | phrase | pattern
    rule: str       # which rule matched
    text: str       # the words that matched

    def __str__(self) -> str:
        return f"{self.kind} {self.text.strip()!r}" if self.kind in KINDS else f"{self.kind} {self.rule!r}"


_SENTENCE_END = re.compile(r"(?<=[.!?])[\"')\]]*\s+|\n+|(?<=[:;])\s+(?=[A-Z\"])|,\s+(?=(?:so|and|but) i\b)")


def sentences(text: str) -> list[str]:
    """Clauses a refusal could open: sentences, lines, and list items (markers stripped)."""
    parts = (p.strip() for p in _SENTENCE_END.split(text))
    return [re.sub(r"^(?:[-*\u2022>#]+|\d+[.)])\s*|^[\"'(*_]+", "", p) for p in parts if p]


class RefusalDetector:
    """Finds refusals and AI disclaimers in one message (`match`) or in a conversation's assistant turns."""

    def __init__(self, kinds: Iterable[str] = KINDS, *, extra_phrases: Iterable[str] = (),
                 extra_patterns: Iterable[str] = ()):
        self.kinds = tuple(kinds)
        unknown = set(self.kinds) - set(KINDS)
        if unknown:
            raise ValueError(f"unknown refusal kind(s): {', '.join(sorted(unknown))} (known: {', '.join(KINDS)})")
        self.rules: list[tuple[str, str, re.Pattern[str]]] = []
        if DISCLAIMER in self.kinds:
            self.rules += [(DISCLAIMER, name, re.compile(p, re.I)) for name, p in _DISCLAIMER_PATTERNS.items()]
        if REFUSAL in self.kinds:
            self.rules += [(REFUSAL, name, re.compile(p, re.I)) for name, p in _REFUSAL_PATTERNS.items()]
        self.phrases = [(p, re.compile(r"(?<!\w)" + re.escape(normalise(p).strip()) + r"(?!\w)", re.I))
                        for p in dict.fromkeys(extra_phrases) if p.strip()]
        self.patterns = []
        for p in dict.fromkeys(extra_patterns):
            try:
                self.patterns.append((p, re.compile(p, re.I)))
            except re.error as exc:
                raise ValueError(f"refusal pattern {p!r} is not a valid regular expression: {exc}") from None

    def match(self, text: str) -> Match | None:
        """The first refusal, disclaimer, extra phrase or extra pattern in `text` (outside quoted speech)."""
        flat = without_quoted_speech(normalise(text))
        for phrase, rx in self.phrases:
            if rx.search(flat):
                return Match("phrase", phrase, phrase)
        for pattern, rx in self.patterns:
            if rx.search(flat):
                return Match("pattern", pattern, pattern)
        anchored = [r for r in self.rules if r[2].pattern.startswith("^")]
        anywhere = [r for r in self.rules if not r[2].pattern.startswith("^")]
        for kind, name, rx in anywhere:
            found = rx.search(flat)
            if found:
                return Match(kind, name, found.group(0))
        if anchored:
            for sentence in sentences(flat):
                for kind, name, rx in anchored:
                    found = rx.search(sentence)
                    if found:
                        return Match(kind, name, found.group(0))
        return None

    def match_conversation(self, conversation: Iterable[dict[str, str]]) -> Match | None:
        """The first match in the conversation's assistant turns (user and system turns are not checked)."""
        for message in conversation:
            if message.get("role") == "assistant":
                found = self.match(message.get("content") or "")
                if found:
                    return found
        return None
