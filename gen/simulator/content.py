"""Plausible, varied content for simulated answers.

* ``plain_text`` -- a few sentences lightly echoing the user's words;
* ``generate_instance`` -- a JSON value valid against a (practical subset of)
  JSON Schema, strings shaped by the property name;
* ``generate_invalid_instance`` -- a value that does NOT validate;
* ``find_schema_in_messages`` -- a JSON Schema a client put in a ```json block.

Everything draws from the ``random.Random`` it is given, so a seeded
simulator is reproducible.
"""

from __future__ import annotations

import json
import random
import re
from typing import Any

ADJECTIVES = (
    "quiet amber hollow silver ancient restless gentle crooked golden hidden narrow "
    "frozen bitter patient hungry wooden velvet distant broken curious silent brittle "
    "painted humble stubborn luminous tangled rusty fragrant shallow hollowed scarlet "
    "weightless clever sleepy tidal woven wandering mossy glassy iron paper dusty "
    "crimson feathered salty midnight northern spiral honest lonely"
).split()
NOUNS = (
    "river lantern mirror shadow candle feather clock bridge key garden mountain "
    "whisper compass anchor window echo needle kettle harbor orchard ladder riddle "
    "thread map coin storm seed tower violin glacier meadow library pebble sail "
    "comet forest crown bell shell rope drum chimney lighthouse nest quill saddle "
    "marble tunnel canyon pocket helmet acorn beacon cloak hourglass puddle prism "
    "scarecrow teapot wheel blanket fountain piano cactus volcano"
).split()
VERBS = (
    "carry hold follow break guard answer hide open remember count gather chase "
    "measure sing build swallow forget mend weigh light trace borrow cross lose "
    "wake fold spin whisper keep"
).split()
PLACES = (
    "attic harbor desert valley cellar market station island village orchard "
    "kitchen forest library courtyard lighthouse meadow workshop canyon garden "
    "tunnel rooftop glacier marsh"
).split()
CONNECTORS = ("Moreover", "In practice", "As a result", "Still", "For example", "In short", "Often")
QUESTION_TEMPLATES = (
    "What has a {a1} {n1} but never {v1s} a {n2} in the {p1}?",
    "I {v1} the {a1} {n1} yet cannot {v2} a {n2}; what am I in the {p1}?",
    "What can {v1} a {a1} {n1} and a {a2} {n2} without leaving the {p1}?",
    "Which {a1} thing lives in the {p1}, {v1s} every {n1}, and fears the {n2}?",
    "What grows {a1} near the {p1} when you {v1} a {n1} beside a {a2} {n2}?",
    "Why does the {a1} {n1} {v1} the {n2} each night in the {p1}?",
    "How would you {v1} a {a1} {n1} if the {a2} {n2} is lost in the {p1}?",
    "What is {a1} like a {n1}, {a2} like a {n2}, and hides in every {p1}?",
)
SENTENCE_TEMPLATES = (
    "The {a1} {n1} tends to {v1} the {n2} near the {p1}.",
    "A {a1} {n1} can {v1} a {a2} {n2} when nobody is watching.",
    "{c}, the {n1} in the {p1} will {v1} more than it seems.",
    "Think of the {n1} as a {a1} {n2} that learned to {v1}.",
    "{c}, a {a1} approach is to {v1} each {n1} before the {n2}.",
    "Every {p1} keeps a {a1} {n1} that nobody tries to {v1}.",
)
STOPWORDS = frozenset(
    "about above after again also been before being below between both could does doing during "
    "each from further have having here into just more most only other over please same should "
    "some such tell than that their them then there these they this those through under until "
    "very what when where which while with would write your give make explain describe".split()
)
ANSWER_TEMPLATES = ("a {a1} {n1}", "the {n1}", "{n1}", "a {n1} and a {n2}", "the {a1} {n1} of the {p1}")
ECHO_TEMPLATES = (
    "You asked about {e}, so here is a short take.",
    "Regarding {e}, the details matter more than they first appear.",
    "When it comes to {e}, a careful look helps.",
)
_WORD_RE = re.compile(r"[A-Za-z][A-Za-z'-]{3,}")
_FENCED_JSON_RE = re.compile(r"```(?:json)?\s*\n?(.*?)```", re.DOTALL | re.IGNORECASE)
_MAX_DEPTH = 8


def third_person(verb: str) -> str:
    if verb.endswith("y") and verb[-2:-1] not in "aeiou":
        return verb[:-1] + "ies"
    if verb.endswith(("s", "sh", "ch", "x")):
        return verb + "es"
    return verb + "s"


