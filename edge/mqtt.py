"""MQTT for a headless box: events and state out, settings in, Home Assistant discovery.

Topic contract (base = polyvox/<device_id>):

    {base}/availability        out  online / offline (also the last will), retained
    {base}/state               out  JSON control state and health, retained, on change and every 30 s
    {base}/event               out  one JSON event per detection (the --json stdout schema), QoS 1
    {base}/set/<setting>       in   language, mode, target_language, mute (ON/OFF), sensitivity (0..1)
    {base}/error               out  JSON {topic, payload, error} for every refused set/ message

Each message class below owns its topic, its payload and (for inbound ones) its parser.
`MqttLink` keeps one connection alive in a supervised loop: connect, serve, on loss wait an
exponentially growing, jittered delay, reconnect. Events wait in a bounded `Outbox` until the
broker acknowledges them, so a broker restart loses none (up to the queue size) and keeps their
order; delivery is at least once.
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import os
import random
import re
import secrets
import socket
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any, ClassVar, Protocol
from urllib.parse import unquote, urlsplit

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion

from edge.config import LANGUAGES, MODES, ConfigError, MqttConfig
from edge.events import Event

log = logging.getLogger(__name__)

TOPIC_ROOT = "polyvox"
SETTINGS = ("language", "mode", "target_language", "mute", "sensitivity")
PAYLOAD_MAX_BYTES = 256
"""Longer set/ payloads are refused unread: no valid setting comes near this size."""
ERROR_PAYLOAD_CHARS = 64
"""How much of a refused payload the error message echoes back."""
KEEPALIVE_S = 30
CONNECT_TIMEOUT_S = 3.0
LOOP_TIMEOUT_S = 0.2
"""The supervisor wakes this often to check the periodic state timer."""
ENV_USERNAME = "POLYVOX_MQTT_USERNAME"
ENV_PASSWORD = "POLYVOX_MQTT_PASSWORD"
_NUMBER = re.compile(r"[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?")
_NODE_UNSAFE = re.compile(r"[^A-Za-z0-9_-]")


class PayloadError(ValueError):
    """An inbound message that cannot be applied; the message is one sentence for the error topic."""


# --------------------------------------------------------------------------- settings


@dataclass(frozen=True)
class Broker:
    host: str
    port: int
    tls: bool
    username: str = ""
    password: str = field(default="", repr=False)

    def __str__(self) -> str:
        """The address without the password, for logs."""
        user = f"{self.username}@" if self.username else ""
        return f"{'mqtts' if self.tls else 'mqtt'}://{user}{self.host}:{self.port}"


def parse_broker_url(url: str) -> Broker:
    """mqtt://[user[:pass]@]host[:port] (default 1883) or mqtts://... (TLS, default 8883).

    Errors never repeat the URL, which may hold a password.
    """
    try:
        parts = urlsplit(url.strip())
        port = parts.port
    except ValueError:
        raise ConfigError("mqtt.url: not a valid URL (expected mqtt://host:port or mqtts://host:port)") from None
    if parts.scheme not in ("mqtt", "mqtts"):
        raise ConfigError(f"mqtt.url: scheme must be mqtt:// or mqtts://, not {parts.scheme + '://'!r}")
    if not parts.hostname:
        raise ConfigError("mqtt.url: no host name")
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        raise ConfigError("mqtt.url: must not have a path, query or fragment")
    tls = parts.scheme == "mqtts"
    return Broker(parts.hostname, port or (8883 if tls else 1883), tls,
                  unquote(parts.username or ""), unquote(parts.password or ""))


@dataclass(frozen=True)
class LinkSettings:
    """MqttConfig resolved against the URL, the environment and the host name: the broker with
    its credentials, the device id, and the checked options (credentials removed from them)."""

    broker: Broker
    device_id: str
    options: MqttConfig = field(default_factory=MqttConfig)

    @classmethod
    def from_config(cls, cfg: MqttConfig, env: Mapping[str, str] | None = None) -> LinkSettings:
        """Credentials: the URL's user:pass first, then POLYVOX_MQTT_USERNAME/PASSWORD, then the config file."""
        env = os.environ if env is None else env
        broker = parse_broker_url(cfg.url)
        username = broker.username or env.get(ENV_USERNAME, "") or cfg.username
        password = broker.password or env.get(ENV_PASSWORD, "") or cfg.password
        broker = Broker(broker.host, broker.port, broker.tls, username, password)
        device_id = (cfg.device_id or socket.gethostname()).strip()
        if not device_id or any(c in device_id for c in "/+#\0"):
            raise ConfigError("mqtt.device_id: must be non-empty and contain no '/', '+', '#' or NUL")
        if (cfg.ca_file or cfg.cert_file) and not broker.tls:
            raise ConfigError("mqtt.ca_file/cert_file: set, but mqtt.url is not mqtts://")
        if bool(cfg.cert_file) != bool(cfg.key_file):
            raise ConfigError("mqtt.cert_file and mqtt.key_file: give both for a client certificate, or neither")
        for key in ("ca_file", "cert_file", "key_file"):
            path = getattr(cfg, key)
            if path and not os.path.isfile(path):
                raise ConfigError(f"mqtt.{key}: no such file '{path}'")
        if not cfg.discovery_prefix or any(c in cfg.discovery_prefix for c in "+#\0"):
            raise ConfigError("mqtt.discovery_prefix: must be a topic without wildcards")
        if not (cfg.state_interval_s > 0 and cfg.queue_max_events >= 1 and 0 < cfg.reconnect_min_s
                <= cfg.reconnect_max_s):
            raise ConfigError("mqtt: state_interval_s > 0, queue_max_events >= 1 and "
                              "0 < reconnect_min_s <= reconnect_max_s are required")
        options = replace(cfg, url="", username="", password="", device_id=device_id,
                          discovery_prefix=cfg.discovery_prefix.rstrip("/"))
        return cls(broker, device_id, options)

    @property
    def node_id(self) -> str:
        """The device id reduced to what Home Assistant accepts in ids and discovery topics."""
        return _NODE_UNSAFE.sub("_", self.device_id)


