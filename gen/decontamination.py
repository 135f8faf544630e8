"""Decontamination: does a row's instruction match an item of a benchmark file?

Benchmark files are JSONL (the item is the first of `fields` a line has) or text (one item per line). A text
matches an item by word n-gram overlap (the share of the item's n-grams found in the text reaches
`ngram_overlap`; an item shorter than n words is one n-gram of its own length) or as a near-duplicate (the
estimated Jaccard similarity of character 3-gram MinHash signatures, as gen.neardup computes them, reaches
`near_duplicate_threshold`). The index lives in memory: n-grams to items, and LSH bands laid out as gen.neardup's.
"""
from __future__ import annotations

import json
import re
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from gen.errors import UsageError
from gen.neardup import band_hashes, estimated_jaccard, lsh_bands, signature

DEFAULT_BENCHMARK_FIELDS = ["question", "prompt", "instruction", "input", "problem", "query", "text"]


class DecontaminationSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")
    benchmarks: list[str] = Field(min_length=1, description="Benchmark files: JSONL or text, one item per line.")
    fields: list[str] = Field(default_factory=lambda: list(DEFAULT_BENCHMARK_FIELDS), min_length=1,
                              description="In JSONL benchmarks, the item is the first of these fields a line has.")
    ngram: int = Field(default=8, ge=1, le=50, description="Word n-gram size (shorter items: the whole item).")
    ngram_overlap: float | None = Field(default=0.5, gt=0, le=1, description="Share of an item's n-grams found in "
                                        "a row at which the row is dropped; null turns the n-gram test off.")
    near_duplicate_threshold: float | None = Field(default=0.8, gt=0, le=1, description="Estimated Jaccard "
                                                   "similarity at which a row is dropped; null turns it off.")


@dataclass(frozen=True)
class BenchmarkItem:
    file: str
    line: int
    text: str


def read_benchmark(path: str, fields: list[str]) -> list[BenchmarkItem]:
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise UsageError(f"cannot read benchmark {path} ({exc.strerror or type(exc).__name__})") from None
    except UnicodeDecodeError:
        raise UsageError(f"benchmark {path} is not UTF-8 text") from None
    jsonl = path.endswith((".jsonl", ".json", ".ndjson"))
    items = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        text = line.strip()
        if jsonl:
            try:
                data = json.loads(line)
            except json.JSONDecodeError:
                raise UsageError(f"benchmark {path} line {number}: not valid JSON") from None
            found = [data[f] for f in fields if isinstance(data, dict) and isinstance(data.get(f), str)]
            if isinstance(data, str):
                found = [data]
            if not found:
                raise UsageError(f"benchmark {path} line {number}: none of the fields {', '.join(fields)} "
                                 "(set decontaminate.fields)")
            text = found[0]
        items.append(BenchmarkItem(path, number, text))
    return items


WORD = re.compile(r"\w+")


def word_ngrams(text: str, n: int) -> set[tuple[str, ...]]:
    words = WORD.findall(text.lower())
    if len(words) < n:
        return {tuple(words)} if words else set()
    return {tuple(words[i:i + n]) for i in range(len(words) - n + 1)}


@dataclass(frozen=True)
class Match:
    item: BenchmarkItem
    test: str          # "ngram" or "near-duplicate"
    score: float


class Decontaminator:
    """An in-memory index of benchmark items: n-grams, and MinHash LSH bands (as gen.neardup lays them out)."""

    def __init__(self, spec: DecontaminationSpec):
        self.spec = spec
        self.items = [item for path in spec.benchmarks for item in read_benchmark(path, spec.fields)]
        self.by_ngram: dict[tuple[str, ...], list[int]] = defaultdict(list)
        self.item_ngrams: list[set[tuple[str, ...]]] = []
        self.lengths: set[int] = set()  # the lengths of the n-grams indexed (items shorter than n give shorter ones)
        for i, item in enumerate(self.items):
            grams = word_ngrams(item.text, spec.ngram)
            self.item_ngrams.append(grams)
            for gram in grams:
                self.by_ngram[gram].append(i)
                self.lengths.add(len(gram))
        self.signatures: list[list[int]] = []
        self.by_band: dict[tuple[int, str], list[int]] = defaultdict(list)
        if spec.near_duplicate_threshold is not None:
            self.bands = lsh_bands(spec.near_duplicate_threshold)
            for i, item in enumerate(self.items):
                sig = signature(item.text)
                self.signatures.append(sig)
                for band in band_hashes(sig, *self.bands):
                    self.by_band[band].append(i)

    def match(self, text: str) -> Match | None:
        spec = self.spec
        if spec.ngram_overlap is not None:
            words = WORD.findall(text.lower())
            row_grams = {tuple(words[j:j + n]) for n in self.lengths for j in range(len(words) - n + 1)}
            counts: dict[int, int] = defaultdict(int)
            for gram in row_grams:
                for i in self.by_ngram.get(gram, ()):
                    counts[i] += 1
            best = max(counts, key=lambda i: counts[i] / len(self.item_ngrams[i]), default=None)
            if best is not None:
                share = counts[best] / len(self.item_ngrams[best])
                if share >= spec.ngram_overlap:
                    return Match(self.items[best], "ngram", round(share, 3))
        if spec.near_duplicate_threshold is not None and self.items:
            sig = signature(text)
            candidates = {i for band in band_hashes(sig, *self.bands) for i in self.by_band.get(band, ())}
            scored = sorted(((estimated_jaccard(sig, self.signatures[i]), i) for i in candidates), reverse=True)
            if scored and scored[0][0] >= spec.near_duplicate_threshold:
                return Match(self.items[scored[0][1]], "near-duplicate", round(scored[0][0], 3))
        return None
