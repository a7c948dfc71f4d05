"""MQTT: pinned message formats, then `polyvox run` against a real mosquitto on loopback.

The broker tests run polyvox as a subprocess reading raw PCM from stdin. A feeder thread writes
silence at real-time pace, like a microphone, and espeak-ng speech when a test says something.
A paho client observes everything the broker carries.
"""

from __future__ import annotations

import getpass
import json
import os
import queue
import random
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from edge.config import ConfigError, MqttConfig
from edge.events import Event
from edge.mqtt import (
    PAYLOAD_MAX_BYTES,
    Availability,
    Backoff,
    DiscoveryInfo,
    ErrorMessage,
    EventMessage,
    LinkSettings,
    Outbox,
    PayloadError,
    SetCommand,
    StateMessage,
    Topics,
    discovery_configs,
    parse_broker_url,
)
from tests.conftest import ROOT, copy_bundle, espeak

MOSQUITTO = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
CHUNK_SAMPLES = 1280
CHUNK_S = CHUNK_SAMPLES / 16000
# =========================================================================== formats (no broker)


def test_broker_urls_parse_with_defaults_and_never_echo_the_password():
    assert parse_broker_url("mqtt://example.org") == parse_broker_url("mqtt://example.org:1883")
    b = parse_broker_url("mqtts://ann:p%40ss@broker.lan")
    assert (b.host, b.port, b.tls, b.username, b.password) == ("broker.lan", 8883, True, "ann", "p@ss")
    assert str(b) == "mqtts://ann@broker.lan:8883" and "p@ss" not in repr(b)
    for bad, words in [("http://u:hunter2@host", "scheme"), ("mqtt://u:hunter2@", "host"),
                       ("mqtt://u:hunter2@host:99999", "valid URL"), ("mqtt://u:hunter2@host/x", "path"),
                       ("u:hunter2@host", "scheme")]:
        with pytest.raises(ConfigError, match=words) as err:
            parse_broker_url(bad)
        assert "hunter2" not in str(err.value) and "\n" not in str(err.value)


def test_credentials_come_from_the_url_then_the_environment_then_the_file():
    cfg = MqttConfig(url="mqtt://h", device_id="box", username="file-user", password="file-pw")
    env = {"POLYVOX_MQTT_USERNAME": "env-user", "POLYVOX_MQTT_PASSWORD": "env-pw"}
    assert LinkSettings.from_config(cfg, {}).broker.username == "file-user"
    s = LinkSettings.from_config(cfg, env)
    assert (s.broker.username, s.broker.password) == ("env-user", "env-pw")
    s = LinkSettings.from_config(MqttConfig(url="mqtt://u:url-pw@h", device_id="box"), env)
    assert (s.broker.username, s.broker.password) == ("u", "url-pw")
    assert "url-pw" not in repr(s) and "file-pw" not in repr(cfg)


@pytest.mark.parametrize("cfg, words", [
    (MqttConfig(url="mqtt://h", device_id="a/b"), "device_id"),
    (MqttConfig(url="mqtt://h", device_id="a+"), "device_id"),
    (MqttConfig(url="mqtt://h", ca_file="/etc/hosts"), "not mqtts"),
    (MqttConfig(url="mqtts://h", ca_file="/nonexistent/ca.pem"), "no such file"),
    (MqttConfig(url="mqtts://h", cert_file="/etc/hosts"), "key_file"),
    (MqttConfig(url="mqtt://h", state_interval_s=0), "state_interval_s"),
    (MqttConfig(url="mqtt://h", reconnect_min_s=5, reconnect_max_s=1), "reconnect"),
    (MqttConfig(url="mqtt://h", discovery_prefix="home/#"), "discovery_prefix"),
])
def test_bad_mqtt_settings_are_one_line_config_errors(cfg, words):
    with pytest.raises(ConfigError, match=words) as err:
        LinkSettings.from_config(cfg, {})
    assert "\n" not in str(err.value)


def test_device_id_defaults_to_the_host_name_and_is_made_safe_for_home_assistant():
    s = LinkSettings.from_config(MqttConfig(url="mqtt://h"), {})
    assert s.device_id == socket.gethostname()
    assert LinkSettings.from_config(MqttConfig(url="mqtt://h", device_id="pi.kitchen 2"), {}).node_id == "pi_kitchen_2"


