"""Evaluation through the device's own loop (edge Pipeline), plus report plots.

Every clip is streamed through `edge.pipeline.Pipeline` exactly as `polyvox run` would,
with 0.5 s of (dithered) silence before it, as a microphone stream would have.
"""

from __future__ import annotations

import csv
import logging
import math
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from edge.audio import AudioError, read_wav
from edge.bundle import UNKNOWN, load_bundle
from edge.decisions import DecisionConfig
from edge.events import Event
from edge.models import EMBEDDING_HOP
from edge.pipeline import RECORDING_LEAD_S, Pipeline, PipelineConfig, load_models

REAL_DEV = Path(__file__).resolve().parent.parent.parent / "shared" / "data" / "real-dev"

log = logging.getLogger(__name__)


def run_clip(pipe: Pipeline, audio: np.ndarray) -> list[Event]:
    """Stream one clip from a fresh pipeline state; return its events."""
    pipe.reset()
    pipe.lead_in()  # as `polyvox run` does before a file
    audio = audio.astype(np.float32)
    events = [e for i in range(0, len(audio), 1280) for e in pipe.feed(audio[i : i + 1280])]
    return events + pipe.finish()


def run_stream(pipe: Pipeline, clips: list[np.ndarray]) -> list[list[Event]]:
    """Clips one after another in one stream, from a fresh state; each clip's events are those
    decided while it plays (so each clip must end with more silence than the VAD's hangover)."""
    pipe.reset()
    pipe.lead_in()
    heard = []
    for audio in clips:
        audio = audio.astype(np.float32)
        heard.append([e for i in range(0, len(audio), 1280) for e in pipe.feed(audio[i : i + 1280])])
    heard[-1].extend(pipe.finish())
    return heard


def make_pipeline(bundles: list[Path], wake: str = "off", sensitivity: float = 0.5,
                  isolate_utterances: bool = True) -> Pipeline:
    frontend = load_bundle(bundles[0]).frontend
    cfg = PipelineConfig(frontend=frontend, wake=wake, sensitivity=sensitivity, isolate_utterances=isolate_utterances)
    return Pipeline(cfg, load_models(bundles, frontend))


@dataclass
class CommandResult:
    total: int = 0
    correct: int = 0
    rejected: int = 0
    wrong: int = 0
    spurious: int = 0
    """Events beyond the first in a clip."""
    confusion: dict[tuple[str, str], int] = field(default_factory=dict)

    def add(self, other: CommandResult) -> None:
        """Count `other`'s clips in this result too."""
        self.total += other.total
        self.correct += other.correct
        self.rejected += other.rejected
        self.wrong += other.wrong
        self.spurious += other.spurious
        for key, n in other.confusion.items():
            self.confusion[key] = self.confusion.get(key, 0) + n

    def to_dict(self) -> dict:
        n = max(1, self.total)
        return {"clips": self.total, "accuracy": round(self.correct / n, 4), "rejected": round(self.rejected / n, 4),
                "wrong": round(self.wrong / n, 4), "spurious_per_clip": round(self.spurious / n, 4)}


def evaluate_commands(bundle: Path, items: list[tuple[Path, str]], progress: bool = True) -> CommandResult:
    from tqdm import tqdm

    pipe = make_pipeline([bundle], wake="off")
    res = CommandResult()
    for path, intent in tqdm(items, desc="evaluate", disable=not progress, mininterval=2.0):
        try:
            audio = read_wav(path)
        except AudioError as exc:
            log.warning("skipped: %s", exc)
            continue
        events = [e for e in run_clip(pipe, audio) if e.type == "command"]
        res.total += 1
        got = events[0].intent if events else "_none_"
        res.confusion[(intent, got)] = res.confusion.get((intent, got), 0) + 1
        if not events and intent == UNKNOWN:  # a clip that must not fire, and did not
            res.correct += 1
        elif not events:
            res.rejected += 1
        elif got == intent:
            res.correct += 1
        else:
            res.wrong += 1
        res.spurious += max(0, len(events) - 1)
    return res


