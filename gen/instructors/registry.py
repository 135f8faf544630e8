"""Instructors are found through the `gen.instructors` entry-point group; the built-ins register there too."""
from __future__ import annotations

from importlib.metadata import entry_points

from gen.errors import GenError, JobFileError

GROUP = "gen.instructors"


def available_instructors() -> dict[str, type]:
    """name -> class for every installed instructor (loaded when asked, never on import)."""
    found: dict[str, type] = {}
    for ep in entry_points(group=GROUP):
        try:
            found[ep.name] = ep.load()
        except Exception as exc:  # a broken third-party plugin must not take the others down
            raise GenError(f"instructor plugin '{ep.name}' ({ep.value}) failed to load: {exc}") from None
    return dict(sorted(found.items()))


def instructor_class(name: str, *, source: str = "<job>") -> type:
    found = available_instructors()
    if name not in found:
        known = ", ".join(found) or "none installed"
        raise JobFileError(source, [f"instructor.type: unknown instructor '{name}' (known: {known})"])
    return found[name]
