"""Language detection with py3langid: deterministic, small, offline."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import Any

__all__ = ["detect_language", "detect_many"]

#: enough text to be sure, little enough to be fast on a 200-page book
SAMPLE_CHARS = 20_000
_lock = threading.Lock()


def _classify(text: str) -> Any:
    import py3langid

    # py3langid loads its bundled model once, on first use; the lock keeps two
    # threads from loading it twice.
    with _lock:
        return py3langid.classify(text)


def _sample(text: str) -> str:
    if len(text) <= SAMPLE_CHARS:
        return text
    # Evenly spaced slices: a long document's front matter should not decide alone.
    n, size = 10, SAMPLE_CHARS // 10
    step = len(text) // n
    return " ".join(text[i * step : i * step + size] for i in range(n))


def detect_language(text: str) -> str | None:
    """ISO 639-1 code of the text's language, or None when there is too little text to tell."""
    sample = _sample(text)
    if sum(ch.isalpha() for ch in sample) < 20:
        return None
    lang, _score = _classify(sample)
    return str(lang)


def detect_many(texts: Sequence[str]) -> list[str | None]:
    return [detect_language(t) for t in texts]
