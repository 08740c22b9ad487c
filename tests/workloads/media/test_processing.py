"""The corrections themselves, on real media made in the test and measured by independent meters."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("cv2", reason="the media extra is not installed: pip install 'conveyor[media]'")

from conveyor.workloads.media import audio, image, loudness, video
from conveyor.workloads.media.errors import MediaError
from conveyor.workloads.media.probe import sniff, sniff_file
from tests.workloads.media import samples


def test_our_meter_agrees_with_pyloudnorm_and_ffmpeg_on_speech(tmp_path: Path) -> None:
    """Our gated meter is within 0.1 LU of pyloudnorm at 48 kHz, and of ffmpeg's ebur128 at the file's 8 kHz."""
    import pyloudnorm
    import soundfile as sf
    import soxr

    src = samples.noisy_quiet_speech(tmp_path / "in.wav", lufs=-23.0)
    x, rate = sf.read(str(src), dtype="float32", always_2d=True)
    assert abs(loudness.integrated(x, rate) - samples.ebur128(src)["I"]) <= 0.1
    # pyloudnorm's default filters are the cookbook ones, which drift from BS.1770's at low rates: compare at 48 kHz
    y = soxr.resample(x, rate, 48000)
    assert abs(loudness.integrated(y, 48000) - pyloudnorm.Meter(48000).integrated_loudness(y.astype(np.float64))) < 0.1


def test_true_peak_sees_the_peak_between_samples() -> None:
    """A quarter-rate sine sampled 45 degrees off its crest reads 3 dB above its samples, as BS.1770 expects."""
    rate = 48000
    t = np.arange(rate) / rate
    x = (0.5 * np.sin(2 * np.pi * (rate / 4) * t + np.pi / 4)).astype(np.float32)[:, None]
    sample_peak = 20 * np.log10(float(np.abs(x).max()))
    assert loudness.true_peak(x) > sample_peak + 2.5
    assert abs(loudness.true_peak(x[rate // 4 : rate // 2]) - 20 * np.log10(0.5)) < 0.3


def test_quiet_noisy_speech_comes_out_at_the_target_under_the_ceiling_with_less_noise(tmp_path: Path) -> None:
    """Noisy speech at -35 LUFS: ebur128 reads the output within 0.5 LU of -16, true peak <= -1 dBTP, floor lower."""
    src = samples.noisy_quiet_speech(tmp_path / "noisy.wav", lufs=-35.0)
    before = samples.ebur128(src)
    assert abs(before["I"] + 35.0) < 0.5
    dest, report = audio.correct_audio(
        src, tmp_path / "out", "noisy_corrected", "wav", audio.AudioOptions(), target=-16.0, ceiling=-1.0
    )
    after = samples.ebur128(dest)
    assert abs(after["I"] + 16.0) <= 0.5
    assert after["TP"] <= -1.0
    # quieter in absolute terms despite ~19 dB of gain, and far further below the speech
    assert samples.noise_floor_dbfs(dest) < samples.noise_floor_dbfs(src)
    assert samples.noise_floor_below_programme(dest) < samples.noise_floor_below_programme(src) - 6.0
    assert report.before["integrated_lufs"] == pytest.approx(-35.0, abs=0.5)
    assert report.after["integrated_lufs"] == pytest.approx(-16.0, abs=0.3)
    assert report.after["noise_floor_dbfs"] < report.before["noise_floor_dbfs"]
    assert {"dc_offset", "highpass", "denoise", "loudness"} <= set(report.steps)
    assert abs(report.dc_offset[0]) > 0.0005


def test_a_clipped_loud_recording_is_brought_down_under_the_ceiling(tmp_path: Path) -> None:
    """Speech driven into clipping at about -8 LUFS ends within 0.5 LU of -16 with its peaks under -1 dBTP."""
    import soundfile as sf

    voice, rate = samples.speech(tmp_path / "v.wav")
    clipped = np.clip(voice * (0.99 / float(np.abs(voice).max())) * 4.0, -1.0, 1.0).astype(np.float32)
    src = tmp_path / "clipped.flac"
    sf.write(str(src), clipped, rate)
    dest, report = audio.correct_audio(
        src, tmp_path / "out", "c", "flac", audio.AudioOptions(denoise=False), target=-16.0, ceiling=-1.0
    )
    after = samples.ebur128(dest)
    assert abs(after["I"] + 16.0) <= 0.5
    assert after["TP"] <= -1.0
    assert report.before["true_peak_dbtp"] > -0.5


@pytest.mark.parametrize("fmt", ["mp3", "ogg", "m4a"])
def test_lossy_outputs_still_meet_the_target_and_ceiling(tmp_path: Path, fmt: str) -> None:
    """The encoder's own overshoot is allowed for: the decoded file still reads on target, under the ceiling."""
    src = samples.noisy_quiet_speech(tmp_path / "noisy.wav")
    options = audio.AudioOptions(sample_rate=44100, channels=2)
    dest, report = audio.correct_audio(src, tmp_path / "out", "n", fmt, options, target=-16.0, ceiling=-1.0)
    after = samples.ebur128(dest)
    assert abs(after["I"] + 16.0) <= 0.5
    assert after["TP"] <= -1.0
    assert report.sample_rate == {"before": 8000, "after": 44100}
    assert report.channels == {"before": 1, "after": 2}


