"""The core upload receiver: a form's file streamed to disk under a byte limit, its text fields bounded.

Each test feeds ``receive_upload`` real multipart bytes, a few at a time,
the way a request's stream delivers them.
"""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator, Iterable
from pathlib import Path
from typing import Any

import anyio
import pytest
from starlette.exceptions import HTTPException

from conveyor.errors import PayloadTooLarge, RequestError, UnsupportedMediaType
from conveyor.uploads import MAX_FIELD, Upload, clean_filename, receive_upload

BOUNDARY = "conveyor-test-boundary"
MULTIPART = f"multipart/form-data; boundary={BOUNDARY}"


def form(*, file: bytes | None = None, filename: str = "report.pdf", field: str = "file", **texts: str) -> bytes:
    """A multipart/form-data body: the text fields, then the file (when given), then the closing boundary."""
    parts = [
        f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'.encode()
        for name, value in texts.items()
    ]
    if file is not None:
        head = f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="{field}"; filename="{filename}"\r\n'
        parts.append(head.encode() + b"Content-Type: application/octet-stream\r\n\r\n" + file + b"\r\n")
    return b"".join(parts) + f"--{BOUNDARY}--\r\n".encode()


async def chunks(body: bytes, size: int = 1000) -> AsyncIterator[bytes]:
    """The body as a request's stream hands it over: a chunk at a time."""
    for i in range(0, len(body), size):
        yield body[i : i + size]


def receive(body: bytes | AsyncIterator[bytes], dest: Path, **options: Any) -> Upload:
    options.setdefault("max_bytes", 1024 * 1024)
    stream = chunks(body) if isinstance(body, bytes) else body
    content_type = options.pop("content_type", MULTIPART)
    return anyio.run(lambda: receive_upload(content_type, stream, dest, **options))


def files_under(folder: Path) -> list[Path]:
    return [p for p in folder.rglob("*") if p.is_file()]


def test_a_file_and_its_text_fields_are_received(tmp_path: Path) -> None:
    """The file lands at ``dest`` with its size and sha256; the text fields come back as strings."""
    content = bytes(range(256)) * 40  # 10 KiB: several chunks, every byte value
    dest = tmp_path / "new" / "upload.part"
    upload = receive(form(file=content, media_type="audio", options='{"denoise": true}'), dest)
    assert upload.path == dest
    assert dest.read_bytes() == content
    assert upload.size == len(content)
    assert upload.sha256 == hashlib.sha256(content).hexdigest()
    assert upload.filename == "report.pdf"
    assert upload.fields == {"media_type": "audio", "options": '{"denoise": true}'}


def test_only_the_text_fields_asked_for_are_kept(tmp_path: Path) -> None:
    """The rest are read past without being held, whatever their size."""
    body = form(file=b"data", input="in.wav", other="x" * (MAX_FIELD * 2))
    upload = receive(body, tmp_path / "u.part", keep_fields=("input",))
    assert upload.fields == {"input": "in.wav"}
    assert receive(body, tmp_path / "v.part", keep_fields=()).fields == {}


def test_a_file_over_the_limit_is_payload_too_large_and_leaves_no_partial_file(tmp_path: Path) -> None:
    """Refused at the first byte past the limit, with the limit named as the caller asked."""
    dest = tmp_path / "doc-1" / "doc-1.upload"
    with pytest.raises(PayloadTooLarge) as caught:
        receive(
            form(file=b"x" * 300_000),
            dest,
            max_bytes=256 * 1024,
            limit_name="upload limit",
            limit_details={"limit": "upload limit"},
        )
    assert caught.value.status_code == 413
    assert caught.value.message == "the upload is larger than the upload limit of 0.25 MiB"
    assert caught.value.details == {"max_bytes": 256 * 1024, "limit": "upload limit"}
    assert files_under(tmp_path) == []
    assert not dest.parent.exists()  # the folder made for it is gone too


def test_a_file_of_exactly_the_limit_is_received(tmp_path: Path) -> None:
    upload = receive(form(file=b"x" * 4096), tmp_path / "u.part", max_bytes=4096)
    assert upload.size == 4096


