"""Running as a systemd service: the unit, the installer, sd_notify/watchdog and signals.

The process-level tests run the real `polyvox run` with $NOTIFY_SOCKET pointing at a datagram
socket bound here, the way systemd would, and raw PCM on stdin paced at real time.
"""

from __future__ import annotations

import collections
import contextlib
import hashlib
import os
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from edge import sdnotify
from tests.conftest import ROOT, copy_bundle

SYSTEMD = ROOT / "systemd"
UNIT = SYSTEMD / "polyvox.service"
EN_BUNDLE = ROOT / "models" / "en-command"
CHUNK = 1280  # samples: 80 ms at 16 kHz, the runtime's chunk size
WATCHDOG_USEC = 1_000_000  # pings every 0.5 s
PING_S = WATCHDOG_USEC / 1e6 / 2


# --------------------------------------------------------------------------- helpers


class NotifyListener:
    """A datagram socket standing in for systemd's notify socket; records (time, line) pairs."""

    def __init__(self, address: str) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(address)
        self.sock.settimeout(0.1)
        self.messages: list[tuple[float, str]] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                data = self.sock.recv(4096)
            except TimeoutError:
                continue
            except OSError:
                return
            now = time.monotonic()
            with self._lock:
                # One datagram may carry several assignments, one per line.
                self.messages += [(now, line) for line in data.decode().splitlines()]

    def times(self, line: str, start: float = 0.0, end: float = float("inf")) -> list[float]:
        with self._lock:
            return [t for t, x in self.messages if x == line and start <= t <= end]

    def wait_for(self, line: str, timeout: float, after: float = 0.0) -> float | None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = self.times(line, after)
            if found:
                return found[0]
            time.sleep(0.02)
        return None

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=2)
        self.sock.close()


class PcmFeeder(threading.Thread):
    """Writes 16 kHz PCM to a process's stdin at real time: queued speech, else quiet noise.

    pause() stops writing altogether, so the runtime's loop blocks waiting for audio (a stall).
    """

    def __init__(self, stdin) -> None:
        super().__init__(daemon=True)
        self.stdin = stdin
        self.queue: collections.deque[np.ndarray] = collections.deque()
        self.paused = threading.Event()
        self.done = threading.Event()
        self.rng = np.random.default_rng(0)

    def say(self, audio: np.ndarray) -> float:
        """Queue audio; returns how many seconds it takes to play."""
        audio = np.concatenate([audio.astype(np.int16), np.zeros(-len(audio) % CHUNK, dtype=np.int16)])
        self.queue.extend(audio.reshape(-1, CHUNK))
        return len(audio) / 16000

    def run(self) -> None:
        next_t = time.monotonic()
        while not self.done.is_set():
            if self.paused.is_set():
                time.sleep(0.02)
                next_t = time.monotonic()
                continue
            chunk = self.queue.popleft() if self.queue else (self.rng.standard_normal(CHUNK) * 30).astype(np.int16)
            try:
                self.stdin.write(chunk.astype("<i2").tobytes())
                self.stdin.flush()
            except (BrokenPipeError, ValueError, OSError):
                return  # the process went away; its exit code tells the test why
            next_t += CHUNK / 16000
            time.sleep(max(0.0, next_t - time.monotonic()))

    def stop(self) -> None:
        self.done.set()
        self.join(timeout=2)


