"""Documents made on the spot for the documents tests: nothing is downloaded or committed as binary."""

from __future__ import annotations

from pathlib import Path

ITALIAN = (
    "La storia di Roma antica comincia, secondo la tradizione, nel 753 avanti Cristo. "
    "La città crebbe lungo il Tevere e divenne il centro di un impero che si estendeva dal Mediterraneo "
    "fino alla Britannia. I cittadini romani parlavano latino, costruivano strade, acquedotti e teatri, "
    "e le loro leggi influenzano ancora oggi il diritto di molti paesi europei. "
) * 60

ENGLISH = (
    "The quick brown fox jumps over the lazy dog while the scientists measure the speed of light. "
    "Every chapter of this report explains one experiment, its method and what the results mean. "
) * 80

MULTIBYTE = ("日本語の文章と中文的句子，还有 emoji 😀🚀 и русский текст, ελληνικά γράμματα. " * 400).strip()

WORDS = [
    "river",
    "mountain",
    "forest",
    "engine",
    "carbon",
    "harbour",
    "lantern",
    "quarry",
    "silver",
    "meadow",
    "orbit",
    "cascade",
    "pioneer",
    "harvest",
    "voltage",
    "canyon",
    "glacier",
]


def page_text(page: int) -> str:
    """About 400 words, different on every page, naming its page number."""
    words = [WORDS[(page * 7 + i * 3) % len(WORDS)] for i in range(400)]
    return f"Page {page} begins here. " + " ".join(words) + f". End of page {page}."


def make_pdf(path: Path, pages: int) -> Path:
    from fpdf import FPDF

    pdf = FPDF()
    pdf.set_font("Helvetica", size=9)
    for n in range(1, pages + 1):
        pdf.add_page()
        pdf.multi_cell(0, 4, page_text(n))
    pdf.output(str(path))
    return path


def make_encrypted_pdf(path: Path) -> Path:
    from pypdf import PdfReader, PdfWriter

    plain = make_pdf(path.with_name("plain-" + path.name), 2)
    writer = PdfWriter()
    for page in PdfReader(plain).pages:
        writer.add_page(page)
    writer.encrypt(user_password="s3cret", owner_password="owner")
    with open(path, "wb") as f:
        writer.write(f)
    return path


def make_docx(path: Path) -> Path:
    import docx

    document = docx.Document()
    document.add_heading("Quarterly report", level=1)
    for i in range(30):
        document.add_paragraph(f"Paragraph {i}: " + ENGLISH[:300])
    table = document.add_table(rows=2, cols=2)
    table.cell(0, 0).text = "metric"
    table.cell(0, 1).text = "value"
    table.cell(1, 0).text = "harbour lanterns"
    table.cell(1, 1).text = "42"
    document.save(str(path))
    return path


HTML = (
    "<!DOCTYPE html><html><head><title>Guide</title><style>body{color:red}</style>"
    "<script>var secret = 'not text';</script></head><body><h1>Field guide</h1>"
    + "".join(f"<p>Section {i}: {ENGLISH[:200]}</p>" for i in range(40))
    + "</body></html>"
)
