#!/usr/bin/env bash
# Remove the polyvox service installed by systemd/install.sh.
#
#   sudo ./systemd/uninstall.sh           stops and disables the service, removes the unit and
#                                         /opt/polyvox; keeps /etc/polyvox, /var/lib/polyvox and
#                                         the polyvox user, so a reinstall picks up where it left off
#   sudo ./systemd/uninstall.sh --purge   also removes those
#   DESTDIR=/tmp/root ./systemd/uninstall.sh [--purge]   the same inside a staging root
#
# Safe to run again: anything already gone is skipped.
set -euo pipefail

DESTDIR=${DESTDIR:-}
DESTDIR=${DESTDIR%/}
SERVICE_USER=polyvox
PURGE=0
case "${1:-}" in
  "") ;;
  --purge) PURGE=1 ;;
  *) echo "usage: $0 [--purge]" >&2; exit 2 ;;
esac

say() { echo "polyvox uninstall: $*"; }
staging() { [ -n "$DESTDIR" ]; }

if ! staging; then
  [ "$(id -u)" = 0 ] || { echo "polyvox uninstall: error: run as root: sudo $0" >&2; exit 1; }
  if [ -d /run/systemd/system ]; then
    # Both fail harmlessly when the unit is already gone; the unit file may be missing too.
    systemctl disable --now --quiet polyvox.service 2>/dev/null || true
  else
    say "systemd is not running here; skipped: systemctl disable --now"
  fi
fi

rm -f "$DESTDIR/etc/systemd/system/polyvox.service"
staging || { [ ! -d /run/systemd/system ] || systemctl daemon-reload; }
rm -rf "$DESTDIR/opt/polyvox"

if [ "$PURGE" = 1 ]; then
  rm -rf "$DESTDIR/etc/polyvox" "$DESTDIR/var/lib/polyvox"
  if ! staging && getent passwd "$SERVICE_USER" >/dev/null; then
    userdel "$SERVICE_USER"
  fi
  say "removed polyvox, its config, state and user"
else
  say "removed polyvox; kept /etc/polyvox and /var/lib/polyvox (--purge removes them)"
fi
