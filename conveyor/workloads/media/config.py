"""The media workload's settings (``CONVEYOR_MEDIA_*``)."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

__all__ = ["MediaSettings"]


class MediaSettings(BaseSettings):
    """Limits and defaults of the corrections; every field can be set as ``CONVEYOR_MEDIA_<NAME>``."""

    model_config = SettingsConfigDict(env_prefix="CONVEYOR_MEDIA_", extra="ignore")

    #: largest upload accepted by ``POST /corr/tasks/``
    max_upload_mb: float = Field(default=500.0, gt=0)
    #: longest audio (or video sound track) a correction will decode; longer is refused (413)
    #: audio is decoded whole: a 48 kHz stereo correction peaks near 1.7 MB a second (bench/media.py),
    #: so the default 30 minutes fits the media worker's 4 GiB in deploy/k8s
    max_audio_seconds: float = Field(default=1800.0, gt=0)
    #: longest video a correction will re-encode
    max_video_seconds: float = Field(default=2 * 3600.0, gt=0)
    #: largest image, in megapixels, that will be decoded (a decompression bomb is refused before decoding)
    max_image_megapixels: float = Field(default=80.0, gt=0)
    #: largest video frame, in megapixels
    max_video_megapixels: float = Field(default=8.9, gt=0)  # 4096x2160
    #: default integrated loudness target, LUFS (EBU R128 / ITU-R BS.1770)
    target_lufs: float = Field(default=-16.0, ge=-70.0, le=-5.0)
    #: default true-peak ceiling, dBTP (measured on the 4x oversampled signal)
    true_peak_db: float = Field(default=-1.0, ge=-20.0, le=0.0)
    #: ffmpeg and ffprobe binaries
    ffmpeg: str = "ffmpeg"
    ffprobe: str = "ffprobe"
    #: threads one ffmpeg encode may use (the machine's workers share the cores)
    ffmpeg_threads: int = Field(default=2, ge=1, le=64)
    #: x264 preset for the web-safe re-encode
    video_preset: str = "veryfast"
