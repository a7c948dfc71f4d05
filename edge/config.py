"""Run configuration: a TOML file (stdlib tomllib) overridden by CLI flags.

Unknown keys and bad values are errors that name the key (ConfigError, one line).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import tomllib

from edge.audio import MAX_RATE_HZ, MIN_RATE_HZ
from edge.decisions import LANGID_RULES
from edge.frontend import FrontendConfig
from edge.vad import VadConfig

DEFAULT_MODELS_DIR = Path(__file__).resolve().parent.parent / "models"
LANGUAGES = ("zh", "en", "de", "fr", "es")
MODES = ("command", "translate")


class ConfigError(Exception):
    """A bad configuration; the message names the key."""


def heard_languages(code: str) -> tuple[str, ...]:
    """The languages a `language` setting listens for: one language, `auto` (every language), or
    a conversation between a few, joined by "+" (`fr+en`): the language-id model then decides
    among those alone, and a translator speaks each phrase in the other language of a pair.
    ValueError (one sentence) for anything else."""
    if code == "auto":
        return LANGUAGES
    parts = tuple(code.split("+"))
    unknown = [p for p in parts if p not in LANGUAGES]
    if unknown or len(set(parts)) != len(parts):
        what = f"unknown language {unknown[0]!r}" if unknown else f"{code!r} names a language twice"
        raise ValueError(f"{what}; choose from {', '.join(LANGUAGES)}, auto, or several joined by + (fr+en)")
    return parts


def canonical_language(code: str) -> str:
    """One spelling per setting: a conversation's languages sorted (`fr+en` -> `en+fr`), as a
    loaded model set names itself."""
    languages = heard_languages(code)
    return code if code == "auto" or len(languages) == 1 else "+".join(sorted(languages))


@dataclass(frozen=True)
class MqttConfig:
    url: str = field(default="", repr=False)
    """mqtt://user:pass@host:port or mqtts://...; empty = no broker (events on stdout)."""
    device_id: str = ""
    """Topic base is polyvox/<device_id>; empty = the hostname."""
    username: str = ""
    """Also from POLYVOX_MQTT_USERNAME; user:pass in the URL wins over both."""
    password: str = field(default="", repr=False)
    """Also from POLYVOX_MQTT_PASSWORD (keeps it out of the file); never logged."""
    ca_file: str = ""
    """CA bundle for mqtts:// (empty = the system's)."""
    cert_file: str = ""
    """Client certificate for mqtts:// (with key_file)."""
    key_file: str = ""
    discovery_prefix: str = "homeassistant"
    state_interval_s: float = 30.0
    """State is published on every change and at least this often."""
    queue_max_events: int = 1000
    """Events held while the broker is away; beyond this the oldest are dropped (and counted)."""
    reconnect_min_s: float = 1.0
    reconnect_max_s: float = 30.0
    """Reconnect delays double from reconnect_min_s up to this, with jitter."""


@dataclass(frozen=True)
class RunConfig:
    source: str = "mic"
    """mic, a WAV path, or - for raw 16-bit PCM on stdin."""
    rate_hz: int = 16000
    """Sample rate of raw PCM on stdin."""
    device: str = ""
    """Microphone: index or name substring; empty = the default input."""
    output_device: str = ""
    """Speaker for translate mode: index or name substring; empty = the default output."""
    language: str = "en"
    mode: str = "command"
    target_language: str = "en"
    models_dir: str = str(DEFAULT_MODELS_DIR)
    bundles: tuple[str, ...] = ()
    """Explicit bundle directories; replaces the language's default bundles."""
    wake: str = "auto"
    listen_s: float = 5.0
    sensitivity: float = 0.5
    langid_rule: str = "tiebreak"
    """How `language = "auto"` uses the language-id model: tiebreak, joint, argmax or off
    (see edge.pipeline.PipelineConfig)."""
    language_memory_s: float = 60.0
    """With several languages (auto or a conversation): languages heard within this many seconds
    win when their phrase models also fire; 0 = every utterance on its own."""
    json: bool = False
    realtime: bool = False
    num_threads: int = 1
    chunk_samples: int = 640
    """Samples handed to the pipeline at once (40 ms at 16 kHz). A decision waits for the chunk
    holding the VAD's closing frame, so this adds up to its length to command and translation
    latency (measured with 80 ms chunks: translation p95 0.30 s; with 40 ms: 0.26 s)."""
    output: str = ""
    """WAV file for spoken output (translation mode); empty = the speaker."""
    profiles: tuple[str, ...] = ()
    """Voice profiles (`polyvox enroll`); each applies to the model it was recorded for."""
    vad: VadConfig = field(default_factory=VadConfig)
    mqtt: MqttConfig = field(default_factory=MqttConfig)