def _slots(rng: random.Random) -> dict[str, str]:
    choice = rng.choice
    v1 = choice(VERBS)
    return {
        "a1": choice(ADJECTIVES), "a2": choice(ADJECTIVES), "n1": choice(NOUNS),
        "n2": choice(NOUNS), "v1": v1, "v1s": third_person(v1), "v2": choice(VERBS),
        "p1": choice(PLACES), "c": choice(CONNECTORS),
    }


def sentence(rng: random.Random) -> str:
    text = rng.choice(SENTENCE_TEMPLATES).format(**_slots(rng))
    return text[0].upper() + text[1:]


def question(rng: random.Random) -> str:
    return rng.choice(QUESTION_TEMPLATES).format(**_slots(rng))


def phrase(rng: random.Random, low: int = 2, high: int = 4) -> str:
    count = rng.randint(low, high)
    words = ([rng.choice(ADJECTIVES)] if count > 1 else []) + [rng.choice(NOUNS) for _ in range(max(1, count - 1))]
    return " ".join(words)


def code_snippet(rng: random.Random) -> str:
    name, arg = f"{rng.choice(VERBS)}_{rng.choice(NOUNS)}", rng.choice(NOUNS)
    op, num = rng.choice("+-*"), rng.randint(2, 99)
    return f"def {name}({arg}):\n    return {arg} {op} {num}\n"


def plain_text(rng: random.Random, user_text: str = "") -> str:
    """2-6 sentences; the first may echo a couple of words of ``user_text``."""
    sentences = [sentence(rng) for _ in range(rng.randint(2, 6))]
    words = list(dict.fromkeys(w.lower() for w in _WORD_RE.findall(user_text[-2000:])))
    words = [w for w in words if w not in STOPWORDS]
    if words:
        picked = rng.sample(words, min(len(words), rng.randint(1, 3)))
        echo = picked[0] if len(picked) == 1 else ", ".join(picked[:-1]) + " and " + picked[-1]
        sentences[0] = rng.choice(ECHO_TEMPLATES).format(e=echo)
    return " ".join(sentences)


# --------------------------------------------------------------------- schemas
def _resolve_ref(ref: str, root: dict) -> dict:
    if not ref.startswith("#"):
        return {}
    node: Any = root
    for part in ref[1:].split("/"):
        if part:
            part = part.replace("~1", "/").replace("~0", "~")
            node = node.get(part, {}) if isinstance(node, dict) else {}
    return node if isinstance(node, dict) else {}


def resolve(schema: Any, root: dict) -> dict:
    """Follow $ref, pick the first anyOf/oneOf branch (first non-null), merge allOf."""
    for _ in range(_MAX_DEPTH * 4):
        if not isinstance(schema, dict):
            return {}
        if "$ref" in schema:
            siblings = {k: v for k, v in schema.items() if k != "$ref"}
            schema = {**_resolve_ref(schema["$ref"], root), **siblings}
            continue
        for key in ("anyOf", "oneOf"):
            branches = schema.get(key)
            if isinstance(branches, list) and branches:
                non_null = [b for b in branches if not (isinstance(b, dict) and b.get("type") == "null")]
                branch = (non_null or branches)[0]
                rest = {k: v for k, v in schema.items() if k != key}
                schema = {**rest, **branch} if isinstance(branch, dict) else rest
                break
        else:
            if isinstance(schema.get("allOf"), list):
                merged = {k: v for k, v in schema.items() if k != "allOf"}
                for part in schema["allOf"]:
                    part = resolve(part, root)
                    props = {**merged.get("properties", {}), **part.get("properties", {})}
                    required = list(dict.fromkeys(merged.get("required", []) + part.get("required", [])))
                    merged = {**merged, **part, "properties": props, "required": required}
                schema = merged
                continue
            return schema
    return schema if isinstance(schema, dict) else {}


def schema_type(schema: dict) -> str:
    declared = schema.get("type")
    if isinstance(declared, list):
        declared = next((t for t in declared if t != "null"), declared[0] if declared else None)
    if isinstance(declared, str):
        return declared
    if "properties" in schema or "additionalProperties" in schema or "required" in schema:
        return "object"
    if "items" in schema or "prefixItems" in schema:
        return "array"
    return "string"


