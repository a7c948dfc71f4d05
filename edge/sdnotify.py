"""systemd service notifications (sd_notify) and the watchdog, hand-rolled on the stdlib.

Under `Type=notify` systemd passes a datagram socket in $NOTIFY_SOCKET; the service tells it
"READY=1" once it can do its job, "WATCHDOG=1" at least every WatchdogSec while healthy, and
"STOPPING=1" when it begins to shut down. Outside systemd (a terminal, the tests, a container)
the variables are unset and everything here is a silent no-op, so callers never need to check.

A notification must never take the service down: socket errors are logged at debug level and
reported as a False return, not raised.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from collections.abc import Callable

log = logging.getLogger(__name__)


def _notify_address() -> str | None:
    """The $NOTIFY_SOCKET address in the form socket.sendto() takes, or None when unusable."""
    addr = os.environ.get("NOTIFY_SOCKET", "")
    if not addr:
        return None
    if addr.startswith("@"):
        # An abstract socket: Linux names these with a leading NUL byte instead of a path.
        return "\0" + addr[1:]
    if addr.startswith("/"):
        return addr
    # systemd also knows vsock:CID:PORT (VMs); not something a Pi service meets.
    log.debug("NOTIFY_SOCKET=%r is not a unix socket path; not notifying", addr)
    return None


def notify(state: str) -> bool:
    """Send one notification, e.g. "READY=1" or "STATUS=listening in de".

    Returns True when the datagram was sent, False when $NOTIFY_SOCKET is unset (not running
    under systemd) or the send failed.
    """
    addr = _notify_address()
    if addr is None:
        return False
    try:
        # A fresh socket per message: notifications are rare (a few per minute) and this keeps
        # no descriptor open that a fork or a changed $NOTIFY_SOCKET could trip over.
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            # Never block the audio loop on a listener that stopped reading: drop the datagram.
            sock.sendto(state.encode("utf-8"), socket.MSG_DONTWAIT, addr)
    except OSError as exc:
        log.debug("sd_notify %r to %r failed: %s", state, os.environ.get("NOTIFY_SOCKET"), exc)
        return False
    return True


def _watchdog_interval_s() -> float | None:
    """Seconds between pings (half of WatchdogSec), or None when the watchdog is off for us."""
    usec = os.environ.get("WATCHDOG_USEC", "")
    if not usec:
        return None
    pid = os.environ.get("WATCHDOG_PID", "")
    # WATCHDOG_PID names the process systemd watches; a child that inherited the environment
    # (a subprocess, a forked worker) must not ping on the main process's behalf.
    if pid:
        try:
            if int(pid) != os.getpid():
                return None
        except ValueError:
            log.debug("WATCHDOG_PID=%r is not a number; watchdog off", pid)
            return None
    try:
        value = int(usec)
    except ValueError:
        log.debug("WATCHDOG_USEC=%r is not a number; watchdog off", usec)
        return None
    if value <= 0:
        return None
    # Pinging at half the deadline leaves a full half-period of slack for a slow chunk.
    return value / 1e6 / 2


class Watchdog:
    """Rate-limited "WATCHDOG=1" pings, meant to be called from every turn of the processing loop.

    Calling ping() from the loop itself (not from a timer thread) is the point: when the loop
    stalls, the pings stop, and systemd restarts the service after WatchdogSec.
    """

    def __init__(self) -> None:
        self.interval_s: float | None = _watchdog_interval_s()
        """Seconds between pings; None when the watchdog is not enabled for this process."""
        self.clock: Callable[[], float] = time.monotonic
        """Monotonic so wall-clock jumps (NTP sync at boot on a Pi without RTC) cannot skew it."""
        self._last: float | None = None
        if self.interval_s is not None:
            log.debug("systemd watchdog on: ping every %.1f s", self.interval_s)

    @property
    def enabled(self) -> bool:
        return self.interval_s is not None

    def ping(self) -> None:
        if self.interval_s is None:
            return
        now = self.clock()
        if self._last is not None and now - self._last < self.interval_s:
            return
        self._last = now
        notify("WATCHDOG=1")
