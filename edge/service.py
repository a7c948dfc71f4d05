"""`polyvox run` as a long-running service: the Runner plus control state, signals, systemd, MQTT.

    main thread    signal flags → stop / SIGHUP reload; shutdown
    audio thread   Runner.run(): source → Pipeline → sinks (stdout or MQTT, then the state observer)
    loader thread  one per language switch: builds the new ModelSet off the audio path
    MQTT thread    MqttLink's supervised connection (only when a broker is configured)

Without a broker, events go to stdout as JSON lines exactly as the plain Runner prints them.
"""

from __future__ import annotations

import json
import logging
import math
import os
import resource
import signal
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from edge import __version__
from edge.bundle import BundleError, find_bundles, read_manifest
from edge.config import LANGUAGES, MODES, ConfigError, RunConfig, canonical_language, heard_languages, load_config
from edge.events import Event
from edge.mqtt import DiscoveryInfo, LinkSettings, MqttLink
from edge.pipeline import ModelSet, check_wake
from edge.runner import Runner, load_language, resolve_bundles, stdout_sink
from edge.sdnotify import Watchdog, notify

log = logging.getLogger(__name__)

POLL_S = 0.1
"""How often the main thread looks at signal flags (handlers only set flags: they may not lock)."""
AUDIO_JOIN_S = 0.5
"""On SIGTERM, how long the audio thread may take to finish its chunk and close the source."""
LINK_STOP_S = 0.6
"""On SIGTERM, how long publishing `offline` and disconnecting may take (all within systemd's 2 s)."""
FLUSH_AT_END_S = 3.0
"""When the source ends by itself, how long queued events may take to reach the broker."""
CPU_WINDOW_S = 1.0
THERMAL_ZONE = Path("/sys/class/thermal/thermal_zone0/temp")
PROC_STATUS = Path("/proc/self/status")
RESTART_KEYS = ("source", "rate_hz", "device", "output_device", "wake", "listen_s", "vad", "num_threads",
                "chunk_samples", "realtime", "output")
"""RunConfig keys that take effect only when the process starts."""


@dataclass
class ControlState:
    """What people and home automation can change, and what the box last heard."""

    language: str
    mode: str = "command"
    target_language: str = "en"
    muted: bool = False
    sensitivity: float = 0.5
    last_heard_language: str | None = None
    last_command: str | None = None
    """Intent of the last command event."""


@dataclass(frozen=True)
class _Switch:
    """A loaded language waiting for the audio thread to install it."""

    language: str
    models: ModelSet
    requested_at: float
    """time.monotonic() of the set_language call."""
    mode: str = "command"
    translator: Any = None
    """A ready Translator (target phrases pre-rendered) when the mode is translate."""


class _CpuMeter:
    """Process CPU use in percent of one core, averaged over at least CPU_WINDOW_S of wall time."""

    def __init__(self) -> None:
        self._wall, self._cpu = time.monotonic(), time.process_time()
        self._percent = 0.0

    def percent(self) -> float:
        wall, cpu = time.monotonic(), time.process_time()
        if wall - self._wall >= CPU_WINDOW_S:
            self._percent = round(100.0 * (cpu - self._cpu) / (wall - self._wall), 1)
            self._wall, self._cpu = wall, cpu
        return self._percent


def rss_mb(status: Path = PROC_STATUS) -> float:
    """Resident memory now (VmRSS); where /proc is missing, the peak from getrusage."""
    try:
        for line in status.read_text().splitlines():
            if line.startswith("VmRSS:"):
                return round(int(line.split()[1]) / 1024, 1)
    except (OSError, ValueError, IndexError):
        pass
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def temperature_c(path: Path = THERMAL_ZONE) -> float | None:
    """The SoC temperature where the board has a sensor (millidegrees in sysfs)."""
    try:
        return round(int(path.read_text().strip()) / 1000, 1)
    except (OSError, ValueError):
        return None


def _manifest_language(path: Path) -> str | None:
    try:
        return read_manifest(path).get("language")
    except BundleError:
        return None