@pytest.fixture
def notify_dir() -> Iterator[Path]:
    # AF_UNIX paths are limited to 107 bytes; pytest's tmp_path can be longer than that.
    path = Path(tempfile.mkdtemp(prefix="pvn"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


class Polyvox:
    """`python -m edge run ...` as systemd would start it, with stdin, logs and notifications."""

    def __init__(self, args: list[str], notify_dir: Path, log_dir: Path) -> None:
        self.listener = NotifyListener(str(notify_dir / "notify"))
        env = dict(os.environ, NOTIFY_SOCKET=str(notify_dir / "notify"), WATCHDOG_USEC=str(WATCHDOG_USEC),
                   PYTHONUNBUFFERED="1")
        env.pop("WATCHDOG_PID", None)
        self.stderr_path = log_dir / "stderr.log"
        self.stdout_path = log_dir / "stdout.log"
        with open(self.stderr_path, "wb") as err, open(self.stdout_path, "wb") as out:
            self.proc = subprocess.Popen([sys.executable, "-m", "edge", "run", *args], cwd=ROOT, env=env,
                                         stdin=subprocess.PIPE, stdout=out, stderr=err)
        self.feeder = PcmFeeder(self.proc.stdin)
        self.feeder.start()

    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace")

    def stdout_events(self) -> list[dict]:
        import json

        return [json.loads(x) for x in self.stdout_path.read_text().splitlines() if x.startswith("{")]

    def wait_ready(self, timeout: float = 60) -> float:
        t = self.listener.wait_for("READY=1", timeout)
        assert t is not None, ("no READY=1 on $NOTIFY_SOCKET: the runtime must call "
                               "edge.sdnotify.notify('READY=1') once models and audio are up; "
                               f"exit {self.proc.poll()}; stderr:\n{self.stderr()[-3000:]}")
        return t

    def wait_log(self, text: str, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if text in self.stderr():
                return True
            if self.proc.poll() is not None:
                return text in self.stderr()
            time.sleep(0.1)
        return False

    def close(self) -> None:
        self.feeder.stop()
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)
        if self.proc.stdin:
            with contextlib.suppress(OSError):
                self.proc.stdin.close()
        self.listener.close()


def _unit_settings(text: str) -> dict[tuple[str, str], list[str]]:
    """(section, key) -> values in order; unit files repeat keys, which configparser rejects."""
    settings: dict[tuple[str, str], list[str]] = collections.defaultdict(list)
    section = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            section = line.strip("[]")
            continue
        key, _, value = line.partition("=")
        settings[(section, key.strip())].append(value.strip())
    return settings


def _testable_unit(tmp_path: Path) -> Path:
    """A copy of the unit whose ExecStart exists here, so verify checks everything else."""
    exe = tmp_path / "bin" / "polyvox"
    exe.parent.mkdir()
    exe.write_text("#!/bin/sh\nexit 0\n")
    exe.chmod(0o755)
    unit = tmp_path / "polyvox.service"
    unit.write_text(UNIT.read_text().replace("/opt/polyvox/venv/bin/polyvox", str(exe)))
    return unit


def _tree(root: Path) -> dict[str, tuple]:
    """Relative path -> (kind, mode, content hash or link target) for everything under root."""
    out: dict[str, tuple] = {}
    for path in sorted(root.rglob("*")):
        st = path.lstat()
        rel = str(path.relative_to(root))
        if stat.S_ISLNK(st.st_mode):
            out[rel] = ("link", os.readlink(path))
        elif stat.S_ISDIR(st.st_mode):
            out[rel] = ("dir", stat.S_IMODE(st.st_mode))
        else:
            out[rel] = ("file", stat.S_IMODE(st.st_mode), hashlib.sha256(path.read_bytes()).hexdigest())
    return out


# --------------------------------------------------------------------------- sdnotify unit tests


def test_notify_without_socket_is_a_no_op(monkeypatch):
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    assert sdnotify.notify("READY=1") is False


def test_notify_sends_one_datagram_to_a_path_socket(monkeypatch, notify_dir: Path):
    listener = NotifyListener(str(notify_dir / "notify"))
    try:
        monkeypatch.setenv("NOTIFY_SOCKET", str(notify_dir / "notify"))
        assert sdnotify.notify("READY=1\nSTATUS=listening in en") is True
        assert listener.wait_for("STATUS=listening in en", 2) is not None
        assert [x for _, x in listener.messages] == ["READY=1", "STATUS=listening in en"]
    finally:
        listener.close()


def test_notify_reaches_an_abstract_socket(monkeypatch):
    name = f"polyvox-test-{os.getpid()}-{time.monotonic_ns()}"
    listener = NotifyListener("\0" + name)
    try:
        monkeypatch.setenv("NOTIFY_SOCKET", "@" + name)
        assert sdnotify.notify("STOPPING=1") is True
        assert listener.wait_for("STOPPING=1", 2) is not None
    finally:
        listener.close()


@pytest.mark.parametrize("address", ["/nonexistent/dir/notify", "@no-such-abstract-socket-polyvox", "vsock:2:9"])
def test_notify_never_raises_on_a_bad_socket(monkeypatch, address: str):
    monkeypatch.setenv("NOTIFY_SOCKET", address)
    assert sdnotify.notify("READY=1") is False


def test_watchdog_is_off_without_watchdog_usec(monkeypatch, notify_dir: Path):
    monkeypatch.setenv("NOTIFY_SOCKET", str(notify_dir / "notify"))
    monkeypatch.delenv("WATCHDOG_USEC", raising=False)
    listener = NotifyListener(str(notify_dir / "notify"))
    try:
        wd = sdnotify.Watchdog()
        assert not wd.enabled
        wd.ping()
        time.sleep(0.2)
        assert listener.messages == []
    finally:
        listener.close()


@pytest.mark.parametrize(("usec", "pid", "enabled"), [
    ("30000000", None, True),
    ("30000000", "self", True),
    ("30000000", "1", False),  # systemd watches another process: not ours to ping for
    ("0", None, False),
    ("soon", None, False),
    ("30000000", "x", False),
])
def test_watchdog_honours_usec_and_pid(monkeypatch, usec: str, pid: str | None, enabled: bool):
    monkeypatch.setenv("WATCHDOG_USEC", usec)
    if pid is None:
        monkeypatch.delenv("WATCHDOG_PID", raising=False)
    else:
        monkeypatch.setenv("WATCHDOG_PID", str(os.getpid()) if pid == "self" else pid)
    wd = sdnotify.Watchdog()
    assert wd.enabled is enabled
    if enabled:
        assert wd.interval_s == 15.0  # half of WatchdogSec


def test_watchdog_pings_at_most_every_half_period(monkeypatch):
    monkeypatch.setenv("WATCHDOG_USEC", "2000000")
    monkeypatch.delenv("WATCHDOG_PID", raising=False)
    now = [100.0]
    sent: list[float] = []
    monkeypatch.setattr(sdnotify, "notify", lambda state: sent.append(now[0]) or state == "WATCHDOG=1")
    wd = sdnotify.Watchdog()
    wd.clock = lambda: now[0]
    for t in (100.0, 100.2, 100.99, 101.0, 101.5, 101.9, 103.5, 103.6):
        now[0] = t
        wd.ping()
    assert sent == [100.0, 101.0, 103.5]


def test_watchdog_ping_reaches_the_socket(monkeypatch, notify_dir: Path):
    monkeypatch.setenv("NOTIFY_SOCKET", str(notify_dir / "notify"))
    monkeypatch.setenv("WATCHDOG_USEC", "60000000")
    monkeypatch.setenv("WATCHDOG_PID", str(os.getpid()))
    listener = NotifyListener(str(notify_dir / "notify"))
    try:
        wd = sdnotify.Watchdog()
        for _ in range(50):  # a busy loop: one ping, the rest rate-limited away
            wd.ping()
        assert listener.wait_for("WATCHDOG=1", 2) is not None
        time.sleep(0.2)
        assert [x for _, x in listener.messages] == ["WATCHDOG=1"]
    finally:
        listener.close()


# --------------------------------------------------------------------------- the unit


def test_systemd_analyze_verify_accepts_the_unit(tmp_path: Path):
    if not shutil.which("systemd-analyze"):
        pytest.skip("systemd-analyze is not installed (apt-get install systemd)")
    unit = _testable_unit(tmp_path)
    proc = subprocess.run(["systemd-analyze", "verify", str(unit)], capture_output=True, text=True, timeout=60)
    # verify also loads the host's units that ours orders itself after; only our unit's lines count.
    ours = [x for x in (proc.stdout + proc.stderr).splitlines() if "polyvox" in x]
    assert proc.returncode == 0 and not ours, proc.stdout + proc.stderr


def test_unit_sets_what_the_service_contract_needs():
    s = _unit_settings(UNIT.read_text())

    def one(key: str, section: str = "Service") -> str:
        values = s[(section, key)]
        assert len(values) == 1, f"{key}: {values}"
        return values[0]

    assert one("Type") == "notify" and one("NotifyAccess") == "main"
    assert int(one("WatchdogSec").rstrip("s")) >= 10
    assert one("Restart") == "on-failure"
    assert int(one("StartLimitBurst", "Unit")) >= 1 and one("StartLimitIntervalSec", "Unit")
    assert one("User") == "polyvox" and one("SupplementaryGroups") == "audio"
    assert one("ExecStart") == "/opt/polyvox/venv/bin/polyvox run --config /etc/polyvox/polyvox.toml"
    assert one("ExecReload") == "/bin/kill -HUP $MAINPID"
    assert one("EnvironmentFile") == "-/etc/polyvox/polyvox.env"
    assert one("KillSignal") == "SIGTERM" and one("TimeoutStopSec") == "5"
    # hardening the issue asks for
    for key, value in [("NoNewPrivileges", "yes"), ("ProtectSystem", "strict"), ("ProtectHome", "yes"),
                       ("PrivateTmp", "yes"), ("ReadWritePaths", "/var/lib/polyvox"), ("StateDirectory", "polyvox"),
                       ("DevicePolicy", "closed"), ("DeviceAllow", "char-alsa rw"),
                       ("RestrictAddressFamilies", "AF_UNIX AF_INET AF_INET6"), ("MemoryMax", "300M"),
                       ("CapabilityBoundingSet", ""), ("ProtectKernelTunables", "yes"),
                       ("ProtectControlGroups", "yes"), ("RestrictRealtime", "yes"), ("LockPersonality", "yes")]:
        assert one(key) == value, key
    assert s[("Service", "SystemCallFilter")][0] == "@system-service"
    # absent on purpose: these would break audio or the TFLite runtime (see the unit's comments)
    for key in ("MemoryDenyWriteExecute", "PrivateDevices", "ProcSubset"):
        assert ("Service", key) not in s, key
    assert s[("Install", "WantedBy")] == ["multi-user.target"]


def test_systemd_analyze_security_rates_the_unit_ok(tmp_path: Path):
    if not shutil.which("systemd-analyze"):
        pytest.skip("systemd-analyze is not installed (apt-get install systemd)")
    unit = _testable_unit(tmp_path)
    # The C locale makes the verdicts plain "+"/"-" instead of locale-dependent check marks.
    proc = subprocess.run(["systemd-analyze", "security", "--offline=yes", "--no-pager", str(unit)],
                          capture_output=True, text=True, timeout=60, env=dict(os.environ, LC_ALL="C", LANG="C"))
    if "--offline" in proc.stderr or "unrecognized option" in proc.stderr:
        pytest.skip("this systemd-analyze cannot assess a unit file offline (needs systemd >= 250)")
    assert proc.returncode == 0, proc.stderr
    exposure = [x for x in proc.stdout.splitlines() if "Overall exposure level" in x]
    assert exposure, proc.stdout[-2000:]
    score = float(exposure[0].split(":")[1].split()[0])
    assert score <= 2.0, exposure[0]  # "OK" is below 3.0; this unit scores 1.6 with systemd 252
    for check in ("NoNewPrivileges=", "ProtectSystem=", "ProtectHome=", "PrivateTmp=", "ProtectKernelTunables=",
                  "ProtectControlGroups=", "RestrictRealtime=", "LockPersonality=",
                  "RestrictAddressFamilies=~AF_PACKET", "CapabilityBoundingSet=~CAP_SYS_ADMIN",
                  "SystemCallFilter=~@mount", "User=/DynamicUser="):
        lines = [x for x in proc.stdout.splitlines() if x[2:].startswith(check)]
        assert lines and lines[0].startswith("+ "), f"{check}: {lines}"


# --------------------------------------------------------------------------- config files


def test_default_config_loads_and_points_at_the_installed_models():
    from edge.config import load_config

    cfg = load_config(SYSTEMD / "polyvox.toml")
    assert cfg.models_dir == "/opt/polyvox/models"
    assert cfg.source == "mic" and cfg.language == "en"
    assert cfg.mqtt.password == "" and cfg.mqtt.username == ""  # secrets live in the EnvironmentFile
    assert "password" not in [line.split("=")[0].strip() for line in (SYSTEMD / "polyvox.toml").read_text().splitlines()
                              if not line.lstrip().startswith("#")]


def test_env_example_is_an_environment_file_naming_the_mqtt_secrets():
    text = (SYSTEMD / "polyvox.env.example").read_text()
    for line in text.splitlines():
        assert not line.strip() or line.startswith("#") or "=" in line, line
    assert "POLYVOX_MQTT_USERNAME=" in text and "POLYVOX_MQTT_PASSWORD=" in text


# --------------------------------------------------------------------------- install.sh / uninstall.sh


@pytest.fixture
def repo_copy(tmp_path: Path) -> Path:
    """systemd/ and a snapshot of models/, so a build writing models/ meanwhile cannot change the result."""
    repo = tmp_path / "repo"
    shutil.copytree(SYSTEMD, repo / "systemd")
    shutil.copytree(ROOT / "models", repo / "models", ignore=shutil.ignore_patterns("*.tmp", "*.part"))
    return repo


def _install(repo: Path, root: Path, script: str = "install.sh", *args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, DESTDIR=str(root), POLYVOX_SKIP_VENV="1")
    proc = subprocess.run(["bash", str(repo / "systemd" / script), *args], env=env, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc


def test_install_twice_gives_the_same_tree(repo_copy: Path, tmp_path: Path):
    root = tmp_path / "root"
    _install(repo_copy, root)
    first = _tree(root)
    _install(repo_copy, root)
    assert _tree(root) == first
    other = tmp_path / "other"
    _install(repo_copy, other)
    assert _tree(other) == first

    assert first["etc/systemd/system/polyvox.service"][1] == 0o644
    assert first["etc/polyvox/polyvox.toml"][1] == 0o644
    assert first["etc/polyvox/polyvox.env"][1] == 0o640
    assert first["var/lib/polyvox"] == ("dir", 0o750)
    assert "opt/polyvox/venv/POLYVOX_SKIP_VENV" in first
    assert "opt/polyvox/models/en-command/model.tflite" in first
    assert not any(p.startswith("opt/polyvox/models/catalog") for p in first)
    assert (root / "etc/systemd/system/polyvox.service").read_bytes() == UNIT.read_bytes()


def test_installed_tree_is_a_working_configuration(repo_copy: Path, tmp_path: Path):
    from edge.bundle import find_bundles, load_bundle
    from edge.config import frontend_config, load_config

    root = tmp_path / "root"
    _install(repo_copy, root)
    cfg = load_config(root / "etc/polyvox/polyvox.toml")
    models = root / cfg.models_dir.lstrip("/")
    assert models == root / "opt/polyvox/models"
    # the copied bundles still find their shared embedding model (a relative path) and load
    bundle = load_bundle(models / "en-command", frontend_config())
    assert bundle.language == "en"
    assert models / "en-command" in find_bundles(models)


def test_install_keeps_the_users_config_and_secrets(repo_copy: Path, tmp_path: Path):
    root = tmp_path / "root"
    _install(repo_copy, root)
    toml = root / "etc/polyvox/polyvox.toml"
    env = root / "etc/polyvox/polyvox.env"
    toml.write_text('language = "de"\n')
    env.write_text("POLYVOX_MQTT_PASSWORD=hunter2\n")
    env.chmod(0o644)  # loosened by hand: the installer tightens it again, content untouched
    out = _install(repo_copy, root).stdout
    assert toml.read_text() == 'language = "de"\n'
    assert env.read_text() == "POLYVOX_MQTT_PASSWORD=hunter2\n"
    assert stat.S_IMODE(env.stat().st_mode) == 0o640
    assert "keeping existing /etc/polyvox/polyvox.toml" in out


def test_uninstall_keeps_config_and_state_unless_purged(repo_copy: Path, tmp_path: Path):
    root = tmp_path / "root"
    _install(repo_copy, root)
    _install(repo_copy, root, "uninstall.sh")
    _install(repo_copy, root, "uninstall.sh")  # again: nothing left to do is not an error
    assert not (root / "opt/polyvox").exists()
    assert not (root / "etc/systemd/system/polyvox.service").exists()
    assert (root / "etc/polyvox/polyvox.toml").is_file() and (root / "var/lib/polyvox").is_dir()
    _install(repo_copy, root, "uninstall.sh", "--purge")
    _install(repo_copy, root, "uninstall.sh", "--purge")
    assert not (root / "etc/polyvox").exists() and not (root / "var/lib/polyvox").exists()


# --------------------------------------------------------------------------- the running service


def test_ready_then_watchdog_pings_that_stop_when_the_loop_stalls_then_stopping(notify_dir: Path, tmp_path: Path):
    pv = Polyvox(["--source", "-", "--bundle", str(EN_BUNDLE), "--wake", "off"], notify_dir, tmp_path)
    try:
        ready = pv.wait_ready()
        assert not pv.listener.times("WATCHDOG=1", 0, ready - 1e-3), "WATCHDOG=1 before READY=1"

        # audio flowing: the loop pings every WATCHDOG_USEC/2
        time.sleep(3.0)
        flowing = pv.listener.times("WATCHDOG=1", ready)
        assert len(flowing) >= 3, (f"{len(flowing)} WATCHDOG=1 in 3 s with WATCHDOG_USEC={WATCHDOG_USEC}: the loop "
                                   "must call edge.sdnotify.Watchdog.ping() every chunk\n" + pv.stderr()[-2000:])
        gaps = np.diff(flowing)
        assert gaps.min() >= PING_S * 0.9, f"pings faster than WATCHDOG_USEC/2: {gaps}"

        # stalled: no audio, so the loop blocks in read() and must not ping (a timer thread would)
        pv.feeder.paused.set()
        stall_start = time.monotonic() + 0.3  # the chunk already in the pipe may still be processed
        time.sleep(0.3 + 4 * PING_S)
        stall_end = time.monotonic()
        assert pv.proc.poll() is None, pv.stderr()[-2000:]
        during = pv.listener.times("WATCHDOG=1", stall_start, stall_end)
        assert during == [], f"WATCHDOG=1 while the loop was stalled for {stall_end - stall_start:.1f} s"

        # audio again: pings resume
        pv.feeder.paused.clear()
        assert pv.listener.wait_for("WATCHDOG=1", 3, after=stall_end) is not None

        # SIGTERM: STOPPING=1, then exit 0 within the unit's TimeoutStopSec=5
        term = time.monotonic()
        pv.proc.send_signal(signal.SIGTERM)
        assert pv.listener.wait_for("STOPPING=1", 5, after=term) is not None, pv.stderr()[-2000:]
        assert pv.proc.wait(timeout=5) == 0, pv.stderr()[-2000:]
        assert pv.listener.times("READY=1") == [ready], "READY=1 must be sent once"
    finally:
        pv.close()


def test_sigterm_while_the_loop_is_stalled_still_stops_in_time(notify_dir: Path, tmp_path: Path):
    """A hung source must not turn `systemctl stop` into a SIGKILL after TimeoutStopSec=5."""
    pv = Polyvox(["--source", "-", "--bundle", str(EN_BUNDLE), "--wake", "off"], notify_dir, tmp_path)
    try:
        pv.wait_ready()
        time.sleep(0.5)
        pv.feeder.paused.set()
        time.sleep(1.0)
        term = time.monotonic()
        pv.proc.send_signal(signal.SIGTERM)
        assert pv.proc.wait(timeout=5) == 0, pv.stderr()[-2000:]
        assert pv.listener.times("STOPPING=1", term), "no STOPPING=1 after SIGTERM"
    finally:
        pv.close()


@pytest.fixture(scope="module")
def models_en_de(tiny_de_bundle: Path, tmp_path_factory) -> Path:
    """A models dir with the shipped English bundle and the tiny German one built by the toolchain."""
    models = tmp_path_factory.mktemp("models")
    shutil.copytree(ROOT / "models" / "embedding", models / "embedding")
    shutil.copytree(EN_BUNDLE, models / "en-command")
    copy_bundle(tiny_de_bundle, models / "de-tiny")
    return models


def test_sighup_switches_the_language_without_a_restart(models_en_de: Path, notify_dir: Path, tmp_path: Path):
    from tests.conftest import espeak, with_silence

    config = tmp_path / "polyvox.toml"
    base = f'source = "-"\nwake = "off"\nmodels_dir = "{models_en_de}"\n'
    config.write_text(base + 'language = "en"\n')
    pv = Polyvox(["--config", str(config)], notify_dir, tmp_path)
    try:
        pv.wait_ready()
        pid = pv.proc.pid
        config.write_text(base + 'language = "de"\n')
        pv.proc.send_signal(signal.SIGHUP)
        assert pv.wait_log("now listening in de", 60), ("no 'now listening in de' on stderr after SIGHUP; exit "
                                                        f"{pv.proc.poll()}; stderr:\n{pv.stderr()[-3000:]}")
        assert pv.proc.poll() is None and pv.proc.pid == pid

        # the next utterances are recognized by the German model
        speech = with_silence(espeak("sieben", "de", 150), espeak("Licht an", "de", 150), gap_s=1.2)
        time.sleep(pv.feeder.say(speech) + 1.5)
        assert pv.proc.poll() is None, pv.stderr()[-2000:]
        pv.proc.send_signal(signal.SIGTERM)
        assert pv.proc.wait(timeout=5) == 0, pv.stderr()[-2000:]
        events = pv.stdout_events()
        assert events, "no events for German speech after the switch\n" + pv.stderr()[-2000:]
        assert {e["language"] for e in events} == {"de"}, events
        assert [e["intent"] for e in events] == ["seven", "lights_on"], events
    finally:
        pv.close()
