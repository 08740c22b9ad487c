"""Loudness measurements: ITU-R BS.1770-4 integrated loudness, EBU Tech 3342 loudness range,
true peak on the 4x oversampled signal, and the noise floor.

The K-weighting filters are pyloudnorm's (Brecht De Man's ITU-exact design
at any sample rate). The gating is computed here from the energy of each
100 ms segment, filtered a slice at a time: memory stays a few MB and the
cost one pass however long the file (pyloudnorm's own gating loops in
Python block by block, which is minutes on an hour of audio).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np
import soxr
from numpy.typing import NDArray
from pyloudnorm.iirfilter import IIRfilter
from scipy.signal import sosfilt

__all__ = ["Measurement", "integrated", "loudness_range", "measure", "noise_floor", "segment_energy", "true_peak"]

Audio = NDArray[np.float32]  # (samples, channels)

#: BS.1770 channel weights (L, R, C, Ls, Rs); channels past five weigh 1.0
_CHANNEL_GAIN = (1.0, 1.0, 1.0, 1.41, 1.41)
SILENT = -120.0
#: the gating blocks start every 100 ms (75 % overlap of 400 ms; 10 Hz for the 3 s short-term windows)
SEGMENT = 0.1
_SLICE = 1 << 18


def _sos(rate: int) -> NDArray[np.float64]:
    """Both K-weighting stages as one second-order-sections cascade (one pass over the samples)."""
    shelf = IIRfilter(3.99984385397, 0.7071752369554193, 1681.9744509555319, rate, "high_shelf_DeMan")
    hp = IIRfilter(0.0, 0.5003270373253953, 38.13547087613982, rate, "high_pass_DeMan")
    rows = []
    for stage in (shelf, hp):
        b, a = np.asarray(stage.b, dtype=np.float64), np.asarray(stage.a, dtype=np.float64)
        rows.append(np.concatenate([b / a[0], a / a[0]]))
    return np.asarray(rows)


def segment_energy(x: Audio, rate: int) -> tuple[NDArray[np.float64], int]:
    """Channel-weighted K-weighted energy of each 100 ms segment, and the samples per segment."""
    hop = max(1, round(SEGMENT * rate))
    n, channels = x.shape
    gains = [(_CHANNEL_GAIN[c] if c < 5 else 1.0) for c in range(channels)]
    sos = _sos(rate)
    states = [np.zeros((sos.shape[0], 2)) for _ in range(channels)]
    segments = n // hop
    energy = np.zeros(segments)
    step = (_SLICE // hop) * hop
    for start in range(0, segments * hop, step):
        stop = min(start + step, segments * hop)
        acc = np.zeros(stop - start)
        for c in range(channels):
            y, states[c] = sosfilt(sos, x[start:stop, c].astype(np.float64), zi=states[c])
            acc += gains[c] * y * y
        energy[start // hop : stop // hop] = acc.reshape(-1, hop).sum(axis=1)
    return energy, hop


def _windows(energy: NDArray[np.float64], hop: int, count: int) -> NDArray[np.float64]:
    """Mean square of every window of ``count`` consecutive segments."""
    if energy.size < count:
        return np.zeros(0)
    csum = np.concatenate(([0.0], np.cumsum(energy)))
    return np.asarray((csum[count:] - csum[:-count]) / (count * hop))


def _lufs(power: NDArray[np.float64] | float) -> NDArray[np.float64]:
    with np.errstate(divide="ignore"):
        return np.asarray(-0.691 + 10.0 * np.log10(power))


def integrated(x: Audio, rate: int, *, energy: tuple[NDArray[np.float64], int] | None = None) -> float:
    """Gated integrated loudness, LUFS (400 ms blocks, 75 % overlap, −70 LUFS and −10 LU gates)."""
    seg, hop = energy if energy is not None else segment_energy(x, rate)
    z = _windows(seg, hop, 4)
    if z.size == 0:
        # shorter than one block: BS.1770 gives no value; take the whole signal as one block
        z = np.array([seg.sum() / max(1, seg.size * hop)]) if seg.size else np.zeros(0)
    if z.size == 0:
        return SILENT
    loud = _lufs(z)
    gated = z[loud >= -70.0]
    if gated.size == 0:
        return SILENT
    relative = float(_lufs(gated.mean())) - 10.0
    gated = z[(loud >= -70.0) & (loud > relative)]
    return float(_lufs(gated.mean())) if gated.size else SILENT


def loudness_range(x: Audio, rate: int, *, energy: tuple[NDArray[np.float64], int] | None = None) -> float:
    """EBU Tech 3342 loudness range, LU: 3 s short-term windows every 0.1 s, 10th to 95th percentile."""
    seg, hop = energy if energy is not None else segment_energy(x, rate)
    z = _windows(seg, hop, 30)
    if z.size == 0:
        return 0.0
    loud = _lufs(z)
    gated = loud[loud >= -70.0]
    if gated.size == 0:
        return 0.0
    relative = 10.0 * math.log10(float(np.mean(10.0 ** (gated / 10.0)))) - 20.0
    gated = gated[gated >= relative]
    if gated.size == 0:
        return 0.0
    return float(np.percentile(gated, 95) - np.percentile(gated, 10))


def _abs_max(x: NDArray[np.float32]) -> NDArray[np.float32]:
    """Per row, the largest absolute value over the channels (a column loop: numpy's
    reduction along a short last axis is ten times slower)."""
    if x.ndim == 1:
        return np.abs(x)
    out = np.abs(x[:, 0])
    for c in range(1, x.shape[1]):
        np.maximum(out, np.abs(x[:, c]), out=out)
    return out


def oversampled_peaks(x: Audio, quality: str = "HQ") -> NDArray[np.float32]:
    """Per input sample, the highest absolute value of the 4x oversampled signal across channels.

    soxr interpolates (a linear-phase band-limited filter, so the output lines
    up with the input); slices overlap by the filter's reach so they join
    without edge effects, and memory stays a few MB.
    """
    n = x.shape[0]
    out = np.empty(n, dtype=np.float32)
    pad = 256
    for start in range(0, n, _SLICE):
        stop = min(n, start + _SLICE)
        lo, hi = max(0, start - pad), min(n, stop + pad)
        up = soxr.resample(np.ascontiguousarray(x[lo:hi], dtype=np.float32), 1, 4, quality=quality)
        want = (stop - start) * 4
        up = up[(start - lo) * 4 : (start - lo) * 4 + want]
        seg = _abs_max(up)
        if seg.shape[0] < want:
            seg = np.pad(seg, (0, want - seg.shape[0]))
        peak = seg[0::4].copy()
        for k in range(1, 4):
            np.maximum(peak, seg[k::4], out=peak)
        out[start:stop] = peak
    return np.maximum(out, _abs_max(x))


def true_peak(x: Audio) -> float:
    """Highest absolute sample of the 4x oversampled signal, dBTP (BS.1770-4 annex 2)."""
    if x.size == 0:
        return SILENT
    peak = float(oversampled_peaks(x).max())
    return 20.0 * math.log10(peak) if peak > 0 else SILENT


def noise_floor(x: Audio, rate: int) -> float:
    """The level of the quiet parts, dBFS: the 10th percentile of 50 ms RMS windows."""
    size = max(1, int(rate * 0.05))
    frames = x.shape[0] // size
    if frames == 0:
        return SILENT
    sq = np.square(x[: frames * size].astype(np.float32)).mean(axis=1)
    rms = np.sqrt(sq.reshape(frames, size).mean(axis=1, dtype=np.float64))
    level = float(np.percentile(rms, 10))
    return 20.0 * math.log10(level) if level > 1e-9 else SILENT


@dataclass(frozen=True)
class Measurement:
    """One file's figures; ``as_dict`` rounds them for the correction's result."""

    integrated_lufs: float
    loudness_range_lu: float
    true_peak_dbtp: float
    noise_floor_dbfs: float
    sample_peak_dbfs: float
    duration_s: float

    def as_dict(self) -> dict[str, float]:
        return {k: round(v, 2) for k, v in asdict(self).items()}


def measure(x: Audio, rate: int, *, true_peak_db: float | None = None) -> Measurement:
    """Every figure of ``x``; ``true_peak_db`` when the caller has just measured it (it is the costly one)."""
    energy = segment_energy(x, rate)
    peak = float(np.max(np.abs(x))) if x.size else 0.0
    return Measurement(
        integrated_lufs=integrated(x, rate, energy=energy),
        loudness_range_lu=loudness_range(x, rate, energy=energy),
        true_peak_dbtp=true_peak(x) if true_peak_db is None else true_peak_db,
        noise_floor_dbfs=noise_floor(x, rate),
        sample_peak_dbfs=20.0 * math.log10(peak) if peak > 0 else SILENT,
        duration_s=x.shape[0] / rate,
    )