# --------------------------------------------------------------------------- messages


@dataclass(frozen=True)
class Topics:
    base: str

    @classmethod
    def for_device(cls, device_id: str) -> Topics:
        return cls(f"{TOPIC_ROOT}/{device_id}")

    @property
    def set_filter(self) -> str:
        return f"{self.base}/set/#"

    def setting_of(self, topic: str) -> str | None:
        """The part after {base}/set/, '' for {base}/set itself, None for other topics."""
        if topic == f"{self.base}/set":
            return ""
        prefix = f"{self.base}/set/"
        return topic[len(prefix):] if topic.startswith(prefix) else None


@dataclass(frozen=True)
class Outgoing:
    topic: str
    payload: bytes
    qos: int = 1
    retain: bool = False


def _json(data: Any) -> bytes:
    return json.dumps(data, ensure_ascii=False, separators=(", ", ": ")).encode()


@dataclass(frozen=True)
class Availability:
    """Whether the box is up; `offline` is also the last will, so a crash shows too.

        mosquitto_sub -v -t 'polyvox/+/availability'
    """

    TOPIC: ClassVar[str] = "{base}/availability"
    online: bool

    def to_mqtt(self, topics: Topics) -> Outgoing:
        return Outgoing(self.TOPIC.format(base=topics.base), b"online" if self.online else b"offline", 1, True)


@dataclass(frozen=True)
class StateMessage:
    """Control state and health, retained so a new subscriber sees it at once.

        mosquitto_sub -v -t polyvox/kitchen/state
        polyvox/kitchen/state {"language": "en", "mode": "command", "muted": false, "sensitivity": 0.5, ...}
    """

    TOPIC: ClassVar[str] = "{base}/state"
    state: Mapping[str, Any]

    def to_mqtt(self, topics: Topics) -> Outgoing:
        return Outgoing(self.TOPIC.format(base=topics.base), _json(dict(self.state)), 1, True)


