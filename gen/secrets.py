"""Secrets at the boundary: a process-wide registry of secret values and `scrub(text)`, applied wherever text from
a provider or an exception enters gen (provider adapters, stored error columns, log records, the CLI's error line).

Registered values: every teacher key as it is read (`TeacherSpec.api_key`), the passwords of the database and
Redis URLs. `scrub` replaces each value, its URL-encoded and JSON-escaped forms and the masked forms providers
echo (`sk-abc***wxyz`, `sk-proj-****...wxyz`, `sk-ab...wxyz`, `sk-ab…wxyz`: a prefix of the key, a mask, the key's
last 4 characters) with `***`. `redact_url` hides a URL's password however it is written (with `@`, `:` or `/`
unencoded or %-encoded). Nothing happens on import: the log scrubber is installed by the CLI and the worker.
"""
from __future__ import annotations

import json
import logging
import re
import threading
from urllib.parse import quote, unquote

MASK = "***"
MIN_SECRET_LENGTH = 8  # shorter values ("none", "x") would scrub ordinary words

_lock = threading.Lock()
_values: set[str] = set()
_pattern: re.Pattern[str] | None = None


def register_secret(value: str | None) -> None:
    """Remember a secret value (and its decoded form) so `scrub` hides it from now on. Short values are ignored."""
    global _pattern
    if not value:
        return
    candidates = {value.strip(), unquote(value).strip()}
    with _lock:
        added = False
        for candidate in candidates:
            if len(candidate) >= MIN_SECRET_LENGTH and candidate not in _values:
                _values.add(candidate)
                added = True
        if added:
            _pattern = None


def registered_count() -> int:
    return len(_values)


def forget_secrets() -> None:
    """Empty the registry (for tests of this module)."""
    global _pattern
    with _lock:
        _values.clear()
        _pattern = None


def _forms(value: str) -> list[str]:
    """The value as it may be written: whole, URL-encoded (reserved or all punctuation), JSON-escaped."""
    every = "".join(c if c.isalnum() else f"%{ord(c):02X}" for c in value if ord(c) < 128)
    forms = {value, quote(value, safe=""), quote(value, safe="/:"), json.dumps(value)[1:-1], every, every.lower()}
    return sorted(forms, key=len, reverse=True)


def _masked(value: str) -> str:
    """A prefix of the value (its first 3 characters, then any key characters), a mask run, its last 4."""
    head, tail = re.escape(value[:3]), re.escape(value[-4:])
    mask = r"(?:[*\u2022\u00b7]+|\.{2,}|\u2026|x{3,}|X{3,})"
    return rf"{head}[\w\-]{{0,{len(value)}}}?{mask}{tail}|(?:[*\u2022]{{3,}}|\.{{3}}|\u2026){tail}"


def _compiled() -> re.Pattern[str] | None:
    global _pattern
    with _lock:
        if _pattern is None and _values:
            whole = [re.escape(form) for value in _values for form in _forms(value)]
            masked = [_masked(value) for value in _values]
            alternatives = sorted(set(whole), key=len, reverse=True) + masked
            _pattern = re.compile("|".join(alternatives))
        return _pattern


def scrub(text):
    """`text` with every registered secret and its masked forms replaced by `***` (non-text passes unchanged)."""
    if not isinstance(text, str) or not text:
        return text
    pattern = _compiled()
    if pattern is None:
        return text
    return pattern.sub(MASK, text)


# URLs ----------------------------------------------------------------------------------------------------
_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.\-]*://)(.*)$", re.S)
_QUERY_SECRET = re.compile(r"([?&](?:password|passwd|pass|secret|token|api_key|apikey)=)[^&#]*", re.I)


def _split_userinfo(url: str) -> tuple[str, str, str | None, str] | None:
    """(scheme, user, password or None, rest after '@'), taking the *last* '@' as the end of the userinfo,
    so that a password holding an unencoded '@', ':' or '/' is found whole. None when there is no userinfo."""
    match = _SCHEME.match(url)
    if not match:
        return None
    scheme, rest = match.groups()
    at = rest.rfind("@")
    if at < 0:
        return None
    userinfo, after = rest[:at], rest[at + 1:]
    if ":" in userinfo:
        user, password = userinfo.split(":", 1)
        return scheme, user, password, after
    return scheme, userinfo, None, after


def url_password(url: str) -> str | None:
    """The password written in a URL (decoded), or None."""
    parts = _split_userinfo(url or "")
    return unquote(parts[2]) if parts and parts[2] else None


def redact_url(url: str) -> str:
    """The URL with its password (and password-like query parameters) shown as `***`."""
    if not url:
        return url
    parts = _split_userinfo(url)
    if parts is not None and parts[2] is not None:
        scheme, user, _password, after = parts
        url = f"{scheme}{user}:{MASK}@{after}"
    return scrub(_QUERY_SECRET.sub(lambda m: m.group(1) + MASK, url))


def register_url_password(url: str | None) -> None:
    """Register a database/Redis URL's password as a secret (both as written and decoded)."""
    if not url:
        return
    parts = _split_userinfo(url)
    if parts and parts[2]:
        register_secret(parts[2])
        register_secret(unquote(parts[2]))
    for match in _QUERY_SECRET.finditer(url):
        register_secret(unquote(url[match.end():].split("&", 1)[0].split("#", 1)[0]))


# logging -------------------------------------------------------------------------------------------------
class ScrubFilter(logging.Filter):
    """Scrubs a log record's message, arguments and exception text in place; never drops a record."""

    def filter(self, record: logging.LogRecord) -> bool:
        scrub_record(record)
        return True


def scrub_record(record: logging.LogRecord) -> logging.LogRecord:
    if getattr(record, "_gen_scrubbed", False) or not _values:
        return record
    if isinstance(record.msg, str):
        record.msg = scrub(record.msg)
    elif record.msg is not None and not isinstance(record.msg, (int, float)):
        record.msg = scrub(str(record.msg))
    if record.args:
        if isinstance(record.args, dict):
            record.args = {k: _scrub_arg(v) for k, v in record.args.items()}
        else:
            record.args = tuple(_scrub_arg(a) for a in record.args)
    if record.exc_info and record.exc_info[0] is not None and not record.exc_text:
        record.exc_text = scrub(logging.Formatter().formatException(record.exc_info))
    elif record.exc_text:
        record.exc_text = scrub(record.exc_text)
    if record.stack_info:
        record.stack_info = scrub(record.stack_info)
    record._gen_scrubbed = True
    return record


def _scrub_arg(value):
    if isinstance(value, (int, float, bool)) or value is None:
        return value
    return scrub(value if isinstance(value, str) else str(value))


_installed = False


def install_log_scrubber() -> None:
    """Scrub every log record of this process: the filter on the root logger's handlers, and a record factory
    so handlers added later (Celery's, basicConfig's) and records of every logger are covered too. Idempotent."""
    global _installed
    log_filter = ScrubFilter()
    for handler in logging.getLogger().handlers:
        if not any(isinstance(f, ScrubFilter) for f in handler.filters):
            handler.addFilter(log_filter)
    if _installed:
        return
    _installed = True
    previous = logging.getLogRecordFactory()

    def factory(*args, **kwargs) -> logging.LogRecord:
        record = previous(*args, **kwargs)
        # A record is scrubbed when it is made only if secrets are known; its filter pass scrubs it otherwise.
        return scrub_record(record) if _values else record

    logging.setLogRecordFactory(factory)
