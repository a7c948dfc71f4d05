"""The data path, top to bottom: samples → frames → features → models → decisions → events.

    audio chunk ─► Frontend (10 ms log-mel frames) ─► Vad (utterance start/end)
                          │
                          └─► Embedder (96-d every 80 ms) ─► wake heads ─► WakeDecider ─► wake event
                                                          └─► command heads at each utterance end
                                                                ─► decide_command ─► command event
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import numpy as np

from edge.bundle import Bundle, BundleError, load_bundle
from edge.decisions import TIE_MARGIN, DecisionConfig, WakeDecider, decide_command
from edge.events import Event
from edge.frontend import Frontend, FrontendConfig
from edge.models import EMBEDDING_HOP, Embedder, StatefulHead, WindowHead, silence_logmel
from edge.profile import ProfileScorer, VoiceProfile, profile_decision
from edge.vad import Vad, VadConfig

log = logging.getLogger(__name__)

STAGES = ("frontend", "vad", "embedding", "wake", "command")
RECORDING_LEAD_S = 0.5
"""Silence heard before every evaluation clip and a WAV file too short for its own room tone:
the quiet the VAD learns its noise from before anyone speaks."""
ROOM_TONE_S = 1.5
"""A longer WAV file is heard after its own quietest stretch of this length (the VAD's noise window)."""


@dataclass(frozen=True)
class PipelineConfig:
    frontend: FrontendConfig = field(default_factory=FrontendConfig)
    vad: VadConfig = field(default_factory=VadConfig)
    wake: str = "auto"
    """on: commands only within listen_s after a wake phrase; off: every utterance goes to the
    command models; auto: on when a wake model is loaded."""
    listen_s: float = 5.0
    sensitivity: float = 0.5
    num_threads: int = 1
    langid_rule: str = "tiebreak"
    """With a language-id model loaded (`--language auto`): tiebreak (the most confident phrase
    head wins; the language identifier decides between heads within TIE_MARGIN of it), joint
    (language probability × phrase confidence), argmax (the identifier alone picks the language)
    or off (phrase heads alone)."""
    language_memory_s: float = 60.0
    """With several languages listened for (auto or a conversation): when a head of a language
    heard within this many seconds fires, only such heads compete. People keep to their language,
    and most cross-language confusions are words that sound alike ("no", "sí"/"six"). 0 = off."""
    isolate_utterances: bool = True
    """At an utterance's end, window heads see silence in place of the embeddings computed wholly
    before it began: in training every phrase follows silence or noise, never another phrase, so
    the tail of the previous utterance is not part of this one. (Training windows keep their
    lead-in of noise, so the two differ there: on 53 en-command training clips top-1 was the
    same either way.) Held-out phrases, two speakers taking turns under --language auto:
    94.0 -> 95.2 % (even phrase ids), 93.7 -> 94.0 % (odd)."""


@dataclass
class Head:
    """A loaded bundle with its runner and decision rule."""

    bundle: Bundle
    runner: WindowHead | StatefulHead
    decision: DecisionConfig
    wake: WakeDecider | None = None
    profile: ProfileScorer | None = None
    """The user's voice profile for this model (edge.profile), if one was given."""


@dataclass
class ModelSet:
    """Everything one language needs; built off the audio thread, swapped in whole."""

    heads: list[Head]
    embedder: Embedder | None
    language: str
    load_s: float = 0.0

    # Cached: the loop asks every frame, and `heads` never changes once loaded.
    @cached_property
    def wake_heads(self) -> list[Head]:
        return [h for h in self.heads if h.bundle.task == "wake"]

    @cached_property
    def command_heads(self) -> list[Head]:
        return [h for h in self.heads if h.bundle.task in ("command", "phrase")]

    @cached_property
    def langid_head(self) -> Head | None:
        return next((h for h in self.heads if h.bundle.task == "langid"), None)

    def summary(self) -> list[dict]:
        return [{**h.bundle.summary(), "voice_profile": h.profile is not None} for h in self.heads]

    @property
    def intents(self) -> list[str]:
        return sorted({lab for h in self.heads for lab in h.bundle.labels if not lab.startswith("_")})


LISTENING_TASKS = ("wake", "command", "phrase", "langid")
"""Bundle tasks the pipeline runs; the speech embedding is loaded through the bundles that use it."""


def load_models(paths: list[Path], frontend: FrontendConfig, num_threads: int = 1,
                profiles: tuple[str | Path, ...] = ()) -> ModelSet:
    """Load and validate bundles; all embedding heads share one embedder. Each voice profile goes
    to the loaded model it was recorded for; one for a model not loaded (another language's) waits."""
    t0 = time.perf_counter()
    bundles = [load_bundle(p, frontend) for p in paths]
    if not bundles:
        raise BundleError("no model bundles to load")
    for b in bundles:
        if b.task not in LISTENING_TASKS:
            raise BundleError(f"bundle '{b.path}': task {b.task!r} is not a model to listen with "
                              f"(those are {', '.join(LISTENING_TASKS)})")
    embedder = None
    # One embedder for all: bundles agree by the embedding's sha256 (load_bundle checked each
    # file against it), so a bundle copied elsewhere with its own copy of the model still fits.
    embeddings = {b.manifest.get("embedding", {}).get("sha256") or str(b.embedding_path): b.embedding_path
                  for b in bundles if b.input_features == "embedding"}
    if len(embeddings) > 1:
        raise BundleError("bundles use different embedding models: "
                          + ", ".join(sorted({str(b.embedding_path) for b in bundles if b.embedding_path})))
    if embeddings:
        embedder = Embedder(next(iter(embeddings.values())), frontend, num_threads)
    heads = []
    for b in bundles:
        # A window starts as silence, as the toolchain pads one (log-mel heads: silence's log-mel).
        fill = embedder.silence_embedding if b.input_features == "embedding" else silence_logmel(frontend)
        runner = StatefulHead(b, num_threads) if b.state else WindowHead(b, num_threads, fill)
        decision = DecisionConfig.from_manifest(b.decision)
        wake = WakeDecider(b.labels, decision) if b.task == "wake" else None
        heads.append(Head(b, runner, decision, wake))
    for path in profiles:
        _attach_profile(heads, VoiceProfile.load(path), path)
    # "*" is the language identifier's: it listens to every language and names none.
    languages = sorted({b.language for b in bundles} - {"*"}) or ["*"]
    return ModelSet(heads, embedder, "+".join(languages), time.perf_counter() - t0)


def _attach_profile(heads: list[Head], profile: VoiceProfile, path: str | Path) -> None:
    for head in heads:
        if head.bundle.name != profile.bundle_name:
            continue
        reason = profile.fits(head.bundle)
        if reason:
            # An update that replaced the model must not stop the service: it listens without.
            log.warning("voice profile '%s' is not used: %s", path, reason)
            return
        if head.profile is not None:
            raise BundleError(f"voice profile '{path}': {head.bundle.name} already has one")
        head.profile = ProfileScorer(profile, head.bundle.labels)
        # Enrolled intents are decided at the profile's threshold; sensitivity still moves it.
        head.decision = profile_decision(head.decision, profile)
        log.info("%s: voice profile '%s' (%d recordings of %d intents)", head.bundle.name, path,
                 len(profile.intents), len(set(profile.intents)))
        return
    log.info("voice profile '%s' is for %s, which is not loaded", path, profile.bundle_name)


def check_wake(models: ModelSet, wake: str) -> None:
    """wake = "on" with no wake model would never let a command through: say so instead."""
    if wake == "on" and not models.wake_heads:
        raise BundleError(f"wake is on but no wake model is loaded for {models.language} "
                          "(phrasebooks and --bundle lists without one have none); use --wake auto or off")


@dataclass
class Metrics:
    audio_s: float = 0.0
    cpu_s: dict[str, float] = field(default_factory=lambda: dict.fromkeys(STAGES, 0.0))
    dropped_frames: int = 0
    latencies_s: list[float] = field(default_factory=list)
    """Decision time minus end of speech, per command (or phrase) event."""
    events: int = 0

    @property
    def rtf(self) -> float:
        return sum(self.cpu_s.values()) / self.audio_s if self.audio_s else 0.0

    def to_dict(self) -> dict:
        return {
            "audio_s": round(self.audio_s, 3),
            "rtf": round(self.rtf, 5),
            "stage_rtf": {k: round(v / self.audio_s, 6) if self.audio_s else 0.0 for k, v in self.cpu_s.items()},
            "dropped_frames": self.dropped_frames,
            "events": self.events,
            "latency_s_mean": round(float(np.mean(self.latencies_s)), 3) if self.latencies_s else None,
        }


class Pipeline:
    def __init__(self, cfg: PipelineConfig, models: ModelSet) -> None:
        self.cfg = cfg
        self.frontend = Frontend(cfg.frontend)
        self.vad = Vad(cfg.vad)
        self.metrics = Metrics()
        self.sensitivity = cfg.sensitivity
        self.muted = False
        self._pending: ModelSet | None = None
        self._frame_s = cfg.frontend.hop_samples / cfg.frontend.sample_rate_hz
        self._center_s = cfg.frontend.fft_size / 2 / cfg.frontend.sample_rate_hz
        self.frame = 0
        self._origin_s = 0.0
        """Stream time of the recording's first sample (after a lead_in)."""
        self.last_heard_language: str | None = None
        self._heard_at: dict[str, float] = {}
        """Stream time at which each language was last decided (language memory)."""
        self._embedding_frame = 0
        """The frame the newest embedding ends at (isolate_utterances)."""
        self.deaf_until_s = -1.0
        """Stream time until which input is ignored (the box is speaking: no self-triggering)."""
        self.heard: list[tuple[str, np.ndarray, np.ndarray]] | None = None
        """When a list: every utterance head's (bundle name, window, posteriors) is appended to it
        at each utterance's end (enrollment reads what the heads saw)."""
        self._install(models)

    # -- model swapping (called from other threads; applied between chunks) -------------
    def swap_models(self, models: ModelSet) -> None:
        self._pending = models

    def _install(self, models: ModelSet) -> None:
        self.models = models
        self._heard_at = {}
        for h in models.heads:
            trained = None if h.wake else h.bundle.manifest.get("training", {}).get("vad", {}).get("hangover_s")
            if trained is not None and abs(trained - self.cfg.vad.hangover_s) > 1e-6:
                # Utterance heads classify the window where the VAD closes: a different hangover
                # shows them audio shifted from what they were trained on.
                log.warning("%s was trained with vad.hangover_s = %g but the VAD uses %g; expect lower accuracy",
                            h.bundle.name, trained, self.cfg.vad.hangover_s)
            h.runner.reset()
            if h.wake:
                h.wake.reset()
        if models.embedder:
            models.embedder.reset()
        self.wake_on = models.wake_heads != [] if self.cfg.wake == "auto" else self.cfg.wake == "on"
        self._listen_until = -1.0
        self._wake_time = -1.0

    def reset(self) -> None:
        """A fresh stream with the same models: frontend, VAD, clocks, model states."""
        self.frontend.reset()
        self.vad.reset()
        self.frame = 0
        self._origin_s = 0.0
        self._embedding_frame = 0
        self.deaf_until_s = -1.0
        self._install(self.models)

    def time_of(self, frame: int) -> float:
        return max(0.0, frame * self._frame_s + self._center_s - self._origin_s)

    def lead_in(self, room: np.ndarray | None = None) -> None:
        """Start a recording as every evaluation clip starts: after RECORDING_LEAD_S of silence,
        so that the VAD's first noise estimate is not the recording's first sound (a clip trimmed
        to start with its word, 2 of 4 real English digits tried, was never heard). With `room`
        (a recording's own quiet, edge.audio.room_tone) the VAD takes its noise from that instead:
        after silence alone, a recording that opens with babble was heard as a TV switched on in
        a quiet room, one utterance of up to vad.max_utterance_s. Only the VAD keeps anything of
        the room (events, wake and language state are the silence's); times and metrics stay the
        recording's."""
        rate = self.cfg.frontend.sample_rate_hz
        m = self.metrics
        kept = m.audio_s, dict(m.cpu_s), m.events, len(m.latencies_s), self.last_heard_language
        noise = None
        if room is not None:  # the VAD alone listens to the room: no model needs to hear it
            self.frontend.process(room.astype(np.float32))
            for energy, flatness in zip(self.frontend.energy_db, self.frontend.flatness, strict=True):
                self.vad.step(float(energy), float(flatness))
            noise = self.vad.room()
            self.reset()
        silence = np.zeros(round(RECORDING_LEAD_S * rate), dtype=np.float32)
        self.feed(silence)  # silence decides nothing: no event to lose
        if noise is not None:
            self.vad.know_room(noise)
        m.audio_s, m.cpu_s, m.events = kept[:3]
        del m.latencies_s[kept[3]:]
        self.last_heard_language = kept[4]
        self._origin_s += len(silence) / rate

    # -- the loop ------------------------------------------------------------------------
    def feed(self, samples: np.ndarray) -> list[Event]:
        if self._pending is not None:
            models, self._pending = self._pending, None
            self._install(models)
            log.info("now listening in %s", models.language)
        cpu = self.metrics.cpu_s
        self.metrics.audio_s += len(samples) / self.cfg.frontend.sample_rate_hz
        clock = time.process_time

        t0 = clock()
        deaf = self.muted or self.time_of(self.frame) < self.deaf_until_s
        if deaf:
            samples = np.zeros(len(samples), dtype=np.float32)
        feats = self.frontend.process(samples)
        energy, flatness = self.frontend.energy_db, self.frontend.flatness
        cpu["frontend"] += clock() - t0

        events: list[Event] = []
        models = self.models
        for i in range(len(feats)):
            t = self.time_of(self.frame)
            self.frame += 1

            t0 = clock()
            if deaf:
                self.vad.hold()
                utterance = None
            else:
                utterance = self.vad.step(float(energy[i]), float(flatness[i]))
            t1 = clock()
            cpu["vad"] += t1 - t0

            embedding = models.embedder.push(feats[i]) if models.embedder else None
            if embedding is not None:
                self._embedding_frame = self.frame - 1
            t2 = clock()
            cpu["embedding"] += t2 - t1

            for head in models.heads:
                vector = embedding if head.bundle.input_features == "embedding" else feats[i]
                if vector is not None:
                    head.runner.push(vector)
            for head in models.wake_heads:
                if embedding is None and head.bundle.input_features == "embedding":
                    continue
                if head.runner.steps % head.bundle.hop:
                    continue
                event = self._wake(head, t)
                if event:
                    events.append(event)
            t3 = clock()
            cpu["wake"] += t3 - t2

            if utterance is not None:
                event = self._command(utterance.start_frame, utterance.end_frame, t)
                if event:
                    events.append(event)
            cpu["command"] += clock() - t3

        self.metrics.events += len(events)
        # A wake event is decided while its phrase may still sound, and its end is that decision
        # time: its latency would be zero by construction, so only utterance events count.
        self.metrics.latencies_s.extend(e.t_emit - e.t_end for e in events if e.type != "wake")
        return events

    def finish(self) -> list[Event]:
        """End of stream: let the VAD hear its hangover of silence so a last utterance closes."""
        pad = int((self.cfg.vad.hangover_s + 0.1) * self.cfg.frontend.sample_rate_hz)
        audio_s = self.metrics.audio_s
        events = self.feed(np.zeros(pad, dtype=np.float32))
        self.metrics.audio_s = audio_s
        return events

    # -- decisions -----------------------------------------------------------------------
    def _wake(self, head: Head, t: float) -> Event | None:
        probs = head.runner.scores()
        hit = head.wake.update(probs, t, self.sensitivity)
        if hit is None:
            return None
        label, confidence = hit
        self._listen_until = t + self.cfg.listen_s
        self._wake_time = t
        start = self.time_of(self.vad.start_frame) if self.vad.in_speech else max(0.0, t - 1.0)
        return Event("wake", label, head.bundle.language, head.bundle.texts.get(label, label),
                     confidence, start, t, t, head.bundle.name)

    def _window(self, head: Head, start_frame: int) -> np.ndarray | None:
        """The window an utterance head classifies at the utterance's end (see isolate_utterances);
        None for a streaming-state head, which has none."""
        if not isinstance(head.runner, WindowHead):
            return None
        window = head.runner.current_window()
        embedder = self.models.embedder
        if self.cfg.isolate_utterances and embedder and head.bundle.input_features == "embedding":
            # The newest embedding ends at the last frame pushed; each older one a hop earlier.
            ends = self._embedding_frame - EMBEDDING_HOP * np.arange(len(window))[::-1]
            window[ends < start_frame] = embedder.silence_embedding
        return window

    def _scores(self, head: Head, start_frame: int) -> np.ndarray:
        """An utterance head's posteriors at the utterance's end, with its voice profile's opinion
        when it has one."""
        window = self._window(head, start_frame)
        if window is None:
            return head.runner.scores()
        probs = head.runner.classify(window)
        if head.profile is not None:
            probs = head.profile.adapt(probs, window)
        if self.heard is not None:
            self.heard.append((head.bundle.name, window, probs))
        return probs

    def _command(self, start_frame: int, end_frame: int, t: float) -> Event | None:
        t_start, t_end = self.time_of(start_frame), self.time_of(end_frame)
        # With wake on, only utterances that begin after the wake phrase, within the listening window.
        if self.wake_on and not (self._wake_time - 0.2 <= t_start <= self._listen_until):
            return None
        heads = self.models.command_heads
        prior: dict[str, float] = {}
        lid = self.models.langid_head
        rule = self.cfg.langid_rule
        if lid is not None and rule != "off":
            probs = self._scores(lid, start_frame)
            # Only the languages listened for compete: in a conversation (en+fr) an English "no"
            # cannot be taken for Spanish.
            listened = {h.bundle.language for h in heads}
            prior = {lab: float(p) for lab, p in zip(lid.bundle.labels, probs, strict=True) if lab in listened}
            if prior:
                self.last_heard_language = max(prior, key=prior.get)
            if rule == "argmax":
                heads = [h for h in heads if h.bundle.language == self.last_heard_language] or heads
                prior = {}
        hits = []
        for head in heads:
            hit = decide_command(head.bundle.labels, self._scores(head, start_frame), head.decision, self.sensitivity)
            if hit:
                hits.append((head, *hit))
        if not hits:
            return None
        if self.cfg.language_memory_s > 0:
            recent = [h for h in hits if t - self._heard_at.get(h[0].bundle.language, -np.inf)
                      <= self.cfg.language_memory_s]
            hits = recent or hits
        if rule == "tiebreak":
            top = max(conf for _, _, conf in hits)
            hits = [h for h in hits if h[2] >= top - TIE_MARGIN]
        # Each remaining confidence weighed by its language's probability (no prior for argmax,
        # off or a single language).
        head, label, confidence = max(hits, key=lambda h: h[2] * prior.get(h[0].bundle.language, 1.0))
        best = Event("command", label, head.bundle.language, head.bundle.texts.get(label, label),
                     confidence, t_start, t_end, t, head.bundle.name)
        if lid is not None:
            self.last_heard_language = best.language
        self._heard_at[best.language] = t
        if self.wake_on:
            self._listen_until = -1.0
        return best
