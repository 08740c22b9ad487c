"""Audio correction: DC offset, rumble high-pass, spectral-gating noise reduction,
loudness normalisation to a target (EBU R128) under a true-peak ceiling, and the
optional silence trim, resample and channel layout fix.

Everything runs on float32 arrays of shape ``(samples, channels)``; the long
steps work a slice at a time so memory stays near the size of the decoded file.
"""

from __future__ import annotations

import math
import subprocess
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import scipy.fft
import soundfile as sf
import soxr
from numpy.typing import NDArray
from pydantic import BaseModel, ConfigDict, Field
from scipy.ndimage import minimum_filter1d, uniform_filter, uniform_filter1d
from scipy.signal import butter, sosfilt

from conveyor.workloads.media import loudness
from conveyor.workloads.media.errors import MediaError

__all__ = ["AudioOptions", "AudioReport", "correct_audio", "decode", "encode", "limit_true_peak", "normalise"]

Audio = NDArray[np.float32]
Progress = Callable[[float, str], None]

#: containers soundfile writes itself; m4a goes through ffmpeg's AAC encoder
_SOUNDFILE_FORMATS = {
    "wav": ("WAV", "PCM_24"),
    "flac": ("FLAC", "PCM_24"),
    "ogg": ("OGG", "VORBIS"),
    "mp3": ("MP3", None),
}
AUDIO_FORMATS = ("wav", "flac", "ogg", "mp3", "m4a")


class AudioOptions(BaseModel):
    """What a client may ask of an audio correction (every field optional)."""

    model_config = ConfigDict(extra="forbid")

    target_lufs: float | None = Field(default=None, ge=-70.0, le=-5.0, description="integrated loudness target")
    true_peak_db: float | None = Field(default=None, ge=-20.0, le=0.0, description="true-peak ceiling, dBTP")
    highpass_hz: float = Field(default=80.0, ge=0.0, le=500.0, description="rumble high-pass; 0 turns it off")
    denoise: bool = True
    #: how far the gated noise is pulled down: 1.0 removes it all (artefacts), 0.0 does nothing
    denoise_strength: float = Field(default=0.9, ge=0.0, le=1.0)
    trim_silence: bool = False
    sample_rate: int | None = Field(default=None, ge=8000, le=192000)
    channels: Literal[1, 2] | None = None
    format: Literal["wav", "flac", "ogg", "mp3", "m4a"] | None = None


@dataclass
class AudioReport:
    before: dict[str, float]
    after: dict[str, float] = field(default_factory=dict)
    steps: list[str] = field(default_factory=list)
    dc_offset: list[float] = field(default_factory=list)
    sample_rate: dict[str, int] = field(default_factory=dict)
    channels: dict[str, int] = field(default_factory=dict)
    gain_db: float = 0.0
    limited: bool = False

    def as_dict(self) -> dict[str, Any]:
        return {
            "before": self.before,
            "after": self.after,
            "steps": self.steps,
            "dc_offset": self.dc_offset,
            "sample_rate": self.sample_rate,
            "channels": self.channels,
            "gain_db": round(self.gain_db, 2),
            "true_peak_limited": self.limited,
        }


# -- decode / encode --------------------------------------------------------------------


def duration_of(path: Path, fmt: str, *, ffprobe: str = "ffprobe") -> float:
    """Seconds, read from the header without decoding the samples."""
    if fmt in ("wav", "flac", "ogg", "mp3"):
        try:
            info = sf.info(str(path))
            return float(info.frames) / float(info.samplerate)
        except (RuntimeError, sf.LibsndfileError):
            pass  # a header libsndfile does not know: ask ffprobe
    from conveyor.workloads.media.probe import ffprobe as run_ffprobe

    probe = run_ffprobe(path, binary=ffprobe)
    if not probe.has_audio:
        raise MediaError("the file has no audio stream")
    return probe.duration


