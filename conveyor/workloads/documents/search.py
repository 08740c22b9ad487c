"""BM25 (Okapi) ranking of chunks for a query: small, dependency-free, good enough for "ready for query"."""

from __future__ import annotations

import math
import re
import unicodedata
from collections import Counter
from collections.abc import Sequence

__all__ = ["rank", "tokenize"]

_WORD = re.compile(r"\w+", re.UNICODE)


def tokenize(text: str) -> list[str]:
    """Lower-case words with accents folded, so "perché" matches "perche"."""
    folded = unicodedata.normalize("NFKD", text.lower())
    folded = "".join(ch for ch in folded if not unicodedata.combining(ch))
    return _WORD.findall(folded)


def rank(query: str, docs: Sequence[str], limit: int = 10, k1: float = 1.5, b: float = 0.75) -> list[tuple[int, float]]:
    """``(index, score)`` of the best-matching ``docs``, best first; only scores above zero."""
    terms = set(tokenize(query))
    if not terms or not docs:
        return []
    tokenized = [tokenize(d) for d in docs]
    avg_len = sum(len(t) for t in tokenized) / len(tokenized) or 1.0
    df = Counter(term for toks in tokenized for term in set(toks) & terms)
    n = len(docs)
    idf = {t: math.log(1 + (n - df[t] + 0.5) / (df[t] + 0.5)) for t in terms if df[t]}
    scores: list[tuple[int, float]] = []
    for i, toks in enumerate(tokenized):
        tf = Counter(t for t in toks if t in idf)
        if not tf:
            continue
        norm = k1 * (1 - b + b * len(toks) / avg_len)
        score = sum(idf[t] * f * (k1 + 1) / (f + norm) for t, f in tf.items())
        scores.append((i, score))
    scores.sort(key=lambda s: (-s[1], s[0]))
    return scores[:limit]
