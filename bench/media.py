"""Media workload speed and memory, beside the tools a team would otherwise call directly.

    python -m bench.media [--seconds 60,600] [--megapixels 2,12] [--repeat 3]

Audio: the whole correction (decode, DC, high-pass, spectral gating,
BS.1770 measurement before and after, loudness to -16 LUFS under a -1 dBTP
true-peak ceiling, 24-bit WAV out) on noisy speech at 48 kHz stereo, as
seconds of audio per second of wall time (x real time), beside ffmpeg's
two-pass ``loudnorm`` (measure, then normalise, same file, same target) which
does less (no noise reduction, no high-pass). Each run is its own process, whose
resident memory is sampled every 10 ms (the peak includes the interpreter and its imports).

Image: ``correct_image`` (EXIF orientation, white balance, denoise, CLAHE,
JPEG out) in megapixels per second, beside the same Pillow and OpenCV calls
made directly in a row with no measurements or checks: the ratio is what the
workload's measuring and bookkeeping cost.

The aim: audio at 20x real time or faster on this machine.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
AIM_REALTIME = 20.0


def make_audio(dest: Path, seconds: float) -> Path:
    """Noisy speech (flite, repeated with pauses) at 48 kHz stereo, about -30 LUFS."""
    import numpy as np
    import soundfile as sf
    import soxr

    voice_file = dest.with_name("voice.wav")
    subprocess.run(
        ["flite", "-t", "The quick brown fox jumps over the lazy dog. Conveyor corrects recordings.", "-o",
         str(voice_file)],
        check=True,
    )  # fmt: skip
    voice, rate = sf.read(str(voice_file), dtype="float32", always_2d=True)
    voice = soxr.resample(voice, rate, 48000)
    pause = np.zeros((24000, 1), dtype=np.float32)
    unit = np.concatenate([voice, pause])
    reps = int(seconds * 48000 / unit.shape[0]) + 1
    mono = np.tile(unit, (reps, 1))[: int(seconds * 48000)]
    rng = np.random.default_rng(1)
    mono = mono * 0.05 + rng.standard_normal(mono.shape).astype(np.float32) * 0.003
    stereo = np.concatenate([mono, mono * 0.8], axis=1)
    sf.write(str(dest), stereo, 48000, subtype="PCM_16")
    return dest


def make_image(dest: Path, megapixels: float) -> Path:
    import cv2
    import numpy as np
    import skimage.data
    from PIL import Image

    side = int((megapixels * 1e6 / 1.5) ** 0.5)
    rgb = cv2.resize(skimage.data.astronaut(), (int(side * 1.5), side), interpolation=cv2.INTER_CUBIC)
    rng = np.random.default_rng(2)
    cast = np.clip(rgb * np.array([1.15, 1.0, 0.8]) + rng.normal(0, 5, rgb.shape), 0, 255).astype(np.uint8)
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(cast).save(dest, quality=92, exif=exif.tobytes())
    return dest


def _child(argv: list[str]) -> None:
    """One measured run in this process; prints JSON with seconds and peak RSS."""
    kind, src, out = argv[0], Path(argv[1]), Path(argv[2])
    argv = [*argv, "-"]
    sys.path.insert(0, str(REPO))
    t0 = time.perf_counter()
    if kind == "audio":
        from conveyor.workloads.media.audio import AudioOptions, correct_audio

        t0 = time.perf_counter()
        _, report = correct_audio(src, out, "bench", "wav", AudioOptions(), target=-16.0, ceiling=-1.0)
        extra = {"after": report.after}
    elif kind == "image":
        from conveyor.workloads.media.image import ImageOptions, correct_image

        t0 = time.perf_counter()
        _, ireport = correct_image(src, out, "bench", "jpeg", ImageOptions(), max_megapixels=100)
        extra = {"after": ireport.after, "steps": ireport.steps}
    else:
        t0 = time.perf_counter()
        extra = _direct_image(src, out, denoise=argv[3] == "denoise")
    seconds = time.perf_counter() - t0
    print(json.dumps({"seconds": seconds, **extra}))


def _direct_image(src: Path, out: Path, *, denoise: bool) -> dict[str, object]:
    """The same library calls as correct_image, in a row, with nothing measured."""
    import cv2
    import numpy as np
    from PIL import Image, ImageOps

    with Image.open(src) as img:
        rgb = np.asarray(ImageOps.exif_transpose(img).convert("RGB"))
    lab = cv2.cvtColor(rgb, cv2.COLOR_RGB2LAB).astype(np.float32)
    light = lab[..., 0] / 255.0
    for ch in (1, 2):
        lab[..., ch] -= (float(lab[..., ch].mean()) - 128.0) * light * 1.1
    rgb = cv2.cvtColor(np.clip(lab, 0, 255).astype(np.uint8), cv2.COLOR_LAB2RGB)
    if denoise and rgb.shape[0] * rgb.shape[1] > 4_000_000:
        rgb = cv2.bilateralFilter(rgb, 5, 24, 3)
    elif denoise:
        rgb = cv2.fastNlMeansDenoisingColored(rgb, None, 6, 6, 3, 9)
    lab8 = cv2.cvtColor(rgb, cv2.COLOR_RGB2LAB)
    lab8[..., 0] = cv2.createCLAHE(clipLimit=2.0, tileGridSize=(8, 8)).apply(lab8[..., 0])
    rgb = cv2.cvtColor(lab8, cv2.COLOR_LAB2RGB)
    out.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rgb).save(out / "direct.jpg", quality=90)
    return {}


def _measured(cmd: list[str]) -> tuple[float, float, str, str]:
    """Run ``cmd``; its wall seconds, its peak resident memory (MB, sampled every 10 ms) and its output.

    Sampled, not ``ru_maxrss``: a forked child's high-water mark starts at its
    parent's, which would report the benchmark's own memory for every run.
    """
    import psutil

    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=out, stderr=err, text=True, cwd=REPO)
        watched = psutil.Process(proc.pid)
        peak = 0
        while proc.poll() is None:
            with contextlib.suppress(psutil.Error):
                peak = max(peak, watched.memory_info().rss)
            time.sleep(0.01)
        seconds = time.perf_counter() - t0
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read(), err.read()
    if proc.returncode:
        raise RuntimeError(f"{cmd[:3]} failed: {stderr[-2000:]}")
    return seconds, peak / (1024 * 1024), stdout, stderr


def run_child(kind: str, src: Path, out: Path, flags: str = "") -> dict[str, float]:
    """One run in a fresh interpreter: seconds timed inside it (imports excluded), peak RSS of the process."""
    _, peak, stdout, _ = _measured([sys.executable, "-m", "bench.media", "--child", kind, str(src), str(out), flags])
    data: dict[str, float] = json.loads(stdout.strip().splitlines()[-1])
    data["rss_mb"] = peak
    return data


def ffmpeg_two_pass(src: Path, out: Path) -> tuple[float, float]:
    """ffmpeg loudnorm, pass 1 then pass 2 (linear), to -16 LUFS / -1 dBTP; seconds and the larger peak RSS."""
    args = ["ffmpeg", "-hide_banner", "-nostdin", "-y", "-i", str(src)]
    s1, r1, _, err = _measured([*args, "-af", "loudnorm=I=-16:TP=-1:LRA=11:print_format=json", "-f", "null", "-"])
    m = json.loads(err[err.rindex("{") : err.rindex("}") + 1])
    ln = (
        f"loudnorm=I=-16:TP=-1:LRA=11:measured_I={m['input_i']}:measured_TP={m['input_tp']}"
        f":measured_LRA={m['input_lra']}:measured_thresh={m['input_thresh']}:offset={m['target_offset']}:linear=true"
    )
    s2, r2, _, _ = _measured([*args, "-af", ln, "-ar", "48000", str(out)])
    return s1 + s2, max(r1, r2)


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        _child(sys.argv[2:])
        return
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", default="60,600")
    parser.add_argument("--megapixels", default="2,12")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    sys.path.insert(0, str(REPO))
    from tests.workloads.media.samples import ebur128

    with tempfile.TemporaryDirectory(prefix="bench-media-") as tmp:
        base = Path(tmp)
        load = os.getloadavg()[0]
        print(f"# media  repeat={args.repeat}  cores={os.cpu_count()}  load={load:.1f}  (median wall; peak RSS: max)")
        for seconds in [float(s) for s in args.seconds.split(",") if s]:
            src = make_audio(base / f"speech-{seconds:g}.wav", seconds)
            ours = [run_child("audio", src, base / "out") for _ in range(args.repeat)]
            theirs = [ffmpeg_two_pass(src, base / "ffmpeg.wav") for _ in range(args.repeat)]
            ours_s = statistics.median(r["seconds"] for r in ours)
            ff_s = statistics.median(t[0] for t in theirs)
            ours_mb = max(r["rss_mb"] for r in ours)
            ff_mb = max(t[1] for t in theirs)
            meter = ebur128(base / "out" / "bench.wav")
            print(
                f"audio {seconds:>5g} s 48k stereo  conveyor {seconds / ours_s:6.1f}x real time  peak {ours_mb:6.0f} MB"
                f"  (ebur128: {meter['I']:.1f} LUFS, TP {meter['TP']:.1f} dBTP)"
            )
            print(
                f"{'':25}ffmpeg loudnorm 2-pass {seconds / ff_s:6.1f}x real time  peak {ff_mb:6.0f} MB"
                f"   ratio conveyor/ffmpeg {ff_s / ours_s:.2f}x speed"
                f"   aim >= {AIM_REALTIME:g}x: {'met' if seconds / ours_s >= AIM_REALTIME else 'NOT met'}"
            )
        for mp in [float(m) for m in args.megapixels.split(",") if m]:
            src = make_image(base / f"photo-{mp:g}.jpg", mp)
            ours = [run_child("image", src, base / "iout") for _ in range(args.repeat)]
            steps: list[str] = list(ours[0].get("steps", []))  # type: ignore[call-overload]
            denoised = any(step.startswith("denoise") for step in steps)
            flag = "denoise" if denoised else "-"
            direct = [run_child("direct", src, base / "dout", flag) for _ in range(args.repeat)]
            o = statistics.median(r["seconds"] for r in ours)
            d = statistics.median(r["seconds"] for r in direct)
            print(
                f"image {mp:>4g} MP  conveyor {mp / o:6.2f} MP/s  peak {max(r['rss_mb'] for r in ours):5.0f} MB"
                f"   direct calls {mp / d:6.2f} MP/s  peak {max(r['rss_mb'] for r in direct):5.0f} MB"
                f"   ratio {d / o:.2f}x"
            )


if __name__ == "__main__":
    main()