class Service:
    """Runs the Runner in an audio thread and lets other threads change what it listens for."""

    def __init__(self, cfg: RunConfig, runner: Runner | None = None, thermal_path: Path = THERMAL_ZONE) -> None:
        # Broker settings first: a bad URL is reported before the microphone is opened.
        settings = LinkSettings.from_config(cfg.mqtt) if cfg.mqtt.url else None
        self.cfg = cfg
        self.runner = runner if runner is not None else Runner(cfg, sinks=[])
        self.thermal_path = thermal_path
        pipeline = self.runner.pipeline
        language = cfg.language if not cfg.bundles else pipeline.models.language
        self.control = ControlState(language, cfg.mode, cfg.target_language, pipeline.muted,
                                    pipeline.sensitivity)
        self.link: MqttLink | None = MqttLink(settings, self) if settings else None
        self.language_switch_s: float | None = None
        """Seconds from the last set_language call until the new models were listening."""
        self.reload_config: Callable[[], RunConfig] | None = None
        """Re-reads the configuration for SIGHUP; set by run_service."""
        self.metrics: dict[str, Any] | None = None
        self._switch: _Switch | None = None
        self._wanted = (self.control.language, self.control.mode)
        """The language and mode of the latest request, loaded or not: the next request starts
        from it, so two settings sent close together both take effect."""
        self._generation = 0
        self._lock = threading.Lock()
        self._started = time.monotonic()
        self._cpu = _CpuMeter()
        self._watchdog = Watchdog()
        self._stop_requested = False
        self._reload_requested = False
        self._running = False
        self._audio_error: BaseException | None = None
        self.audio_stuck = False
        """True after run() if the audio thread was still blocked in a read (idle stdin) at shutdown."""
        self.runner.on_chunk = self._on_chunk
        self._rewire()

    # -- settings (any thread) ---------------------------------------------------------
    def set_language(self, code: str, reload_models: bool = False) -> None:
        """Load `code`'s bundles in the background; the audio thread swaps them in between two
        chunks, so nothing restarts and no audio is lost. Unknown language or no models:
        ValueError (one sentence), state unchanged. reload_models: load even the language that
        is listening (the models folder or bundle list changed)."""
        code = canonical_language(code)
        with self._lock:
            mode = self._wanted[1]
        self._switch_to(code, mode, "language", code, reload_models)

    def _switch_to(self, code: str, mode: str, setting: str, payload: str, reload_models: bool = False) -> None:
        """Load `code`'s models for `mode` unless they are what is listening and nothing else is
        on its way; `setting`=`payload` names the request in a refusal. reload_models: load
        anew even so (the models folder or bundle list changed)."""
        paths = self._bundle_paths(code, mode)
        with self._lock:
            self._generation += 1
            generation = self._generation
            self._wanted = (code, mode)
            if (code == self.control.language and mode == self.control.mode and self._switch is None
                    and self.runner.pipeline.models.language == code and not reload_models):
                self._changed()  # also cancels a load on its way (its generation is stale)
                return
        threading.Thread(target=self._load, args=(code, paths, generation, time.monotonic(), mode, setting, payload),
                         name=f"polyvox-load-{code}", daemon=True).start()

    def set_mode(self, mode: str) -> None:
        """command ↔ translate: loads the current language's command or phrasebook bundles in the
        background, like a language switch."""
        if mode not in MODES:
            raise ValueError(f"unknown mode {mode!r}; choose from {', '.join(MODES)}")
        with self._lock:
            language = self._wanted[0]
        self._switch_to(language, mode, "mode", mode)

    def set_target_language(self, code: str) -> None:
        if code not in LANGUAGES:
            raise ValueError(f"unknown target language {code!r}; choose from {', '.join(LANGUAGES)}")
        with self._lock:
            previous = self.control.target_language
            self.control.target_language = code  # a translate load on its way reads it when done
            pending = self._switch.translator if self._switch is not None else None
        translators = [t for t in (self.runner.translator, pending) if t is not None]
        if translators:  # rendering the phrasebook takes seconds: not on the MQTT thread
            threading.Thread(target=self._retarget, args=(code, previous, translators),
                             name=f"polyvox-target-{code}", daemon=True).start()
        self._changed()

    def _retarget(self, code: str, previous: str, translators: list[Any]) -> None:
        try:
            for translator in translators:
                translator.set_target(code)
        except Exception as exc:  # a thread's exception would vanish; report it where people look
            with self._lock:
                if self.control.target_language == code:
                    self.control.target_language = previous
            self._refuse("target_language", code, f"cannot speak {code}: {exc}")
            self._changed()

    def set_mute(self, muted: bool) -> None:
        if not isinstance(muted, bool):
            raise ValueError(f"mute must be true or false, not {muted!r}")
        self.runner.pipeline.muted = muted
        self.control.muted = muted
        self._changed()

    def set_sensitivity(self, value: float) -> None:
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
            raise ValueError(f"sensitivity must be a number from 0 to 1, not {value!r}")
        if not 0.0 <= value <= 1.0:
            raise ValueError(f"sensitivity must be between 0 and 1, not {value}")
        self.runner.pipeline.sensitivity = float(value)
        self.control.sensitivity = float(value)
        self._changed()

    def apply(self, setting: str, value: object) -> None:
        """One setting by name (the MQTT set/ topics); ValueError refuses it."""
        setters: dict[str, Callable[[Any], None]] = {
            "language": self.set_language, "mode": self.set_mode, "target_language": self.set_target_language,
            "mute": self.set_mute, "sensitivity": self.set_sensitivity}
        if setting not in setters:
            raise ValueError(f"unknown setting {setting!r}; the settings are {', '.join(setters)}")
        setters[setting](value)

    # -- what the service reports ------------------------------------------------------
    def state(self) -> dict[str, Any]:
        """The JSON published on {base}/state."""
        c, pipeline = self.control, self.runner.pipeline
        state: dict[str, Any] = {
            "language": c.language,
            "mode": c.mode,
            "target_language": c.target_language,
            "muted": c.muted,
            "sensitivity": c.sensitivity,
            "models": [{k: m[k] for k in ("language", "task", "version", "name", "voice_profile")}
                       for m in pipeline.models.summary()],
            "version": __version__,
            "uptime_s": round(time.monotonic() - self._started, 1),
            "rtf": round(pipeline.metrics.rtf, 4),
            "cpu_percent": self._cpu.percent(),
            "rss_mb": rss_mb(),
            "dropped_frames": pipeline.metrics.dropped_frames,
            "last_heard_language": c.last_heard_language,
            "last_command": c.last_command,
            "language_switch_s": self.language_switch_s,
            "events_dropped": self.link.events_dropped if self.link else 0,
            "mqtt_connected": self.link.connected if self.link else False,
        }
        temp = temperature_c(self.thermal_path)
        if temp is not None:
            state["temperature_c"] = temp
        return state

    def available_languages(self) -> tuple[str, ...]:
        """Languages with wake or command bundles to switch to, in LANGUAGES order, then `auto`
        when a language identifier is there to pick among them, and the current setting."""
        if self.cfg.bundles:
            found = {_manifest_language(Path(b)) for b in self.cfg.bundles}
        else:
            found = set()
            for path in find_bundles(self.cfg.models_dir):
                try:
                    m = read_manifest(path)
                except BundleError:
                    continue
                if m.get("task") in ("wake", "command", "langid"):
                    found.add(m.get("language"))
        if "*" in found and len(found & set(LANGUAGES)) > 1:  # "*": the language identifier
            found.add("auto")
        found.add(self.control.language)
        found.discard("*")
        return tuple(x for x in LANGUAGES if x in found) + tuple(sorted(x for x in found - set(LANGUAGES) if x))

    def discovery_info(self) -> DiscoveryInfo:
        return DiscoveryInfo(self.available_languages(), tuple(self.runner.pipeline.models.intents), __version__)

    # -- configuration -----------------------------------------------------------------
    def reload(self, cfg: RunConfig) -> list[str]:
        """Apply a re-read configuration without restarting; returns the names of what changed.

        Language, mode, target language and sensitivity are applied where the file changed since
        it was last read (a value set over MQTT survives a reload that leaves it alone); changed
        MQTT settings reconnect. Keys in RESTART_KEYS are logged and wait for the next start.
        Raises ConfigError for bad MQTT settings, before anything is applied.
        """
        old = self.cfg
        settings = LinkSettings.from_config(cfg.mqtt) if cfg.mqtt != old.mqtt and cfg.mqtt.url else None
        later = [k for k in RESTART_KEYS if getattr(cfg, k) != getattr(old, k)]
        if later:
            log.warning("reload: %s take effect at the next start", ", ".join(later))
        self.cfg = cfg
        changed: list[str] = []
        new_models = (cfg.models_dir, cfg.bundles, cfg.profiles) != (old.models_dir, old.bundles, old.profiles)
        steps: list[tuple[str, bool, Callable[[], None]]] = [
            ("language", cfg.language != old.language or new_models,
             lambda: self.set_language(cfg.language, reload_models=new_models)),
            ("mode", cfg.mode != old.mode, lambda: self.set_mode(cfg.mode)),
            ("target_language", cfg.target_language != old.target_language,
             lambda: self.set_target_language(cfg.target_language)),
            ("sensitivity", cfg.sensitivity != old.sensitivity, lambda: self.set_sensitivity(cfg.sensitivity)),
            ("langid", (cfg.langid_rule, cfg.language_memory_s) != (old.langid_rule, old.language_memory_s),
             lambda: self._set_langid(cfg.langid_rule, cfg.language_memory_s)),
        ]
        for name, differs, apply in steps:
            if not differs:
                continue
            try:
                apply()
                changed.append(name)
            except ValueError as exc:
                log.error("reload: %s", exc)
        if cfg.mqtt != old.mqtt:
            self._replace_link(settings)
            changed.append("mqtt")
        elif cfg.json != old.json:
            self._rewire()
            changed.append("json")
        log.info("reload: %s", ", ".join(changed) if changed else "nothing to change")
        return changed

    def _set_langid(self, rule: str, memory_s: float) -> None:
        pipeline = self.runner.pipeline
        # One assignment: the audio thread reads the old config or the new one, never half of each.
        pipeline.cfg = replace(pipeline.cfg, langid_rule=rule, language_memory_s=memory_s)

    def request_stop(self) -> None:
        """Ask run() to shut down; safe from a signal handler (only sets a flag)."""
        self._stop_requested = True

    def request_reload(self) -> None:
        """Ask run() to re-read the configuration; safe from a signal handler."""
        self._reload_requested = True

    # -- running -----------------------------------------------------------------------
    def run(self) -> dict[str, Any]:
        """Listen until the source ends or request_stop(); returns the run metrics."""
        self._running = True
        if self.link:
            self.link.start()
        audio = threading.Thread(target=self._audio_main, name="polyvox-audio", daemon=True)
        # Ready before the loop's first WATCHDOG=1: the audio thread pings on its first chunk, and
        # under load it beat a READY=1 sent after start() (the unit expects READY first).
        notify("READY=1")
        audio.start()
        try:
            while audio.is_alive() and not self._stop_requested:
                audio.join(POLL_S)
                if self._reload_requested:
                    self._reload_requested = False
                    self._reload_from_file()
        finally:
            self._shutdown(audio)
        if self._audio_error is not None:
            raise self._audio_error
        return self.metrics if self.metrics is not None else self.runner.pipeline.metrics.to_dict()

    def _shutdown(self, audio: threading.Thread) -> None:
        notify("STOPPING=1")
        ended_by_itself = not audio.is_alive() and not self._stop_requested
        self.runner.stop()
        audio.join(AUDIO_JOIN_S)
        self.audio_stuck = audio.is_alive()
        if self.audio_stuck:  # blocked in a read that no flag can interrupt (idle stdin); it is a daemon
            log.info("the audio source is still blocked in a read; leaving it")
        if self.link:
            if ended_by_itself:
                self.link.flush(FLUSH_AT_END_S)
            self.link.stop(LINK_STOP_S)
            lost = self.link.events_waiting
            if lost:  # say so: whoever waits for them should not have to guess
                log.warning("%d event%s never reached the broker %s and %s lost", lost, "s" * (lost > 1),
                            self.link.settings.broker, "are" if lost > 1 else "is")
        self._running = False

    def _audio_main(self) -> None:
        try:
            self.metrics = self.runner.run()
        except BaseException as exc:  # handed to the main thread, which reports it
            self._audio_error = exc

    def _reload_from_file(self) -> None:
        if self.reload_config is None:
            log.warning("SIGHUP: no configuration to re-read")
            return
        try:
            self.reload(self.reload_config())
        except ConfigError as exc:
            log.error("SIGHUP: keeping the running configuration: %s", exc)

    # -- internals -----------------------------------------------------------------------
    def _rewire(self) -> None:
        """Event outputs: stdout without a broker (or with --json), MQTT with one; the observer last."""
        sinks: list[Callable[[Event], None]] = []
        if self.link is None or self.cfg.json:
            sinks.append(stdout_sink)
        if self.link is not None:
            sinks.append(self.link.publish_event)
        sinks.append(self._observe)
        self.runner.sinks = sinks  # one assignment: the audio thread sees the old list or the new one

    def _replace_link(self, settings: LinkSettings | None) -> None:
        old = self.link
        if old is not None:
            old.stop(LINK_STOP_S)
        self.link = MqttLink(settings, self) if settings else None
        if old is not None:
            if self.link is not None:
                self.link.adopt_events(old)  # a fixed broker URL delivers what the old one could not
            elif old.events_waiting:
                log.warning("MQTT turned off: %d undelivered events dropped", old.events_waiting)
        self._rewire()
        if self.link is not None and self._running:
            self.link.start()

    def _bundle_paths(self, code: str, mode: str = "command") -> list[Path]:
        if self.cfg.bundles:
            heard = heard_languages(code)
            wanted = (*heard, "*") if len(heard) > 1 else heard  # "*": the language identifier
            paths = [Path(b) for b in self.cfg.bundles if _manifest_language(Path(b)) in wanted]
            where = "the --bundle list"
        else:
            try:
                paths = resolve_bundles(replace(self.cfg, bundles=()), code, mode)
            except BundleError:
                paths = []
            where = self.cfg.models_dir
        if not paths:
            kind = "phrasebook" if mode == "translate" else "wake/command"
            raise ValueError(f"no models for language {code!r} in {where} (for {kind})")
        return paths

    def _load(self, code: str, paths: list[Path], generation: int, requested_at: float,
              mode: str, setting: str, payload: str) -> None:
        try:
            models = load_language(replace(self.cfg, bundles=tuple(str(p) for p in paths)), code, mode)
            check_wake(models, self.cfg.wake)
            translator = None
            if mode == "translate":
                from edge.translate import Translator

                self.runner.open_speech_out()  # no speaker: refused here, not a dead audio thread
                translator = Translator(models, self.control.target_language)
                while translator.target_language != self.control.target_language:  # changed meanwhile
                    translator.set_target(self.control.target_language)
        except Exception as exc:  # a thread's exception would vanish; report it where people look
            with self._lock:
                if generation == self._generation:  # the next request starts from what listens
                    self._wanted = (self.control.language, self.control.mode)
            self._refuse(setting, payload, f"cannot load the {code} {mode} models: {exc}")
            return
        with self._lock:
            if generation != self._generation:
                log.info("%s models loaded but a newer request replaced them", code)
                return
            self._switch = _Switch(code, models, requested_at, mode, translator)
            self.runner.pipeline.swap_models(models)
        log.info("%s models loaded in %.2f s; switching at the next audio chunk", code, models.load_s)

    def _refuse(self, setting: str, payload: str, error: str) -> None:
        if self.link is not None:
            self.link.publish_error(f"{self.link.topics.base}/set/{setting}", payload.encode(), error)
        else:
            log.warning("%s=%s refused: %s", setting, payload, error)

    def _changed(self, discovery: bool = False) -> None:
        if self.link is not None:
            if discovery:
                self.link.publish_discovery()
            self.link.publish_state()

    # -- audio thread ----------------------------------------------------------------------
    def _on_chunk(self) -> None:
        self._watchdog.ping()
        switch = self._switch
        if switch is not None and self.runner.pipeline.models is switch.models:
            with self._lock:
                if self._switch is switch:
                    self._switch = None
            self.control.language = switch.language
            self.control.mode = switch.mode
            self.runner.use_translator(switch.translator)
            self.language_switch_s = round(time.monotonic() - switch.requested_at, 3)
            log.info("now listening in %s, %.3f s after the request", switch.language, self.language_switch_s)
            self._changed(discovery=True)  # the event entity's intents changed with the models

    def _observe(self, event: Event) -> None:
        self.control.last_heard_language = event.language
        if event.type == "command":
            self.control.last_command = event.intent
        self._changed()