@dataclass(frozen=True)
class EventMessage:
    """One detection, byte for byte the JSON line `polyvox run` prints on stdout.

        mosquitto_sub -v -t polyvox/kitchen/event
        polyvox/kitchen/event {"type": "command", "intent": "lights_on", "language": "en", ...}
    """

    TOPIC: ClassVar[str] = "{base}/event"
    event: Event

    def payload(self) -> bytes:
        return self.event.to_json().encode()

    def to_mqtt(self, topics: Topics) -> Outgoing:
        return Outgoing(self.TOPIC.format(base=topics.base), self.payload(), 1, False)


@dataclass(frozen=True)
class ErrorMessage:
    """Why a set/ message was refused; the state stays as it was.

        mosquitto_sub -v -t polyvox/kitchen/error
        polyvox/kitchen/error {"topic": "polyvox/kitchen/set/sensitivity", "payload": "1.5",
                               "error": "sensitivity must be between 0 and 1, not 1.5"}
    """

    TOPIC: ClassVar[str] = "{base}/error"
    topic: str
    payload: bytes
    error: str

    def shown_payload(self) -> str:
        # Binary garbage is shown escaped, and everything cut short: the error is for humans.
        text = self.payload.decode("utf-8", errors="backslashreplace")
        return text if len(text) <= ERROR_PAYLOAD_CHARS else text[:ERROR_PAYLOAD_CHARS] + "..."

    def to_mqtt(self, topics: Topics) -> Outgoing:
        data = {"topic": self.topic, "payload": self.shown_payload(), "error": self.error}
        return Outgoing(self.TOPIC.format(base=topics.base), _json(data), 1, False)


@dataclass(frozen=True)
class SetCommand:
    """A setting sent to the box. The parser checks the payload's form; the service checks the value.

        mosquitto_pub -t polyvox/kitchen/set/language -m de
        mosquitto_pub -t polyvox/kitchen/set/mode -m command
        mosquitto_pub -t polyvox/kitchen/set/target_language -m fr
        mosquitto_pub -t polyvox/kitchen/set/mute -m ON
        mosquitto_pub -t polyvox/kitchen/set/sensitivity -m 0.7
    """

    TOPIC: ClassVar[str] = "{base}/set/{setting}"
    setting: str
    value: str | bool | float

    @classmethod
    def parse(cls, topics: Topics, topic: str, payload: bytes) -> SetCommand:
        setting = topics.setting_of(topic)
        if setting not in SETTINGS:
            raise PayloadError(f"unknown setting {setting!r}; the settings are {', '.join(SETTINGS)}")
        if len(payload) > PAYLOAD_MAX_BYTES:
            raise PayloadError(f"payload is {len(payload)} bytes; the limit is {PAYLOAD_MAX_BYTES}")
        try:
            text = payload.decode("utf-8").strip()
        except UnicodeDecodeError:
            raise PayloadError(f"payload is not UTF-8 text ({len(payload)} bytes)") from None
        if not text:
            raise PayloadError(f"{setting} needs a value; the payload is empty")
        if setting == "mute":
            if text.upper() not in ("ON", "OFF"):
                raise PayloadError(f"mute must be ON or OFF, not {text[:20]!r}")
            return cls(setting, text.upper() == "ON")
        if setting == "sensitivity":
            if not _NUMBER.fullmatch(text):
                raise PayloadError(f"sensitivity must be a number from 0 to 1, not {text[:20]!r}")
            return cls(setting, float(text))
        return cls(setting, text)

    def to_mqtt(self, topics: Topics) -> Outgoing:
        text = ("ON" if self.value else "OFF") if isinstance(self.value, bool) else str(self.value)
        return Outgoing(self.TOPIC.format(base=topics.base, setting=self.setting), text.encode(), 1, False)


