"""How near-duplicate representations and thresholds measure on the labelled set tests/data/neardup_pairs.jsonl.

For each representation (character 3-grams of the old normal form; word n-grams of gen.text.normalise) and
measure (Jaccard; containment of the smaller set), prints the best threshold by recall among those that drop
at most 2% of distinct pairs, with exact set similarities (no MinHash). `python bench/neardup_choice.py`.
"""
from __future__ import annotations

import json
import re
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from gen.text import words  # noqa: E402

PAIRS = Path(__file__).resolve().parents[1] / "tests" / "data" / "neardup_pairs.jsonl"


def old_chars(text: str, n: int = 3) -> set:
    norm = re.sub(r"\s+", " ", re.sub(r"[^\w\s]", " ", text.lower())).strip()
    return {norm[i:i + n] for i in range(max(1, len(norm) - n + 1))}


def grams(sizes):
    def make(text: str) -> set:
        w = words(text)
        return {tuple(w[i:i + n]) for n in sizes for i in range(max(1, len(w) - n + 1))}
    return make


def chars(n: int):
    def make(text: str) -> set:
        norm = " ".join(words(text))
        return {norm[i:i + n] for i in range(max(1, len(norm) - n + 1))}
    return make


REPRESENTATIONS = {"char 3-grams (old)": old_chars, "chars 3": chars(3), "chars 4": chars(4), "chars 5": chars(5), "words 1": grams((1,)), "words 2": grams((2,)),
                   "words 3": grams((3,)), "words 1-2": grams((1, 2)), "words 1-3": grams((1, 2, 3))}
MEASURES = {"jaccard": lambda a, b: len(a & b) / len(a | b),
            "containment": lambda a, b: len(a & b) / min(len(a), len(b))}


def main() -> None:
    rows = [json.loads(line) for line in PAIRS.read_text(encoding="utf-8").splitlines()]
    print(f"{sum(r['duplicate'] for r in rows)} duplicate pairs, {sum(not r['duplicate'] for r in rows)} distinct")
    print(f"{'representation':20} {'measure':12} {'window (>=90% caught, <=2% dropped)':>36} "
          f"{'mid':>5} {'caught':>7} {'dropped':>8}")
    for rname, rep in REPRESENTATIONS.items():
        for mname, measure in MEASURES.items():
            scored = [(measure(rep(r["a"]), rep(r["b"])), r["duplicate"]) for r in rows]
            dup = [s for s, d in scored if d]
            distinct = [s for s, d in scored if not d]
            rates = {t: (sum(s >= t for s in dup) / len(dup), sum(s >= t for s in distinct) / len(distinct))
                     for t in [x / 100 for x in range(5, 100)]}
            good = [t for t, (caught, wrong) in rates.items() if caught >= 0.9 and wrong <= 0.02]
            if not good:
                print(f"{rname:20} {mname:12} {'none':>36}")
                continue
            mid = round((min(good) + max(good)) / 2, 2)
            caught, wrong = rates[mid]
            print(f"{rname:20} {mname:12} {min(good):17.2f} .. {max(good):.2f} {max(good) - min(good):10.2f} "
                  f"{mid:5.2f} {caught:7.1%} {wrong:8.1%}")


if __name__ == "__main__":
    main()
