"""`polyvox run`: open the source, load the language's models, stream, emit events.

The runner owns the process-level concerns (signals, sinks, metrics at exit); the data path
itself is `edge.pipeline.Pipeline`.
"""

from __future__ import annotations

import json
import logging
import signal
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

from edge.audio import open_source
from edge.bundle import BundleError, find_bundles, read_manifest
from edge.config import RunConfig, frontend_config
from edge.events import Event
from edge.pipeline import ModelSet, Pipeline, PipelineConfig, load_models

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


def resolve_bundles(cfg: RunConfig, language: str | None = None) -> list[Path]:
    if cfg.bundles:
        return [Path(b) for b in cfg.bundles]
    lang = language or cfg.language
    paths = bundles_for(cfg.models_dir, lang)
    if not paths:
        raise BundleError(f"no models for language {lang!r} in {cfg.models_dir}; run `polyvox models` to list them")
    return paths


def load_language(cfg: RunConfig, language: str | None = None) -> ModelSet:
    return load_models(resolve_bundles(cfg, language), frontend_config(), cfg.num_threads)


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
                                  realtime=cfg.realtime)
        try:
            self.models = load_language(cfg)
        except BaseException:
            self.source.close()
            raise
        pcfg = PipelineConfig(frontend=frontend_config(), vad=cfg.vad, wake=cfg.wake, listen_s=cfg.listen_s,
                              sensitivity=cfg.sensitivity, num_threads=cfg.num_threads)
        self.pipeline = Pipeline(pcfg, self.models)
        self.startup_s = time.perf_counter() - t0
        self.sinks = sinks if sinks is not None else [stdout_sink]
        self._stop = threading.Event()
        self.on_chunk: Callable[[], None] | None = None
        log.info("ready in %.2f s: %s, models %s", self.startup_s, cfg.source,
                 ", ".join(h.bundle.name for h in self.models.heads))

    def stop(self) -> None:
        self._stop.set()

    def emit(self, events: list[Event]) -> None:
        for event in events:
            for sink in self.sinks:
                try:
                    sink(event)
                except Exception:  # a broken sink must not stop listening
                    log.exception("event sink failed")

    def run(self) -> dict:
        cpu0, wall0 = time.process_time(), time.perf_counter()
        try:
            for chunk in self.source.chunks(self.cfg.chunk_samples):
                self.emit(self.pipeline.feed(chunk))
                self.pipeline.metrics.dropped_frames = self.source.dropped_frames
                if self.on_chunk:
                    self.on_chunk()
                if self._stop.is_set():
                    break
            self.emit(self.pipeline.finish())
        finally:
            self.source.close()
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
