"""The service around the Runner: control state, validated settings, language switches between
chunks, config reload, systemd notifications and a prompt SIGTERM, all without a broker."""

from __future__ import annotations

import json
import math
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from edge.audio import write_wav
from edge.config import RunConfig
from edge.service import Service, rss_mb, temperature_c
from tests.conftest import ROOT, copy_bundle, espeak, with_silence

STATE_KEYS = {"language", "mode", "target_language", "muted", "sensitivity", "models", "version", "uptime_s", "rtf",
              "cpu_percent", "rss_mb", "dropped_frames", "last_heard_language", "last_command", "language_switch_s",
              "events_dropped", "mqtt_connected"}


def _copy_as(bundle: Path, out: Path, language: str) -> None:
    """The tiny English bundle under another name and language: enough to watch a swap happen."""
    copy_bundle(bundle, out, name=out.name, language=language)


@pytest.fixture(scope="module")
def two_languages(tiny_bundle: Path, tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("two-languages")
    _copy_as(tiny_bundle, root / "en-tiny", "en")
    _copy_as(tiny_bundle, root / "de-fake", "de")
    return root


@pytest.fixture
def wav(tmp_path: Path) -> Path:
    path = tmp_path / "quiet.wav"
    write_wav(path, np.zeros(16000, dtype=np.int16))
    return path


def _service(models: Path, source: str, **kw) -> Service:
    return Service(RunConfig(source=source, models_dir=str(models), language="en", wake="off", **kw),
                   thermal_path=Path("/nonexistent/thermal"))


def test_state_carries_the_contract(two_languages, wav, tmp_path):
    service = _service(two_languages, str(wav))
    state = service.state()
    assert set(state) == STATE_KEYS  # no temperature sensor at that path
    assert (state["language"], state["mode"], state["target_language"], state["muted"], state["sensitivity"]) == (
        "en", "command", "en", False, 0.5)
    assert state["models"] == [{"language": "en", "task": "command", "version": state["models"][0]["version"],
                                "name": "en-tiny", "voice_profile": False}]
    assert state["mqtt_connected"] is False and state["events_dropped"] == 0
    json.dumps(state)  # publishable as is
    sensor = tmp_path / "temp"
    sensor.write_text("48512\n")
    service.thermal_path = sensor
    assert service.state()["temperature_c"] == 48.5
    assert service.available_languages() == ("en", "de")
    assert service.discovery_info().intents == ("lights_on", "seven", "stop")


def test_health_readings():
    assert rss_mb() > 10
    assert temperature_c(Path("/nonexistent")) is None


@pytest.mark.parametrize("setter, value, words", [
    ("set_language", "tlh", "unknown language"),
    ("set_language", "fr", "no models for language 'fr'"),
    ("set_language", "en+tlh", "unknown language 'tlh'"),
    ("set_language", "en+en", "names a language twice"),
    ("set_language", "en+fr", "no models for language 'en\\+fr'"),
    ("set_mode", "dance", "unknown mode"),
    ("set_target_language", "xx", "unknown target language"),
    ("set_mute", "ON", "true or false"),
    ("set_sensitivity", 1.5, "between 0 and 1"),
    ("set_sensitivity", -0.01, "between 0 and 1"),
    ("set_sensitivity", math.nan, "number"),
    ("set_sensitivity", math.inf, "number"),
    ("set_sensitivity", True, "number"),
    ("set_sensitivity", "0.5", "number"),
])
def test_bad_settings_are_refused_and_change_nothing(two_languages, wav, setter, value, words):
    service = _service(two_languages, str(wav))
    before = service.state()
    with pytest.raises(ValueError, match=words) as err:
        getattr(service, setter)(value)
    assert "\n" not in str(err.value)
    after = service.state()
    for key in ("language", "mode", "target_language", "muted", "sensitivity", "models"):
        assert after[key] == before[key]
    assert (service.runner.pipeline.sensitivity, service.runner.pipeline.muted) == (0.5, False)


def test_good_settings_reach_the_pipeline(two_languages, wav):
    service = _service(two_languages, str(wav))
    service.apply("sensitivity", 0.8)
    service.apply("mute", True)
    service.apply("target_language", "fr")
    with pytest.raises(ValueError, match="phrasebook"):  # translate mode needs phrasebook bundles
        service.apply("mode", "translate")
    assert (service.runner.pipeline.sensitivity, service.runner.pipeline.muted) == (0.8, True)
    state = service.state()
    assert (state["sensitivity"], state["muted"], state["mode"], state["target_language"]) == (0.8, True,
                                                                                               "command", "fr")
    with pytest.raises(ValueError, match="unknown setting"):
        service.apply("volume", 3)


def _wait(condition, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def test_language_switch_swaps_between_chunks_and_loses_no_audio(two_languages, monkeypatch, capsys):
    read_fd, write_fd = os.pipe()
    monkeypatch.setattr(sys, "stdin", SimpleNamespace(buffer=os.fdopen(read_fd, "rb", buffering=0)))
    service = _service(two_languages, "-")
    runner = threading.Thread(target=service.run, daemon=True)
    runner.start()
    fed = 0

    def feed(samples: np.ndarray) -> None:
        nonlocal fed
        os.write(write_fd, samples.astype("<i2").tobytes())
        fed += len(samples)

    seven = espeak("seven", "en-us", 150)
    feed(with_silence(seven))
    _wait(lambda: service.control.last_command == "seven")
    assert service.control.last_heard_language == "en"

    t0 = time.monotonic()
    service.set_language("de")
    assert service.control.language == "en"  # loading in the background, old models still listening
    chunk = np.zeros(1280, dtype=np.int16)
    while service.control.language != "de":  # like a microphone: audio keeps flowing
        feed(chunk)
        time.sleep(0.01)
        assert time.monotonic() - t0 < 10
    assert service.state()["models"][0]["name"] == "de-fake"
    assert 0 < service.language_switch_s < 10

    feed(with_silence(seven))
    _wait(lambda: service.control.last_heard_language == "de")
    os.close(write_fd)
    runner.join(10)
    assert not runner.is_alive()
    events = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    assert [(e["intent"], e["language"], e["model"]) for e in events] == [("seven", "en", "en-tiny"),
                                                                           ("seven", "de", "de-fake")]
    # every sample written was processed: the swap happened between chunks, not over them
    assert service.metrics["audio_s"] == pytest.approx(fed / 16000, abs=1280 / 16000)


def test_a_newer_language_request_wins(two_languages, wav):
    service = _service(two_languages, str(wav))
    service.set_language("de")
    service.set_language("en")  # back before the German models were even installed
    service.run()  # the whole WAV: the pipeline installs whatever is pending
    assert service.control.language == "en"
    assert service.runner.pipeline.models.language == "en"


def test_a_conversation_listens_for_both_languages(two_languages, wav, tmp_path):
    models = tmp_path / "models"
    shutil.copytree(two_languages, models)
    copy_bundle(ROOT / "models" / "langid", models / "langid")
    service = _service(models, str(wav))
    assert service.available_languages() == ("en", "de", "auto")  # auto: the identifier is there
    service.set_language("en+de")  # spelled as the loaded models name themselves: de+en
    _wait(lambda: service._switch is not None)  # loaded in the background; installed by the audio loop
    service.run()
    assert service.control.language == "de+en"
    assert sorted(h.bundle.name for h in service.runner.pipeline.models.heads) == ["de-fake", "en-tiny", "langid"]
    assert service.available_languages() == ("en", "de", "auto", "de+en")


def test_a_bundle_list_with_the_language_identifier_is_named_by_its_languages(two_languages, wav):
    bundles = tuple(str(p) for p in (two_languages / "en-tiny", two_languages / "de-fake", ROOT / "models" / "langid"))
    service = Service(RunConfig(source=str(wav), bundles=bundles, wake="off"),
                      thermal_path=Path("/nonexistent/thermal"))
    # The identifier's "*" is no language: Home Assistant must not be offered "*+de+en".
    assert service.control.language == "de+en"
    assert service.available_languages() == ("en", "de", "auto", "de+en")


def test_asking_again_for_auto_loads_nothing_anew(two_languages, wav, tmp_path):
    models = tmp_path / "models"
    shutil.copytree(two_languages, models)
    copy_bundle(ROOT / "models" / "langid", models / "langid")
    service = Service(RunConfig(source=str(wav), models_dir=str(models), language="auto", wake="off"),
                      thermal_path=Path("/nonexistent/thermal"))
    assert service.runner.pipeline.models.language == "auto"
    service.set_language("auto")
    assert service._switch is None and not [t for t in threading.enumerate() if t.name.startswith("polyvox-load")]


def test_reload_applies_what_changed_in_the_file(two_languages, wav, caplog):
    service = _service(two_languages, str(wav))
    service.set_sensitivity(0.3)  # over MQTT, say
    cfg = service.cfg
    changed = service.reload(replace(cfg, target_language="de", listen_s=9.0))
    assert changed == ["target_language"]
    assert (service.control.mode, service.control.target_language, service.control.sensitivity) == ("command",
                                                                                                    "de", 0.3)
    assert "listen_s take effect at the next start" in caplog.text
    assert service.reload(replace(service.cfg, sensitivity=0.9, language="fr")) == ["sensitivity"]
    assert service.control.sensitivity == 0.9 and "no models for language 'fr'" in caplog.text
    assert service.reload(service.cfg) == []


def test_sigterm_with_idle_stdin_exits_0_within_2_s(tiny_bundle):
    proc = subprocess.Popen([sys.executable, "-m", "edge", "run", "--source", "-", "--bundle", str(tiny_bundle),
                             "--wake", "off"], cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    try:
        proc.stdin.write(np.zeros(16000, dtype="<i2").tobytes())
        proc.stdin.flush()
        time.sleep(2.0)  # loaded and waiting for more audio that does not come
        t0 = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(5) == 0
        assert time.monotonic() - t0 < 2.0
        err = proc.stderr.read().decode()
        assert "Traceback" not in err and "Fatal" not in err
    finally:
        proc.kill()
        proc.wait()


def test_systemd_hears_ready_watchdog_and_stopping(tiny_bundle, tmp_path):
    pytest.importorskip("edge.sdnotify")
    sock_path = tmp_path / "notify.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(sock_path))
    sock.settimeout(0.5)
    lines: list[str] = []
    done = threading.Event()

    def listen() -> None:  # read as systemd does: a full datagram queue would block the sender
        while not done.is_set():
            try:
                lines.extend(sock.recv(4096).decode().splitlines())
            except TimeoutError:
                continue

    listener = threading.Thread(target=listen, daemon=True)
    listener.start()
    wav = tmp_path / "speech.wav"
    write_wav(wav, with_silence(espeak("seven", "en-us", 150)))
    env = {**os.environ, "NOTIFY_SOCKET": str(sock_path), "WATCHDOG_USEC": "200000"}
    try:
        proc = subprocess.run([sys.executable, "-m", "edge", "run", "--source", str(wav), "--bundle",
                               str(tiny_bundle), "--wake", "off", "--realtime"], cwd=ROOT, env=env,
                              capture_output=True, timeout=60)
        time.sleep(0.6)
    finally:
        done.set()
        listener.join(2)
        sock.close()
    assert proc.returncode == 0, proc.stderr.decode()[-2000:]
    assert lines[0] == "READY=1" and lines[-1] == "STOPPING=1", lines
    assert lines.count("WATCHDOG=1") >= 5  # about every 0.1 s of a 3 s real-time run


def _loads_done(timeout: float = 30.0) -> None:
    _wait(lambda: not any(t.name.startswith("polyvox-load") for t in threading.enumerate()), timeout)


def test_two_settings_sent_close_together_both_take_effect(wav, tmp_path):
    """Two Home Assistant selects in a row: the second request starts from the first, not from
    what was listening while the first one loaded."""
    service = Service(RunConfig(source=str(wav), models_dir=str(ROOT / "models"), language="en", wake="off",
                                output=str(tmp_path / "spoken.wav")), thermal_path=Path("/nonexistent"))
    service.set_language("de")
    service.set_mode("translate")
    _loads_done()
    service.run()
    assert (service.control.language, service.control.mode) == ("de", "translate")
    assert [h.bundle.name for h in service.runner.pipeline.models.heads] == ["de-phrase"]
    assert service.runner.translator is not None

    service = Service(replace(service.cfg, mode="command", language="en"), thermal_path=Path("/nonexistent"))
    service.set_mode("translate")
    service.set_mode("command")  # changed their mind before the phrasebook was listening
    _loads_done()
    service.run()
    assert (service.control.mode, service.runner.translator) == ("command", None)
    assert {h.bundle.task for h in service.runner.pipeline.models.heads} == {"command", "wake"}


def test_translate_without_a_speaker_is_refused_and_listening_goes_on(wav, caplog):
    service = Service(RunConfig(source=str(wav), models_dir=str(ROOT / "models"), language="en", wake="off",
                                output_device="no-such-speaker-here"), thermal_path=Path("/nonexistent"))
    service.set_mode("translate")
    _loads_done()
    service.run()  # the audio thread never saw the switch, so nothing could kill it
    assert service.control.mode == "command"
    refusals = [r.getMessage() for r in caplog.records if "refused" in r.getMessage()]
    assert len(refusals) == 1 and refusals[0].startswith("mode=translate refused: cannot load the en translate")
    assert "\n" not in refusals[0]
    service.set_language("en")  # and the next request starts from command mode again
    assert service._wanted == ("en", "command")


def test_reload_applies_a_new_models_folder_and_language_id_rule(two_languages, wav, tmp_path):
    service = _service(two_languages, str(wav))
    other = tmp_path / "other-models"
    _copy_as(two_languages / "en-tiny", other / "en-other", "en")
    changed = service.reload(replace(service.cfg, models_dir=str(other), langid_rule="argmax",
                                     language_memory_s=0.0))
    assert changed == ["language", "langid"]
    _loads_done()
    service.run()
    assert [h.bundle.name for h in service.runner.pipeline.models.heads] == ["en-other"]
    assert (service.runner.pipeline.cfg.langid_rule, service.runner.pipeline.cfg.language_memory_s) == ("argmax", 0.0)


def test_a_new_target_language_renders_off_the_calling_thread_and_a_failure_is_refused(wav, tmp_path, caplog,
                                                                                      monkeypatch):
    service = Service(RunConfig(source=str(wav), models_dir=str(ROOT / "models"), language="en", wake="off",
                                mode="translate", target_language="de", output=str(tmp_path / "spoken.wav")),
                      thermal_path=Path("/nonexistent"))
    translator = service.runner.translator
    service.set_target_language("fr")  # an MQTT select: returns while the phrasebook renders
    _wait(lambda: not [t for t in threading.enumerate() if t.name.startswith("polyvox-target")])
    assert (translator.target_language, service.control.target_language) == ("fr", "fr")
    assert ("fr", translator.spoken["thank_you"]["fr"]) in translator.tts._cache

    import edge.speech

    monkeypatch.setitem(edge.speech.VOICES, "es", "es-xx-none")  # a box whose espeak-ng lacks the voice
    service.set_target_language("es")
    _wait(lambda: not [t for t in threading.enumerate() if t.name.startswith("polyvox-target")])
    assert (translator.target_language, service.control.target_language) == ("fr", "fr")
    refusals = [r.getMessage() for r in caplog.records if "refused" in r.getMessage()]
    assert len(refusals) == 1 and refusals[0].startswith("target_language=es refused: cannot speak es")
