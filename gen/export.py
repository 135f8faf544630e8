"""`gen export`: stream a job's records into the JSONL shapes trainers read, each line schema-checked.

Conversation formats (messages, sharegpt, alpaca, and text in the seed models' prompt templates) read records of
kind "conversation"; DPO formats (dpo-trl, dpo-axolotl, dpo-chatml-intel) read preference pairs, records of kind
"pair" (dpo_reroll); kto (TRL's unpaired format) reads pairs and judged conversations, accepted or rejected.
Refusals and AI disclaimers are dropped (gen.refusals), and records whose code was not checked or whose riddle
answer was disputed are held back unless included. A record screened when it was stored (gen.record_screen) is not
checked again: its stored verdict decides, and its messages or sharegpt line is well formed by construction.

The file is written beside its destination and renamed into place at the end, so a refused or interrupted
export never leaves half a file where a trainer would read it.
"""
from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from gen.errors import GenError, UsageError
from gen.output import Destination
from gen.refusals import DISCLAIMER, KINDS, Match, RefusalDetector
from gen.export_lines import CHECKED_TEXT, LineCheck, encode
from gen.record_screen import Verdict, default_detectors, read_screen
from gen.schemas import load_schema, validator_for, validator_for_schema_text
from gen.store import Store
from gen.store.reviews import reviewed_records
from gen.text_templates import TEMPLATES, NotAChat

SHAREGPT_ROLE = {"system": "system", "user": "human", "assistant": "gpt"}
INCLUDABLE = ("unchecked", "unverified")


class RefusalFilter:
    """Drops records whose assistant turns refuse or disclaim (gen.refusals), plus a job's extra phrases and
    patterns. A record whose meta says refusals are its point (`refusals_expected`: a guardrail system prompt
    obeyed) is checked for AI disclaimers only.

    With no extras it is the filter every record met when it was stored (gen.record_screen): `match_record` takes
    that verdict instead of checking again, for records this gen's checks screened."""

    def __init__(self, *, extra_phrases: Iterable[str] = (), extra_patterns: Iterable[str] = ()):
        self.extra_phrases, self.extra_patterns = list(extra_phrases), list(extra_patterns)
        self.plain = not (self.extra_phrases or self.extra_patterns)
        if not self.plain:  # built now: a bad pattern is a usage error before anything is read
            self._detectors = self._build()
        else:  # built when a record was not screened by this gen (most exports never need them)
            self._detectors = None

    def _build(self) -> tuple[RefusalDetector, RefusalDetector]:
        if self.plain:
            return default_detectors()
        return (RefusalDetector(KINDS, extra_phrases=self.extra_phrases, extra_patterns=self.extra_patterns),
                RefusalDetector([DISCLAIMER], extra_phrases=self.extra_phrases, extra_patterns=self.extra_patterns))

    def match(self, conversation: list[dict[str, str]], *, refusals_expected: bool = False) -> Match | None:
        if self._detectors is None:
            self._detectors = self._build()
        everything, disclaimers = self._detectors
        return (disclaimers if refusals_expected else everything).match_conversation(conversation)

    def match_record(self, record, verdict: Verdict | None) -> Match | None:  # noqa: ANN001
        """What the filter finds in a stored record (`verdict`: its stored screen, read_screen's)."""
        if self.plain and verdict is not None:
            return verdict.match
        return self.match(record.conversation, refusals_expected=bool((record.meta or {}).get("refusals_expected")))


def held_back(meta: dict[str, Any], include: Iterable[str]) -> str | None:
    """Why a record stays out of an export unless included: its code was not checked (coding's `code_check:
    unchecked`), or a blind solver disagreed with its answer (riddles' `verified: false`, flag mode)."""
    if meta.get("code_check") == "unchecked" and "unchecked" not in include:
        return "unchecked"
    if meta.get("verified") is False and "unverified" not in include:
        return "unverified"
    return None


def to_sharegpt(conv: list[dict[str, str]]) -> dict[str, Any]:
    return {"conversations": [{"from": SHAREGPT_ROLE[m["role"]], "value": m["content"]} for m in conv]}


def to_messages(conv: list[dict[str, str]]) -> dict[str, Any]:
    return {"messages": [{"role": m["role"], "content": m["content"]} for m in conv]}


def to_alpaca(conv: list[dict[str, str]]) -> dict[str, Any]:
    system = [m["content"] for m in conv if m["role"] == "system"]
    turns = [m for m in conv if m["role"] != "system"]
    if len(turns) != 2:
        raise SingleTurnOnly("alpaca")
    # `system` always: Axolotl's alpaca_w_system reads it unconditionally
    return {"instruction": turns[0]["content"], "input": "", "output": turns[1]["content"],
            "system": system[0] if system else ""}


