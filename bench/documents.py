"""Documents workload speed and memory, beside seed 001's own figures, as ratios.

    python -m bench.documents [--pages 10,50,200]

Seed 001 reported ~30 s for a 10-page PDF, ~2 min for 50 pages, ~10 min for
200 pages, and ~500 MB of worker memory per document. This measures, on this
machine:

* extraction + chunking alone (in this process): pages/s and MB/s;
* upload → ``ready`` through a real ``conveyor serve`` (HTTP upload, the
  ``documents.process`` task in a local worker process, polling ``/status``
  every 50 ms);
* the peak resident memory of the serve's worker processes while they process
  the document (sampled every 20 ms with psutil), the figure comparable to the
  seed's per-worker memory, beside the workers' resident memory when idle
  (after one warm-up document: the tokenizer and language model loaded).

Each figure is the median of ``--repeat`` runs (peak memory: the largest), so
one slow moment on a shared machine does not decide it. The aim for this
workload: a 200-page PDF ready in under 5 s, worker peak under 250 MB.
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

from bench.measure import PeakRss

REPO = Path(__file__).resolve().parents[1]
SEED_SECONDS = {10: 30.0, 50: 120.0, 200: 600.0}
SEED_MEMORY_MB = 500.0
AIM_SECONDS = 5.0
AIM_MEMORY_MB = 250.0


def make_pdf(path: Path, pages: int) -> Path:
    sys.path.insert(0, str(REPO))
    from tests.documents_samples import make_pdf as make

    return make(path, pages)


def pipeline_speed(pdf: Path, pages: int, repeat: int) -> tuple[float, float, float]:
    from conveyor.workloads.documents.chunking import chunk_text, encoding
    from conveyor.workloads.documents.extract import extract

    encoding()  # loaded once per worker process; not part of a document's cost
    runs = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        extracted = extract(pdf)
        chunk_text(extracted.text, extracted.pages)
        runs.append(time.perf_counter() - t0)
    seconds = statistics.median(runs)
    mb = pdf.stat().st_size / 1e6
    return seconds, pages / seconds, mb / seconds


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def end_to_end(pdfs: dict[int, Path], repeat: int) -> tuple[dict[int, tuple[float, float]], float]:
    """Per size: (median seconds upload → ready, peak worker RSS in MB); and the idle workers' RSS."""
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("CONVEYOR_")}
    env.update(PYTHONPATH=str(REPO), CONVEYOR_WORKLOADS="system,documents", CONVEYOR_CONCURRENCY="2")
    cwd = Path(tempfile.mkdtemp(prefix="conveyor-docs-bench-"))
    proc = subprocess.Popen(
        [sys.executable, "-m", "conveyor", "serve", "--port", str(port), "--log-level", "warning"],
        cwd=cwd,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    results: dict[int, tuple[float, float]] = {}
    idle = 0.0
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                httpx.get(url + "/health", timeout=1)
                break
            except httpx.TransportError:
                assert time.monotonic() < deadline, "serve did not start"
                time.sleep(0.1)
        with httpx.Client(base_url=url, timeout=120) as client:
            # Warm the workers once (tokenizer data, imports), as a long-running service would be.
            warm = client.post("/api/documents/upload", files={"file": ("warm.txt", b"warm up " * 100)}).json()
            _wait_ready(client, warm["document_id"])
            idle = PeakRss(proc.pid).now() / 1e6
            for pages, pdf in pdfs.items():
                runs, peak = [], 0
                for _ in range(repeat):
                    with PeakRss(proc.pid) as rss:
                        t0 = time.perf_counter()
                        r = client.post("/api/documents/upload", files={"file": (pdf.name, pdf.read_bytes())})
                        r.raise_for_status()
                        _wait_ready(client, r.json()["document_id"])
                        runs.append(time.perf_counter() - t0)
                    peak = max(peak, rss.peak)
                results[pages] = (statistics.median(runs), peak / 1e6)
    finally:
        proc.terminate()
        proc.wait(30)
    return results, idle


def _wait_ready(client: httpx.Client, document_id: str) -> None:
    while True:
        status = client.get(f"/api/documents/{document_id}/status").json()
        if status["status"] == "ready":
            return
        if status["status"] == "failed":
            raise RuntimeError(status)
        time.sleep(0.05)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pages", default="10,50,200")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    sizes = [int(p) for p in args.pages.split(",")]
    folder = Path(tempfile.mkdtemp(prefix="conveyor-docs-"))
    pdfs = {n: make_pdf(folder / f"book-{n}.pdf", n) for n in sizes}
    print(f"# documents  cores={os.cpu_count()}  (PDFs of ~400 words a page, made with fpdf2)")
    print("\n# extraction + chunking, in process")
    for n, pdf in pdfs.items():
        seconds, pps, mbps = pipeline_speed(pdf, n, args.repeat)
        print(
            f"{n:>4} pages ({pdf.stat().st_size / 1e6:5.2f} MB): {seconds:6.3f} s  {pps:7.1f} pages/s  {mbps:6.2f} MB/s"
        )
    print("\n# upload → ready through conveyor serve (ratio: seed's time ÷ ours)")
    results, idle = end_to_end(pdfs, args.repeat)
    print(f"     (worker RSS when idle after warm-up: {idle:.1f} MB)")
    for n, (seconds, peak_mb) in results.items():
        seed = SEED_SECONDS.get(n)
        ratio = f"{seed / seconds:7.1f}× faster than the seed's {seed:.0f} s" if seed else ""
        print(
            f"{n:>4} pages: {seconds:6.2f} s  {ratio}   worker peak RSS {peak_mb:6.1f} MB "
            f"({SEED_MEMORY_MB / peak_mb:.1f}× less than the seed's {SEED_MEMORY_MB:.0f} MB)"
        )
    if 200 in results:
        seconds, peak_mb = results[200]
        print(
            f"\n# aim: 200 pages ready < {AIM_SECONDS:g} s: {'met' if seconds < AIM_SECONDS else 'MISSED'}"
            f" ({seconds:.2f} s); worker peak < {AIM_MEMORY_MB:g} MB: "
            f"{'met' if peak_mb < AIM_MEMORY_MB else 'MISSED'} ({peak_mb:.1f} MB)"
        )


if __name__ == "__main__":
    main()