# --------------------------------------------------------------------------- Home Assistant


@dataclass(frozen=True)
class DiscoveryInfo:
    """What the service offers, for the discovery payloads."""

    languages: tuple[str, ...]
    intents: tuple[str, ...]
    version: str


@dataclass(frozen=True)
class DiscoveryConfig:
    """One Home Assistant entity, announced retained under the discovery prefix.

        mosquitto_sub -v -t 'homeassistant/+/polyvox_kitchen/+/config'
        mosquitto_pub -t homeassistant/status -m online     # ask for every announcement again
    """

    TOPIC: ClassVar[str] = "{prefix}/{component}/{node}/{object_id}/config"
    component: str
    object_id: str
    config: Mapping[str, Any]

    def to_mqtt(self, prefix: str, node: str) -> Outgoing:
        topic = self.TOPIC.format(prefix=prefix, component=self.component, node=f"polyvox_{node}",
                                  object_id=self.object_id)
        return Outgoing(topic, _json(dict(self.config)), 1, True)


def discovery_configs(settings: LinkSettings, topics: Topics, info: DiscoveryInfo) -> list[DiscoveryConfig]:
    """The entities: selects for language, mode and target language, a mute switch, a sensitivity
    number, sensors for RTF, last command and dropped frames, and an event entity for detections."""
    node = settings.node_id
    state = f"{topics.base}/state"
    common = {
        "device": {"identifiers": [f"polyvox_{node}"], "name": f"polyvox {settings.device_id}",
                   "manufacturer": "polyvox", "model": "polyvox voice commands", "sw_version": info.version},
        "origin": {"name": "polyvox", "sw_version": info.version},
        "availability": [{"topic": f"{topics.base}/availability", "payload_available": "online",
                          "payload_not_available": "offline"}],
    }

    def entity(component: str, object_id: str, name: str, **config: Any) -> DiscoveryConfig:
        return DiscoveryConfig(component, object_id, {"name": name,
                                                      "unique_id": f"polyvox_{node}_{object_id}", **config, **common})

    def setter(setting: str) -> dict[str, str]:
        return {"command_topic": f"{topics.base}/set/{setting}", "state_topic": state,
                "value_template": f"{{{{ value_json.{setting} }}}}"}

    return [
        entity("select", "language", "Language", options=list(info.languages), icon="mdi:translate",
               **setter("language")),
        entity("select", "mode", "Mode", options=list(MODES), icon="mdi:tune", **setter("mode")),
        entity("select", "target_language", "Target language", options=list(LANGUAGES), icon="mdi:translate-variant",
               **setter("target_language")),
        entity("switch", "mute", "Mute", icon="mdi:microphone-off", payload_on="ON", payload_off="OFF",
               state_on="ON", state_off="OFF", command_topic=f"{topics.base}/set/mute", state_topic=state,
               value_template="{{ 'ON' if value_json.muted else 'OFF' }}"),
        entity("number", "sensitivity", "Sensitivity", min=0, max=1, step=0.05, mode="slider", icon="mdi:tune-vertical",
               **setter("sensitivity")),
        entity("sensor", "rtf", "Real-time factor", state_topic=state, value_template="{{ value_json.rtf }}",
               state_class="measurement", entity_category="diagnostic", icon="mdi:speedometer"),
        entity("sensor", "last_command", "Last command", state_topic=state,
               value_template="{{ value_json.last_command or 'none' }}", icon="mdi:account-voice"),
        entity("sensor", "dropped_frames", "Dropped audio frames", state_topic=state,
               value_template="{{ value_json.dropped_frames }}", state_class="total_increasing",
               entity_category="diagnostic", icon="mdi:waveform"),
        entity("event", "voice", "Voice command", state_topic=f"{topics.base}/event", event_types=list(info.intents),
               value_template='{{ {"event_type": value_json.intent, "text": value_json.text, '
                              '"language": value_json.language, "confidence": value_json.confidence} | tojson }}',
               icon="mdi:account-voice"),
    ]