class SingleTurnOnly(UsageError):
    def __init__(self, fmt: str):
        super().__init__(f"format '{fmt}' holds single-turn conversations only, and this job has multi-turn "
                         "ones: export it as sharegpt or messages instead")


FORMATS: dict[str, Callable[[list[dict[str, str]]], dict[str, Any]]] = {
    "sharegpt": to_sharegpt, "messages": to_messages, "alpaca": to_alpaca,
}


def _messages_text(conv: list[dict[str, str]]) -> str:
    return '{"messages": ' + encode(conv) + "}"


def _sharegpt_text(conv: list[dict[str, str]]) -> str:
    return encode(to_sharegpt(conv))


# The line of a conversation screened when it was stored (gen.record_screen): well formed, roles first, so these
# formats' schemas hold for it by construction and its text is json.dumps' (tests/test_record_screen.py)
TRUSTED_TEXT: dict[str, Callable[[list[dict[str, str]]], str]] = {
    "messages": _messages_text, "sharegpt": _sharegpt_text,
}


# preference pairs (records of kind "pair", made by dpo_reroll: meta holds prompt, chosen and rejected) -------
def _message(m: dict[str, Any]) -> dict[str, str]:
    return {"role": m["role"], "content": m["content"]}


def to_dpo_trl(pair: dict[str, Any]) -> dict[str, Any]:
    """TRL's conversational preference format: prompt messages, chosen and rejected as one-message lists."""
    return {"prompt": [_message(m) for m in pair["prompt"]], "chosen": [_message(pair["chosen"])],
            "rejected": [_message(pair["rejected"])]}


def to_dpo_axolotl(pair: dict[str, Any]) -> dict[str, Any]:
    """Axolotl `rl: dpo` with `type: chat_template.default`: context messages, chosen and rejected messages."""
    return {"messages": [_message(m) for m in pair["prompt"]], "chosen": _message(pair["chosen"]),
            "rejected": _message(pair["rejected"])}


def to_dpo_chatml_intel(pair: dict[str, Any]) -> dict[str, Any]:
    """Axolotl `type: chatml.intel`: system?, question, chosen and rejected as strings; single-turn only."""
    system = [m["content"] for m in pair["prompt"] if m["role"] == "system"]
    turns = [m for m in pair["prompt"] if m["role"] != "system"]
    if len(turns) != 1:
        raise PairSingleTurnOnly("dpo-chatml-intel")
    row = {"question": turns[0]["content"], "chosen": pair["chosen"]["content"],
           "rejected": pair["rejected"]["content"]}
    return {"system": system[0], **row} if system else row


class PairSingleTurnOnly(UsageError):
    def __init__(self, fmt: str):
        super().__init__(f"format '{fmt}' holds single-turn pairs only, and this job has pairs with multi-turn "
                         "prompts: export it as dpo-trl or dpo-axolotl instead (nothing was written)")


DPO_FORMATS: dict[str, Callable[[dict[str, Any]], dict[str, Any]]] = {
    "dpo-trl": to_dpo_trl, "dpo-axolotl": to_dpo_axolotl, "dpo-chatml-intel": to_dpo_chatml_intel,
}


KTO = "kto"
TEXT = "text"
ALL_FORMATS = (*FORMATS, TEXT, *DPO_FORMATS, KTO)
CONVERSATION_FORMATS = (*FORMATS, TEXT)


def check_record_kinds(store: Store, job_id: str, fmt: str, rejected: bool) -> None:
    """Refuse, clearly, an export whose format does not read the records this job has."""
    counts = store.record_counts(job_id)
    pairs, conversations = counts.get("pair", 0), counts.get("conversation", 0)
    if fmt == KTO:
        if rejected:
            raise UsageError("format 'kto' reads accepted and rejected judged conversations itself: drop --rejected")
        if not pairs and not conversations and not counts.get("rejected", 0):
            raise UsageError(f"0 lines: job {job_id} has no records yet")
    elif fmt in DPO_FORMATS:
        if rejected:
            raise UsageError(f"format '{fmt}' exports pairs with a winner; dropped pairs have none: review them "
                             f"with `gen export {job_id} --rejected --meta --format messages`")
        if not pairs:
            dropped = counts.get("rejected", 0)
            if conversations:
                has = (f"it has {conversations} conversation records: export them with --format messages, "
                       "sharegpt, alpaca, text or kto")
            elif dropped:
                has = f"{dropped} dropped pairs are kept for review: `gen export {job_id} --rejected --meta`"
            else:
                has = "it has no records yet"
            raise UsageError(f"0 lines: job {job_id} has no pair records ({has}); DPO formats export "
                             "dpo_reroll jobs")
    elif pairs and not conversations and not rejected:
        raise UsageError(f"0 lines: job {job_id} has no conversation records, it has {pairs} preference pairs: "
                         "export them with --format dpo-trl, dpo-axolotl, dpo-chatml-intel or kto")