def _install_signals(service: Service) -> dict[int, Any]:
    """SIGTERM/SIGINT stop, SIGHUP reloads; the handlers only set flags (they run between bytecodes
    of the main thread, which may hold any lock at that moment)."""
    if threading.current_thread() is not threading.main_thread():
        return {}
    handlers = {signal.SIGTERM: service.request_stop, signal.SIGINT: service.request_stop,
                signal.SIGHUP: service.request_reload}
    previous = {}
    for signum, action in handlers.items():
        previous[signum] = signal.signal(signum, lambda _s, _f, action=action: action())
    return previous


def run_service(cfg: RunConfig, print_metrics: bool = False, config_path: str | None = None,
                reload_config: Callable[[], RunConfig] | None = None) -> int:
    """`polyvox run`: listen until the source ends or SIGTERM/SIGINT; SIGHUP re-reads the config.

    reload_config re-reads the configuration (the CLI passes one that keeps its flags on top);
    without it, SIGHUP re-reads config_path alone.
    """
    service = Service(cfg)
    if reload_config is None and config_path:
        def reload_config() -> RunConfig:
            return load_config(config_path)
    service.reload_config = reload_config
    previous = _install_signals(service)
    try:
        metrics = service.run()
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    if print_metrics:
        print(json.dumps(metrics), file=sys.stderr)
    if service.audio_stuck:
        # The audio thread sits in stdin's read() holding the stream's lock, and interpreter
        # teardown would abort on that lock. Everything is shut down already, so skip teardown.
        sys.stdout.flush()
        sys.stderr.flush()
        logging.shutdown()
        os._exit(0)
    return 0
