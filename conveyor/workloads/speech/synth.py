"""Text to speech for a resource's reference audio: the flite or espeak-ng command-line tools.

Both are Debian packages (``apt-get install flite espeak-ng``); each writes a
WAV file. flite's voices are the ones pocketsphinx reads back well.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import tempfile
from pathlib import Path

__all__ = ["ENGINES", "SynthesisError", "synthesize_wav"]

#: engine -> (binary, voices it accepts; the first is the default)
ENGINES: dict[str, tuple[str, tuple[str, ...]]] = {
    "flite": ("flite", ("kal", "kal16", "slt", "awb", "rms")),
    "espeak-ng": ("espeak-ng", ("en", "en-us", "en-gb")),
}
_VOICE = re.compile(r"^[A-Za-z0-9_+-]{1,40}$")


class SynthesisError(RuntimeError):
    pass


def synthesize_wav(text: str, *, engine: str = "flite", voice: str | None = None, timeout: float = 120.0) -> bytes:
    """The spoken text as WAV bytes; SynthesisError if the engine is missing or fails."""
    if engine not in ENGINES:
        raise SynthesisError(f"unknown TTS engine {engine!r}; known: {', '.join(ENGINES)}")
    binary, voices = ENGINES[engine]
    voice = voice or voices[0]
    if voice not in voices or not _VOICE.match(voice):
        raise SynthesisError(f"unknown {engine} voice {voice!r}; known: {', '.join(voices)}")
    path = shutil.which(binary)
    if path is None:
        raise SynthesisError(f"{binary} is not installed (apt-get install {binary})")
    with tempfile.TemporaryDirectory(prefix="conveyor-tts-") as tmp:
        out = Path(tmp) / "speech.wav"
        # flite reads a file as a document (other prosody, worse recognition), so the text
        # goes as the argument of -t, which takes the next argument verbatim; espeak-ng reads stdin.
        if engine == "flite":
            cmd, stdin = [path, "-voice", voice, "-t", text, "-o", str(out)], None
        else:
            cmd, stdin = [path, "-v", voice, "-w", str(out), "--stdin"], text.encode()
        proc = subprocess.run(cmd, input=stdin, capture_output=True, timeout=timeout, check=False)
        if proc.returncode != 0 or not out.exists() or out.stat().st_size <= 44:
            message = proc.stderr.decode(errors="replace").strip()[-300:]
            raise SynthesisError(f"{binary} failed (exit {proc.returncode}): {message or 'no audio written'}")
        return out.read_bytes()
