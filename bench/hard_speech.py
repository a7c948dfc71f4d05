"""How a command bundle hears speech unlike its training speech: accents and lost onsets.

    .venv/bin/python -m bench.hard_speech [--bundle models/en-command]

1. Kokoro voices (training voices of the shipped English models) say the first phrasing of
   every intent plainly and with each foreign accent of quantize.accent: how often the bundle is
   right, silent or wrong. About 7 minutes (Kokoro costs about 0.6 s of CPU a clip).
2. Held-out voices of the bundle say the ten digits with the first 0, 30, 60 and 90 ms of each
   cut (from the synthesized clip, which keeps 10 ms before its speech: about 20, 50 and 80 ms
   of speech), as a tightly trimmed recording (the real FSDD clips) loses them. About a minute.

Each clip streams through the edge loop after half a second of silence, as `polyvox run` hears a
file. English bundles only (the accents are English ones).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections import Counter
from pathlib import Path

import numpy as np

from quantize.accent import accents_for
from quantize.augment import cut_onset
from quantize.catalog import load_catalog
from quantize.evaluate import make_pipeline, run_clip
from quantize.negstream import catalog_of
from quantize.voices import Voice, synthesize, trim_silence

ROOT = Path(__file__).resolve().parent.parent
KOKORO = ["jf_alpha", "jm_kumo", "jf_nezumi", "jf_gongitsune+jm_kumo"]
HELDOUT = ["pico:en-GB", "mbrola:mb-en1", "espeak:en-us-nyc+Storm", "mbrola:mb-fr4-en", "mbrola:mb-de1-en"]
CUTS_MS = (0, 30, 60, 90)


def outcome(pipe, audio: np.ndarray, want: str) -> str:
    padded = np.concatenate([np.zeros(8000, np.float32), audio.astype(np.float32), np.zeros(16000, np.float32)])
    events = [e for e in run_clip(pipe, padded) if e.type == "command"]
    if not events:
        return "silent"
    return "right" if events[0].intent == want else f"wrong:{events[0].intent}"


def summary(results: list[tuple[str, str]]) -> str:
    n = len(results)
    kinds = Counter("wrong" if r.startswith("wrong") else r for _, r in results)
    confusions = Counter((want, r.removeprefix("wrong:")) for want, r in results if r.startswith("wrong"))
    rates = ", ".join(f"{k} {kinds[k] / n:.1%}" for k in ("right", "silent", "wrong"))
    top = ", ".join(f"{a}->{b} {c}" for (a, b), c in confusions.most_common(4))
    return f"{rates} of {n}" + (f" ({top})" if top else "")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.hard_speech", description=__doc__.split("\n\n")[0])
    p.add_argument("--bundle", default=str(ROOT / "models" / "en-command"))
    p.add_argument("--skip-accents", action="store_true", help="only the lost onsets (no Kokoro)")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    bundle = Path(args.bundle)
    manifest = json.loads((bundle / "manifest.json").read_text())
    if manifest["language"] != "en" or manifest["task"] != "command":
        print(f"error: {bundle} is not an English command bundle", file=sys.stderr)
        return 2
    catalog_path = catalog_of(manifest)
    if catalog_path is None:
        print(f"error: {bundle}: its catalog is not in models/catalog with the same contents", file=sys.stderr)
        return 2
    catalog = load_catalog(catalog_path)
    pipe = make_pipeline([bundle])
    if not args.skip_accents:
        print("| Kokoro voices | right, silent, wrong |\n|---|---|")
        for accent in ("", *accents_for("en")):
            speakers = [Voice("kokoro", f"{v}@{accent}" if accent else v, "en") for v in KOKORO]
            results = [(intent, outcome(pipe, synthesize(phrasings[0], v), intent))
                       for intent, phrasings in catalog.intents.items() for v in speakers]
            print(f"| {accent or 'no accent'} | {summary(results)} |", flush=True)
    digits = {intent: ps[0] for intent, ps in catalog.intents.items() if intent.startswith("digit_")}
    voices = [Voice(*vid.split(":", 1), "en") for vid in HELDOUT if vid in manifest["training"]["heldout_voices"]]
    clips = {(intent, v): trim_silence(synthesize(text, v)).astype(np.float32)
             for intent, text in digits.items() for v in voices}
    print("\n| onset cut | right, silent, wrong |\n|---|---|")
    for ms in CUTS_MS:
        results = [(intent, outcome(pipe, cut_onset(a, ms) if ms else a, intent)) for (intent, _), a in clips.items()]
        print(f"| {ms} ms | {summary(results)} |", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