def decode(path: Path, *, ffmpeg: str = "ffmpeg") -> tuple[Audio, int]:
    """Samples as float32 ``(n, channels)`` and the rate; MediaError naming the decoder's complaint."""
    try:
        data, rate = sf.read(str(path), dtype="float32", always_2d=True)
        return np.ascontiguousarray(data), int(rate)
    except (RuntimeError, sf.LibsndfileError) as e:
        sf_error = str(e)
    # m4a/AAC and anything libsndfile refuses: let ffmpeg decode to raw float samples
    from conveyor.workloads.media.probe import ffprobe

    try:
        probe = ffprobe(path, binary=ffmpeg.replace("ffmpeg", "ffprobe"))
    except MediaError as e:
        raise MediaError(f"{e} (libsndfile: {sf_error})") from None
    if not probe.has_audio or probe.channels < 1 or probe.sample_rate < 1:
        raise MediaError(f"the file has no audio stream the decoder can read (libsndfile: {sf_error})")
    run = subprocess.run(
        [
            ffmpeg,
            "-v",
            "error",
            "-nostdin",
            "-i",
            str(path),
            "-map",
            "0:a:0",
            "-f",
            "f32le",
            "-acodec",
            "pcm_f32le",
            "-",
        ],
        capture_output=True,
        check=False,
    )
    if run.returncode != 0:
        err = run.stderr.decode("utf-8", "replace").strip().splitlines()
        raise MediaError(f"the audio cannot be decoded: {err[-1] if err else 'ffmpeg failed'}")
    samples = np.frombuffer(run.stdout, dtype=np.float32)
    usable = samples.size - samples.size % probe.channels
    return samples[:usable].reshape(-1, probe.channels).copy(), probe.sample_rate


def encode(x: Audio, rate: int, dest: Path, fmt: str, *, ffmpeg: str = "ffmpeg") -> None:
    """Write ``x`` as ``fmt``; lossless formats keep 24 bits."""
    if fmt in _SOUNDFILE_FORMATS:
        major, subtype = _SOUNDFILE_FORMATS[fmt]
        if fmt in ("ogg", "mp3") and rate not in (8000, 11025, 12000, 16000, 22050, 24000, 32000, 44100, 48000):
            raise MediaError(f"{fmt} cannot hold a {rate} Hz signal; ask for sample_rate 44100 or 48000")
        sf.write(str(dest), x, rate, format=major, subtype=subtype)
        return
    # m4a: float samples piped into ffmpeg's AAC encoder; the ipod muxer writes the M4A brand
    run = subprocess.run(
        [ffmpeg, "-v", "error", "-nostdin", "-y", "-f", "f32le", "-ar", str(rate), "-ac", str(x.shape[1]),
         "-i", "-", "-c:a", "aac", "-b:a", "192k", "-movflags", "+faststart", "-f", "ipod", str(dest)],
        input=np.ascontiguousarray(x, dtype=np.float32).tobytes(),
        capture_output=True,
        check=False,
    )  # fmt: skip
    if run.returncode != 0:
        raise MediaError(f"the AAC encoder failed: {run.stderr.decode('utf-8', 'replace').strip()[-300:]}")


# -- steps ------------------------------------------------------------------------------


def remove_dc(x: Audio) -> tuple[Audio, list[float]]:
    """Each channel's mean taken out, in place (the array is the correction's own copy)."""
    offset = x.mean(axis=0, dtype=np.float64)
    x -= offset.astype(np.float32)
    return x, [round(float(v), 6) for v in offset]


def fix_channels(x: Audio, wanted: int | None) -> tuple[Audio, str | None]:
    """A stereo file with one dead channel gets the live one on both; then up/down-mix to ``wanted``."""
    note = None
    if x.shape[1] == 2:
        rms = np.sqrt(np.mean(np.square(x, dtype=np.float64), axis=0))
        loud, quiet = (0, 1) if rms[0] >= rms[1] else (1, 0)
        # 40 dB down is a channel nobody meant to leave empty (a mono mic on one side of a stereo input)
        if rms[loud] > 1e-6 and rms[quiet] < rms[loud] * 0.01:
            x = np.repeat(x[:, loud : loud + 1], 2, axis=1)
            note = f"channel {quiet + 1} was silent: copied channel {loud + 1} to both"
    if wanted is not None and wanted != x.shape[1]:
        if wanted == 1:
            x = x.mean(axis=1, keepdims=True, dtype=np.float32)
        else:
            x = np.repeat(x[:, :1], 2, axis=1) if x.shape[1] == 1 else x[:, :2].copy()
    return np.ascontiguousarray(x, dtype=np.float32), note


def resample(x: Audio, rate: int, new_rate: int) -> Audio:
    if rate == new_rate:
        return x
    return np.ascontiguousarray(soxr.resample(x, rate, new_rate, quality="HQ"), dtype=np.float32)


