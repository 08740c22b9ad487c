"""The documents pipeline: extraction by content, token chunks, pages, language, search."""

from __future__ import annotations

import itertools
import os
from pathlib import Path

import pytest

from conveyor.workloads.documents.chunking import chunk_text, encoding
from conveyor.workloads.documents.extract import (
    BadEncoding,
    EmptyText,
    EncryptedPdf,
    FileMissing,
    UnreadableDocument,
    UnsupportedType,
    extract,
    sniff_file,
)
from conveyor.workloads.documents.language import detect_language
from conveyor.workloads.documents.search import rank
from tests.documents_samples import ENGLISH, HTML, ITALIAN, MULTIBYTE, make_docx, make_encrypted_pdf, make_pdf

TEXTS = {"italian": ITALIAN, "english": ENGLISH, "multibyte": MULTIBYTE, "mixed": ENGLISH + MULTIBYTE + ITALIAN}


@pytest.mark.parametrize("name", list(TEXTS))
def test_chunks_hold_the_token_invariants(name: str) -> None:
    """≤1,200 tokens each; neighbours share exactly 200 tokens; in order, covering all; no U+FFFD added."""
    text = TEXTS[name]
    tokens = encoding().encode_ordinary(text)
    chunks = chunk_text(text)
    assert chunks[0].token_start == 0
    assert chunks[-1].token_end == len(tokens)
    for c in chunks:
        assert c.tokens == c.token_end - c.token_start <= 1200
        assert c.text == text[c.char_start : c.char_end]
        assert "\ufffd" not in c.text
    for a, b in itertools.pairwise(chunks):
        assert b.token_start == a.token_end - 200
        assert tokens[b.token_start : a.token_end] == tokens[a.token_end - 200 : a.token_end]
        assert a.char_start <= b.char_start < a.char_end  # in order, overlapping


def test_chunk_size_and_overlap_are_parameters() -> None:
    chunks = chunk_text(ENGLISH, chunk_size=100, overlap=10)
    assert all(c.tokens <= 100 for c in chunks)
    assert all(b.token_start == a.token_end - 10 for a, b in itertools.pairwise(chunks))
    with pytest.raises(ValueError, match="overlap < chunk_size"):
        chunk_text(ENGLISH, chunk_size=100, overlap=100)


def test_progress_is_reported_up_to_one() -> None:
    seen: list[float] = []
    chunk_text(ENGLISH * 5, chunk_size=200, overlap=20, progress=seen.append)
    assert seen == sorted(seen)
    assert seen[-1] == 1.0


def test_a_pdf_keeps_its_pages_on_each_chunk(tmp_path: Path) -> None:
    extracted = extract(make_pdf(tmp_path / "book.pdf", 12))
    assert extracted.kind == "pdf"
    assert [p[0] for p in extracted.pages] == list(range(1, 13))
    chunks = chunk_text(extracted.text, extracted.pages)
    assert chunks[0].pages[0] == 1
    assert chunks[-1].pages[-1] == 12
    for c in chunks:
        first, last = c.pages[0], c.pages[-1]
        assert (
            f"Page {first} begins here" in extracted.text[extracted.pages[first - 1][1] : extracted.pages[first - 1][2]]
        )
        assert c.pages == list(range(first, last + 1))


def test_docx_and_html_are_read_by_content(tmp_path: Path) -> None:
    docx_path = make_docx(tmp_path / "report.bin")  # a misleading extension changes nothing
    extracted = extract(docx_path)
    assert extracted.kind == "docx"
    assert "harbour lanterns | 42" in extracted.text
    html = tmp_path / "guide.txt"
    html.write_text(HTML)
    page = extract(html)
    assert page.kind == "html"
    assert "Field guide" in page.text
    assert "secret" not in page.text
    assert "color:red" not in page.text


def test_text_encodings_utf8_first_then_cp1252(tmp_path: Path) -> None:
    utf8 = tmp_path / "a.txt"
    utf8.write_text("Perché è così — naïve café", encoding="utf-8")
    assert extract(utf8).encoding == "utf-8"
    cp = tmp_path / "b.txt"
    cp.write_bytes("Prix: 12 € — café crème".encode("cp1252"))
    got = extract(cp)
    assert (got.encoding, got.text) == ("cp1252", "Prix: 12 € — café crème")
    bom = tmp_path / "c.md"
    bom.write_bytes(b"\xef\xbb\xbf# Titolo\n\nTesto")
    assert (sniff_file(bom), extract(bom).text) == ("markdown", "# Titolo\n\nTesto")


@pytest.mark.parametrize(
    ("make", "error", "words"),
    [
        (lambda p: p, FileMissing, "missing"),
        (lambda p: (p.write_bytes(b""), p)[1], EmptyText, "empty"),
        (lambda p: (p.write_bytes(b"%PDF-1.4\n" + os.urandom(2000)), p)[1], UnreadableDocument, "PDF could not"),
        (lambda p: (p.write_bytes(os.urandom(4096)), p)[1], UnsupportedType, "binary"),
        (lambda p: (p.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 8), p)[1], UnsupportedType, "binary"),
        (lambda p: (p.write_bytes(b"   \n\t  \n"), p)[1], EmptyText, "no text"),
        (lambda p: (p.write_bytes(b"PK\x03\x04" + os.urandom(300)), p)[1], UnreadableDocument, "damaged"),
        (lambda p: make_encrypted_pdf(p), EncryptedPdf, "encrypted"),
    ],
    ids=[
        "missing",
        "zero-bytes",
        "corrupt-pdf",
        "random-bytes",
        "png-renamed",
        "whitespace",
        "broken-zip",
        "encrypted-pdf",
    ],
)
def test_bad_files_fail_with_a_message_naming_the_cause(tmp_path: Path, make: object, error: type, words: str) -> None:
    path = make(tmp_path / "upload.txt")  # type: ignore[operator]
    with pytest.raises(error, match=words):
        extract(path)


def test_an_undecodable_text_is_a_bad_encoding() -> None:
    from conveyor.workloads.documents.extract import _decode

    with pytest.raises(BadEncoding):
        _decode(b"caf\xe9 \x81\x8d\x8f\x90\x9d")  # bytes cp1252 leaves undefined


def test_language_is_detected_per_text_and_deterministic() -> None:
    assert detect_language(ITALIAN) == "it"
    assert detect_language(ENGLISH) == "en"
    assert {detect_language(ITALIAN) for _ in range(5)} == {"it"}
    assert detect_language("ok") is None


def test_bm25_ranks_the_relevant_chunk_first() -> None:
    docs = ["the harbour at night", "Roma e la sua storia antica", "engines and carbon", "storia della cucina"]
    hits = rank("storia di Roma", docs)
    assert hits[0][0] == 1
    assert {i for i, _ in hits} == {1, 3}
    assert rank("nothing matches", docs) == []
    assert rank("perche", ["perché no"])[0][0] == 0  # accents folded
