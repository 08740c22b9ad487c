"""Speech to text: a provider interface, and pocketsphinx as the offline default.

pocketsphinx ships its US English acoustic model, language model and
dictionary inside its wheel, so it runs with nothing downloaded. A better
recogniser (Vosk, whisper.cpp, ...) plugs in with ``register_recognizer``
once its model is on the machine, and is chosen by
``CONVEYOR_SPEECH_RECOGNIZER``.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from conveyor.workloads.speech.audio import SAMPLE_RATE, Pcm

__all__ = [
    "Recognizer",
    "Transcript",
    "UnknownRecognizer",
    "Word",
    "get_recognizer",
    "recognizer_names",
    "register_recognizer",
]

#: called with the fraction of the audio done so far; may raise to stop (cancel)
OnProgress = Callable[[float], None]


class UnknownRecognizer(LookupError):
    pass


@dataclass(frozen=True, slots=True)
class Word:
    word: str
    #: seconds from the start of the audio
    start: float
    end: float
    #: the recogniser's posterior probability, 0-1 (None when it gives none)
    confidence: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"word": self.word, "start": self.start, "end": self.end, "confidence": self.confidence}


@dataclass(frozen=True, slots=True)
class Transcript:
    text: str
    words: list[Word] = field(default_factory=list)
    #: length of the audio heard
    seconds: float = 0.0
    recognizer: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {
            "text": self.text,
            "words": [w.to_dict() for w in self.words],
            "seconds": round(self.seconds, 3),
            "recognizer": self.recognizer,
        }


class Recognizer(Protocol):
    name: str

    def transcribe(self, pcm: Pcm, on_progress: OnProgress | None = None) -> Transcript: ...


#: pocketsphinx marks alternative pronunciations as ``word(2)``
_ALT = re.compile(r"\(\d+\)$")


class PocketSphinx:
    """CMU pocketsphinx with the English model bundled in its wheel.

    Cepstral mean normalisation is computed over each whole recording
    (``cmn=batch``) and reset before each: the decoder's default live CMN
    carries over from one recording to the next, which made the same audio
    transcribe differently depending on what was heard before (on flite's
    voice the word error rate went from 21 % to 70 % on a cold decoder).
    """

    name = "pocketsphinx"

    def __init__(self) -> None:
        from pocketsphinx import Decoder

        self._decoder = Decoder(samprate=SAMPLE_RATE, cmn="batch", loglevel="ERROR")
        self._cmn = self._decoder.get_cmn()
        self._frate = int(self._decoder.config["frate"])
        # One decoder per process, used by one task at a time.
        self._lock = threading.Lock()

    def transcribe(self, pcm: Pcm, on_progress: OnProgress | None = None) -> Transcript:
        with self._lock:
            d = self._decoder
            d.set_cmn(self._cmn)
            d.start_utt()
            try:
                d.process_raw(pcm.data, no_search=False, full_utt=True)
            finally:
                d.end_utt()
            hyp = d.hyp()
            words: list[Word] = []
            for seg in d.seg():
                token = _ALT.sub("", seg.word)
                if token.startswith(("<", "[")) or not token:
                    continue  # <s>, </s>, <sil>, [NOISE]: silences and fillers, not words
                start = seg.start_frame / self._frate
                end = (seg.end_frame + 1) / self._frate
                words.append(Word(token, round(start, 3), round(end, 3), _prob(d, seg.prob)))
        if on_progress is not None:
            on_progress(1.0)
        text = " ".join(w.word for w in words) if words else (hyp.hypstr if hyp is not None else "")
        return Transcript(text=text, words=words, seconds=pcm.seconds, recognizer=self.name)


def _prob(decoder: Any, logprob: int) -> float | None:
    """The word's posterior, or None: without posterior computation pocketsphinx leaves 0 (= 1.0)."""
    if logprob == 0:
        return None
    try:
        return round(float(decoder.logmath.exp(logprob)), 4)
    except Exception:  # bindings without logmath: confidence is optional
        return None


_FACTORIES: dict[str, Callable[[], Recognizer]] = {"pocketsphinx": PocketSphinx}
_instances: dict[str, Recognizer] = {}
_instances_lock = threading.Lock()


def register_recognizer(name: str, factory: Callable[[], Recognizer]) -> None:
    """Make ``CONVEYOR_SPEECH_RECOGNIZER=<name>`` build its recogniser with ``factory``."""
    _FACTORIES[name] = factory


def recognizer_names() -> list[str]:
    return sorted(_FACTORIES)


def get_recognizer(name: str) -> Recognizer:
    """This process's recogniser of that name, built on first use (loading a model takes a while)."""
    with _instances_lock:
        if name not in _instances:
            factory = _FACTORIES.get(name)
            if factory is None:
                raise UnknownRecognizer(f"unknown recognizer {name!r}; known: {', '.join(recognizer_names())}")
            _instances[name] = factory()
        return _instances[name]