def test_a_folder_that_was_there_before_is_left_when_the_upload_fails(tmp_path: Path) -> None:
    """Only what the receiver made is removed: the partial file, and its folder if the receiver made it."""
    (tmp_path / "keep").mkdir()
    with pytest.raises(PayloadTooLarge):
        receive(form(file=b"x" * 5000), tmp_path / "keep" / "u.part", max_bytes=1000)
    assert (tmp_path / "keep").is_dir()
    assert files_under(tmp_path) == []


def test_a_file_already_at_dest_is_not_removed_by_a_form_that_never_wrote_it(tmp_path: Path) -> None:
    dest = tmp_path / "u.part"
    dest.write_bytes(b"someone else's")
    with pytest.raises(RequestError, match="no 'file' file field"):
        receive(form(input="x"), dest)
    assert dest.read_bytes() == b"someone else's"


def test_a_body_over_the_servers_limit_while_streaming_is_payload_too_large(tmp_path: Path) -> None:
    """The body-limit middleware raises a 413 HTTPException from the stream; it arrives as PayloadTooLarge."""

    async def cut_by_the_server() -> AsyncIterator[bytes]:
        yield form(file=b"x" * 50_000)[:20_000]
        error = HTTPException(413, "request body is larger than the limit of 0.01 MiB")
        error.details = {"max_bytes": 10_485}  # type: ignore[attr-defined]
        raise error

    with pytest.raises(PayloadTooLarge) as caught:
        receive(cut_by_the_server(), tmp_path / "u" / "u.part")
    assert caught.value.message == "request body is larger than the limit of 0.01 MiB"
    assert caught.value.details == {"max_bytes": 10_485}
    assert files_under(tmp_path) == []


def test_a_client_that_goes_away_mid_upload_leaves_no_file(tmp_path: Path) -> None:
    """The request is cancelled while the file streams in: the partial file goes with it."""

    async def stalls() -> AsyncIterator[bytes]:
        yield form(file=b"x" * 50_000)[:20_000]
        await anyio.sleep_forever()

    async def upload_then_leave() -> None:
        with anyio.move_on_after(0.2) as scope:
            await receive_upload(MULTIPART, stalls(), tmp_path / "u" / "u.part", max_bytes=1024 * 1024)
        assert scope.cancelled_caught

    anyio.run(upload_then_leave)
    assert files_under(tmp_path) == []


def test_a_body_cut_before_its_closing_boundary_is_a_request_error_and_leaves_no_file(tmp_path: Path) -> None:
    """The parser would accept the cut body; the file in it would be partial, so it is refused."""
    body = form(file=b"y" * 20_000)
    cut = body[: body.index(f"--{BOUNDARY}--".encode())]
    with pytest.raises(RequestError, match="ends before its closing boundary") as caught:
        receive(cut, tmp_path / "u" / "u.part")
    assert caught.value.status_code == 400
    assert files_under(tmp_path) == []


def test_a_body_that_is_not_multipart_at_all_is_a_request_error(tmp_path: Path) -> None:
    with pytest.raises(RequestError, match="could not be read"):
        receive(b"this is not a multipart body\r\n" * 10, tmp_path / "u.part")
    with pytest.raises(RequestError, match="could not be read: Boundary length 300 exceeds"):  # not a 500
        receive(form(file=b"z"), tmp_path / "u.part", content_type=f"multipart/form-data; boundary={'b' * 300}")
    assert files_under(tmp_path) == []


def test_a_form_without_the_file_field_is_a_request_error(tmp_path: Path) -> None:
    """Unless the file is optional: then the upload has no path, and no folder was made for it."""
    body = form(file=b"abc", field="notfile", input="in.wav")
    with pytest.raises(RequestError, match="the form has no 'file' file field") as caught:
        receive(body, tmp_path / "u" / "u.part")
    assert caught.value.status_code == 400
    upload = receive(body, tmp_path / "u" / "u.part", require_file=False)
    assert upload.path is None
    assert upload.size == 0
    assert upload.fields == {"notfile": "abc", "input": "in.wav"}
    assert not (tmp_path / "u").exists()


def test_the_file_field_can_have_another_name(tmp_path: Path) -> None:
    upload = receive(form(file=b"abc", field="document"), tmp_path / "u.part", file_field="document")
    assert upload.path is not None
    assert upload.path.read_bytes() == b"abc"


