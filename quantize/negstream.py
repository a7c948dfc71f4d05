"""Long negative audio for a wake word: its build's held-out negative clips, back to back.

A wake threshold has to keep false accepts near one per hour of what a box hears. The build
holds out negatives (sound-alikes, the language's command phrasings and phrasebook sentences,
everyday words, spoken by voices never trained on, and noise); here they are rendered exactly as
the corpus rendered them and joined into one stream for the edge loop to score step by step, as a
device would: smoothing and the refractory period count, which scoring training windows one at
a time ignores.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np

from edge.bundle import UNKNOWN, load_bundle
from quantize.build import BuildOptions, heldout_audio, part_of_keyword
from quantize.catalog import Catalog, load_catalog
from quantize.evaluate import WAKE_THRESHOLD_GRID, false_accepts, make_pipeline, refractory_scores, stream_scores
from quantize.util import sha256_file
from quantize.voices import OPT_IN_ENGINES

log = logging.getLogger(__name__)
CATALOGS = Path(__file__).resolve().parent.parent / "models" / "catalog"


def catalog_of(manifest: dict, root: Path = CATALOGS) -> Path | None:
    """The catalog a bundle was built from: same file name and the same bytes."""
    training = manifest.get("training", {})
    for path in sorted(root.rglob(training.get("catalog", "?"))):
        if sha256_file(path) == training.get("catalog_sha256"):
            return path
    return None


def skip_engines_of(training: dict) -> tuple[str, ...]:
    """The engines a build left out. Builds record them; one from before they did, that used none
    of the opt-in engines, was built before those existed (2026-12-05), and a rebuild of its
    corpus here must leave them out too (for the other languages' voices as well). Kokoro left
    out shows in the voices a build trained on."""
    trained = set(training.get("train_voices_by_engine", {}))
    if "skip_engines" in training:
        skipped = set(training["skip_engines"])
    else:
        used = trained | {v.split(":")[0] for v in training.get("heldout_voices", [])}
        skipped = set() if used & set(OPT_IN_ENGINES) else set(OPT_IN_ENGINES)
    if "kokoro" not in trained:
        skipped.add("kokoro")
    return tuple(sorted(skipped))


def build_options_of(manifest: dict) -> BuildOptions:
    training = manifest["training"]
    return BuildOptions(quick=bool(training.get("quick")), seed=int(training.get("seed", 0)),
                        skip_engines=skip_engines_of(training),
                        # No train_reps: built before --reps existed, always with 3.
                        train_reps=int(training.get("train_reps", 3)),
                        max_espeak_voices=int(training.get("max_espeak_voices", 24)),
                        natural_weight=int(training.get("natural_weight", 3)),
                        # Built before held-out speakers were kept out of other languages' voices.
                        speaker_split=bool(training.get("speaker_split", False)),
                        speech_level=training.get("augment", {}).get("level_of") == "speech",
                        babble_pool=int(training.get("babble_pool", 0)), accents=int(training.get("accents", 0)),
                        head_augment=head_augment_of(training),
                        voice_swap=float(training.get("head_augment", {}).get("voice_swap", 0.0)),
                        vtlp=float(training.get("augment", {}).get("vtlp_prob", 0.0)),
                        onset_cut=float(training.get("augment", {}).get("onset_cut_prob", 0.0)),
                        drr_db=_pair(training.get("augment", {}).get("drr_db_range")), progress=False)


def head_augment_of(training: dict) -> str:
    """The --head-augment a build used; bundles that do not record it predate it ("off")."""
    recorded = training.get("head_augment", {})
    shift, mixup = recorded.get("shift_steps", 0), recorded.get("mixup_alpha", 0.0)
    return "on" if shift and mixup else "shift" if shift else "off"


def _pair(value: list[float] | None) -> tuple[float, float] | None:
    return None if value is None else (float(value[0]), float(value[1]))


SOUND_ALIKES = "sound-alikes"
SPEECH_AND_NOISE = "speech and noise"


def piece_of_keyword(text: str, cat: Catalog) -> bool:
    """Words of a multi-word keyword said alone ("hallo", "Computer" of "hallo Computer"), or for
    Mandarin, written without spaces, its characters (电脑 of 你好电脑): a box must never wake on
    them, so they count with the speech, not with the sound-alikes. "compute" is a sound-alike of
    "computer", though the build's weighting (`part_of_keyword`) matches it by its letters."""
    if cat.language == "zh":
        return part_of_keyword(text, cat)
    words = text.lower().split()
    for phrase in (p.lower().split() for ps in cat.intents.values() for p in ps):
        if len(words) < len(phrase) and any(phrase[i : i + len(words)] == words for i in range(len(phrase))):
            return True
    return False


def heldout_negative_streams(catalog_path: Path, opts: BuildOptions, embedding_path: Path,
                             heldout_voices: list[str] | None = None, gap_s: float = 0.3) -> dict[str, np.ndarray]:
    """A wake build's held-out negative clips (int16-scale float32), joined with short pauses, in
    two streams: the catalog's own hand-picked negatives ("commuter", "compute" for "computer":
    chosen to sound alike) and everything else (command phrasings, phrasebook sentences,
    everyday words, noise, and pieces of a longer keyword: the negative audio the false-accept
    target is about).
    `heldout_voices`, when given, must be the build's; otherwise this machine's voices would
    give another held-out set, and a ValueError says so."""
    cat = load_catalog(catalog_path)
    gap = np.zeros(int(gap_s * 16000), np.float32)
    sound_alikes = {t for t in cat.negatives if not piece_of_keyword(t, cat)}
    parts: dict[str, list[np.ndarray]] = {SOUND_ALIKES: [], SPEECH_AND_NOISE: []}
    for ex, audio in heldout_audio(catalog_path, cat, [UNKNOWN, "wake"], opts, embedding_path, heldout_voices, {0}):
        parts[SOUND_ALIKES if ex.text in sound_alikes else SPEECH_AND_NOISE] += [audio, gap]
    return {k: np.concatenate(v) if v else np.zeros(0, np.float32) for k, v in parts.items()}


def negative_streams_for(bundle_dir: Path, catalog: Path | None = None,
                         opts: BuildOptions | None = None) -> dict[str, np.ndarray] | None:
    """The held-out negative streams of a wake bundle (from `catalog` and `opts` when its build
    passes them, else from what its manifest records), or None with a log line saying why: its
    catalog or its held-out voices are not on this machine."""
    manifest = json.loads((bundle_dir / "manifest.json").read_text())
    catalog = catalog or catalog_of(manifest)
    if catalog is None:
        log.warning("%s: its catalog %s is not in %s with the same contents; no synthetic negative audio",
                    bundle_dir.name, manifest.get("training", {}).get("catalog"), CATALOGS)
        return None
    try:
        return heldout_negative_streams(catalog, opts or build_options_of(manifest),
                                        load_bundle(bundle_dir).embedding_path,
                                        manifest["training"].get("heldout_voices"))
    except ValueError as exc:
        log.warning("%s; no synthetic negative audio", exc)
        return None


def hours(audio: np.ndarray) -> float:
    return len(audio) / 16000 / 3600


def false_accepts_per_hour(bundle_dir: Path, audio: np.ndarray, thresholds: np.ndarray) -> np.ndarray:
    """Wake events per hour of `audio` streamed through the edge loop, at each threshold."""
    if not len(audio):
        return np.zeros(len(thresholds))
    pipe = make_pipeline([bundle_dir], wake="on")
    head = pipe.models.wake_heads[0]
    scores = stream_scores(pipe, head, audio)
    refractory = refractory_scores(head.bundle)
    return np.array([false_accepts(scores, float(t), refractory) for t in thresholds]) / hours(audio)


def calibrate_on_stream(bundle_dir: Path, streams: dict[str, np.ndarray], max_per_hour: float = 1.0) -> dict:
    """The lowest threshold at which the held-out speech-and-noise stream fires at most
    `max_per_hour` times an hour; the sound-alikes' rate at it is reported, not targeted
    (a box that sometimes wakes on "computation" beats one that ignores a fifth of its owners)."""
    grid = WAKE_THRESHOLD_GRID
    fa = {k: false_accepts_per_hour(bundle_dir, a, grid) for k, a in streams.items()}
    ok = np.flatnonzero(fa[SPEECH_AND_NOISE] <= max_per_hour)
    i = int(ok[0]) if len(ok) else len(grid) - 1
    return {"threshold": float(grid[i]), "calibrated_on": "held-out negative audio through the edge loop",
            "negative_hours": {k: round(hours(a), 3) for k, a in streams.items()},
            "false_accepts_per_hour": {k: round(float(v[i]), 2) for k, v in fa.items()}}


def apply_stream_calibration(bundle_dir: Path, window_probs: np.ndarray | None = None,
                             window_labels: np.ndarray | None = None, catalog: Path | None = None,
                             opts: BuildOptions | None = None) -> dict | None:
    """Set a wake bundle's threshold from its held-out negative audio (`calibrate_on_stream`) and
    rewrite its manifest; the held-out windows, when given, update the window recall at it.
    None, and the manifest untouched, when the negative audio cannot be re-created here."""
    streams = negative_streams_for(bundle_dir, catalog, opts)
    if streams is None:
        return None
    calib = calibrate_on_stream(bundle_dir, streams)
    path = bundle_dir / "manifest.json"
    manifest = json.loads(path.read_text())
    decision = manifest["decision"]
    decision["threshold"] = calib["threshold"]
    if window_probs is not None and window_labels is not None:
        t = calib["threshold"]
        decision["heldout_window_recall"] = round(float(np.mean(window_probs[window_labels == 1] >= t)), 4)
        decision["heldout_window_false_positive"] = round(float(np.mean(window_probs[window_labels == 0] >= t)), 6)
    else:  # measured at the old threshold: drop them rather than keep them wrong
        decision.pop("heldout_window_recall", None)
        decision.pop("heldout_window_false_positive", None)
    decision["calibration"] = {k: v for k, v in calib.items() if k != "threshold"}
    path.write_text(json.dumps(manifest, indent=2, ensure_ascii=False) + "\n")
    return calib