def test_a_dead_stereo_channel_gets_the_live_one_and_silence_is_trimmed(tmp_path: Path) -> None:
    """Left carries the voice, right is silent: both get the voice; the long silent tail is cut."""
    import soundfile as sf

    voice, rate = samples.speech(tmp_path / "v.wav")
    tail = np.zeros((rate * 2, 1), dtype=np.float32)
    left = np.concatenate([voice, tail])
    src = tmp_path / "one-sided.wav"
    sf.write(str(src), np.concatenate([left, np.zeros_like(left)], axis=1), rate)
    dest, report = audio.correct_audio(
        src, tmp_path / "out", "o", "wav", audio.AudioOptions(trim_silence=True), target=-16.0, ceiling=-1.0
    )
    out, _ = sf.read(str(dest), always_2d=True)
    assert out.shape[1] == 2
    assert np.allclose(out[:, 0], out[:, 1], atol=1e-4)
    assert out.shape[0] / rate < left.shape[0] / rate - 1.5
    assert any("silent" in s for s in report.steps)


def test_a_corrupt_audio_file_fails_with_the_decoder_message(tmp_path: Path) -> None:
    """A WAV header over garbage is refused with the decoder's own words."""
    src = tmp_path / "bad.wav"
    src.write_bytes(b"RIFF\x24\x00\x00\x00WAVEfmt " + b"\x07" * 200)
    with pytest.raises(MediaError, match="decod"):
        audio.correct_audio(src, tmp_path / "out", "b", "wav", audio.AudioOptions(), target=-16.0, ceiling=-1.0)


def test_a_silent_file_is_a_clear_failure_not_a_division_by_zero(tmp_path: Path) -> None:
    """Pure digital silence cannot be normalised; the error says so."""
    import soundfile as sf

    src = tmp_path / "silence.wav"
    sf.write(str(src), np.zeros((16000, 1), dtype=np.float32), 16000)
    with pytest.raises(MediaError, match="silent"):
        audio.correct_audio(src, tmp_path / "out", "s", "wav", audio.AudioOptions(), target=-16.0, ceiling=-1.0)