# --------------------------------------------------------------------------- delivery


@dataclass
class _Pending:
    payload: bytes
    info: paho.MQTTMessageInfo | None = None

    def delivered(self) -> bool:
        if self.info is None:
            return False
        try:
            return self.info.is_published()
        except (RuntimeError, ValueError):  # handed to a client that had lost its connection
            return False


class Outbox:
    """Events awaiting the broker's acknowledgement: bounded, oldest dropped first, order kept.

    Not thread-safe on its own; MqttLink guards it with its send lock.
    """

    def __init__(self, max_items: int) -> None:
        self.max_items = max_items
        self.dropped = 0
        self._items: deque[_Pending] = deque()

    def put(self, payload: bytes) -> _Pending:
        self._prune()
        item = _Pending(payload)
        self._items.append(item)
        while len(self._items) > self.max_items:
            self._items.popleft()
            self.dropped += 1
        return item

    def undelivered(self) -> list[_Pending]:
        self._prune()
        return list(self._items)

    def _prune(self) -> None:
        if any(item.delivered() for item in self._items):
            self._items = deque(item for item in self._items if not item.delivered())

    def __len__(self) -> int:
        self._prune()
        return len(self._items)


@dataclass
class Backoff:
    """Exponential reconnect delay with jitter, so a fleet does not reconnect in lock-step."""

    min_s: float
    max_s: float
    rng: random.Random = field(default_factory=random.Random)
    attempts: int = 0

    def next_s(self) -> float:
        ceiling = min(self.max_s, self.min_s * 2 ** min(self.attempts, 30))
        self.attempts += 1
        return ceiling / 2 + self.rng.uniform(0, ceiling / 2)

    def reset(self) -> None:
        self.attempts = 0


@dataclass
class _Session:
    """One connection attempt, shared with its client's callbacks through paho's userdata."""

    ended: threading.Event = field(default_factory=threading.Event)
    established: bool = False
    """The broker accepted the connection (CONNACK success)."""


class Controller(Protocol):
    """What MqttLink needs from the service it serves."""

    def state(self) -> dict[str, Any]: ...

    def apply(self, setting: str, value: object) -> None:
        """Apply a parsed setting; raise ValueError with one sentence to refuse it."""

    def discovery_info(self) -> DiscoveryInfo: ...


