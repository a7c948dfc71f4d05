"""How far more heads can take a bundle on its held-out voices, from cached features.

    .venv/bin/python -m bench.head_ceiling [--bundle models/es-command] [--heads 6] [--arch cnn]

Trains --heads heads on the bundle's cached training features (seeds 100, 101, ...) and
scores the float ensemble of the first k on the held-out voices as k grows, with where its
errors go: intents sent to unknown, intents taken for another intent, unknowns that fire.
If the curve flattens well below the target, more or bigger heads on these features will not
reach it. About a minute per head on 2 cores.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

import numpy as np

from quantize.recalibrate import cached_features

log = logging.getLogger("bench.head_ceiling")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.head_ceiling", description=__doc__.split("\n\n")[0])
    p.add_argument("--bundle", default="models/es-command")
    p.add_argument("--heads", type=int, default=6)
    p.add_argument("--arch", default="cnn")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s", stream=sys.stderr)
    from quantize.train import TrainConfig, head_width, predict, train

    manifest = json.loads((Path(args.bundle) / "manifest.json").read_text())
    path, data = cached_features(manifest)
    log.info("training features: %s", path.name)
    held, x, y = data["heldout"], data["emb"].astype(np.float32), data["label"]
    n = len(manifest["labels"])
    yh, intent = y[held], y[held] > 0
    log_probs: list[np.ndarray] = []
    print("| heads | last head alone | ensemble | intents -> unknown | intent -> other intent | unknown fires |\n"
          "|---:|---:|---:|---:|---:|---:|")
    for k in range(args.heads):
        cfg = TrainConfig(arch=args.arch, hidden=head_width(args.arch), seed=100 + k, unknown_weight=2.0)
        probs = predict(train(x[~held], y[~held], n, cfg, progress=False), x[held])
        log_probs.append(np.log(probs + 1e-7))
        pred = np.mean(log_probs, axis=0).argmax(axis=1)
        print(f"| {k + 1} | {np.mean(probs.argmax(axis=1) == yh):.1%} | {np.mean(pred == yh):.1%} "
              f"| {np.mean(pred[intent] == 0):.1%} | {np.mean((pred[intent] != yh[intent]) & (pred[intent] > 0)):.1%} "
              f"| {np.mean(pred[~intent] > 0):.1%} |", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