def highpass(x: Audio, rate: int, hz: float) -> Audio:
    """4th-order Butterworth high-pass: takes rumble and handling noise out below ``hz``."""
    sos = butter(4, hz, btype="highpass", fs=rate, output="sos")
    out = np.empty_like(x)
    step = 1 << 18  # a slice at a time: sosfilt works in float64, which would double the file in memory
    for c in range(x.shape[1]):
        zi = np.zeros((sos.shape[0], 2))
        for start in range(0, x.shape[0], step):
            y, zi = sosfilt(sos, x[start : start + step, c], zi=zi)
            out[start : start + step, c] = y
    return out


def _frames(n: int, rate: int) -> tuple[int, int]:
    """~32 ms Hann windows at 50 % overlap (the synthesis divides by the summed window, so any overlap works)."""
    size = 1 << max(8, round(math.log2(rate * 0.032)))
    return size, size // 2


def _stft(x: NDArray[np.float32], size: int, hop: int, window: NDArray[np.float32]) -> NDArray[np.complex64]:
    frames = 1 + (x.size - size) // hop
    idx = np.arange(size)[None, :] + hop * np.arange(frames)[:, None]
    return np.asarray(scipy.fft.rfft(x[idx] * window, axis=1), dtype=np.complex64)


def _istft(
    spec: NDArray[np.complex64], size: int, hop: int, window: NDArray[np.float32], n: int
) -> NDArray[np.float32]:
    frames = scipy.fft.irfft(spec, n=size, axis=1).astype(np.float32) * window
    out = np.zeros(n, dtype=np.float32)
    norm = np.zeros(n, dtype=np.float32)
    w2 = window * window
    for i in range(frames.shape[0]):
        s = i * hop
        out[s : s + size] += frames[i]
        norm[s : s + size] += w2
    return np.asarray(out / np.maximum(norm, np.float32(1e-6)), dtype=np.float32)


def noise_profile(x: Audio, rate: int) -> tuple[NDArray[np.float32], NDArray[np.float32]]:
    """Per frequency bin, the noise's mean and spread in dB, from the quietest fifth of the frames.

    At most 1500 frames spread over the file are looked at, so a long file
    costs no more than a short one.
    """
    size, hop = _frames(x.shape[0], rate)
    window = np.hanning(size + 1)[:-1].astype(np.float32)
    mono = x.mean(axis=1, dtype=np.float32)
    bins = size // 2 + 1
    if mono.size < size * 2:
        return np.full(bins, -200.0, dtype=np.float32), np.zeros(bins, dtype=np.float32)
    frames = 1 + (mono.size - size) // hop
    pick = np.linspace(0, frames - 1, num=min(frames, 1500)).astype(np.int64)
    idx = np.arange(size)[None, :] + hop * pick[:, None]
    db = 20.0 * np.log10(np.abs(scipy.fft.rfft(mono[idx] * window, axis=1)) + 1e-9)
    energy = db.mean(axis=1)
    quiet = db[energy <= np.percentile(energy, 20)]
    return quiet.mean(axis=0).astype(np.float32), quiet.std(axis=0).astype(np.float32)


def denoise(x: Audio, rate: int, strength: float, *, check: Callable[[], None] | None = None) -> Audio:
    """Spectral gating: bins that stay at the noise's level are pulled down by ``strength``.

    In each bin the gate opens 1.5 standard deviations above the noise's mean
    level (noisereduce's rule); the open/shut mask is smoothed over ~100 Hz and ~30 ms so it does not flutter
    ("musical noise"). Worked 20 s at a time with a margin, so memory is flat.
    """
    size, hop = _frames(x.shape[0], rate)
    window = np.hanning(size + 1)[:-1].astype(np.float32)
    mean_db, std_db = noise_profile(x, rate)
    if float(mean_db.max()) <= -190.0:
        return x
    open_db = mean_db + 1.5 * np.maximum(std_db, 1.0)
    open_power = (10.0 ** (open_db / 10.0)).astype(np.float32)
    floor = 1.0 - strength
    freq_smooth = max(1, round(100.0 / (rate / size)))
    out = np.empty_like(x)
    block = int(rate * 20)
    margin = size * 4
    n = x.shape[0]
    for start in range(0, n, block):
        if check is not None:
            check()
        stop = min(n, start + block)
        lo, hi = max(0, start - margin), min(n, stop + margin)
        for c in range(x.shape[1]):
            seg = x[lo:hi, c]
            padded = np.pad(seg, (size, size + hop - (seg.size % hop)))
            spec = _stft(padded, size, hop, window)
            power = spec.real * spec.real + spec.imag * spec.imag  # compared as power: no log per bin
            mask = (power > open_power).astype(np.float32)
            mask = uniform_filter(mask, size=(3, freq_smooth), mode="nearest")
            spec *= (floor + (1.0 - floor) * mask).astype(np.float32)
            clean = _istft(spec, size, hop, window, padded.size)[size : size + seg.size]
            out[start:stop, c] = clean[start - lo : start - lo + (stop - start)]
    return out