def test_a_text_field_over_its_bound_is_a_request_error(tmp_path: Path) -> None:
    with pytest.raises(RequestError, match="the form field 'options' is longer than 65536 bytes"):
        receive(form(file=b"abc", options="o" * (MAX_FIELD + 1)), tmp_path / "u.part")
    with pytest.raises(RequestError, match="longer than 10 bytes"):
        receive(form(input="0123456789!"), tmp_path / "u.part", max_field=10, require_file=False)
    assert files_under(tmp_path) == []


def test_a_content_type_that_is_not_multipart_is_415_and_one_without_a_boundary_is_400(tmp_path: Path) -> None:
    with pytest.raises(UnsupportedMediaType, match="multipart/form-data in the field 'file'") as caught:
        receive(b"{}", tmp_path / "u.part", content_type="application/json")
    assert caught.value.status_code == 415
    with pytest.raises(UnsupportedMediaType, match=r"^send it as a form$"):
        receive(b"{}", tmp_path / "u.part", content_type="text/plain", not_multipart="send it as a form")
    with pytest.raises(RequestError, match="no boundary"):
        receive(form(file=b"abc"), tmp_path / "u.part", content_type="multipart/form-data")


def test_the_name_the_client_sent_is_cleaned_and_never_the_path(tmp_path: Path) -> None:
    dest = tmp_path / "u" / "u.part"
    upload = receive(form(file=b"abc", filename="../../etc/passwd"), dest)
    assert upload.filename == "passwd"
    assert upload.path == dest
    assert files_under(tmp_path) == [dest]
    assert receive(form(file=b"abc", filename=""), dest).filename == "upload"


@pytest.mark.parametrize(
    ("given", "cleaned"),
    [
        ("../../etc/passwd", "passwd"),
        ("/etc/passwd", "passwd"),
        ("/abs/x.txt", "x.txt"),
        ("..\\..\\windows\\win.ini", "win.ini"),
        ("C:\\Users\\me\\report.pdf", "report.pdf"),
        ("evil\x00name.txt", "evilname.txt"),
        ("tab\tand\nnewline.txt", "tabandnewline.txt"),
        ("invoice\u202efdp.exe", "invoicefdp.exe"),  # a right-to-left override is a control too
        ("..", "upload"),
        (".hidden", "hidden"),
        ("dir/", "upload"),
        ("  spaced name.txt  ", "spaced name.txt"),
        ("a<b>c:d|e?*.txt", "a_b_c_d_e_.txt"),
        ("résumé.pdf", "résumé.pdf"),
        ("", "upload"),
        (None, "upload"),
    ],
)
def test_hostile_file_names_are_cleaned(given: str | None, cleaned: str) -> None:
    assert clean_filename(given) == cleaned


def test_a_cleaned_name_is_one_short_path_component(tmp_path: Path) -> None:
    """At most 120 characters and 240 bytes, so it can be a file's name on any file system."""
    assert clean_filename("a" * 500 + ".txt") == "a" * 120
    long = clean_filename("文" * 200 + ".txt")
    assert len(long.encode()) <= 240
    assert long == "文" * 80
    (tmp_path / long).write_bytes(b"")  # a name the file system takes


def test_the_default_name_is_the_callers(tmp_path: Path) -> None:
    assert clean_filename("", default="media") == "media"
    assert clean_filename("///", default="media") == "media"
    assert clean_filename("\x00\x01", default="media") == "media"


def test_only_the_first_file_part_is_the_file(tmp_path: Path) -> None:
    second = f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="file"; filename="two"\r\n\r\nsecond\r\n'
    body = form(file=b"first", filename="one").replace(f"--{BOUNDARY}--".encode(), second.encode(), 1)
    body += f"--{BOUNDARY}--\r\n".encode()
    upload = receive(body, tmp_path / "u.part")
    assert (upload.filename, upload.size) == ("one", 5)
    assert (tmp_path / "u.part").read_bytes() == b"first"


def chunked(parts: Iterable[bytes]) -> AsyncIterator[bytes]:
    async def gen() -> AsyncIterator[bytes]:
        for part in parts:
            yield part

    return gen()


def test_a_file_in_one_byte_chunks_is_the_same_file(tmp_path: Path) -> None:
    """Boundaries and headers split anywhere across chunks make no difference."""
    content = b"--not-the-boundary\r\n" * 50
    body = form(file=content, note="n")
    upload = receive(chunked(body[i : i + 1] for i in range(len(body))), tmp_path / "u.part")
    assert (tmp_path / "u.part").read_bytes() == content
    assert upload.fields == {"note": "n"}