def test_outgoing_payloads_are_pinned():
    topics = Topics.for_device("kitchen")
    on, off = Availability(True).to_mqtt(topics), Availability(False).to_mqtt(topics)
    assert (on.topic, on.payload, on.retain, off.payload) == ("polyvox/kitchen/availability", b"online", True,
                                                              b"offline")
    event = Event("command", "lights_on", "de", "Licht an", 0.912345, 1.2344, 2.0, 2.3, "de-command")
    out = EventMessage(event).to_mqtt(topics)
    assert (out.topic, out.qos, out.retain) == ("polyvox/kitchen/event", 1, False)
    assert out.payload == event.to_json().encode() == (
        b'{"type": "command", "intent": "lights_on", "language": "de", "text": "Licht an", "confidence": 0.9123, '
        b'"t_start": 1.234, "t_end": 2.0, "t_emit": 2.3, "model": "de-command", "latency_s": 0.3}')
    state = StateMessage({"language": "de", "muted": False}).to_mqtt(topics)
    assert (state.topic, state.payload, state.retain) == ("polyvox/kitchen/state",
                                                          b'{"language": "de", "muted": false}', True)
    err = ErrorMessage("polyvox/kitchen/set/mute", b"\xff\xfeON", "mute must be ON or OFF").to_mqtt(topics)
    assert err.topic == "polyvox/kitchen/error" and not err.retain
    assert json.loads(err.payload) == {"topic": "polyvox/kitchen/set/mute", "payload": "\\xff\\xfeON",
                                       "error": "mute must be ON or OFF"}
    long = json.loads(ErrorMessage("t", b"x" * 300, "too long").to_mqtt(topics).payload)
    assert long["payload"] == "x" * 64 + "..."
    assert SetCommand("mute", True).to_mqtt(topics).payload == b"ON"


@pytest.mark.parametrize("setting, payload, value", [
    ("language", b"de", "de"), ("language", b" zh\n", "zh"), ("mode", b"command", "command"),
    ("target_language", b"fr", "fr"), ("mute", b"ON", True), ("mute", b"off", False),
    ("sensitivity", b"0.7", 0.7), ("sensitivity", b"1", 1.0), ("sensitivity", b".25", 0.25),
    ("sensitivity", b"5e-1", 0.5),
])
def test_set_payloads_parse(setting, payload, value):
    topics = Topics.for_device("kitchen")
    assert SetCommand.parse(topics, f"polyvox/kitchen/set/{setting}", payload) == SetCommand(setting, value)


@pytest.mark.parametrize("topic, payload, words", [
    ("set/volume", b"3", "unknown setting"),
    ("set", b"de", "unknown setting"),
    ("set/language/extra", b"de", "unknown setting"),
    ("set/language", b"d" * (PAYLOAD_MAX_BYTES + 1), "limit"),
    ("set/language", b"\xc3\x28", "not UTF-8"),
    ("set/language", b"   ", "empty"),
    ("set/mute", b"yes", "ON or OFF"),
    ("set/mute", b"1", "ON or OFF"),
    ("set/sensitivity", b"NaN", "number"),
    ("set/sensitivity", b"inf", "number"),
    ("set/sensitivity", b'{"value": 0.5}', "number"),
    ("set/sensitivity", b"0x1", "number"),
    ("set/sensitivity", b"0_5", "number"),
])
def test_malformed_set_payloads_are_refused_by_the_parser(topic, payload, words):
    with pytest.raises(PayloadError, match=words):
        SetCommand.parse(Topics.for_device("k"), f"polyvox/k/{topic}", payload)


def test_outbox_keeps_order_and_drops_the_oldest_when_full():
    box = Outbox(3)
    for i in range(5):
        box.put(str(i).encode())
    assert [p.payload for p in box.undelivered()] == [b"2", b"3", b"4"]
    assert box.dropped == 2 and len(box) == 3


def test_backoff_doubles_with_jitter_up_to_the_cap_and_resets():
    b = Backoff(1.0, 8.0, random.Random(0))
    delays = [b.next_s() for _ in range(7)]
    for delay, ceiling in zip(delays, [1, 2, 4, 8, 8, 8, 8], strict=True):
        assert ceiling / 2 <= delay <= ceiling
    assert len({round(d, 6) for d in delays[3:]}) > 1  # jittered, not lock-step
    b.reset()
    assert b.next_s() <= 1.0


def test_discovery_payloads_describe_every_entity():
    settings = LinkSettings.from_config(MqttConfig(url="mqtt://h", device_id="kitchen"), {})
    topics = Topics.for_device("kitchen")
    configs = discovery_configs(settings, topics, DiscoveryInfo(("en", "de"), ("lights_on", "stop"), "9.9"))
    outs = [c.to_mqtt("homeassistant", settings.node_id) for c in configs]
    _check_discovery({o.topic: json.loads(o.payload) for o in outs}, "homeassistant", "kitchen",
                     ["lights_on", "stop"])
    assert all(o.retain for o in outs)