WAKE_TOP_THRESHOLDS = tuple(float(t) for t in np.round(1 / (1 + np.exp(-np.arange(4.0, 12.01, 0.25))), 6))
"""Thresholds near 1 (calibration and real DET), even in log-odds: 4 to 12 in steps of 0.25
(0.982 to 0.999994). Wake heads output logits, which int8 resolves in steps of 0.1-0.6; the
grid that was even in probability went from 0.9995 to 0.9999 (log-odds 7.6 to 9.2) in one step."""
WAKE_THRESHOLD_GRID = np.array([*np.round(np.arange(0.5, 0.981, 0.02), 4), *WAKE_TOP_THRESHOLDS])
"""Candidate wake thresholds for calibration, lowest first."""
SWEEP_THRESHOLDS = (0.4, 0.45, 0.5, 0.55, 0.6, 0.65, 0.7, 0.75, 0.8, 0.85, 0.9)


def threshold_sweep(bundle: Path, items: list[tuple[Path, str]], progress: bool = True,
                    thresholds: tuple[float, ...] = SWEEP_THRESHOLDS) -> list[dict]:
    """Correct, wrong and rejected shares of labelled clips at each command threshold. Real voices
    score lower than the synthetic ones a bundle's threshold is calibrated on, so this is what a
    user trades with `sensitivity`. One pass at the lowest threshold the runtime allows (the
    calibrated one at sensitivity 1); a clip's answer at threshold t is its first event scoring >= t."""
    from tqdm import tqdm

    pipe = make_pipeline([bundle], wake="off", sensitivity=1.0)
    answers = []
    for path, intent in tqdm(items, desc="threshold sweep", disable=not progress, mininterval=2.0):
        try:
            audio = read_wav(path)
        except AudioError as exc:
            log.warning("skipped: %s", exc)
            continue
        events = [(e.intent, e.confidence) for e in run_clip(pipe, audio) if e.type == "command"]
        answers.append((intent, events))
    n = max(1, len(answers))
    floor = DecisionConfig.from_manifest(load_bundle(bundle).decision).threshold_for("", 1.0)
    out = []
    for t in (t for t in thresholds if t >= floor - 1e-9):
        got = [next((i for i, conf in events if conf >= t), None) for _, events in answers]
        correct = sum(g == want for g, (want, _) in zip(got, answers, strict=True))
        wrong = sum(g is not None and g != want for g, (want, _) in zip(got, answers, strict=True))
        out.append({"threshold": t, "correct": round(correct / n, 4), "wrong": round(wrong / n, 4),
                    "rejected": round(1 - (correct + wrong) / n, 4)})
    return out


def plot_threshold_sweep(sweep: list[dict], path: Path, title: str, chosen: float) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    t = [r["threshold"] for r in sweep]
    fig, ax = plt.subplots(figsize=(6, 4.5))
    for key, style in (("correct", "o-"), ("wrong", "s-"), ("rejected", "^-")):
        ax.plot(t, [100 * r[key] for r in sweep], style, label=key)
    ax.axvline(chosen, color="grey", linestyle="--", label=f"calibrated on synthetic voices ({chosen:.2f})")
    ax.set_xlabel("command threshold (sensitivity 0.5 keeps the calibrated one; higher lowers it)")
    ax.set_ylabel("% of real clips")
    ax.grid(True, alpha=0.3)
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def read_labelled(data: Path) -> list[tuple[Path, str]]:
    """A TSV of `file<TAB>intent`, or a folder of FSDD-style `{digit}_{speaker}_{n}.wav` files."""
    data = Path(data)
    if data.is_file():
        rows = []
        with data.open(encoding="utf-8") as f:
            for row in csv.reader(f, delimiter="\t"):
                if len(row) >= 2 and not row[0].startswith("#"):
                    rows.append(((data.parent / row[0]).resolve(), row[1]))
        return rows
    items = []
    for p in sorted(data.glob("*.wav")):
        m = re.match(r"(\d)_", p.name)
        if m:
            items.append((p, f"digit_{m.group(1)}"))
    return items


