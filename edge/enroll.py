"""`polyvox enroll`: make a voice profile (edge.profile) from a user's own recordings.

Each recording plays through the same loop as `polyvox run` (frontend, VAD, embedding); at each
utterance's end the model's window is what it would classify, and the profile keeps that window
for the recording's intent. Recordings come from files (a folder with one subfolder per intent,
or a TSV of `file<TAB>intent` lines) or from the microphone, prompted intent by intent.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from edge.audio import AudioError, AudioSource, read_wav, room_tone, write_wav
from edge.bundle import UNKNOWN, BundleError, file_sha256
from edge.config import frontend_config
from edge.decisions import DecisionConfig, decide_command
from edge.pipeline import ROOM_TONE_S, Pipeline, PipelineConfig, load_models
from edge.profile import ProfileConfig, ProfileScorer, VoiceProfile, profile_decision
from edge.vad import VadConfig

log = logging.getLogger(__name__)
CHUNK = 640
TAKE_TIMEOUT_S = 8.0
"""A prompted take that is not heard within this long is asked for again..."""
RETRIES = 2
"""...at most this many times, then skipped."""


@dataclass(frozen=True)
class Take:
    intent: str
    window: np.ndarray
    score: float
    """The model's own posterior for the intent (before any profile): how far off it was."""
    probs: np.ndarray
    """The model's own posteriors for the take."""


class Enroller:
    """One bundle's loop, reading the windows its head classifies."""

    def __init__(self, bundle_dir: str | Path, vad: VadConfig | None = None) -> None:
        """`vad`: the VAD settings `polyvox run` will use (its config's [vad]), so that the windows
        kept are the ones it will classify."""
        models = load_models([Path(bundle_dir)], frontend_config())
        self.bundle = models.heads[0].bundle
        if self.bundle.input_features != "embedding" or self.bundle.task not in ("command", "phrase"):
            raise BundleError(f"bundle '{bundle_dir}': voice profiles are for command and phrase models "
                              f"over the speech embedding, not a {self.bundle.task} model")
        self.pipeline = Pipeline(PipelineConfig(frontend=frontend_config(), vad=vad or VadConfig(), wake="off"),
                                 models)
        self.pipeline.heard = []

    @property
    def intents(self) -> list[str]:
        return [x for x in self.bundle.labels if x != UNKNOWN]

    def check_intent(self, intent: str) -> None:
        if intent not in self.intents:
            raise BundleError(f"intent {intent!r} is not one of {self.bundle.name}'s commands "
                              f"({', '.join(self.intents)})")

    def _best(self, intent: str) -> Take | None:
        """Of the utterances heard so far, the one the model found most like `intent`: a recording
        may hold a cough or a click besides the word."""
        column = self.bundle.labels.index(intent)
        heard = [(w, p) for name, w, p in self.pipeline.heard if name == self.bundle.name]
        if not heard:
            return None
        window, probs = max(heard, key=lambda wp: wp[1][column])
        return Take(intent, window.copy(), float(probs[column]), probs.copy())

    def from_audio(self, audio: np.ndarray, intent: str) -> Take | None:
        """One recording (int16-scaled float, 16 kHz), from a fresh loop as `polyvox run` hears a file."""
        pipe = self.pipeline
        pipe.reset()
        pipe.heard.clear()
        pipe.lead_in(room_tone(audio, ROOM_TONE_S))
        audio = audio.astype(np.float32)
        for i in range(0, len(audio), CHUNK):
            pipe.feed(audio[i : i + CHUNK])
        pipe.finish()
        return self._best(intent)

    def from_stream(self, chunks: Iterator[np.ndarray], intent: str,
                    keep: list[np.ndarray] | None = None) -> Take | None:
        """Listen until one utterance closes (or TAKE_TIMEOUT_S passes); the live loop keeps its
        state between takes, as it does between commands. `keep` receives the audio heard."""
        pipe = self.pipeline
        pipe.heard.clear()
        heard_s = 0.0
        rate = pipe.cfg.frontend.sample_rate_hz
        for chunk in chunks:
            pipe.feed(chunk.astype(np.float32))
            if keep is not None:
                keep.append(chunk)
            heard_s += len(chunk) / rate
            if pipe.heard:
                return self._best(intent)
            if heard_s > TAKE_TIMEOUT_S:
                # Whatever is still open (a long noise) must not end up in the next take; what the
                # VAD learned of the room stays.
                pipe.vad.know_room(pipe.vad.room())
                break
        return None

    def profile(self, takes: list[Take], config: ProfileConfig | None = None) -> VoiceProfile:
        config = config or ProfileConfig()
        config.check("voice profile")
        if not takes:
            raise BundleError("no usable recordings: nothing to make a voice profile from")
        return VoiceProfile(self.bundle.name, file_sha256(self.bundle.model_path), tuple(t.intent for t in takes),
                            np.stack([t.window for t in takes]).astype(np.float32), config)


