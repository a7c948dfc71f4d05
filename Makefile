# polyvox: two commands set everything up on a fresh Debian / Raspberry Pi OS (64-bit) machine.
#   make demo   system packages + .venv + the runtime, then the bundled demo (no mic, no broker)
#   make test   the same plus the training/dev extras, mosquitto, espeak-ng and Flite, then the whole suite
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
# gcc: PyAudio has no Linux wheel and builds from source.
APT_RUNTIME := espeak-ng portaudio19-dev libsndfile1 python3-venv python3-dev gcc
APT_TEST := mosquitto mosquitto-clients systemd sox flite
# Extra voices for training only: make models-deps. Flite and Festival with three voices are in
# Debian main; MBROLA, Pico, RHVoice and the other Festival voices are in contrib / non-free and
# are installed when those components are enabled.
APT_VOICES_MAIN := flite festival festvox-kallpc16k festvox-kdlpc16k festvox-us-slt-hts
APT_VOICES_NONFREE := libttspico-utils mbrola mbrola-us1 mbrola-us2 mbrola-us3 mbrola-en1 \
  mbrola-de1 mbrola-de2 mbrola-de3 mbrola-de4 mbrola-de5 mbrola-de6 mbrola-de7 mbrola-fr1 mbrola-fr2 \
  mbrola-fr3 mbrola-fr4 mbrola-fr5 mbrola-fr6 mbrola-fr7 mbrola-es1 mbrola-es2 mbrola-es3 mbrola-es4 \
  mbrola-mx1 mbrola-mx2 mbrola-vz1 mbrola-cn1 festvox-rablpc16k festvox-don festvox-ellpc11k \
  rhvoice rhvoice-english

.PHONY: demo test lint models models-deps apt-voices-nonfree bench bench-peers apt-runtime apt-test clean

define apt_install
	@missing=$$(for p in $(1); do dpkg -s $$p >/dev/null 2>&1 || echo $$p; done); \
	if [ -n "$$missing" ]; then \
	  echo "installing system packages: $$missing"; \
	  $(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq $$missing >/dev/null; \
	fi
endef

apt-runtime:
	$(call apt_install,$(APT_RUNTIME))

apt-test: apt-runtime
	$(call apt_install,$(APT_TEST))

$(VENV)/.runtime: pyproject.toml | apt-runtime
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e .
	touch $@

$(VENV)/.dev: pyproject.toml $(VENV)/.runtime
	$(PY) -m pip install -q -e '.[train,dev,bench]'
	touch $@

demo: $(VENV)/.runtime
	$(VENV)/bin/polyvox demo

test: apt-test $(VENV)/.dev
	$(PY) -m ruff check edge quantize tests bench
	$(PY) -m pytest -q

lint: $(VENV)/.dev
	$(PY) -m ruff check edge quantize tests bench

models-deps: apt-runtime
	$(call apt_install,$(APT_VOICES_MAIN))
	@if apt-cache show mbrola-us1 >/dev/null 2>&1; then $(MAKE) --no-print-directory apt-voices-nonfree; \
	else echo "MBROLA and Pico voices skipped: enable Debian's contrib and non-free components" \
	  "(Components: main contrib non-free in /etc/apt/sources.list.d/debian.sources), then rerun"; fi

apt-voices-nonfree:
	$(call apt_install,$(APT_VOICES_NONFREE))

# Rebuild the command and wake bundles (10-30 minutes each on 2 cores from an empty cache); logs in
# .cache/logs. A failed build fails the target.
models: $(VENV)/.dev models-deps
	$(PY) -m quantize embedding
	mkdir -p .cache/logs
	set -o pipefail; for cat in models/catalog/*-command.toml models/catalog/*-wake.toml; do \
	  name=$$(basename $$cat .toml); \
	  $(PY) -m quantize -q build --catalog $$cat --out models/$$name 2>&1 | tee .cache/logs/$$name.log | tail -n 20; \
	done

# Our own loop on a fixed 60 s recording (RTF, stage costs, RSS, start-up, latency).
bench: $(VENV)/.runtime
	$(VENV)/bin/polyvox bench

# polyvox against microWakeWord, openWakeWord, pocketsphinx and three VADs, side by side.
bench-peers: $(VENV)/.dev
	$(PY) -m pip install -q -e '.[bench]'
	$(PY) -m bench.compare

clean:
	rm -rf $(VENV) .cache .pytest_cache .ruff_cache *.egg-info
