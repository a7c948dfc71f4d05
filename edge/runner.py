"""`polyvox run`: open the source, load the language's models, stream, emit events.

The runner owns the process-level concerns (signals, sinks, metrics at exit); the data path
itself is `edge.pipeline.Pipeline`.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from edge.audio import AudioError, WavSource, open_source, room_tone
from edge.bundle import BundleError, find_bundles, read_manifest
from edge.config import RunConfig, canonical_language, frontend_config, heard_languages
from edge.events import Event
from edge.pipeline import ROOM_TONE_S, ModelSet, Pipeline, PipelineConfig, check_wake, load_models

log = logging.getLogger(__name__)


def bundles_for(models_dir: str | Path, language: str, tasks: tuple[str, ...] = ("wake", "command")) -> list[Path]:
    """Bundle directories under models_dir for one language and the given tasks."""
    found = []
    for path in find_bundles(models_dir):
        try:
            m = read_manifest(path)
        except BundleError:
            continue
        if m.get("language") == language and m.get("task") in tasks:
            found.append(path)
    return found


def resolve_bundles(cfg: RunConfig, language: str | None = None, mode: str | None = None) -> list[Path]:
    """The bundles a language and mode need. `auto` means every language's bundles plus the
    spoken-language identifier, which picks the language per utterance; a conversation (`en+fr`)
    means those languages' bundles plus the identifier."""
    if cfg.bundles:
        return [Path(b) for b in cfg.bundles]
    lang = language or cfg.language
    tasks = ("phrase",) if (mode or cfg.mode) == "translate" else ("wake", "command")
    found = {code: bundles_for(cfg.models_dir, code, tasks) for code in heard_languages(lang)}
    # `auto` listens for whichever languages have models; a named language must have them.
    missing = [code for code, paths in found.items() if not paths] if lang != "auto" else []
    paths = [p for ps in found.values() for p in ps]
    if missing or not paths:
        raise BundleError(f"no {'/'.join(tasks)} models for language {(missing or [lang])[0]!r} in {cfg.models_dir}; "
                          f"run `polyvox models` to list them")
    if len(found) > 1:
        paths += bundles_for(cfg.models_dir, "*", ("langid",))
    return paths


def load_language(cfg: RunConfig, language: str | None = None, mode: str | None = None) -> ModelSet:
    """The models for `language` (default: the config's), named by that setting: `auto` stays
    `auto`, so a service can tell that what it was asked for is what is listening. A --bundle
    list with no language asked for is named by its bundles' languages."""
    models = load_models(resolve_bundles(cfg, language, mode), frontend_config(), cfg.num_threads, cfg.profiles)
    if language is not None or not cfg.bundles:
        models.language = canonical_language(language or cfg.language)
    return models


def stdout_sink(event: Event) -> None:
    sys.stdout.write(event.to_json() + "\n")
    sys.stdout.flush()