def _logged(fn: Callable[..., None]) -> Callable[..., None]:
    """paho swallows exceptions raised in callbacks; log them instead so nothing fails silently."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> None:
        try:
            fn(*args, **kwargs)
        except Exception:
            log.exception("MQTT callback %s failed", fn.__name__)

    return wrapper


class MqttLink:
    """One supervised broker connection serving a Controller.

    A supervisor thread connects a fresh paho client, lets paho's thread do the socket I/O,
    publishes the periodic state, and when the connection ends waits a Backoff delay and
    starts over. Publishing is safe from any thread.
    """

    def __init__(self, settings: LinkSettings, controller: Controller) -> None:
        self.settings = settings
        self.controller = controller
        self.topics = Topics.for_device(settings.device_id)
        self.client_id = f"polyvox-{settings.node_id[:16]}-{secrets.token_hex(4)}"
        self._outbox = Outbox(settings.options.queue_max_events)
        self._send_lock = threading.RLock()
        """Held while events enter the outbox and go to the client, so a reconnect flush and a
        new event can never overtake each other."""
        self._client: paho.Client | None = None
        self._connected = threading.Event()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._next_state_at = 0.0
        self._goodbye_s = 0.5

    # -- public ----------------------------------------------------------------------
    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    @property
    def events_dropped(self) -> int:
        return self._outbox.dropped

    @property
    def events_waiting(self) -> int:
        with self._send_lock:
            return len(self._outbox)

    def start(self) -> None:
        log.info("MQTT: broker %s, topics %s/#, client id %s", self.settings.broker, self.topics.base, self.client_id)
        self._thread = threading.Thread(target=self._supervise, name="polyvox-mqtt", daemon=True)
        self._thread.start()

    def stop(self, timeout_s: float = 1.0) -> None:
        """Say offline (a clean disconnect does not trigger the last will), disconnect, join."""
        self._goodbye_s = max(0.05, timeout_s - 0.2)
        self._stopping.set()
        if self._thread is not None:
            self._thread.join(timeout_s)

    def flush(self, timeout_s: float) -> bool:
        """Wait until the broker has acknowledged every queued event; False on timeout."""
        deadline = time.monotonic() + timeout_s
        while self.events_waiting:
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.05)
        return True

    def publish_event(self, event: Event) -> None:
        """A Runner sink: queue the event and send it now if connected."""
        out = EventMessage(event).to_mqtt(self.topics)
        with self._send_lock:
            item = self._outbox.put(out.payload)
            client = self._client
            if client is not None and self.connected:
                item.info = client.publish(out.topic, out.payload, out.qos, out.retain)

    def adopt_events(self, old: MqttLink) -> None:
        """Take over the events a replaced link (stopped) never got acknowledged, in order; they
        go out when this one connects. One the old broker took but had not acknowledged may
        arrive twice, as QoS 1 allows."""
        with old._send_lock:
            waiting = old._outbox.undelivered()
            dropped = old._outbox.dropped
        with self._send_lock:
            for item in waiting:
                self._outbox.put(item.payload)
            self._outbox.dropped += dropped

    def publish_state(self) -> None:
        """Now, and again every state_interval_s unless something changes first."""
        if self.connected:
            self._next_state_at = time.monotonic() + self.settings.options.state_interval_s
            self._send(StateMessage(self.controller.state()).to_mqtt(self.topics))

    def publish_discovery(self) -> None:
        if not self.connected:
            return
        info = self.controller.discovery_info()
        for config in discovery_configs(self.settings, self.topics, info):
            self._send(config.to_mqtt(self.settings.options.discovery_prefix, self.settings.node_id))

    def publish_error(self, topic: str, payload: bytes, error: str) -> None:
        log.warning("refused %s (%d bytes): %s", topic, len(payload), error)
        if self.connected:
            self._send(ErrorMessage(topic, payload, error).to_mqtt(self.topics))

    # -- the supervised loop -----------------------------------------------------------
    def _supervise(self) -> None:
        """Connect, serve until the connection ends, wait a backoff delay, repeat until stop()."""
        backoff = Backoff(self.settings.options.reconnect_min_s, self.settings.options.reconnect_max_s)
        failures = 0
        while not self._stopping.is_set():
            session = _Session()
            client = self._new_client(session)
            try:
                client.connect(self.settings.broker.host, self.settings.broker.port, KEEPALIVE_S)
            except Exception as exc:  # refused, unreachable, TLS: all mean "try again later"
                # One warning per outage; the retries that follow are debug noise.
                (log.warning if failures == 0 else log.debug)("MQTT: cannot reach %s: %s", self.settings.broker, exc)
            else:
                self._client = client
                # paho's own thread does all socket I/O; publish() from any other thread only
                # queues a packet, so nothing can overtake on the wire.
                client.loop_start()
                self._serve(client, session)
                client.loop_stop()
            finally:
                self._connected.clear()
            if session.established:
                backoff.reset()
                failures = 0
            else:
                failures += 1
            if self._stopping.is_set():
                break
            delay = backoff.next_s()
            log.debug("MQTT: reconnecting in %.1f s", delay)
            self._stopping.wait(delay)

    def _serve(self, client: paho.Client, session: _Session) -> None:
        """Publish state on time until the connection ends or stop() asks for a goodbye."""
        while not session.ended.is_set():
            if self._stopping.wait(LOOP_TIMEOUT_S):
                self._goodbye(client)
                return
            if self.connected and time.monotonic() >= self._next_state_at:
                try:
                    self.publish_state()
                except Exception:  # a failing state() must not end the connection
                    log.exception("MQTT: periodic state failed")
        if session.established:
            log.warning("MQTT: lost the broker %s", self.settings.broker)

    def _goodbye(self, client: paho.Client) -> None:
        if self.connected:
            info = self._send(Availability(False).to_mqtt(self.topics))
            with contextlib.suppress(RuntimeError, ValueError):  # already gone: the will says offline
                info.wait_for_publish(self._goodbye_s)
        self._connected.clear()
        client.disconnect()

    def _new_client(self, session: _Session) -> paho.Client:
        s = self.settings
        client = paho.Client(CallbackAPIVersion.VERSION2, client_id=self.client_id, protocol=paho.MQTTv311,
                             userdata=session, reconnect_on_failure=False)
        client.enable_logger(logging.getLogger(f"{__name__}.paho"))
        client.connect_timeout = CONNECT_TIMEOUT_S
        if s.broker.username:
            client.username_pw_set(s.broker.username, s.broker.password or None)
        if s.broker.tls:
            client.tls_set(ca_certs=s.options.ca_file or None, certfile=s.options.cert_file or None,
                           keyfile=s.options.key_file or None)
        will = Availability(False).to_mqtt(self.topics)
        client.will_set(will.topic, will.payload, will.qos, will.retain)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_message = self._on_message
        return client

    def _send(self, out: Outgoing) -> paho.MQTTMessageInfo:
        client = self._client
        if client is None:
            raise RuntimeError("MQTT client not started")
        return client.publish(out.topic, out.payload, out.qos, out.retain)

    # -- paho callbacks (network thread) ---------------------------------------------------
    @_logged
    def _on_connect(self, client: paho.Client, session: _Session, _flags: Any, reason: Any, _props: Any) -> None:
        if reason.is_failure:
            log.error("MQTT: broker %s refused the connection: %s", self.settings.broker, reason)
            return
        session.established = True
        client.subscribe([(self.topics.set_filter, 1), (f"{self.settings.options.discovery_prefix}/status", 1)])
        with self._send_lock:
            self._connected.set()
            self._send(Availability(True).to_mqtt(self.topics))
            try:
                self.publish_state()
                self.publish_discovery()
            except Exception:  # still deliver the queued events below
                log.exception("MQTT: could not announce state and discovery")
            waiting = self._outbox.undelivered()
            topic = EventMessage.TOPIC.format(base=self.topics.base)
            for item in waiting:
                item.info = client.publish(topic, item.payload, 1, False)
        log.info("MQTT: connected to %s%s", self.settings.broker,
                 f", sending {len(waiting)} queued events" if waiting else "")

    @_logged
    def _on_disconnect(self, _client: paho.Client, session: _Session, _flags: Any, reason: Any, _props: Any) -> None:
        self._connected.clear()
        session.ended.set()
        log.debug("MQTT: disconnected (%s)", reason)

    @_logged
    def _on_message(self, _client: paho.Client, _userdata: Any, msg: paho.MQTTMessage) -> None:
        topic = msg.topic
        if topic == f"{self.settings.options.discovery_prefix}/status":
            # Home Assistant (re)started and asks for announcements; its retained copy we saw at connect.
            if msg.payload.strip() == b"online" and not msg.retain:
                log.info("MQTT: Home Assistant is online; republishing discovery")
                self.publish_discovery()
                self.publish_state()
            return
        try:
            command = SetCommand.parse(self.topics, topic, msg.payload)
            log.info("MQTT: set %s = %r", command.setting, command.value)
            self.controller.apply(command.setting, command.value)
        except ValueError as exc:  # PayloadError included
            self.publish_error(topic, msg.payload, str(exc))