def trim_silence(x: Audio, rate: int) -> tuple[Audio, float]:
    """Leading and trailing stretches below the quiet parts' level (+10 dB), keeping 100 ms each side."""
    size = max(1, int(rate * 0.01))
    frames = x.shape[0] // size
    if frames < 3:
        return x, 0.0
    rms = np.sqrt(np.mean(np.square(x[: frames * size]).mean(axis=1).reshape(frames, size), axis=1))
    level = np.percentile(rms, 10)
    threshold = max(level * 3.16, 10 ** (-60 / 20))
    loud = np.flatnonzero(rms > threshold)
    if loud.size == 0:
        return x, 0.0
    keep = 10  # frames of 10 ms
    first = max(0, (loud[0] - keep)) * size
    last = min(x.shape[0], (loud[-1] + 1 + keep) * size)
    trimmed = x[first:last]
    return np.ascontiguousarray(trimmed), (x.shape[0] - trimmed.shape[0]) / rate


def limit_true_peak(
    x: Audio, rate: int, ceiling_db: float, *, peaks: NDArray[np.float32] | None = None, gain: float = 1.0
) -> tuple[Audio, bool]:
    """A look-ahead brick-wall limiter on the 4x oversampled peaks.

    The gain each sample needs is spread by a minimum filter (look-ahead and
    hold, 2 ms each side) and smoothed by a box of the same reach; since the
    box is no wider than the spread, the smoothed gain is never above what
    any sample within it needs, so no peak passes the ceiling. Windows this
    short let a heavily limited file (a recording clipped at the source, or
    speech with a high crest factor) still reach its loudness target.

    ``x * gain`` is what is limited; ``peaks`` (of ``x``, from
    ``oversampled_peaks``) may be passed so a gain search oversamples once.
    """
    ceiling = 10.0 ** ((ceiling_db - 0.05) / 20.0)
    # detection at soxr's medium quality: the result is measured at high quality after, and settled
    if peaks is None:
        peaks = loudness.oversampled_peaks(x, quality="MQ")
    scale = np.float32(gain)
    if float(peaks.max(initial=0.0)) * gain <= ceiling:
        return (x * scale if gain != 1.0 else x), False
    need = np.minimum(np.float32(1.0), np.float32(ceiling) / np.maximum(peaks * scale, np.float32(1e-12)))
    reach = max(1, int(rate * 0.002))
    # two buffers the length of the file, reused: memory, not speed, bounds how long a file may be
    held = minimum_filter1d(need, size=2 * reach + 1, mode="nearest")
    uniform_filter1d(held, size=2 * reach + 1, mode="nearest", output=need)
    del held
    need *= scale
    return x * need[:, None], True


def normalise(x: Audio, rate: int, target: float, ceiling_db: float) -> tuple[Audio, float, bool, float]:
    """Gain to ``target`` LUFS, limited under ``ceiling_db``.

    Limiting takes loudness away, so the gain is searched (secant steps on
    the limited signal's loudness) until the result is within 0.05 LU.
    Returns the signal, the gain, whether it was limited, and its true peak.
    """
    current = loudness.integrated(x, rate)
    if current <= loudness.SILENT + 1:
        raise MediaError("the audio is silent: there is nothing to normalise")

    peaks = loudness.oversampled_peaks(x, quality="MQ")

    def level_at(gain: float) -> tuple[float, bool]:
        # only the loudness is kept from each try: the limited signal is made again for the gain chosen
        y, did = limit_true_peak(x, rate, ceiling_db, peaks=peaks, gain=10.0 ** (gain / 20.0))
        return loudness.integrated(y, rate), did

    g0 = target - current
    level, _ = level_at(g0)
    best, best_level = g0, level
    g1 = g0 + (target - level)
    for _ in range(8):
        if abs(target - level) < 0.05:
            break
        level1, _ = level_at(g1)
        slope = (level1 - level) / (g1 - g0) if g1 != g0 else 1.0
        g0, level = g1, level1
        if abs(target - level1) < abs(target - best_level):
            best, best_level = g1, level1
        if slope < 0.05:
            break  # the limiter gives no more loudness: this is as close as the ceiling allows
        # heavy limiting flattens the curve; never step more than 6 dB at once
        g1 = g1 + max(-6.0, min(6.0, (target - level1) / slope))
    y, limited = limit_true_peak(x, rate, ceiling_db, peaks=peaks, gain=10.0 ** (best / 20.0))
    g0 = best
    # a limiter's last hair of overshoot is settled by a plain gain
    tp = loudness.true_peak(y)
    if tp > ceiling_db:
        y *= np.float32(10.0 ** ((ceiling_db - tp - 0.02) / 20.0))
        tp = ceiling_db - 0.02
    return y, g0, limited, tp


