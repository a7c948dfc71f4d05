"""Bad input gets one clear line on stderr and exit code 2, never a traceback."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT


def _run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "edge", *args], cwd=ROOT, capture_output=True, text=True, timeout=60)


def _one_line_error(proc: subprocess.CompletedProcess, *words: str) -> None:
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    lines = [x for x in proc.stderr.splitlines() if "error" in x]
    assert len(lines) == 1, proc.stderr
    for w in words:
        assert w in lines[0], lines[0]


def test_missing_wav(tmp_path: Path):
    _one_line_error(_run("run", "--source", str(tmp_path / "nope.wav"), "--wake", "off"), "nope.wav")


def test_not_a_wav(tmp_path: Path):
    bad = tmp_path / "notes.wav"
    bad.write_text("this is text")
    _one_line_error(_run("run", "--source", str(bad)), "notes.wav")


@pytest.mark.parametrize("language, words", [("tlh", "tlh"), ("fr+tlh", "tlh"), ("fr+fr", "twice")])
def test_unknown_language(language: str, words: str):
    _one_line_error(_run("run", "--language", language, "--source", "x.wav"), "language", words)


def test_config_unknown_key_and_bad_value(tmp_path: Path):
    cfg = tmp_path / "c.toml"
    cfg.write_text('language = "en"\nlanguag = "de"\n')
    _one_line_error(_run("run", "--config", str(cfg)), "languag")
    cfg.write_text('sensitivity = "high"\n')
    _one_line_error(_run("run", "--config", str(cfg)), "sensitivity")
    cfg.write_text('langid_rule = "vote"\n')
    _one_line_error(_run("run", "--config", str(cfg)), "langid_rule")
    cfg.write_text('language_memory_s = -5\n')
    _one_line_error(_run("run", "--config", str(cfg)), "language_memory_s")
    cfg.write_text('[vad]\nhangover = 1\n')
    _one_line_error(_run("run", "--config", str(cfg)), "vad.hangover")
    cfg.write_text('[vad]\nframe_s = 0\n')
    _one_line_error(_run("run", "--config", str(cfg)), "frame_s")
    cfg.write_text('listen_s = nan\n')  # would never accept a command after the wake phrase
    _one_line_error(_run("run", "--config", str(cfg)), "listen_s")


def test_devices_may_be_given_by_index_in_the_config_file(tmp_path: Path):
    from edge.config import load_config

    cfg = tmp_path / "c.toml"
    cfg.write_text('device = 1\noutput_device = 0\n')  # as `polyvox devices` lists them
    assert (load_config(cfg).device, load_config(cfg).output_device) == ("1", "0")


def test_every_config_key_is_explained_in_the_shipped_file():
    import dataclasses

    from edge.config import RunConfig

    text = (ROOT / "systemd" / "polyvox.toml").read_text()
    # Command-line-only settings (a WAV source, paced reading, stdout, a bundle list) are not for the service.
    cli_only = {"rate_hz", "bundles", "json", "realtime", "vad", "mqtt"}
    missing = [f.name for f in dataclasses.fields(RunConfig) if f.name not in cli_only
               and f"\n{f.name} = " not in text]
    assert not missing


def test_a_bundle_that_cannot_listen_and_wake_on_without_a_wake_model():
    demo = str(ROOT / "models" / "demo" / "demo-en.wav")
    _one_line_error(_run("run", "--source", demo, "--bundle", "models/embedding"), "models/embedding", "embedding")
    # Without a wake model, wake on would let nothing through, silently.
    _one_line_error(_run("run", "--source", demo, "--bundle", "models/en-command", "--wake", "on"),
                    "no wake model", "--wake auto")


def test_a_closed_stdout_stops_the_run_quietly():
    proc = subprocess.Popen([sys.executable, "-m", "edge", "run", "--source", "models/demo/demo-en.wav", "--realtime"],
                            cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    first = proc.stdout.readline()  # `polyvox run ... | head -1`
    proc.stdout.close()
    _, err = proc.communicate(timeout=60)
    assert first.startswith("{") and proc.returncode == 0, err
    assert "Traceback" not in err and "stdout was closed; stopping" in err


def test_missing_bundle(tmp_path: Path):
    import numpy as np

    from edge.audio import write_wav

    wav = tmp_path / "quiet.wav"
    write_wav(wav, np.zeros(16000, dtype=np.int16))
    _one_line_error(_run("run", "--bundle", str(tmp_path / "nothing"), "--source", str(wav)), "nothing")


def test_devices_says_one_line_without_a_sound_card():
    proc = _run("devices")
    assert proc.returncode == 0
    if "no sound card" in proc.stdout:
        assert len(proc.stdout.strip().splitlines()) == 1
    assert "ALSA" not in proc.stderr


def test_mic_without_a_device_is_a_clear_error():
    proc = _run("run", "--source", "mic", "--bundle", str(ROOT / "models" / "en-command"))
    if proc.returncode == 0:
        pytest.skip("this machine has a microphone")
    _one_line_error(proc)


def test_help_explains_the_event_contract():
    proc = _run("run", "--help")
    assert proc.returncode == 0 and "JSON object per line" in proc.stdout