def _check_discovery(found: dict[str, dict], prefix: str, device_id: str, intents: list[str]) -> None:
    """The entities the issue asks for, each with a unique id, the device and availability."""
    by_entity = {tuple(t.split("/")[1::2]): c for t, c in found.items()}  # (component, object_id)
    assert set(by_entity) == {("select", "language"), ("select", "mode"), ("select", "target_language"),
                              ("switch", "mute"), ("number", "sensitivity"), ("sensor", "rtf"),
                              ("sensor", "last_command"), ("sensor", "dropped_frames"), ("event", "voice")}
    assert all(t.startswith(f"{prefix}/") and t.endswith("/config") for t in found)
    ids = [c["unique_id"] for c in found.values()]
    assert len(set(ids)) == len(ids)
    for config in found.values():
        assert config["device"]["identifiers"] == [f"polyvox_{device_id}"]
        assert config["availability"] == [{"topic": f"polyvox/{device_id}/availability",
                                            "payload_available": "online", "payload_not_available": "offline"}]
        for key in ("state_topic", "command_topic"):
            if key in config:
                assert config[key].startswith(f"polyvox/{device_id}/")
    assert by_entity[("event", "voice")]["event_types"] == intents
    assert by_entity[("switch", "mute")]["command_topic"] == f"polyvox/{device_id}/set/mute"
    assert by_entity[("number", "sensitivity")]["min"] == 0 and by_entity[("number", "sensitivity")]["max"] == 1


# =========================================================================== fixtures


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Mosquitto:
    """A real broker on a loopback port; stop() and start() again keep the port and (with
    persistence) the retained messages and persistent sessions."""

    workdir: Path
    port: int = field(default_factory=_free_port)
    extra: str = ""
    proc: subprocess.Popen | None = None

    def start(self) -> None:
        if not os.access(MOSQUITTO, os.X_OK):
            pytest.skip("mosquitto is not installed")
        conf = self.workdir / "mosquitto.conf"
        conf.write_text(f"listener {self.port} 127.0.0.1\nuser {getpass.getuser()}\npersistence true\n"
                        f"persistence_location {self.workdir}/\n{self.extra or 'allow_anonymous true'}\n")
        log = open(self.workdir / "mosquitto.log", "ab")  # noqa: SIM115 - closed with the process
        self.proc = subprocess.Popen([MOSQUITTO, "-c", str(conf)], stdout=log, stderr=log)
        log.close()
        deadline = time.monotonic() + 15  # slow under load (CI shares 2 cores)
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return
            except OSError:
                time.sleep(0.02)
        raise AssertionError("mosquitto did not start: " + (self.workdir / "mosquitto.log").read_text()[-500:])

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()  # SIGTERM: mosquitto saves its persistence file
            self.proc.wait(5)


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Mosquitto]:
    work = tmp_path / "broker"
    work.mkdir()
    b = Mosquitto(work)
    b.start()
    yield b
    b.stop()


@pytest.fixture(scope="session")
def models_dir(tiny_bundle: Path, tiny_de_bundle: Path, tmp_path_factory) -> Path:
    """English and German tiny bundles, side by side as a models dir."""
    root = tmp_path_factory.mktemp("models")
    copy_bundle(tiny_bundle, root / "en-tiny", name="en-tiny")
    copy_bundle(tiny_de_bundle, root / "de-tiny")
    return root


class Observer:
    """A paho client that records every message it sees on the given topic filters."""

    def __init__(self, port: int, filters: tuple[str, ...], client_id: str = "", persistent: bool = False,
                 login: tuple[str, str] | None = None) -> None:
        self.messages: list[paho.MQTTMessage] = []
        self.filters = filters
        self._cond = threading.Condition()
        self.client = paho.Client(CallbackAPIVersion.VERSION2, client_id=client_id or f"obs-{uuid.uuid4().hex[:8]}",
                                  clean_session=not persistent)
        self.client.reconnect_delay_set(0.05, 0.2)
        if login:
            self.client.username_pw_set(*login)
        self.client.on_connect = self._on_connect
        self.client.on_message = self._on_message
        self.subscribed = threading.Event()
        self.client.on_subscribe = lambda *_a: self.subscribed.set()
        self.client.connect("127.0.0.1", port, keepalive=10)
        self.client.loop_start()
        assert self.subscribed.wait(5), "observer could not subscribe"

    def _on_connect(self, client: paho.Client, *_args: Any) -> None:
        client.subscribe([(f, 1) for f in self.filters])

    def _on_message(self, _client: paho.Client, _userdata: Any, msg: paho.MQTTMessage) -> None:
        with self._cond:
            self.messages.append(msg)
            self._cond.notify_all()

    def wait(self, find: Callable[[list[paho.MQTTMessage]], Any], timeout: float = 10.0, what: str = "") -> Any:
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                found = find(self.messages)
                if found:
                    return found
                left = deadline - time.monotonic()
                if left <= 0:
                    topics = [(m.topic, m.payload[:80]) for m in self.messages[-15:]]
                    raise AssertionError(f"timed out waiting for {what or find}; last messages: {topics}")
                self._cond.wait(left)

    def mark(self) -> int:
        with self._cond:
            return len(self.messages)

    def on(self, topic: str, since: int = 0) -> list[paho.MQTTMessage]:
        with self._cond:
            return [m for m in self.messages[since:] if m.topic == topic]

    def publish(self, topic: str, payload: bytes | str) -> None:
        self.client.publish(topic, payload, qos=1).wait_for_publish(5)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