# -- the whole correction -------------------------------------------------------------


def correct_audio(
    src: Path,
    dest_dir: Path,
    stem: str,
    fmt: str,
    options: AudioOptions,
    *,
    target: float,
    ceiling: float,
    ffmpeg: str = "ffmpeg",
    progress: Progress | None = None,
    check: Callable[[], None] | None = None,
) -> tuple[Path, AudioReport]:
    """Correct ``src`` into ``dest_dir/<stem>.<format>``; returns the file and what changed."""

    def step(pct: float, msg: str) -> None:
        if check is not None:
            check()
        if progress is not None:
            progress(pct, msg)

    step(5, "Decoding audio")
    x, rate = decode(src, ffmpeg=ffmpeg)
    if x.shape[0] < rate * 0.05:
        raise MediaError("the audio is shorter than 50 ms")
    if not np.isfinite(x).all():
        x = np.nan_to_num(x, nan=0.0, posinf=1.0, neginf=-1.0)
    report = AudioReport(before=loudness.measure(x, rate).as_dict())
    report.sample_rate["before"] = rate
    report.channels["before"] = x.shape[1]

    step(15, "Removing DC offset")
    x, report.dc_offset = remove_dc(x)
    report.steps.append("dc_offset")
    x, note = fix_channels(x, options.channels)
    if note or options.channels:
        report.steps.append(note or f"channels -> {options.channels}")
    if options.sample_rate and options.sample_rate != rate:
        step(20, f"Resampling to {options.sample_rate} Hz")
        x = resample(x, rate, options.sample_rate)
        rate = options.sample_rate
        report.steps.append("resample")
    if options.highpass_hz > 0 and options.highpass_hz < rate / 2:
        step(25, f"High-pass at {options.highpass_hz:g} Hz")
        x = highpass(x, rate, options.highpass_hz)
        report.steps.append("highpass")
    if options.denoise and options.denoise_strength > 0:
        step(35, "Reducing noise (spectral gating)")
        cleaned = denoise(x, rate, options.denoise_strength, check=check)
        # A steady tone looks like noise to a gate (it never stops): when the gate took the
        # programme itself away, the signal is kept as it was.
        if loudness.integrated(cleaned, rate) < loudness.integrated(x, rate) - 10.0:
            report.steps.append("denoise skipped: the gate would have removed the signal itself (a steady tone)")
        else:
            x = cleaned
            report.steps.append("denoise")
        del cleaned
    if options.trim_silence:
        step(60, "Trimming silence")
        x, cut = trim_silence(x, rate)
        report.steps.append(f"trim_silence ({cut:.2f} s)")
    step(70, f"Normalising loudness to {target:g} LUFS, true peak {ceiling:g} dBTP")
    # a lossy encoder overshoots peaks by a few tenths of a dB: leave it the room
    room = 0.0 if fmt in ("wav", "flac") else 0.6
    x, report.gain_db, report.limited, peak_db = normalise(x, rate, target, ceiling - room)
    report.steps.append("loudness")
    step(85, f"Writing {fmt}")
    dest_dir.mkdir(parents=True, exist_ok=True)
    dest = dest_dir / f"{stem}.{fmt}"
    encode(x, rate, dest, fmt, ffmpeg=ffmpeg)
    step(92, "Measuring the result")
    if fmt in ("wav", "flac"):
        after = loudness.measure(x, rate, true_peak_db=peak_db)
    else:
        # a lossy encoder moves peaks and level a little: report what the file holds
        decoded, decoded_rate = decode(dest, ffmpeg=ffmpeg)
        after = loudness.measure(decoded, decoded_rate)
    report.after = after.as_dict()
    report.sample_rate["after"] = rate
    report.channels["after"] = x.shape[1]
    return dest, report
