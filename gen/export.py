"""`gen export`: stream a job's records into the JSONL shapes trainers read, each line schema-checked.

Conversation formats (sharegpt, messages, alpaca) read records of kind "conversation"; DPO formats (dpo-trl,
dpo-axolotl, dpo-chatml-intel) read preference pairs, records of kind "pair" (dpo_reroll).

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
from gen.schemas import first_problem, load_schema, validator_for_schema_text
from gen.store import Store
from gen.store.reviews import reviewed_records

DEFAULT_REFUSAL_PHRASES = (
    "as an ai language model", "as an ai model", "as a language model", "as an ai developed by",
    "i'm sorry, but i can't", "i am sorry, but i cannot", "i'm sorry, but i cannot", "i cannot fulfill",
    "i can't fulfill", "i can't assist with", "i cannot assist with", "i'm unable to help with",
    "i am unable to comply", "i'm not able to provide", "openai's content policy", "against my programming",
)

SHAREGPT_ROLE = {"system": "system", "user": "human", "assistant": "gpt"}


class RefusalFilter:
    """Drops conversations whose assistant turns contain a refusal or an AI disclaimer."""

    def __init__(self, phrases: Iterable[str] = DEFAULT_REFUSAL_PHRASES):
        self.phrases = tuple(dict.fromkeys(p.lower() for p in phrases if p.strip()))

    def match(self, conversation: list[dict[str, str]]) -> str | None:
        for msg in conversation:
            if msg["role"] != "assistant":
                continue
            text = msg["content"].lower().replace("\u2019", "'")
            for phrase in self.phrases:
                if phrase in text:
                    return phrase
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
    row = {"instruction": turns[0]["content"], "input": "", "output": turns[1]["content"]}
    if system:
        row["system"] = system[0]
    return row


class SingleTurnOnly(UsageError):
    def __init__(self, fmt: str):
        super().__init__(f"format '{fmt}' holds single-turn conversations only, and this job has multi-turn "
                         "ones: export it as sharegpt or messages instead")


FORMATS: dict[str, Callable[[list[dict[str, str]]], dict[str, Any]]] = {
    "sharegpt": to_sharegpt, "messages": to_messages, "alpaca": to_alpaca,
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


def check_record_kinds(store: Store, job_id: str, fmt: str, rejected: bool) -> None:
    """Refuse, clearly, an export whose format does not read the records this job has."""
    counts = store.record_counts(job_id)
    pairs, conversations = counts.get("pair", 0), counts.get("conversation", 0)
    if fmt in DPO_FORMATS:
        if rejected:
            raise UsageError(f"format '{fmt}' exports pairs with a winner; dropped pairs have none: review them "
                             f"with `gen export {job_id} --rejected --meta --format messages`")
        if not pairs:
            dropped = counts.get("rejected", 0)
            if conversations:
                has = (f"it has {conversations} conversation records: export them with --format sharegpt, "
                       "messages or alpaca")
            elif dropped:
                has = f"{dropped} dropped pairs are kept for review: `gen export {job_id} --rejected --meta`"
            else:
                has = "it has no records yet"
            raise UsageError(f"0 lines: job {job_id} has no pair records ({has}); DPO formats export "
                             "dpo_reroll jobs")
    elif pairs and not conversations and not rejected:
        raise UsageError(f"0 lines: job {job_id} has no conversation records, it has {pairs} preference pairs: "
                         "export them with --format dpo-trl, dpo-axolotl or dpo-chatml-intel")


@dataclass
class ExportReport:
    written: int = 0
    filtered: int = 0
    by_phrase: dict[str, int] = field(default_factory=dict)


def _conversation_converter(fn: Callable[[list[dict[str, str]]], dict[str, Any]]):
    return lambda record: fn(record.conversation)


def _pair_converter(fn: Callable[[dict[str, Any]], dict[str, Any]]):
    def convert(record) -> dict[str, Any]:
        meta = record.meta or {}
        missing = [k for k in ("prompt", "chosen", "rejected") if k not in meta]
        if missing:
            raise GenError(f"record {record.id} is a pair without {', '.join(missing)} in its metadata")
        return fn(meta)
    return convert


def line_validator(fmt: str):
    schema = load_schema("conversation")
    one = {"$defs": schema["$defs"], "$ref": f"#/$defs/{fmt}"}
    return validator_for_schema_text(json.dumps(one, sort_keys=True))


def export_job(store: Store, job_id: str, output: str, fmt: str, *, refusal_filter: RefusalFilter | None,
               with_meta: bool = False, rejected: bool = False) -> ExportReport:
    """`with_meta` adds each record's metadata (teacher, judge scores, ...) as a `metadata` field, which
    trainers ignore; `rejected` exports the conversations kept for review instead of the accepted ones."""
    if fmt not in FORMATS and fmt not in DPO_FORMATS:
        raise UsageError(f"unknown format '{fmt}' (known: {', '.join([*FORMATS, *DPO_FORMATS])})")
    check_record_kinds(store, job_id, fmt, rejected)
    if fmt in DPO_FORMATS:
        kind, convert = "pair", _pair_converter(DPO_FORMATS[fmt])
    else:
        kind, convert = "conversation", _conversation_converter(FORMATS[fmt])
    validator = line_validator(fmt)
    report = ExportReport()
    destination = Destination(output)  # refuses folders, FIFOs, devices, unwritable paths (gen.output)
    sink = destination.open()
    try:
        records = store.iter_records(job_id, kind="rejected" if rejected else kind)
        for record in reviewed_records(store, job_id, records, kind=kind, rejected=rejected):  # human marks
            # A record may say refusals are its point (a guardrail system prompt obeyed): the filter spares it.
            if refusal_filter is not None and not record.meta.get("refusals_expected"):
                phrase = refusal_filter.match(record.conversation)
                if phrase:
                    report.filtered += 1
                    report.by_phrase[phrase] = report.by_phrase.get(phrase, 0) + 1
                    continue
            row = convert(record)
            problem = first_problem(validator, row)
            if problem:
                raise GenError(f"record {record.id} does not make a valid {fmt} line: {problem}")
            if with_meta:
                row["metadata"] = {**record.meta, "record_id": record.id, "key": record.key}
            sink.write(json.dumps(row, ensure_ascii=False) + "\n")
            report.written += 1
        sink.flush()
        destination.commit()
    finally:
        destination.discard()
    return report