class Polyvox:
    """`polyvox run --source -` with a feeder thread that paces audio like a microphone."""

    def __init__(self, tmp_path: Path, port: int, models: Path, *extra: str, mqtt: dict[str, Any] | None = None,
                 env: dict[str, str] | None = None, url: str = "", verbose: bool = False) -> None:
        self.device_id = f"t{uuid.uuid4().hex[:8]}"
        self.base = f"polyvox/{self.device_id}"
        self.config = tmp_path / f"{self.device_id}.toml"
        self.config.write_text(self.default_config(**(mqtt or {})))
        self.stderr_path = tmp_path / f"{self.device_id}.log"
        self._stderr = open(self.stderr_path, "wb")  # noqa: SIM115 - closed in close()
        args = [sys.executable, "-m", "edge", *(["-v"] if verbose else []), "run", "--source", "-",
                "--models-dir", str(models), "--wake", "off",
                "--config", str(self.config), "--mqtt", url or f"mqtt://127.0.0.1:{port}", *extra]
        self.proc = subprocess.Popen(args, cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                                     stderr=self._stderr, env={**os.environ, **(env or {})})
        self._speech: queue.Queue[np.ndarray] = queue.Queue()
        self._stop = threading.Event()
        self._feeder = threading.Thread(target=self._feed, daemon=True)
        self._feeder.start()

    def default_config(self, **overrides: Any) -> str:
        mqtt = {"device_id": self.device_id, "reconnect_min_s": 0.2, "reconnect_max_s": 1.0} | overrides
        lines = ["[mqtt]"] + [f"{k} = {json.dumps(v)}" for k, v in mqtt.items()]
        return "\n".join(lines) + "\n"

    def _feed(self) -> None:
        pending = np.zeros(0, dtype=np.int16)
        next_at = time.monotonic()
        try:
            while not self._stop.is_set():
                while not self._speech.empty():
                    pending = np.concatenate([pending, self._speech.get()])
                chunk, pending = pending[:CHUNK_SAMPLES], pending[CHUNK_SAMPLES:]
                chunk = np.pad(chunk, (0, CHUNK_SAMPLES - len(chunk)))
                self.proc.stdin.write(chunk.astype("<i2").tobytes())
                self.proc.stdin.flush()
                next_at += CHUNK_S
                time.sleep(max(0.0, next_at - time.monotonic()))
        except (BrokenPipeError, ValueError, OSError):
            pass  # the process is gone or its stdin closed

    def say(self, samples: np.ndarray, then_silence_s: float = 0.6) -> float:
        """Queue speech (and silence so the utterance ends); returns its duration in seconds."""
        self._speech.put(np.concatenate([samples, np.zeros(int(then_silence_s * 16000), dtype=np.int16)]))
        return len(samples) / 16000 + then_silence_s

    @property
    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace")

    def alive(self) -> bool:
        return self.proc.poll() is None

    def close(self) -> None:
        self._stop.set()
        if self.alive():
            self.proc.kill()
        self.proc.wait(5)
        self._feeder.join(2)
        self._stderr.close()


@pytest.fixture
def spawn(tmp_path: Path) -> Iterator[Callable[..., Polyvox]]:
    started: list[Polyvox] = []

    def start(*args: Any, **kwargs: Any) -> Polyvox:
        p = Polyvox(tmp_path, *args, **kwargs)
        started.append(p)
        return p

    yield start
    for p in started:
        p.close()


@pytest.fixture
def observe() -> Iterator[Callable[..., Observer]]:
    made: list[Observer] = []

    def make(*args: Any, **kwargs: Any) -> Observer:
        o = Observer(*args, **kwargs)
        made.append(o)
        return o

    yield make
    for o in made:
        o.close()


def _payloads(msgs: list[paho.MQTTMessage], topic: str) -> list[bytes]:
    return [m.payload for m in msgs if m.topic == topic]


def _states(msgs: list[paho.MQTTMessage], base: str) -> list[dict]:
    return [json.loads(p) for p in _payloads(msgs, f"{base}/state")]


