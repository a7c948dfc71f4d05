"""A command or phrasebook bundle's held-out voices through the edge streaming loop.

The build scores each held-out clip's window where the edge VAD closed the utterance, or where
the speech ended when it did not: that measures the heads. Here each clip plays through
`edge.pipeline.Pipeline` as the device hears it (VAD, heads, decision threshold), with no
end-of-stream flush: an utterance the VAD never closes is a miss, as it is on a device whose
background noise goes on. The clips are the build's own (same voices, texts, augmentation draws).
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np

from edge.bundle import load_bundle
from quantize.build import UNKNOWN, BuildOptions, heldout_audio
from quantize.catalog import load_catalog
from quantize.evaluate import make_pipeline
from quantize.negstream import build_options_of, catalog_of


def heldout_clips(bundle: Path, catalog: Path | None = None, opts: BuildOptions | None = None,
                  babble_from: int = 0) -> list[tuple[np.ndarray, str]]:
    """(audio, intent) of every held-out clip the bundle's build scored; `_unknown_` for negatives.
    `catalog` and `opts` are the build's (a build passes them); by default they are read back
    from the manifest and models/catalog. ValueError, in one line, when they cannot be.
    `babble_from`: see build.heldout_audio."""
    manifest = json.loads((bundle / "manifest.json").read_text())
    if manifest["task"] not in ("command", "phrase"):
        raise ValueError(f"{bundle.name}: held-out clips through the edge loop are for command and phrase "
                         f"bundles, not {manifest['task']}")
    catalog = catalog or catalog_of(manifest)
    if catalog is None:
        raise ValueError(f"{bundle.name}: its catalog {manifest['training'].get('catalog')} is not in "
                         "models/catalog with the same contents")
    opts = opts or build_options_of(manifest)
    cat = load_catalog(catalog, manifest["language"] if manifest["task"] == "phrase" else None)
    labels = [UNKNOWN, *cat.labels]
    clips = [(audio, labels[ex.label]) for ex, audio in heldout_audio(
        catalog, cat, labels, opts, load_bundle(opts.embedding_dir).model_path, manifest["training"]["heldout_voices"],
        babble_from=babble_from)]
    if len(clips) != manifest["training"]["heldout_examples"]:
        raise ValueError(f"{bundle.name}: {len(clips)} held-out clips here, {manifest['training']['heldout_examples']} "
                         "in its build")
    return clips


def evaluate_heldout(bundle: Path, progress: bool = True, catalog: Path | None = None,
                     opts: BuildOptions | None = None) -> dict:
    """Share of held-out clips the device gets right: an intent's first command event names it, a
    negative fires none. Intents split into right, wrong and silent (no event: rejected by the
    threshold, or no utterance closed)."""
    return score_heldout(bundle, heldout_clips(bundle, catalog, opts), progress)


def score_heldout(bundle: Path, clips: list[tuple[np.ndarray, str]], progress: bool = True) -> dict:
    """`evaluate_heldout` on given clips: (audio, intent) pairs, `_unknown_` for negatives."""
    from tqdm import tqdm

    pipe = make_pipeline([bundle], wake="off")
    outcome: Counter[str] = Counter()
    for audio, intent in tqdm(clips, desc=f"held-out ({bundle.name})", disable=not progress, mininterval=2.0):
        pipe.reset()
        events = [e for i in range(0, len(audio), 1280) for e in pipe.feed(audio[i : i + 1280]) if e.type == "command"]
        if intent == UNKNOWN:
            outcome["unknown_fired" if events else "unknown_silent"] += 1
        else:
            outcome["silent" if not events else "right" if events[0].intent == intent else "wrong"] += 1
    intents = outcome["right"] + outcome["wrong"] + outcome["silent"]
    negatives = outcome["unknown_fired"] + outcome["unknown_silent"]
    return {"clips": len(clips),
            "accuracy": round((outcome["right"] + outcome["unknown_silent"]) / max(1, len(clips)), 4),
            "intents": intents,
            "intents_right": round(outcome["right"] / max(1, intents), 4),
            "intents_wrong": round(outcome["wrong"] / max(1, intents), 4),
            "intents_silent": round(outcome["silent"] / max(1, intents), 4),
            "negatives": negatives,
            "negatives_fired": round(outcome["unknown_fired"] / max(1, negatives), 4),
            "how": "each held-out clip streamed through the edge loop, no end-of-stream flush"}
