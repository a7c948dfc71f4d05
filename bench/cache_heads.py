"""Heads retrained from builds' feature caches, several seeds: is a corpus better on real speech?

    .venv/bin/python -m bench.cache_heads --bundle .cache/try/A --bundle .cache/try/B [--seeds 0 1 2]

A single build's figure on the real FSDD digits moves by a point or two with the draw of its
heads alone, and a corpus change (accents, onset cuts, voices) must be judged beyond that. For
each bundle this trains two cnn heads (en-command's recipe: window shift and mixup) on the
training rows of the feature cache its build left in .cache/features, once per seed, and scores
the float ensemble on the held-out rows and on the real digits (English command bundles with
the same labels; the window the edge loop
classifies, captured once through the first bundle's pipeline), by speaker too. Bundles must
name their cache (built since 2026-12-05). A cache with accented Kokoro clips (`--accents`) is
also scored without them: the same corpus less those rows. "Right at <= 5 % wrong" is the best
threshold for it chosen on the real clips themselves: an upper bound, not a device figure.
About three minutes per seed and corpus on 2 cores.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

import numpy as np

from bench.head_recipes import real_windows, right_at_most_5pct_wrong, train_pair
from quantize.evaluate import REAL_DEV
from quantize.realdev import fsdd_speaker
from quantize.recalibrate import cached_features

log = logging.getLogger("bench.cache_heads")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.cache_heads", description=__doc__.split("\n\n")[0])
    p.add_argument("--bundle", action="append", required=True, help="a bundle whose feature cache to train on")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s", stream=sys.stderr)
    from quantize.train import predict

    bundles = [Path(b) for b in args.bundle]
    if not (REAL_DEV / "fsdd").is_dir():
        print(f"error: no real digits at {REAL_DEV / 'fsdd'}", file=sys.stderr)
        return 2
    manifests = [json.loads((b / "manifest.json").read_text()) for b in bundles]
    for bundle, manifest in zip(bundles, manifests, strict=True):
        problem = ("is not an English command bundle" if (manifest["language"], manifest["task"]) != ("en", "command")
                   else "has other labels than the first bundle" if manifest["labels"] != manifests[0]["labels"]
                   # cached_features would guess by row counts, and a later build of another
                   # recipe (an onset-cut one did) has the same: rebuild it with `build --like`.
                   else "does not name its feature cache (built before builds did); compare a "
                        f"`quantize build --like {bundle}` rebuild instead"
                   if not manifest["training"].get("features_cache") else "")
        if problem:
            print(f"error: {bundle} {problem}", file=sys.stderr)
            return 2
    xr, yr, files = real_windows(bundles[0])
    speaker = np.array([fsdd_speaker(path) for path in files])
    print("| corpus | seed | held-out top-1 | real top-1 | real right at <= 5 % wrong | real top-1 by speaker |\n"
          "|---|---:|---:|---:|---:|---|")
    for bundle, manifest in zip(bundles, manifests, strict=True):
        path, data = cached_features(manifest)
        log.info("%s: %s", bundle, path.name)
        held, x, y = data["heldout"], data["emb"], data["label"]
        accented = np.array(["@" in str(v) for v in data["voice"]])
        corpora = [(bundle.name, ~held)] + ([(f"{bundle.name} less accented", ~held & ~accented)] if accented.any()
                                            else [])
        for name, rows in corpora:
            for seed in args.seeds:
                model = train_pair(x[rows], y[rows], len(manifest["labels"]), seed)
                held_acc = float(np.mean(predict(model, x[held]).argmax(axis=1) == y[held]))
                probs = predict(model, xr)
                right = probs.argmax(axis=1) == yr
                by = ", ".join(f"{s} {np.mean(right[speaker == s]):.1%}" for s in sorted(set(speaker)))
                print(f"| {name} | {seed} | {held_acc:.1%} | {np.mean(right):.1%} "
                      f"| {right_at_most_5pct_wrong(probs, yr):.1%} | {by} |", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