def _events(msgs: list[paho.MQTTMessage], base: str) -> list[dict]:
    return [json.loads(p) for p in _payloads(msgs, f"{base}/event")]


def _live(msgs: list[paho.MQTTMessage], topic: str, payload: bytes) -> bool:
    """A message published while we were subscribed (not a retained copy from the past)."""
    return any(m.topic == topic and m.payload == payload and not m.retain for m in msgs)


def _wait_online(obs: Observer, pv: Polyvox, timeout: float = 20.0) -> None:
    try:
        obs.wait(lambda ms: _live(ms, f"{pv.base}/availability", b"online") and _states(ms, pv.base), timeout,
                 f"{pv.base} online")
    except AssertionError as exc:
        raise AssertionError(f"{exc}\npolyvox stderr: {pv.stderr[-2000:]}") from None


# =========================================================================== against mosquitto


def test_discovery_state_and_home_assistant_restart(broker, models_dir, spawn, observe):
    obs = observe(broker.port, ("polyvox/#", "homeassistant/#"))
    pv = spawn(broker.port, models_dir, "--language", "en", mqtt={"state_interval_s": 1.0})
    _wait_online(obs, pv)

    def discovery(ms: list[paho.MQTTMessage]) -> dict[str, dict]:
        return {m.topic: json.loads(m.payload) for m in ms if m.topic.endswith("/config")}

    found = obs.wait(lambda ms: len(discovery(ms)) >= 9 and discovery(ms), what="9 discovery configs")
    _check_discovery(found, "homeassistant", pv.device_id, ["lights_on", "seven", "stop"])
    assert found[f"homeassistant/select/polyvox_{pv.device_id}/language/config"]["options"] == ["en", "de"]

    state = _states(obs.messages, pv.base)[-1]
    assert {k: state[k] for k in ("language", "mode", "target_language", "muted", "sensitivity")} == {
        "language": "en", "mode": "command", "target_language": "en", "muted": False, "sensitivity": 0.5}
    assert state["models"] == [{"language": "en", "task": "command", "version": state["models"][0]["version"],
                                "name": "en-tiny", "voice_profile": False}]
    for key, kind in [("version", str), ("uptime_s", float), ("rtf", float), ("cpu_percent", float),
                      ("rss_mb", float), ("dropped_frames", int), ("events_dropped", int), ("mqtt_connected", bool)]:
        assert isinstance(state[key], kind), key
    assert state["mqtt_connected"] is True and state["rss_mb"] > 10
    assert ("temperature_c" in state) == Path("/sys/class/thermal/thermal_zone0/temp").exists()

    # Periodic state without any change (state_interval_s = 1 here).
    mark = obs.mark()
    obs.wait(lambda ms: len(_states(ms[mark:], pv.base)) >= 2, 5, "two periodic state messages")

    # Home Assistant restarting asks for discovery again.
    mark = obs.mark()
    obs.publish("homeassistant/status", "online")
    obs.wait(lambda ms: len(discovery(ms[mark:])) >= 9, 5, "discovery republished")


def test_state_reflects_every_set_command(broker, models_dir, spawn, observe):
    obs = observe(broker.port, ("polyvox/#",))
    pv = spawn(broker.port, models_dir, "--language", "en")
    _wait_online(obs, pv)
    steps = [("target_language", "de", "target_language", "de"),
             ("mute", "ON", "muted", True),
             ("mute", "OFF", "muted", False), ("sensitivity", "0.8", "sensitivity", 0.8),
             ("sensitivity", "0", "sensitivity", 0.0), ("language", "de", "language", "de"),
             ("language", "en", "language", "en")]
    for setting, payload, key, value in steps:
        mark = obs.mark()
        obs.publish(f"{pv.base}/set/{setting}", payload)
        state = obs.wait(lambda ms, m=mark, k=key, v=value: [s for s in _states(ms[m:], pv.base) if s[k] == v],
                         10, f"state {key}={value}")[-1]
        assert state[key] == value
    final = _states(obs.messages, pv.base)[-1]
    assert (final["mode"], final["target_language"], final["muted"], final["sensitivity"]) == ("command", "de",
                                                                                               False, 0.0)
    assert [m["name"] for m in final["models"]] == ["en-tiny"]
    assert not obs.on(f"{pv.base}/error")
    # Translate mode needs phrasebook bundles; this models dir has none, so it is refused.
    obs.publish(f"{pv.base}/set/mode", "translate")
    err = obs.wait(lambda ms: obs.on(f"{pv.base}/error"), 10, "error for set/mode")
    assert "phrasebook" in json.loads(err[-1].payload)["error"]


