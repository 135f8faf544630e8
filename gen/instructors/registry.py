"""Instructors are found through the `gen.instructors` entry-point group; the built-ins register there too."""
from __future__ import annotations

from importlib.metadata import entry_points

import logging

from gen.errors import JobFileError

log = logging.getLogger("gen.instructors")

GROUP = "gen.instructors"


def available_instructors() -> dict[str, type]:
    """name -> class for every installed instructor (loaded when asked, never on import)."""
    found: dict[str, type] = {}
    for ep in entry_points(group=GROUP):
        try:
            found[ep.name] = ep.load()
        except (ImportError, AttributeError) as exc:  # a broken plugin must not take the others down
            log.warning("instructor plugin '%s' (%s) failed to load: %s", ep.name, ep.value, exc)
    return dict(sorted(found.items()))


def instructor_class(name: str, *, source: str = "<job>") -> type:
    """The instructor registered as `name`; only its own module is imported (the others are not loaded)."""
    for ep in entry_points(group=GROUP, name=name):
        try:
            return ep.load()
        except (ImportError, AttributeError) as exc:
            raise JobFileError(source, [f"instructor.type: the instructor plugin '{name}' ({ep.value}) failed to "
                                        f"load: {exc}"]) from None
    known = ", ".join(sorted(ep.name for ep in entry_points(group=GROUP))) or "none installed"
    raise JobFileError(source, [f"instructor.type: unknown instructor '{name}' (known: {known})"])