# KTO (TRL's unpaired preference format) ------------------------------------------------------------------------
def kto_from_pair(pair: dict[str, Any]) -> list[dict[str, Any]]:
    """A pair gives two rows: the chosen answer labelled true, the rejected one false."""
    prompt = [_message(m) for m in pair["prompt"]]
    return [{"prompt": prompt, "completion": [_message(pair["chosen"])], "label": True},
            {"prompt": prompt, "completion": [_message(pair["rejected"])], "label": False}]


def kto_from_judged(conversation: list[dict[str, Any]], meta: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per judged assistant turn (systemchat's `turn_scores`): the conversation before it as the prompt,
    the turn as the completion, labelled true when the judge scored it at least the job's `judge.threshold` and
    no constraint check failed on it. Rows stop at the first turn labelled false: later turns would be prompted
    with a failed answer in their context. Turns without a score (no judge) give no rows."""
    threshold = (meta.get("judge") or {}).get("threshold")
    scores = {t.get("turn"): t for t in meta.get("turn_scores") or [] if isinstance(t, dict)}
    if threshold is None or not scores:
        return []
    rows, context, turn = [], [], 0
    for message in conversation:
        if message["role"] == "assistant":
            turn += 1
            scored = scores.get(turn)
            if not scored or scored.get("score") is None:
                break
            good = scored["score"] >= threshold and not scored.get("violations")
            rows.append({"prompt": [_message(m) for m in context], "completion": [_message(message)],
                         "label": bool(good)})
            if not good:
                break
        context.append(message)
    return rows


@dataclass
class ExportReport:
    written: int = 0
    records: int = 0                  # records read
    filtered: int = 0                 # records (or KTO rows) dropped by the refusal filter
    by_rule: dict[str, int] = field(default_factory=dict)
    held_back: dict[str, int] = field(default_factory=dict)   # unchecked / unverified records kept out

    def count_filtered(self, found: Match) -> None:
        self.filtered += 1
        self.by_rule[found.rule] = self.by_rule.get(found.rule, 0) + 1

    def why_empty(self, job_id: str, fmt: str) -> str:
        if not self.records:
            return f"job {job_id} has no records this format reads"
        parts = []
        if self.filtered:
            parts.append(f"{self.filtered} dropped by the refusal filter (--no-filter keeps them)")
        for reason, n in self.held_back.items():
            parts.append(f"{n} held back as {reason} (--include {reason} keeps them)")
        if fmt == KTO and not parts:
            parts.append("none has judge scores or is a preference pair: KTO rows come from dpo_reroll pairs or "
                         "from conversations a judge scored turn by turn (systemchat)")
        return f"all {self.records} records of job {job_id} were left out: " + "; ".join(parts)


WRITE_BATCH = 32  # lines written at once: their text (tens of KB) stays below glibc malloc's mmap threshold (a 1 MB
# join was mapped and unmapped each time: 270k page faults and a fifth of the CPU of a 100k-record export)


def line_validator(fmt: str):
    if fmt in (KTO, TEXT):
        return validator_for(f"export_{fmt}")
    schema = load_schema("conversation")
    one = {"$defs": schema["$defs"], "$ref": f"#/$defs/{fmt}"}
    return validator_for_schema_text(json.dumps(one, sort_keys=True))


def _rows(record, fmt: str, templates: list[str], refusal_filter: RefusalFilter | None,
          report: ExportReport, verdict: Verdict | None) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    """A record's lines, each with what `--meta` adds to it besides the record's own metadata."""
    meta = record.meta or {}
    expected = bool(meta.get("refusals_expected"))
    if fmt == KTO and record.kind != "pair":
        rows = []
        for row in kto_from_judged(record.conversation, meta):
            found = refusal_filter.match(row["completion"], refusals_expected=expected) \
                if refusal_filter is not None and row["label"] else None
            if found:
                report.count_filtered(found)
                continue
            rows.append((row, {"turn": sum(1 for m in row["prompt"] if m["role"] == "assistant") + 1}))
        return rows
    if refusal_filter is not None:
        found = refusal_filter.match_record(record, verdict)
        if found:
            report.count_filtered(found)
            return []
    if fmt == KTO or fmt in DPO_FORMATS:
        missing = [k for k in ("prompt", "chosen", "rejected") if k not in meta]
        if missing:
            raise GenError(f"record {record.id} is a pair without {', '.join(missing)} in its metadata")
        if fmt == KTO:
            return [(row, {}) for row in kto_from_pair(meta)]
        return [(DPO_FORMATS[fmt](meta), {})]
    if fmt == TEXT:
        try:
            return [({"text": TEMPLATES[name](record.conversation)}, {"template": name}) for name in templates]
        except NotAChat as exc:
            raise GenError(f"record {record.id} cannot be rendered as text: {exc}") from None
    return [(FORMATS[fmt](record.conversation), {})]


def export_job(store: Store, job_id: str, output: str, fmt: str, *, refusal_filter: RefusalFilter | None,
               with_meta: bool = False, rejected: bool = False, include: Iterable[str] = (),
               template: str | None = None, all_templates: bool = False) -> ExportReport:
    """`with_meta` adds each record's metadata (teacher, judge scores, ...) as a `metadata` field, which
    trainers ignore; `rejected` exports the conversations kept for review instead of the accepted ones;
    `include` keeps records held back by default (see `held_back`). `fmt` "text" renders `template`, or every
    template with `all_templates` (one line per record and template).

    An export that would write no line raises GenError (exit 1) and leaves no file."""
    if fmt not in ALL_FORMATS:
        raise UsageError(f"unknown format '{fmt}' (known: {', '.join(ALL_FORMATS)})")
    unknown = sorted(set(include) - set(INCLUDABLE))
    if unknown:
        raise UsageError(f"--include {','.join(unknown)}: unknown (known: {', '.join(INCLUDABLE)})")
    if fmt == TEXT:
        if all_templates == bool(template):
            raise UsageError("--format text needs --template NAME or --all-templates (one of them) "
                             f"(templates: {', '.join(TEMPLATES)})")
        if template and template not in TEMPLATES:
            raise UsageError(f"unknown template '{template}' (known: {', '.join(TEMPLATES)})")
    elif template or all_templates:
        raise UsageError("--template and --all-templates go with --format text")
    templates = list(TEMPLATES) if all_templates else [template] if template else []
    check_record_kinds(store, job_id, fmt, rejected)
    if rejected:
        kinds = ["rejected"]
    elif fmt == KTO:
        kinds = ["pair", "conversation", "rejected"]
    else:
        kinds = ["pair" if fmt in DPO_FORMATS else "conversation"]
    check = LineCheck(fmt, lambda: line_validator(fmt))  # the schema validator, built if a line needs it
    checked_text = None if with_meta else CHECKED_TEXT.get(fmt)  # check and text in one pass (gen.export_lines)
    trusted = None if with_meta else TRUSTED_TEXT.get(fmt)
    report = ExportReport()
    destination = Destination(output)  # refuses folders, FIFOs, devices, unwritable paths (gen.output)
    sink = destination.open()
    lines: list[str] = []
    try:
        for kind in kinds:
            # Human review marks (gen serve): excluded records are left out; rejected conversations a reviewer
            # put back follow (KTO reads rejected records itself, so it takes exclusions only).
            marked = reviewed_records(store, job_id, store.iter_record_rows(job_id, kind=kind),
                                      kind="" if fmt == KTO else kind, rejected=rejected)
            for record in marked:
                report.records += 1
                reason = None if rejected else held_back(record.meta or {}, include)
                if reason:  # a review export (--rejected) shows everything
                    report.held_back[reason] = report.held_back.get(reason, 0) + 1
                    continue
                verdict = read_screen(record.screen)
                if trusted is not None and verdict is not None:
                    # screened when stored: a well-formed chat, checked by this gen's rules (gen.record_screen)
                    found = refusal_filter.match_record(record, verdict) if refusal_filter is not None else None
                    if found:
                        report.count_filtered(found)
                    else:
                        lines.append(trusted(record.conversation))
                        report.written += 1
                else:
                    for row, extra in _rows(record, fmt, templates, refusal_filter, report, verdict):
                        text = checked_text(row) if checked_text is not None else None
                        if text is None:
                            problem = check.problem(row)
                            if problem:
                                raise GenError(f"record {record.id} does not make a valid {fmt} line: {problem}")
                            if with_meta:
                                row["metadata"] = {**record.meta, "record_id": record.id, "key": record.key,
                                                   **extra}
                            text = encode(row)
                        lines.append(text)
                        report.written += 1
                if len(lines) >= WRITE_BATCH:
                    sink.write("\n".join(lines) + "\n")
                    lines.clear()
        if lines:
            sink.write("\n".join(lines) + "\n")
        if not report.written:
            raise GenError(f"0 lines: {report.why_empty(job_id, fmt)}; nothing written")
        sink.flush()
        destination.commit()
    finally:
        destination.discard()
    return report
