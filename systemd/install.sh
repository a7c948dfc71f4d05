#!/usr/bin/env bash
# Install (or update) polyvox as a systemd service from this checkout.
#
#   sudo ./systemd/install.sh
#       creates the polyvox user (group audio), /opt/polyvox/venv with the package, the models in
#       /opt/polyvox/models, /etc/polyvox/polyvox.{toml,env} if absent, the unit, and starts it.
#   DESTDIR=/tmp/root POLYVOX_SKIP_VENV=1 ./systemd/install.sh
#       builds the same tree under a staging root, touching nothing outside it (tests, packaging).
#
# Safe to run again: that is how you update. It never overwrites /etc/polyvox/polyvox.toml or
# /etc/polyvox/polyvox.env; it does replace the unit, the venv's polyvox package and the models.
#
# Environment: DESTDIR (staging root), POLYVOX_SKIP_VENV=1 (DESTDIR only: no venv, a marker file),
# POLYVOX_SKIP_APT=1 (do not apt-get the build/runtime packages), PYTHON (default python3).
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
DESTDIR=${DESTDIR:-}
DESTDIR=${DESTDIR%/}
PYTHON=${PYTHON:-python3}
SERVICE_USER=polyvox
PREFIX=/opt/polyvox
ETC=/etc/polyvox
UNIT_DIR=/etc/systemd/system
STATE=/var/lib/polyvox
# PyAudio builds from source on ARM (gcc, PortAudio headers); espeak-ng speaks in translate mode.
APT_PACKAGES=(python3-venv python3-dev gcc portaudio19-dev libsndfile1 espeak-ng)

say() { echo "polyvox install: $*"; }
die() { echo "polyvox install: error: $*" >&2; exit 1; }
staging() { [ -n "$DESTDIR" ]; }

if staging; then
  say "staging into $DESTDIR: no user, ownership, apt or systemctl changes"
else
  [ "$(id -u)" = 0 ] || die "run as root: sudo $0"
  [ -z "${POLYVOX_SKIP_VENV:-}" ] || die "POLYVOX_SKIP_VENV is only for DESTDIR staging"
fi

# --- system packages -----------------------------------------------------------------------
if ! staging && [ -z "${POLYVOX_SKIP_APT:-}" ] && command -v apt-get >/dev/null; then
  missing=()
  for p in "${APT_PACKAGES[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
  if [ "${#missing[@]}" -gt 0 ]; then
    say "installing system packages: ${missing[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  fi
fi

# --- user -----------------------------------------------------------------------------------
if ! staging; then
  if ! getent passwd "$SERVICE_USER" >/dev/null; then
    say "creating system user $SERVICE_USER"
    useradd --system --user-group --groups audio --home-dir "$STATE" --no-create-home \
      --shell /usr/sbin/nologin --comment "polyvox voice commands" "$SERVICE_USER"
  elif ! id -nG "$SERVICE_USER" | tr ' ' '\n' | grep -qx audio; then
    say "adding $SERVICE_USER to group audio"
    usermod --append --groups audio "$SERVICE_USER"
  fi
fi

# --- directories ------------------------------------------------------------------------------
install -d -m 0755 "$DESTDIR$PREFIX" "$DESTDIR$ETC" "$DESTDIR$UNIT_DIR"
install -d -m 0750 "$DESTDIR$STATE"
staging || chown "$SERVICE_USER:$SERVICE_USER" "$DESTDIR$STATE"

# --- venv and package ---------------------------------------------------------------------------
VENV=$DESTDIR$PREFIX/venv
if [ -n "${POLYVOX_SKIP_VENV:-}" ]; then
  install -d -m 0755 "$VENV"
  # Fixed content, so two staging runs give identical trees.
  printf 'venv not built: POLYVOX_SKIP_VENV=1\n' >"$VENV/POLYVOX_SKIP_VENV"
  chmod 0644 "$VENV/POLYVOX_SKIP_VENV"
else
  [ -x "$VENV/bin/python" ] || { say "creating $PREFIX/venv"; "$PYTHON" -m venv "$VENV"; }
  export PIP_DISABLE_PIP_VERSION_CHECK=1
  say "installing polyvox from $REPO into $PREFIX/venv (a few minutes on a Pi)"
  "$VENV/bin/python" -m pip install -q --upgrade pip
  # --upgrade so re-running after a `git pull` replaces the package with the new checkout.
  "$VENV/bin/python" -m pip install -q --upgrade "$REPO"
fi

# --- models ---------------------------------------------------------------------------------------
# Built into a fresh directory and swapped in, so bundles removed upstream disappear too, and
# files get fixed modes whatever the checkout's umask was. catalog/ is training input only.
MODELS=$DESTDIR$PREFIX/models
rm -rf "$MODELS.new"
install -d -m 0755 "$MODELS.new"
while IFS= read -r -d '' d; do
  install -d -m 0755 "$MODELS.new/$d"
done < <(cd "$REPO/models" && find . -mindepth 1 -path ./catalog -prune -o -type d -print0)
while IFS= read -r -d '' f; do
  install -m 0644 "$REPO/models/$f" "$MODELS.new/$f"
done < <(cd "$REPO/models" && find . -path ./catalog -prune -o -type f -print0)
rm -rf "$MODELS"
mv "$MODELS.new" "$MODELS"

# --- config and secrets (never overwritten) ------------------------------------------------------
if [ -e "$DESTDIR$ETC/polyvox.toml" ]; then
  say "keeping existing $ETC/polyvox.toml"
else
  install -m 0644 "$REPO/systemd/polyvox.toml" "$DESTDIR$ETC/polyvox.toml"
  say "wrote $ETC/polyvox.toml (set device = ... from \`polyvox devices\`)"
fi
if [ -e "$DESTDIR$ETC/polyvox.env" ]; then
  say "keeping existing $ETC/polyvox.env"
else
  install -m 0640 "$REPO/systemd/polyvox.env.example" "$DESTDIR$ETC/polyvox.env"
fi
# Secrets stay readable by root and the service only, also if someone loosened them.
chmod 0640 "$DESTDIR$ETC/polyvox.env"
staging || chown "root:$SERVICE_USER" "$DESTDIR$ETC/polyvox.env"

# --- unit ------------------------------------------------------------------------------------------
# Ours to replace on update; local changes belong in a drop-in (systemctl edit polyvox).
install -m 0644 "$REPO/systemd/polyvox.service" "$DESTDIR$UNIT_DIR/polyvox.service"

if staging; then
  say "staged; skipped: systemctl daemon-reload, enable, restart"
elif [ ! -d /run/systemd/system ]; then
  say "systemd is not running here; skipped: systemctl daemon-reload, enable, restart"
else
  systemctl daemon-reload
  systemctl enable --quiet polyvox.service
  # restart, not start: after an update the running service must pick up the new code.
  systemctl restart polyvox.service
  say "running; follow it with: journalctl -u polyvox -f"
fi