MALFORMED = [
    ("set/language", b"tlh", "unknown language"),
    ("set/language", b"fr", "no models"),
    ("set/language", b"en+tlh", "unknown language 'tlh'"),
    ("set/language", b"x" * 300, "limit"),
    ("set/language", b"", "empty"),
    ("set/target_language", b"klingon", "unknown target language"),
    ("set/mode", b"dance", "unknown mode"),
    ("set/mute", b"maybe", "ON or OFF"),
    ("set/mute", b"\xff\xfe\x00O\x00N", "not UTF-8"),
    ("set/sensitivity", b"1.5", "between 0 and 1"),
    ("set/sensitivity", b"-0.1", "between 0 and 1"),
    ("set/sensitivity", b"NaN", "number"),
    ("set/sensitivity", b"{not json", "number"),
    ("set/sensitivity", b"[0.5]", "number"),
    ("set/volume", b"11", "unknown setting"),
    ("set", b"de", "unknown setting"),
]


def test_malformed_payloads_each_get_one_error_and_change_nothing(broker, models_dir, spawn, observe):
    obs = observe(broker.port, ("polyvox/#",))
    pv = spawn(broker.port, models_dir, "--language", "en")
    _wait_online(obs, pv)
    keys = ("language", "mode", "target_language", "muted", "sensitivity", "models")
    before = {k: _states(obs.messages, pv.base)[-1][k] for k in keys}
    mark = obs.mark()
    for i, (topic, payload, words) in enumerate(MALFORMED):
        obs.publish(f"{pv.base}/{topic}", payload)
        errors = obs.wait(lambda ms, n=i + 1: len(obs.on(f"{pv.base}/error", mark)) >= n and
                          obs.on(f"{pv.base}/error", mark), 5, f"error for {topic} {payload[:20]!r}")
        err = json.loads(errors[i].payload)
        assert err["topic"] == f"{pv.base}/{topic}" and words in err["error"], err
        assert len(err["payload"]) <= 70 and "\n" not in err["error"]
        assert pv.alive()
    time.sleep(0.5)  # nothing more trickles in: exactly one error each
    assert len(obs.on(f"{pv.base}/error", mark)) == len(MALFORMED)
    # Still listening to good commands, and the state that follows shows nothing else changed.
    obs.publish(f"{pv.base}/set/sensitivity", "0.6")
    after = obs.wait(lambda ms: [s for s in _states(ms[mark:], pv.base) if s["sensitivity"] == 0.6], 5,
                     "good command")[-1]
    assert {k: after[k] for k in keys} == {**before, "sensitivity": 0.6}
    assert pv.alive() and "Traceback" not in pv.stderr


def test_language_switch_changes_what_the_next_utterance_is_recognized_as(broker, models_dir, spawn, observe):
    german = espeak("Licht an", "de", 150)
    obs = observe(broker.port, ("polyvox/#",))
    pv = spawn(broker.port, models_dir, "--language", "en")
    _wait_online(obs, pv)

    mark = obs.mark()
    pv.say(espeak("lights on", "en-us", 150))
    first = obs.wait(lambda ms: _events(ms[mark:], pv.base), 15, "an English event")[0]
    assert (first["intent"], first["language"], first["model"]) == ("lights_on", "en", "en-tiny")

    mark = obs.mark()
    time.sleep(pv.say(german) + 1.5)  # in English mode: not recognized as German
    assert all(e["language"] == "en" for e in _events(obs.messages[mark:], pv.base))

    mark = obs.mark()
    t0 = time.monotonic()
    obs.publish(f"{pv.base}/set/language", "de")
    state = obs.wait(lambda ms: [s for s in _states(ms[mark:], pv.base) if s["language"] == "de"], 15,
                     "language de")[0]
    observed_s = time.monotonic() - t0
    assert [m["name"] for m in state["models"]] == ["de-tiny"]
    print(f"\nset/language -> new model listening: {state['language_switch_s']:.3f} s inside polyvox, "
          f"{observed_s:.3f} s seen from the broker")
    assert state["language_switch_s"] < 5

    mark = obs.mark()
    pv.say(german)
    nxt = obs.wait(lambda ms: _events(ms[mark:], pv.base), 15, "a German event")[0]
    assert (nxt["intent"], nxt["language"], nxt["model"], nxt["text"]) == ("lights_on", "de", "de-tiny", "Licht an")
    assert not obs.on(f"{pv.base}/error")


