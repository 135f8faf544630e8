"""The JSON Schemas in `schemas/`: loading them (from the wheel or the checkout) and validating against them.

jsonschema is imported when a validator is first built, not on import: instructors read their schemas with
`load_schema` at import and plan time, and `gen --help` loads no jsonschema (tests/test_imports.py)."""
from __future__ import annotations

import difflib
import json
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

from gen.errors import GenError

if TYPE_CHECKING:
    import jsonschema
    from jsonschema import Draft202012Validator


def schemas_dir() -> Path:
    """`gen/_schemas` inside an installed wheel, else the checkout's top-level `schemas/`."""
    here = Path(__file__).resolve().parent
    for candidate in (here / "_schemas", here.parent / "schemas"):
        if candidate.is_dir():
            return candidate
    raise GenError("gen's JSON Schemas are missing from this installation (expected gen/_schemas)")


@lru_cache(maxsize=None)
def load_schema(name: str) -> dict[str, Any]:
    """A schema by file stem, e.g. `load_schema("riddles")` reads `riddles.schema.json`."""
    path = schemas_dir() / f"{name}.schema.json"
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise GenError(f"no schema named '{name}' ({path.name} is not in {path.parent})") from None


@lru_cache(maxsize=None)
def validator_for(name: str) -> Draft202012Validator:
    """A validator for gen's own schema `name`. It is not checked against the metaschema here (that took 40 ms of
    every `gen validate`): tests/test_imports.py checks every schema gen ships."""
    from jsonschema import Draft202012Validator

    schema = json.loads(json.dumps(load_schema(name), sort_keys=True))  # keys sorted: problems in a stable order
    return Draft202012Validator(schema, format_checker=Draft202012Validator.FORMAT_CHECKER)


@lru_cache(maxsize=256)
def validator_for_schema_text(text: str) -> Draft202012Validator:
    """A validator for a schema given as JSON text (an instructor's structured output), checked first."""
    from jsonschema import Draft202012Validator

    schema = json.loads(text)
    Draft202012Validator.check_schema(schema)
    return Draft202012Validator(schema, format_checker=Draft202012Validator.FORMAT_CHECKER)


def schema_problems(validator: Draft202012Validator, instance: Any, *, root: str = "") -> list[str]:
    """Every violation as `path: message`, shortest path first, e.g. `teachers.main.rpm: must be > 0`."""
    errors = sorted(validator.iter_errors(instance), key=lambda e: (len(e.absolute_path), str(e.absolute_path)))
    problems = [describe_error(e, root=root) for e in _leaf_errors(errors)]
    return list(dict.fromkeys(problems))


def first_problem(validator: Draft202012Validator, instance: Any) -> str | None:
    problems = schema_problems(validator, instance)
    return problems[0] if problems else None


def _leaf_errors(errors: list[jsonschema.ValidationError]) -> list[jsonschema.ValidationError]:
    out: list[jsonschema.ValidationError] = []
    for err in errors:
        if err.validator in ("anyOf", "oneOf", "if") and err.context:
            out.extend(_leaf_errors(sorted(err.context, key=lambda e: len(e.absolute_path))))
        else:
            out.append(err)
    return out


def _path(parts: list[Any], root: str) -> str:
    text = root
    for part in parts:
        if isinstance(part, int):
            text += f"[{part}]"
        else:
            text += f".{part}" if text else str(part)
    return text or "(top level)"


def describe_error(err: jsonschema.ValidationError, *, root: str = "") -> str:
    """One short line per violation, naming the path inside the document."""
    parts = list(err.absolute_path)
    v, arg = err.validator, err.validator_value
    if v == "required":
        missing = err.message.split("'")[1] if "'" in err.message else str(arg)
        return f"{_path(parts + [missing], root)}: is required"
    if v == "additionalProperties":
        known = sorted((err.schema.get("properties") or {}).keys())
        extras = [k for k in err.instance if k not in known] if isinstance(err.instance, dict) else []
        name = extras[0] if extras else "?"
        # A required field the object lacks is the likeliest meaning of a misspelt one ('modle': model, not mode).
        lacking = [k for k in err.schema.get("required", []) if isinstance(err.instance, dict) and k not in err.instance]
        hint = difflib.get_close_matches(name, lacking, n=1) or difflib.get_close_matches(name, known, n=1)
        suggestion = f" (did you mean '{hint[0]}'?)" if hint else (f" (known: {', '.join(known)})" if known else "")
        return f"{_path(parts + [name], root)}: unknown field{suggestion}"
    where = _path(parts, root)
    messages = {
        "type": lambda: f"must be {_article(arg)}",
        "exclusiveMinimum": lambda: f"must be > {arg}",
        "minimum": lambda: f"must be >= {arg}",
        "exclusiveMaximum": lambda: f"must be < {arg}",
        "maximum": lambda: f"must be <= {arg}",
        "enum": lambda: "must be one of " + ", ".join(json.dumps(a) for a in arg),
        "const": lambda: f"must be {json.dumps(arg)}",
        "minLength": lambda: "must not be empty" if arg == 1 else f"must have at least {arg} characters",
        "maxLength": lambda: f"must have at most {arg} characters",
        "minItems": lambda: f"must have at least {arg} items",
        "maxItems": lambda: f"must have at most {arg} items",
        "minProperties": lambda: f"must have at least {arg} entries",
        "pattern": lambda: f"{json.dumps(err.instance)} does not match {arg}",
        "propertyNames": lambda: f"invalid name {json.dumps(err.instance)}",
    }
    make = messages.get(v)
    return f"{where}: {make() if make else err.message}"


def _article(type_name: Any) -> str:
    if isinstance(type_name, list):
        return " or ".join(_article(t) for t in type_name)
    words = {"object": "a mapping", "array": "a list", "string": "a string", "integer": "an integer",
             "number": "a number", "boolean": "true or false", "null": "null"}
    return words.get(type_name, str(type_name))