def _string_for_name(name: str, rng: random.Random) -> str:
    key = name.lower()
    if any(w in key for w in ("question", "riddle", "prompt", "query")):
        return question(rng)
    if any(w in key for w in ("answer", "solution")):
        return rng.choice(ANSWER_TEMPLATES).format(**_slots(rng))
    if "code" in key or "snippet" in key:
        return code_snippet(rng)
    if "title" in key or "heading" in key:
        return phrase(rng, 2, 4).title()
    if any(w in key for w in ("name", "label", "topic", "subject", "category")):
        return phrase(rng, 1, 3)
    if "email" in key:
        return f"{rng.choice(NOUNS)}.{rng.choice(NOUNS)}@example.com"
    if "url" in key or "link" in key:
        return f"https://example.com/{rng.choice(NOUNS)}/{rng.randint(1, 9999)}"
    if key == "id" or key.endswith("_id") or "uuid" in key:
        return f"{rng.getrandbits(64):016x}"
    if "date" in key or key.endswith("_at") or "time" in key:
        return f"20{rng.randint(10, 29)}-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}"
    if key in ("language", "lang", "locale"):
        return "en"
    if "difficulty" in key or key == "level":
        return rng.choice(("easy", "medium", "hard"))
    if key in ("word", "keyword", "tag"):
        return rng.choice(NOUNS)
    if "hint" in key:
        return sentence(rng)
    if any(w in key for w in ("text", "content", "description", "explanation", "summary", "body",
                              "reason", "rationale", "response", "message", "instruction", "context")):
        return " ".join(sentence(rng) for _ in range(rng.randint(1, 3)))
    return phrase(rng, 2, 5)


_FORMATS = {
    "date-time": lambda r: f"20{r.randint(10, 29)}-{r.randint(1, 12):02d}-{r.randint(1, 28):02d}T"
                           f"{r.randint(0, 23):02d}:{r.randint(0, 59):02d}:00Z",
    "date": lambda r: f"20{r.randint(10, 29)}-{r.randint(1, 12):02d}-{r.randint(1, 28):02d}",
    "email": lambda r: f"{r.choice(NOUNS)}@example.com",
    "uri": lambda r: f"https://example.com/{r.choice(NOUNS)}",
    "uuid": lambda r: "{:08x}-{:04x}-4{:03x}-8{:03x}-{:012x}".format(
        r.getrandbits(32), r.getrandbits(16), r.getrandbits(12), r.getrandbits(12), r.getrandbits(48)),
}


def _string(schema: dict, name: str, rng: random.Random) -> str:
    fmt = _FORMATS.get(schema.get("format", ""))
    text = fmt(rng) if fmt else _string_for_name(name, rng)
    min_len, max_len = schema.get("minLength", 0), schema.get("maxLength")
    while len(text) < min_len:
        text += " " + rng.choice(NOUNS)
    if max_len is not None and len(text) > max_len:
        if text.endswith("?") and max_len >= 2:
            text = text[: max_len - 1].rstrip() + "?"
        else:
            cut = text[:max_len]
            word_cut = cut.rsplit(" ", 1)[0] if text[max_len] != " " else cut
            text = word_cut if len(word_cut) >= max(min_len, 1) else cut
        text = text.ljust(min_len, "x")
    return text


def _bounds(schema: dict, default_low: float, default_high: float, step: float) -> tuple[float, float]:
    low, high = schema.get("minimum"), schema.get("maximum")
    if isinstance(schema.get("exclusiveMinimum"), (int, float)):
        low = max(low if low is not None else float("-inf"), schema["exclusiveMinimum"] + step)
    if isinstance(schema.get("exclusiveMaximum"), (int, float)):
        high = min(high if high is not None else float("inf"), schema["exclusiveMaximum"] - step)
    if low is None:
        low = min(default_low, high - (default_high - default_low)) if high is not None else default_low
    if high is None:
        high = max(default_high, low + (default_high - default_low))
    return low, max(low, high)