def test_broker_restart_reconnects_and_delivers_queued_events_in_order(broker, models_dir, spawn, observe):
    words = [("lights on", "lights_on"), ("seven", "seven"), ("stop", "stop")]
    clips = [espeak(text, "en-us", 150) for text, _ in words]
    # A persistent session: messages published while this observer reconnects wait for it.
    obs = observe(broker.port, ("polyvox/#",), client_id=f"obs-{uuid.uuid4().hex[:8]}", persistent=True)
    pv = spawn(broker.port, models_dir, "--language", "en")
    _wait_online(obs, pv)

    broker.stop()
    talk_s = sum(pv.say(c, then_silence_s=0.9) for c in clips)
    time.sleep(talk_s + 1.5)  # every utterance heard and queued while the broker is away
    assert pv.alive()
    mark = obs.mark()
    broker.start()

    obs.wait(lambda ms: _live(ms[mark:], f"{pv.base}/availability", b"online"), 20, "online again")
    got = obs.wait(lambda ms: len(_events(ms[mark:], pv.base)) >= 3 and _events(ms[mark:], pv.base), 10,
                   "the queued events")
    assert [e["intent"] for e in got] == [intent for _, intent in words]
    assert [e["t_start"] for e in got] == sorted(e["t_start"] for e in got)
    assert "sending 3 queued events" in pv.stderr
    state = obs.wait(lambda ms: [s for s in _states(ms[mark:], pv.base) if s["mqtt_connected"]], 10, "state")[-1]
    assert state["events_dropped"] == 0


def test_kill_9_leaves_the_last_will_offline(broker, models_dir, spawn, observe):
    obs = observe(broker.port, ("polyvox/#",))
    pv = spawn(broker.port, models_dir, "--language", "en")
    _wait_online(obs, pv)
    mark = obs.mark()
    pv.proc.send_signal(signal.SIGKILL)
    obs.wait(lambda ms: _live(ms[mark:], f"{pv.base}/availability", b"offline"), 10, "the last will")
    late = Observer(broker.port, (f"{pv.base}/availability",))  # retained for whoever comes later
    try:
        assert late.wait(lambda ms: ms)[0].payload == b"offline"
    finally:
        late.close()


def test_sigterm_says_offline_and_exits_0_within_2_s(broker, models_dir, spawn, observe):
    obs = observe(broker.port, ("polyvox/#",))
    pv = spawn(broker.port, models_dir, "--language", "en")
    _wait_online(obs, pv)
    mark = obs.mark()
    t0 = time.monotonic()
    pv.proc.send_signal(signal.SIGTERM)
    assert pv.proc.wait(5) == 0, pv.stderr[-2000:]
    assert time.monotonic() - t0 < 2.0
    obs.wait(lambda ms: _live(ms[mark:], f"{pv.base}/availability", b"offline"), 5, "offline")
    assert "Traceback" not in pv.stderr


def test_sighup_rereads_the_config_file(broker, models_dir, spawn, observe):
    obs = observe(broker.port, ("polyvox/#",))
    pv = spawn(broker.port, models_dir, "--language", "en")
    _wait_online(obs, pv)
    pv.config.write_text('sensitivity = 0.85\ntarget_language = "fr"\n' + pv.default_config())
    mark = obs.mark()
    pv.proc.send_signal(signal.SIGHUP)
    state = obs.wait(lambda ms: [s for s in _states(ms[mark:], pv.base) if s["sensitivity"] == 0.85
                                 and s["target_language"] == "fr"], 10, "reloaded state")[-1]
    assert state["language"] == "en"
    # A broken file is refused as a whole; the box keeps running as it was.
    pv.config.write_text('sensitivity = "loud"\n' + pv.default_config())
    pv.proc.send_signal(signal.SIGHUP)
    deadline = time.monotonic() + 5
    while "keeping the running configuration" not in pv.stderr and time.monotonic() < deadline:
        time.sleep(0.1)
    assert "keeping the running configuration" in pv.stderr and pv.alive()
    mark = obs.mark()
    obs.publish(f"{pv.base}/set/mute", "ON")
    state = obs.wait(lambda ms: [s for s in _states(ms[mark:], pv.base) if s["muted"]], 5, "muted")[-1]
    assert state["sensitivity"] == 0.85


def test_credentials_from_the_environment_and_never_logged(tmp_path, models_dir, spawn, observe):
    work = tmp_path / "auth"
    work.mkdir()
    passwd = work / "passwd"
    subprocess.run(["mosquitto_passwd", "-b", "-c", str(passwd), "ann", "s3cr3t-pw"], check=True,
                   capture_output=True)
    passwd.chmod(0o600)
    auth = Mosquitto(work, extra=f"allow_anonymous false\npassword_file {passwd}")
    auth.start()
    try:
        env = {"POLYVOX_MQTT_USERNAME": "ann", "POLYVOX_MQTT_PASSWORD": "s3cr3t-pw"}
        obs = observe(auth.port, ("polyvox/#",), login=("ann", "s3cr3t-pw"))
        good = spawn(auth.port, models_dir, "--language", "en", verbose=True, env=env)
        bad = spawn(auth.port, models_dir, "--language", "en", verbose=True,
                    url=f"mqtt://ann:wr0ng-pw@127.0.0.1:{auth.port}")
        _wait_online(obs, good)
        deadline = time.monotonic() + 10
        while "refused the connection" not in bad.stderr and time.monotonic() < deadline:
            time.sleep(0.1)
        assert "refused the connection" in bad.stderr and bad.alive()
        assert not obs.on(f"{bad.base}/availability")
        for pv, secret in ((good, "s3cr3t-pw"), (bad, "wr0ng-pw")):
            assert secret not in pv.stderr and "ann@127.0.0.1" in pv.stderr
    finally:
        auth.stop()


