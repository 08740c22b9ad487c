"""The documents pipeline: extraction by content, token chunks, pages, language, search."""

from __future__ import annotations

import itertools
import os
from pathlib import Path

import pytest

from conveyor.workloads.documents.chunking import Chunk, chunk_text, encoding
from conveyor.workloads.documents.extract import (
    SNIFF_BYTES,
    BadEncoding,
    EmptyText,
    EncryptedPdf,
    ExtractionLimit,
    FileMissing,
    UnreadableDocument,
    UnsupportedType,
    extract,
    sniff_file,
)
from conveyor.workloads.documents.language import detect_language
from conveyor.workloads.documents.search import rank
from tests.documents_samples import ENGLISH, HTML, ITALIAN, MULTIBYTE, make_docx, make_encrypted_pdf, make_pdf

CYRILLIC = "Война и мир — роман-эпопея Льва Николаевича Толстого, описывающий русское общество. " * 150
CJK = (
    "東京は日本の首都であり、世界最大の都市圏の一つです。北京是中国的首都，有三千多年的历史。서울은 한국의 수도입니다. "
    * 120
)
EMOJI = "Launch day 🚀🚀 went well 👍🏽 — team 👨‍👩‍👧‍👦 celebrated with 🍕 and 🎉; next stop 🌕! " * 150

TEXTS = {
    "italian": ITALIAN,
    "english": ENGLISH,
    "multibyte": MULTIBYTE,
    "cyrillic": CYRILLIC,
    "cjk": CJK,
    "emoji": EMOJI,
    "mixed": ENGLISH + MULTIBYTE + ITALIAN + CJK + EMOJI,
}


def assert_chunk_invariants(text: str, chunks: list[Chunk], size: int, overlap: int) -> None:
    """Seed 001's chunking, as the issue states it, checked on ``chunks`` of ``text``."""
    tokens = encoding().encode_ordinary(text)
    assert chunks[0].token_start == 0
    assert chunks[-1].token_end == len(tokens)
    for c in chunks:
        assert c.tokens == c.token_end - c.token_start <= size
        assert len(encoding().encode_ordinary(c.text)) <= size  # also counted on its own
        assert c.text == text[c.char_start : c.char_end]
        assert c.text.count("\ufffd") == 0
    for a, b in itertools.pairwise(chunks):
        assert b.token_start == a.token_end - overlap  # exactly `overlap` tokens shared
        assert a.char_start <= b.char_start <= a.char_end  # in order, no gap
    # The chunks, overlaps removed, are the whole text in order.
    rebuilt = chunks[0].text + "".join(b.text[a.char_end - b.char_start :] for a, b in itertools.pairwise(chunks))
    assert rebuilt == text


@pytest.mark.parametrize("name", list(TEXTS))
def test_chunks_hold_the_token_invariants(name: str) -> None:
    """≤1,200 tokens each; neighbours share exactly 200 tokens; in order, covering all; no U+FFFD added."""
    text = TEXTS[name]
    chunks = chunk_text(text)
    assert len(chunks) > 1
    assert_chunk_invariants(text, chunks, 1200, 200)


@pytest.mark.parametrize(("size", "overlap"), [(16, 0), (17, 5), (50, 20), (300, 290)])
def test_small_windows_cut_inside_characters_and_still_hold(size: int, overlap: int) -> None:
    """Many edges fall inside CJK characters and emoji: each snaps to the whole character."""
    text = CJK[:3000] + EMOJI[:3000] + CYRILLIC[:2000]
    assert_chunk_invariants(text, chunk_text(text, chunk_size=size, overlap=overlap), size, overlap)


def test_special_token_text_is_ordinary_text() -> None:
    """A document may contain "<|endoftext|>": it is chunked as the characters it is."""
    text = "before <|endoftext|> after " * 400
    assert_chunk_invariants(text, chunk_text(text, chunk_size=100, overlap=10), 100, 10)


def test_a_short_text_is_one_chunk_and_an_empty_one_none() -> None:
    (only,) = chunk_text("Ciao, mondo.")
    assert (only.text, only.char_start, only.char_end, only.pages) == ("Ciao, mondo.", 0, 12, [])
    assert chunk_text("") == []


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


def test_a_character_cut_at_the_sniff_boundary_is_still_text(tmp_path: Path) -> None:
    """The type check reads 8 KiB: a multi-byte character across that edge does not make the file binary."""
    path = tmp_path / "notes.txt"
    path.write_bytes(b"a" * (SNIFF_BYTES - 1) + "€ and more text".encode())
    assert sniff_file(path) == "text"
    utf16 = tmp_path / "wide.txt"
    utf16.write_bytes(("\ufeff" + "Grüße 😀 " * 2000).encode("utf-16-le"))
    assert sniff_file(utf16) == "text"
    assert extract(utf16).text.startswith("Grüße 😀")


def test_nul_characters_are_dropped_from_the_text(tmp_path: Path) -> None:
    """PostgreSQL text cannot hold NUL; a stray one in a text file must not fail the save."""
    path = tmp_path / "nul.txt"
    path.write_bytes(b"clean words " * 1000 + b"left\x00right")  # past the 8 KiB the type check reads
    text = extract(path).text
    assert "\x00" not in text
    assert text.endswith("leftright")


def test_markdown_is_known_by_its_name_and_read_as_text(tmp_path: Path) -> None:
    path = tmp_path / "upload.bin"
    path.write_text("# Titolo\n\nTesto *importante*.\n")
    assert sniff_file(path, "README.md") == "markdown"
    assert sniff_file(path, "notes.txt") == "text"
    assert extract(path, "README.md").kind == "markdown"


def test_a_pdf_of_blank_pages_says_it_may_be_scanned(tmp_path: Path) -> None:
    from fpdf import FPDF

    pdf = FPDF()
    for _ in range(3):
        pdf.add_page()
    path = tmp_path / "scan.pdf"
    pdf.output(str(path))
    with pytest.raises(EmptyText, match="scanned PDF"):
        extract(path)


def test_pdf_progress_is_reported_page_by_page(tmp_path: Path) -> None:
    seen: list[float] = []
    extract(make_pdf(tmp_path / "five.pdf", 5), progress=seen.append)
    assert seen == [0.2, 0.4, 0.6, 0.8, 1.0]


def test_a_docx_zip_bomb_is_refused_before_it_is_expanded(tmp_path: Path) -> None:
    """A real DOCX plus one member that inflates to 256 MiB from a few hundred KB: refused by its declared size."""
    import zipfile

    from tests.documents_samples import make_docx

    bomb = make_docx(tmp_path / "bomb.docx")
    with (
        zipfile.ZipFile(bomb, "a", compression=zipfile.ZIP_DEFLATED) as z,
        z.open("word/media/zeros.bin", "w", force_zip64=True) as member,
    ):
        block = b"\0" * (1 << 20)
        for _ in range(256):
            member.write(block)
    assert bomb.stat().st_size < 2 * 1024 * 1024
    with pytest.raises(ExtractionLimit, match=r"expands to 2\d\d MiB"):
        extract(bomb)