def read_audio_any(path: Path) -> np.ndarray | None:
    """WAV through edge; FLAC through soundfile (toolchain only)."""
    if path.suffix.lower() == ".wav":
        return read_wav(path)
    import soundfile as sf
    from scipy.signal import resample_poly

    x, rate = sf.read(str(path), dtype="int16", always_2d=True)
    x = x.mean(axis=1)
    if rate != 16000:
        x = resample_poly(x, 16000, rate)
    return x.astype(np.float32)


def max_wake_score(pipe: Pipeline, head, audio: np.ndarray) -> float:
    """The highest smoothed wake posterior while streaming one clip (with lead-in and tail)."""
    padded = np.concatenate([np.zeros(int(RECORDING_LEAD_S * 16000), np.float32), audio.astype(np.float32),
                             np.zeros(4800, np.float32)])
    scores = stream_scores(pipe, head, padded)
    return float(scores.max()) if len(scores) else 0.0


def stream_scores(pipe: Pipeline, head, audio: np.ndarray) -> np.ndarray:
    """Smoothed wake posteriors over a stream, from a fresh state, where the device scores them:
    every `hop` embeddings (edge.pipeline), smoothed over its last `smoothing_steps` scores."""
    pipe.reset()
    fe, emb = pipe.frontend, pipe.models.embedder
    idx = head.bundle.labels.index("wake")
    scores = []
    for i in range(0, len(audio), 16000 * 30):
        mel = fe.process(audio[i : i + 16000 * 30])
        for t in range(len(mel)):
            e = emb.push(mel[t])
            if e is not None:
                head.runner.push(e)
                if head.runner.steps % head.bundle.hop == 0:
                    scores.append(head.runner.scores()[idx])
    k = max(1, int(head.bundle.decision.get("smoothing_steps", 1)))
    if len(scores) < k:
        return np.array(scores)
    return np.convolve(scores, np.ones(k) / k, mode="valid")


def refractory_scores(bundle) -> int:
    """A wake bundle's refractory period in scores (one every `hop` embeddings of 80 ms)."""
    return math.ceil(bundle.decision.get("refractory_s", 1.5) / (EMBEDDING_HOP * 0.01 * bundle.hop)) - 1


def false_accepts(scores: np.ndarray, threshold: float, refractory_steps: int) -> int:
    count, quiet = 0, -1
    for i, s in enumerate(scores):
        if s >= threshold and i > quiet:
            count += 1
            quiet = i + refractory_steps
    return count


# -- plots ----------------------------------------------------------------------------------
def plot_confusion(matrix: np.ndarray, labels: list[str], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = len(labels)
    fig, ax = plt.subplots(figsize=(max(6, n * 0.32), max(5, n * 0.3)))
    norm = matrix / np.maximum(matrix.sum(axis=1, keepdims=True), 1)
    ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(n), labels, rotation=90, fontsize=7)
    ax.set_yticks(range(n), labels, fontsize=7)
    ax.set_xlabel("predicted")
    ax.set_ylabel("spoken")
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_det(curves: dict[str, tuple[np.ndarray, np.ndarray]], path: Path, title: str, chosen: float | None) -> None:
    """Detection-error trade-off: false rejects against false accepts per hour."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4.5))
    for name, (fa_h, frr) in curves.items():
        ax.plot(np.maximum(fa_h, 0.01), frr * 100, marker=".", label=name)
    ax.set_xscale("log")
    ax.set_xlabel("false accepts per hour")
    ax.set_ylabel("false rejects (%)")
    ax.grid(True, which="both", alpha=0.3)
    ax.set_title(title + (f" (threshold {chosen:g})" if chosen else ""), fontsize=9)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