def test_tls_with_a_private_ca(tmp_path, models_dir, spawn, observe):
    if not shutil.which("openssl"):
        pytest.skip("openssl is not installed")
    work = tmp_path / "tls"
    work.mkdir()

    def ssl(*args: str) -> None:
        subprocess.run(["openssl", *args], cwd=work, check=True, capture_output=True)

    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    ssl("req", "-x509", *ec, "-keyout", "ca.key", "-out", "ca.crt", "-subj", "/CN=polyvox test CA", "-days", "2")
    ssl("req", *ec, "-keyout", "server.key", "-out", "server.csr", "-subj", "/CN=localhost")
    (work / "san.ext").write_text("subjectAltName=DNS:localhost,IP:127.0.0.1\n")
    ssl("x509", "-req", "-in", "server.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial",
        "-out", "server.crt", "-days", "2", "-extfile", "san.ext")
    plain_port = _free_port()
    tls = Mosquitto(work, extra=f"allow_anonymous true\ncafile {work}/ca.crt\ncertfile {work}/server.crt\n"
                                f"keyfile {work}/server.key\nlistener {plain_port} 127.0.0.1")
    tls.start()
    try:
        deadline = time.monotonic() + 15  # the second (plain) listener may open a moment later
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", plain_port), timeout=0.2).close()
                break
            except OSError:
                time.sleep(0.05)
        obs = observe(plain_port, ("polyvox/#",))  # the test watches on the plain listener
        pv = spawn(tls.port, models_dir, "--language", "en", url=f"mqtts://localhost:{tls.port}",
                   mqtt={"ca_file": str(work / "ca.crt")})
        _wait_online(obs, pv)
        assert f"mqtts://localhost:{tls.port}" in pv.stderr
    finally:
        tls.stop()



def test_a_reload_to_a_working_broker_delivers_what_the_unreachable_one_could_not(broker, models_dir, tmp_path,
                                                                                  observe):
    from edge.audio import write_wav
    from edge.config import RunConfig
    from edge.service import Service
    from tests.conftest import with_silence

    obs = observe(broker.port, ("polyvox/relink/event",))
    wav = tmp_path / "words.wav"
    write_wav(wav, np.concatenate([with_silence(espeak("seven", "en-us", 150), espeak("stop", "en-us", 150)),
                                   np.zeros(16000 * 20, dtype=np.int16)]))
    wrong = MqttConfig(url=f"mqtt://127.0.0.1:{_free_port()}", device_id="relink")  # nobody listens there
    cfg = RunConfig(source=str(wav), models_dir=str(models_dir), language="en", wake="off", realtime=True,
                    mqtt=wrong)
    service = Service(cfg, thermal_path=Path("/nonexistent"))
    runner = threading.Thread(target=service.run, daemon=True)
    runner.start()
    try:
        deadline = time.monotonic() + 15
        while service.link.events_waiting < 2:
            assert time.monotonic() < deadline, "the two words were not heard"
            time.sleep(0.05)
        # The URL fixed in the file, then SIGHUP: the queued events go to the new broker.
        service.reload(replace(cfg, mqtt=replace(wrong, url=f"mqtt://127.0.0.1:{broker.port}")))
        got = obs.wait(lambda ms: len(ms) >= 2 and ms, 15, "the queued events")
        assert [json.loads(m.payload)["intent"] for m in got] == ["seven", "stop"]
    finally:
        service.request_stop()
        runner.join(5)


def test_events_that_never_reach_the_broker_are_counted_at_exit(models_dir, tmp_path):
    from edge.audio import write_wav
    from tests.conftest import with_silence

    wav = tmp_path / "words.wav"
    write_wav(wav, with_silence(espeak("seven", "en-us", 150), espeak("stop", "en-us", 150)))
    proc = subprocess.run([sys.executable, "-m", "edge", "run", "--source", str(wav), "--models-dir", str(models_dir),
                           "--language", "en", "--wake", "off", "--mqtt", f"mqtt://127.0.0.1:{_free_port()}"],
                          cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "2 events never reached the broker" in proc.stderr