def test_a_tilted_colour_cast_photo_comes_out_upright_with_less_cast_and_no_less_contrast(tmp_path: Path) -> None:
    """EXIF orientation 6 is applied, the cast falls by more than half, contrast does not drop, metadata goes."""
    from PIL import Image

    src = tmp_path / "photo.jpg"
    upright = samples.cast_and_rotated_jpeg(src)
    with Image.open(src) as stored:
        assert stored.size == (256, 256)
        assert stored.getexif()[0x0112] == 6
        before = np.asarray(stored.convert("RGB"))
    dest, report = image.correct_image(src, tmp_path / "out", "p", "jpeg", image.ImageOptions(), max_megapixels=10)
    with Image.open(dest) as out_img:
        out = np.asarray(out_img.convert("RGB"))
        assert 0x0112 not in out_img.getexif()
        assert 0x010F not in out_img.getexif()
    grey = out.astype(np.float32).mean(axis=2)
    truth = upright.astype(np.float32).mean(axis=2)
    wrong = np.asarray(Image.fromarray(upright).transpose(Image.Transpose.ROTATE_90)).astype(np.float32).mean(axis=2)
    assert np.corrcoef(grey.ravel(), truth.ravel())[0, 1] > 0.9 > np.corrcoef(grey.ravel(), wrong.ravel())[0, 1]
    cast_before, cast_after = image.colour_cast(before), image.colour_cast(out)
    assert cast_after < cast_before * 0.5
    assert cast_before - cast_after > 8
    assert image.contrast(out) >= image.contrast(before) - 0.5
    assert report.after["noise_sigma"] < report.before["noise_sigma"]
    assert report.orientation == 6
    assert "white_balance" in report.steps


def test_keeping_metadata_keeps_the_camera_but_resets_the_orientation(tmp_path: Path) -> None:
    """keep_metadata carries the EXIF over, with orientation 1 since the pixels are upright now."""
    from PIL import Image

    src = tmp_path / "photo.jpg"
    samples.cast_and_rotated_jpeg(src)
    options = image.ImageOptions(keep_metadata=True, format="png", max_width=128, sharpen=True)
    dest, report = image.correct_image(src, tmp_path / "out", "p", "png", options, max_megapixels=10)
    with Image.open(dest) as out:
        assert out.format == "PNG"
        assert out.size == (128, 128)
        exif = out.getexif()
        assert exif[0x010F] == "Conveyor test camera"
        assert exif.get(0x0112) == 1
    assert "resize" in report.steps
    assert "sharpen" in report.steps


def test_an_image_over_the_pixel_limit_is_refused_before_decoding(tmp_path: Path) -> None:
    """A 30000x30000 PNG header over a few bytes (a decompression bomb, 900 megapixels) is refused unread."""

    src = tmp_path / "bomb.png"
    samples.png_bomb(src)
    assert src.stat().st_size < 200
    with pytest.raises(MediaError, match=r"megapixels|bomb"):
        image.correct_image(src, tmp_path / "out", "b", "png", image.ImageOptions(), max_megapixels=50)


def test_a_truncated_jpeg_fails_with_the_decoder_message(tmp_path: Path) -> None:
    """Half a JPEG is a failure naming Pillow's complaint."""
    src = tmp_path / "half.jpg"
    samples.cast_and_rotated_jpeg(src)
    src.write_bytes(src.read_bytes()[:1500])
    with pytest.raises(MediaError, match="cannot be decoded"):
        image.correct_image(src, tmp_path / "out", "h", "jpeg", image.ImageOptions(), max_megapixels=10)


def test_a_quiet_rotated_clip_becomes_an_upright_web_mp4_on_target(tmp_path: Path) -> None:
    """H.264/AAC MP4 with faststart, turned upright, loudness within 1 LU of -16, duration within 0.1 s."""
    src = samples.quiet_clip(tmp_path / "quiet.mp4", rotate=90)
    dest, report = video.correct_video(
        src, tmp_path / "out", "q", video.VideoOptions(), target=-16.0, ceiling=-1.0, max_seconds=60, max_megapixels=9
    )
    assert abs(samples.ebur128(dest)["I"] + 16.0) <= 1.0
    assert abs(samples.probe_duration(dest) - samples.probe_duration(src)) <= 0.1
    head = dest.read_bytes()[:4096]
    assert head.find(b"moov") != -1
    assert head.find(b"mdat") == -1 or head.find(b"moov") < head.find(b"mdat")
    assert report.after["video_codec"] == "h264"
    assert report.after["audio_codec"] == "aac"
    assert (report.after["width"], report.after["height"]) == (120, 160)
    assert report.before["integrated_lufs"] < -40