def _check(cfg: RunConfig) -> RunConfig:
    try:
        cfg = dataclasses.replace(cfg, language=canonical_language(cfg.language))
    except ValueError as exc:
        raise ConfigError(f"language: {exc}") from None
    if cfg.target_language not in LANGUAGES:
        raise ConfigError(f"target_language: unknown language {cfg.target_language!r}")
    if cfg.mode not in MODES:
        raise ConfigError(f"mode: must be one of {', '.join(MODES)}, not {cfg.mode!r}")
    if cfg.wake not in ("auto", "on", "off"):
        raise ConfigError(f"wake: must be auto, on or off, not {cfg.wake!r}")
    if cfg.langid_rule not in LANGID_RULES:
        raise ConfigError(f"langid_rule: must be one of {', '.join(LANGID_RULES)}, not {cfg.langid_rule!r}")
    if not 0.0 <= cfg.language_memory_s < float("inf"):
        raise ConfigError(f"language_memory_s: must be 0 (off) or a number of seconds, not {cfg.language_memory_s}")
    if not 0.0 <= cfg.sensitivity <= 1.0:
        raise ConfigError(f"sensitivity: must be between 0 and 1, not {cfg.sensitivity}")
    if (cfg.num_threads < 1 or cfg.chunk_samples < 160 or not MIN_RATE_HZ <= cfg.rate_hz <= MAX_RATE_HZ
            or not 0 < cfg.listen_s < float("inf")):
        raise ConfigError(f"num_threads, chunk_samples (>= 160), rate_hz ({MIN_RATE_HZ}-{MAX_RATE_HZ}) or listen_s "
                          "is out of range")
    return cfg


def _build(cls: type, data: dict[str, Any], prefix: str) -> Any:
    fields = {f.name: f for f in dataclasses.fields(cls)}
    kwargs: dict[str, Any] = {}
    for key, value in data.items():
        name = f"{prefix}{key}"
        if key not in fields:
            raise ConfigError(f"{name}: unknown key")
        default = fields[key].default if fields[key].default is not dataclasses.MISSING else None
        if key == "vad":
            kwargs[key] = _nested(VadConfig, value, name)
        elif key == "mqtt":
            kwargs[key] = _nested(MqttConfig, value, name)
        elif key in ("bundles", "profiles"):
            if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                raise ConfigError(f"{name}: must be a list of paths")
            kwargs[key] = tuple(value)
        elif key in ("device", "output_device") and type(value) is int:
            kwargs[key] = str(value)  # an index, as `polyvox devices` lists them
        else:
            kwargs[key] = _typed(value, default, name)
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{prefix.rstrip('.') or 'config'}: {exc}") from None


def _nested(cls: type, value: Any, name: str) -> Any:
    if not isinstance(value, dict):
        raise ConfigError(f"{name}: must be a table")
    return _build(cls, value, f"{name}.")


def _typed(value: Any, default: Any, name: str) -> Any:
    if isinstance(default, bool):
        if not isinstance(value, bool):
            raise ConfigError(f"{name}: must be true or false, not {value!r}")
    elif isinstance(default, int):
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{name}: must be an integer, not {value!r}")
    elif isinstance(default, float):
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(f"{name}: must be a number, not {value!r}")
        value = float(value)
    elif isinstance(default, str) and not isinstance(value, str):
        raise ConfigError(f"{name}: must be a string, not {value!r}")
    return value


def load_config(path: str | Path | None, overrides: dict[str, Any] | None = None) -> RunConfig:
    """Read TOML (if given), apply CLI overrides (None values are ignored), validate."""
    data: dict[str, Any] = {}
    if path:
        try:
            data = tomllib.loads(Path(path).read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ConfigError(f"config file '{path}' does not exist") from None
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            raise ConfigError(f"config file '{path}' is not valid TOML: {exc}") from None
    for key, value in (overrides or {}).items():
        if value is not None:
            data[key] = list(value) if isinstance(value, tuple | list) else value
    return _check(_build(RunConfig, data, ""))


def frontend_config() -> FrontendConfig:
    """The runtime's frontend. Models must have been built for it (their hash must match)."""
    return FrontendConfig()
