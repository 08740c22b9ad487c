"""Hostile files built here (no downloads): decompression and page-work bombs are refused, naming the limit."""

from __future__ import annotations

import io
import zipfile
import zlib
from pathlib import Path

import pytest

from conveyor.workloads.documents.extract import ExtractionLimit, ExtractLimits, extract
from tests.documents_samples import make_docx, make_pdf


def shared_stream_pdf(path: Path, pages: int, stream_mib: int) -> Path:
    """A small PDF whose ``pages`` pages all draw one content stream that inflates to ``stream_mib`` MiB."""
    content = zlib.compress(b"0 0 m\n" * (stream_mib * 1024 * 1024 // 6), 9)
    kids = " ".join(f"{3 + i} 0 R" for i in range(pages))
    stream_id = 3 + pages
    page = f"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents {stream_id} 0 R /Resources << >> >>"
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        f"<< /Type /Pages /Kids [{kids}] /Count {pages} >>".encode(),
        *[page.encode() for _ in range(pages)],
        f"<< /Length {len(content)} /Filter /FlateDecode >>\nstream\n".encode() + content + b"\nendstream",
    ]
    out = io.BytesIO()
    out.write(b"%PDF-1.4\n")
    offsets = []
    for n, body in enumerate(objects, start=1):
        offsets.append(out.tell())
        out.write(f"{n} 0 obj\n".encode() + body + b"\nendobj\n")
    xref = out.tell()
    out.write(f"xref\n0 {len(objects) + 1}\n0000000000 65535 f \n".encode())
    for offset in offsets:
        out.write(f"{offset:010d} 00000 n \n".encode())
    out.write(f"trailer\n<< /Size {len(objects) + 1} /Root 1 0 R >>\nstartxref\n{xref}\n%%EOF\n".encode())
    path.write_bytes(out.getvalue())
    return path


def test_a_pdf_whose_pages_share_one_huge_stream_fails_on_the_content_limit(tmp_path: Path) -> None:
    """92 KB that inflate to 20 MiB per page once held a worker for an hour; now the sum is capped."""
    pdf = shared_stream_pdf(tmp_path / "shared.pdf", pages=50, stream_mib=20)
    assert pdf.stat().st_size < 200_000
    with pytest.raises(ExtractionLimit, match="content limit of 128 MiB") as info:
        extract(pdf)
    assert "by page 7 of 50" in str(info.value)
    assert info.value.code == "extraction_limit"


def test_a_pdf_past_the_page_limit_is_refused_before_reading(tmp_path: Path) -> None:
    pdf = make_pdf(tmp_path / "long.pdf", 4)
    with pytest.raises(ExtractionLimit, match="4 pages, more than the page limit of 3"):
        extract(pdf, limits=ExtractLimits(pdf_max_pages=3))
    assert extract(pdf, limits=ExtractLimits(pdf_max_pages=4)).pages[-1][0] == 4


def test_a_pdf_past_its_time_budget_stops_naming_the_time_limit(tmp_path: Path) -> None:
    pdf = make_pdf(tmp_path / "slow.pdf", 2)
    with pytest.raises(ExtractionLimit, match="time limit of 0 s"):
        extract(pdf, limits=ExtractLimits(seconds=0))


def _docx_with(path: Path, extra: dict[str, bytes]) -> Path:
    """A real DOCX with extra members added (python-docx ignores files it does not know)."""
    plain = make_docx(path.with_name("plain-" + path.name))
    with zipfile.ZipFile(plain) as src, zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as dst:
        for info in src.infolist():
            dst.writestr(info, src.read(info))
        for name, data in extra.items():
            dst.writestr(name, data)
    return path


def test_a_docx_that_inflates_past_200_mib_over_its_members_is_refused(tmp_path: Path) -> None:
    """No single member is past the limit: the sum over every member is."""
    chunk = b"\0" * (70 * 1024 * 1024)
    docx = _docx_with(tmp_path / "bomb.docx", {f"word/media/part{i}.bin": chunk for i in range(3)})
    assert docx.stat().st_size < 1_000_000
    with pytest.raises(ExtractionLimit, match="decompressed size limit of 200 MiB"):
        extract(docx)


def test_a_docx_member_compressed_past_the_ratio_limit_is_refused(tmp_path: Path) -> None:
    docx = _docx_with(tmp_path / "dense.docx", {"word/media/dense.bin": b"\0" * (4 * 1024 * 1024)})
    with pytest.raises(ExtractionLimit, match="compression ratio limit of 200"):
        extract(docx)
    plain = _docx_with(tmp_path / "ok.docx", {})
    assert "Quarterly report" in extract(plain).text