def test_a_corrupt_video_fails_with_ffmpegs_message(tmp_path: Path) -> None:
    """An MP4 header over garbage is a failure naming what ffprobe said."""
    src = tmp_path / "bad.mp4"
    src.write_bytes(b"\x00\x00\x00\x18ftypisom" + b"\x00" * 12 + b"\xde\xad" * 500)
    with pytest.raises(MediaError, match="cannot be decoded"):
        video.correct_video(
            src, tmp_path / "out", "b", video.VideoOptions(), target=-16, ceiling=-1, max_seconds=60, max_megapixels=9
        )


def test_the_media_type_is_read_from_the_content() -> None:
    """Magic numbers, not names, decide: every supported container, and None for anything else."""
    assert sniff(b"RIFF\x00\x00\x00\x00WAVEfmt ") == ("audio", "wav")
    assert sniff(b"fLaC\x00") == ("audio", "flac")
    assert sniff(b"ID3\x04") == ("audio", "mp3")
    assert sniff(b"\x00\x00\x00\x20ftypM4A \x00") == ("audio", "m4a")
    assert sniff(b"\x00\x00\x00\x20ftypheic\x00") == ("image", "heic")
    assert sniff(b"\x00\x00\x00\x20ftypisom\x00") == ("video", "mp4")
    assert sniff(b"\xff\xd8\xff\xe0") == ("image", "jpeg")
    assert sniff(b"\x89PNG\r\n\x1a\n") == ("image", "png")
    assert sniff(b"RIFF\x00\x00\x00\x00WEBPVP8 ") == ("image", "webp")
    assert sniff(b"\x1a\x45\xdf\xa3\x00webm") == ("video", "webm")
    assert sniff(b"%PDF-1.7") is None
    assert sniff(b"") is None


def test_sniffing_a_real_file_reads_only_its_head(tmp_path: Path) -> None:
    """A made clip and a made photo are recognised from disk."""
    clip = samples.quiet_clip(tmp_path / "c.mp4")
    assert sniff_file(clip) == ("video", "mp4")
    samples.cast_and_rotated_jpeg(tmp_path / "p.jpg")
    assert sniff_file(tmp_path / "p.jpg") == ("image", "jpeg")


def test_an_image_between_pillows_warning_and_its_error_is_refused_by_our_limit(tmp_path: Path) -> None:
    """120 megapixels (past Pillow's warning, short of its error) fails with our limit's message, not a warning."""
    src = samples.png_bomb(tmp_path / "big.png", side=11000)
    with pytest.raises(MediaError, match=r"\(121\.0 megapixels\); the limit is 80 megapixels"):
        image.correct_image(src, tmp_path / "out", "b", "png", image.ImageOptions(), max_megapixels=80)


def test_an_m4a_and_a_videos_sound_are_decoded_by_ffmpeg_and_corrected(tmp_path: Path) -> None:
    """AAC in MP4 (which libsndfile cannot read) goes through ffmpeg: an m4a file, and a clip's sound as audio;
    the clip's steady tone is not gated away as if it were noise."""
    import soundfile as sf

    voice, rate = samples.speech(tmp_path / "v.wav")
    m4a = tmp_path / "memo.m4a"
    audio.encode(voice * 0.05, rate, m4a, "m4a")
    assert sniff_file(m4a) == ("audio", "m4a")
    dest, report = audio.correct_audio(m4a, tmp_path / "out", "m", "flac", audio.AudioOptions(), target=-16, ceiling=-1)
    assert abs(samples.ebur128(dest)["I"] + 16.0) <= 0.5
    assert report.before["integrated_lufs"] < -30
    clip = samples.quiet_clip(tmp_path / "clip.mp4")
    dest, report = audio.correct_audio(clip, tmp_path / "out", "c", "wav", audio.AudioOptions(), target=-16, ceiling=-1)
    assert any(step.startswith("denoise skipped") for step in report.steps)  # its sound is a steady 440 Hz tone
    assert sf.info(str(dest)).duration == pytest.approx(1.0, abs=0.1)
    assert abs(samples.ebur128(dest)["I"] + 16.0) <= 0.5