@dataclass(frozen=True)
class SelfCheck:
    """Each take decided against a profile of the other takes (leave one out): what the user can
    expect of the profile on their own voice. Only takes whose command has another take count."""

    takes: int
    right_alone: int
    right_with_profile: int


def self_check(enroller: Enroller, profile: VoiceProfile, takes: list[Take]) -> SelfCheck:
    labels = enroller.bundle.labels
    head = DecisionConfig.from_manifest(enroller.bundle.decision)
    counted = alone = adapted = 0
    for i, take in enumerate(takes):
        others = [j for j in range(len(takes)) if j != i]
        if take.intent not in {takes[j].intent for j in others} or len({takes[j].intent for j in others}) < 2:
            continue
        rest = replace(profile, intents=tuple(takes[j].intent for j in others), windows=profile.windows[others])
        hit = decide_command(labels, take.probs, head)
        hit_profile = decide_command(labels, ProfileScorer(rest, labels).adapt(take.probs, take.window),
                                     profile_decision(head, rest))
        counted += 1
        alone += hit is not None and hit[0] == take.intent
        adapted += hit_profile is not None and hit_profile[0] == take.intent
    return SelfCheck(counted, alone, adapted)


def read_recordings(data: str | Path) -> list[tuple[Path, str]]:
    """(file, intent) pairs: a TSV of `file<TAB>intent` lines (files relative to it), or a folder
    with one subfolder per intent holding WAV files. BundleError when there are none."""
    data = Path(data)
    items: list[tuple[Path, str]] = []
    if data.is_file():
        try:
            text = data.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            raise BundleError(f"'{data}' is not a UTF-8 text file of file<TAB>intent lines") from None
        for n, line in enumerate(text.splitlines(), 1):
            if not line.strip() or line.startswith("#"):
                continue
            parts = line.split("\t")
            if len(parts) != 2 or not parts[1].strip():
                raise BundleError(f"'{data}' line {n}: expected file<TAB>intent")
            items.append((data.parent / parts[0].strip(), parts[1].strip()))
    elif data.is_dir():
        items = [(wav, sub.name) for sub in sorted(data.iterdir()) if sub.is_dir()
                 for wav in sorted(sub.glob("*.wav"))]
    else:
        raise BundleError(f"recordings '{data}' do not exist")
    if not items:
        raise BundleError(f"no recordings in '{data}' (a TSV of file<TAB>intent, or intent/*.wav folders)")
    return items


def enroll_files(enroller: Enroller, items: list[tuple[Path, str]],
                 progress: Callable[[str], None] = log.info) -> list[Take]:
    """Takes from recorded files; a file that cannot be read or holds no speech is skipped with a warning."""
    for _, intent in items:
        enroller.check_intent(intent)
    takes = []
    for path, intent in items:
        try:
            audio = read_wav(path)
        except AudioError as exc:
            log.warning("skipped: %s", exc)
            continue
        take = enroller.from_audio(audio, intent)
        if take is None:
            log.warning("skipped: no speech heard in '%s'", path)
            continue
        progress(f"{path.name}: {intent} (the model alone gave it {take.score:.0%})")
        takes.append(take)
    return takes


def enroll_live(enroller: Enroller, source: AudioSource, intents: list[str], takes_per_intent: int,
                texts: dict[str, str], say: Callable[[str], None] = print,
                keep_dir: Path | None = None) -> list[Take]:
    """Prompt for each intent `takes_per_intent` times and listen for it; with `keep_dir`, every
    take is also saved as keep_dir/<intent>/<n>.wav (a folder `polyvox enroll --data` reads)."""
    for intent in intents:
        enroller.check_intent(intent)
    if len(set(intents)) < 2:  # said before anyone records, not after
        raise BundleError("a voice profile needs recordings of at least two intents (it compares them)")
    chunks = source.chunks(CHUNK)
    takes = []
    for intent in intents:
        for n in range(1, takes_per_intent + 1):
            say(f"say \"{texts.get(intent, intent)}\" ({intent}, {n} of {takes_per_intent})")
            audio: list[np.ndarray] = []
            take = None
            for attempt in range(RETRIES + 1):
                audio.clear()
                take = enroller.from_stream(chunks, intent, keep=audio if keep_dir else None)
                if take is not None:
                    break
                say("  nothing heard; " + ("again, please" if attempt < RETRIES else "skipped"))
            if take is None:
                continue
            say(f"  heard (the model alone gave it {take.score:.0%})")
            takes.append(take)
            if keep_dir and audio:
                try:
                    (keep_dir / intent).mkdir(parents=True, exist_ok=True)
                    write_wav(keep_dir / intent / f"{n}.wav", np.concatenate(audio))
                except (OSError, AudioError) as exc:  # the take itself is kept in the profile
                    log.warning("take not saved in '%s': %s", keep_dir, exc)
    return takes
