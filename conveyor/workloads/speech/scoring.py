"""Scoring an attempt: word error rate against the reference text, and a 0-100 score."""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass

__all__ = ["Alignment", "align", "normalize", "score_of", "word_error_rate"]

_NUMBERS = {
    "0": "zero", "1": "one", "2": "two", "3": "three", "4": "four", "5": "five",
    "6": "six", "7": "seven", "8": "eight", "9": "nine", "10": "ten",
}  # fmt: skip


def normalize(text: str) -> list[str]:
    """Lower-case words without punctuation or accents; single digits spelt out (recognisers spell them)."""
    folded = unicodedata.normalize("NFKD", text.lower())
    folded = "".join(c for c in folded if not unicodedata.combining(c))
    folded = folded.replace("’", "'")
    words = re.findall(r"[a-z0-9]+(?:'[a-z]+)?", folded)
    return [_NUMBERS.get(w, w) for w in words]


@dataclass(frozen=True, slots=True)
class Alignment:
    substitutions: int
    deletions: int
    insertions: int
    reference_words: int

    @property
    def errors(self) -> int:
        return self.substitutions + self.deletions + self.insertions

    @property
    def wer(self) -> float:
        """Errors per reference word (may pass 1.0 when the hypothesis adds many words)."""
        if self.reference_words == 0:
            return 0.0 if self.insertions == 0 else 1.0
        return self.errors / self.reference_words


def align(reference: list[str], hypothesis: list[str]) -> Alignment:
    """Levenshtein alignment of two word lists, counting each kind of error."""
    n, m = len(reference), len(hypothesis)
    # cost, substitutions, deletions, insertions of the best path to (i, j)
    prev: list[tuple[int, int, int, int]] = [(j, 0, 0, j) for j in range(m + 1)]
    for i in range(1, n + 1):
        cur: list[tuple[int, int, int, int]] = [(i, 0, i, 0)]
        for j in range(1, m + 1):
            if reference[i - 1] == hypothesis[j - 1]:
                best = prev[j - 1]
            else:
                sub, dele, ins = prev[j - 1], prev[j], cur[j - 1]
                best = min(
                    (sub[0] + 1, sub[1] + 1, sub[2], sub[3]),
                    (dele[0] + 1, dele[1], dele[2] + 1, dele[3]),
                    (ins[0] + 1, ins[1], ins[2], ins[3] + 1),
                )
            cur.append(best)
        prev = cur
    _, subs, dels, inserted = prev[m]
    return Alignment(subs, dels, inserted, n)


def word_error_rate(reference: str, hypothesis: str) -> float:
    return align(normalize(reference), normalize(hypothesis)).wer


def score_of(wer: float) -> float:
    """0-100: 100 for a perfect reading, 0 once there are as many errors as words."""
    return round(max(0.0, 100.0 * (1.0 - wer)), 2)