def _integer(schema: dict, rng: random.Random) -> int:
    low, high = _bounds(schema, 1, 100, 1)
    low, high = int(-(-low // 1)), int(high // 1)
    step = schema.get("multipleOf")
    if isinstance(step, int) and step > 0:
        first, last = -(-low // step), high // step
        return rng.randint(first, max(first, last)) * step
    return rng.randint(low, max(low, high))


def _number(schema: dict, rng: random.Random) -> float:
    low, high = _bounds(schema, 0.0, 100.0, 1e-6)
    value = round(rng.uniform(low, high), 2)
    return value if low <= value <= high else (low + high) / 2


def generate_instance(schema: Any, rng: random.Random, name: str = "", root: dict | None = None,
                      depth: int = 0) -> Any:
    """A value valid against ``schema``; ``name`` (property name) shapes strings."""
    root = root if root is not None else (schema if isinstance(schema, dict) else {})
    schema = resolve(schema, root)
    if "const" in schema:
        return schema["const"]
    if isinstance(schema.get("enum"), list) and schema["enum"]:
        return rng.choice(schema["enum"])
    kind = schema_type(schema)
    if kind == "object":
        return _object(schema, rng, root, depth)
    if kind == "array":
        return _array(schema, rng, name, root, depth)
    if kind == "integer":
        return _integer(schema, rng)
    if kind == "number":
        return _number(schema, rng)
    if kind == "boolean":
        return rng.random() < 0.5
    if kind == "null":
        return None
    return _string(schema, name, rng)


def _object(schema: dict, rng: random.Random, root: dict, depth: int) -> dict:
    props = schema.get("properties") or {}
    required = [r for r in schema.get("required", []) if isinstance(r, str)]
    extra = schema.get("additionalProperties", True)
    result: dict[str, Any] = {}
    for key, sub in props.items():
        if key in required or (depth < _MAX_DEPTH // 2 and rng.random() < 0.85):
            result[key] = generate_instance(sub, rng, key, root, depth + 1)
    for key in required:
        if key not in result:
            sub = extra if isinstance(extra, dict) else {"type": "string"}
            result[key] = generate_instance(sub, rng, key, root, depth + 1)
    if isinstance(extra, dict) and not props and depth < _MAX_DEPTH:
        for _ in range(rng.randint(1, 2)):
            key = rng.choice(NOUNS)
            result.setdefault(key, generate_instance(extra, rng, key, root, depth + 1))
    return result


def _array(schema: dict, rng: random.Random, name: str, root: dict, depth: int) -> list:
    item_name = name[:-1] if name.endswith("s") else name
    prefix = schema.get("prefixItems") or (schema["items"] if isinstance(schema.get("items"), list) else [])
    items = schema.get("items") if isinstance(schema.get("items"), dict) else {}
    low = schema.get("minItems", 0)
    shallow = depth < _MAX_DEPTH // 2
    high = schema.get("maxItems", low + (3 if depth < 3 else 1 if shallow else 0))
    start = max(low, 1) if high >= 1 and shallow else low
    count = rng.randint(start, max(start, min(high, start + 3)))
    result = []
    for index in range(count):
        sub = prefix[index] if index < len(prefix) else items
        for _ in range(10):
            value = generate_instance(sub, rng, item_name, root, depth + 1)
            if not schema.get("uniqueItems") or value not in result:
                break
        result.append(value)
    return result


_WRONG_TYPE_VALUES = (("string", "wrong type"), ("number", 1.5), ("boolean", True),
                      ("null", None), ("array", []), ("object", {}))


def _allowed_types(schema: Any, root: dict) -> set[str]:
    """Types any branch of ``schema`` accepts (unions at the top are all considered)."""
    schema = schema if isinstance(schema, dict) else {}
    if "$ref" in schema:
        return _allowed_types(resolve(schema, root), root)
    branches = [b for key in ("anyOf", "oneOf") for b in schema.get(key) or []]
    if branches:
        return set().union(*(_allowed_types(b, root) for b in branches))
    declared = schema.get("type") or schema_type(schema)
    return set(declared if isinstance(declared, list) else [declared])


def _wrong_type_value(schema: dict, root: dict | None = None) -> Any:
    allowed = _allowed_types(schema, root if root is not None else schema)
    if "integer" in allowed:
        allowed.discard("integer")  # 1.5 is a number but not an integer
    for kind, value in _WRONG_TYPE_VALUES:
        if kind not in allowed:
            return value
    return "wrong type"


def generate_invalid_instance(schema: Any, rng: random.Random) -> Any:
    """A value that does not validate: a required key dropped, or a wrong type."""
    root = schema if isinstance(schema, dict) else {}
    top = resolve(schema, root)
    value = generate_instance(schema, rng)
    if isinstance(value, dict) and "enum" not in top and "const" not in top:
        required = [r for r in top.get("required", []) if r in value]
        if required:
            del value[rng.choice(required)]
            return value
        typed = [k for k, sub in (top.get("properties") or {}).items()
                 if k in value and "type" in resolve(sub, root)]
        if typed:
            key = rng.choice(typed)
            value[key] = _wrong_type_value(resolve(top["properties"][key], root))
            return value
    if "enum" in top or "const" in top:
        return {"not_in_enum": rng.getrandbits(32)}
    return _wrong_type_value(schema, root)


def message_text(content: Any) -> str:
    """Text of an OpenAI message content: a string or a list of parts."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(p.get("text", "") if isinstance(p, dict) else str(p) for p in content)
    return ""


def _looks_like_schema(value: Any) -> bool:
    return isinstance(value, dict) and any(
        k in value for k in ("$schema", "properties", "$defs", "definitions", "anyOf", "oneOf", "items")
    ) or (isinstance(value, dict) and value.get("type") in ("object", "array"))


def find_schema_in_messages(messages: list) -> dict | None:
    """The last ```json fenced JSON Schema found in the messages, if any."""
    for message in reversed(messages):
        text = message_text(message.get("content")) if isinstance(message, dict) else ""
        if "```" not in text:
            continue
        for block in reversed(_FENCED_JSON_RE.findall(text)):
            try:
                candidate = json.loads(block)
            except ValueError:
                continue
            if _looks_like_schema(candidate):
                return candidate
    return None