class Runner:
    """Source → Pipeline → sinks, until the source ends or stop() is called."""

    def __init__(self, cfg: RunConfig, sinks: list[Callable[[Event], None]] | None = None) -> None:
        self.cfg = cfg
        t0 = time.perf_counter()
        # The source first: a missing file or microphone is the likelier mistake.
        self.source = open_source(cfg.source, rate_hz=cfg.rate_hz, device=cfg.device or None,
                                  realtime=cfg.realtime, chunk_samples=cfg.chunk_samples)
        try:
            self.models = load_language(cfg)
            check_wake(self.models, cfg.wake)
        except BaseException:
            self.source.close()
            raise
        pcfg = PipelineConfig(frontend=frontend_config(), vad=cfg.vad, wake=cfg.wake, listen_s=cfg.listen_s,
                              sensitivity=cfg.sensitivity, num_threads=cfg.num_threads, langid_rule=cfg.langid_rule,
                              language_memory_s=cfg.language_memory_s)
        self.pipeline = Pipeline(pcfg, self.models)
        if isinstance(self.source, WavSource):  # live audio's first sound is its room; a file may start with a word
            self.pipeline.lead_in(room_tone(self.source.samples, ROOM_TONE_S))
        self.startup_s = time.perf_counter() - t0
        self.sinks = sinks if sinks is not None else [stdout_sink]
        self.translator = None
        self.speech_out: Any = None
        self._speech_lock = threading.Lock()
        if cfg.mode == "translate":
            self.set_translation(cfg.target_language)
        self._stop = threading.Event()
        self.on_chunk: Callable[[], None] | None = None
        log.info("ready in %.2f s: %s, models %s", self.startup_s, cfg.source,
                 ", ".join(h.bundle.name for h in self.models.heads))

    def stop(self) -> None:
        self._stop.set()

    def set_translation(self, target_language: str) -> None:
        """Speak recognized phrases in target_language, to --output WAV or the speaker."""
        from edge.translate import Translator

        self.use_translator(Translator(self.pipeline.models, target_language))

    def open_speech_out(self) -> None:
        """Open --output or the speaker once; AudioError (one line) when it cannot be. A service
        calls this before it switches to translation, so a missing speaker refuses the switch."""
        from edge.audio import SpeakerSink, WavSink

        with self._speech_lock:
            if self.speech_out is None:
                device = self.cfg.output_device or None
                self.speech_out = WavSink(self.cfg.output) if self.cfg.output else SpeakerSink(device)

    def use_translator(self, translator: Any) -> None:
        """Install (or, with None, remove) the translator; opens the speech output on first use."""
        if translator is not None:
            self.open_speech_out()
        self.translator = translator

    def translate(self, events: list[Event]) -> list[Event]:
        """Replace phrase events by translation events and speak the target phrase; the pipeline
        stays deaf while the box speaks, so it never hears itself."""
        if self.translator is None:
            return events
        out = []
        for event in events:
            try:
                result = self.translator.translate(event) if event.type == "command" else None
            except AudioError as exc:  # the phrase could not be rendered: publish it as heard
                log.error("phrase not translated: %s", exc)
                result = None
            if result is None:
                out.append(event)
                continue
            # A file gets half a second of silence around each phrase, as a listener's room would.
            pause = np.zeros(8000 if self.cfg.output else 0, dtype=np.int16)
            try:
                self.speech_out.write(np.concatenate([pause, result.audio, pause]))
                result.event.extra["spoken"] = True
            except AudioError as exc:  # an unplugged speaker: keep listening, still publish the event
                log.error("translation not spoken: %s", exc)
                result.event.extra["spoken"] = False
            else:
                if not self.cfg.output:  # a file is not heard in the room: only the speaker deafens
                    speech_s = len(result.audio) / 16000
                    self.pipeline.deaf_until_s = self.pipeline.time_of(self.pipeline.frame) + speech_s
            # End of the source utterance → first target sample: decision delay in stream time
            # plus the wall time to look up and render the phrase.
            result.event.extra["speech_latency_s"] = round(
                event.t_emit - event.t_end + result.event.extra["render_s"], 4)
            out.append(result.event)
        return out

    def emit(self, events: list[Event]) -> None:
        for event in events:
            for sink in self.sinks:
                try:
                    sink(event)
                except BrokenPipeError:  # `polyvox run | head -1`: whoever read the events is gone
                    self._stdout_closed()
                except Exception:  # a broken sink must not stop listening
                    log.exception("event sink failed")

    def _stdout_closed(self) -> None:
        """Stop, as a Unix filter does when its reader has gone."""
        if not self._stop.is_set():
            log.info("stdout was closed; stopping")
        # Later writes (and the interpreter's flush at exit) go nowhere instead of failing again.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
        self.stop()

    def run(self) -> dict:
        cpu0, wall0 = time.process_time(), time.perf_counter()
        try:
            for chunk in self.source.chunks(self.cfg.chunk_samples):
                self.emit(self.translate(self.pipeline.feed(chunk)))
                self.pipeline.metrics.dropped_frames = self.source.dropped_frames
                if self.on_chunk:
                    self.on_chunk()
                if self._stop.is_set():
                    break
            self.emit(self.translate(self.pipeline.finish()))
        finally:
            self.source.close()
            if self.speech_out is not None:
                self.speech_out.close()
        m = self.pipeline.metrics.to_dict()
        m["process_rtf"] = round((time.process_time() - cpu0) / m["audio_s"], 5) if m["audio_s"] else 0.0
        m["wall_s"] = round(time.perf_counter() - wall0, 3)
        m["startup_s"] = round(self.startup_s, 3)
        return m


def install_signal_handlers(runner: Runner) -> None:
    def handle(signum: int, _frame: object) -> None:
        log.info("signal %d: stopping", signum)
        runner.stop()

    signal.signal(signal.SIGTERM, handle)
    signal.signal(signal.SIGINT, handle)


def metrics_line(metrics: dict) -> str:
    return json.dumps(metrics)
