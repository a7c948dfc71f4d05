"""Do held-out figures rest on knowing their babble? Re-render held-out clips with babble no
build trained on as babble, and score bundles on them through the edge loop.

    .venv/bin/python -m bench.fresh_babble --bundle models/en-command [--bundle OTHER ...] [--from 8]

A build's held-out clips hear the speech of eight of its catalog's negatives as babble, the
same eight its training clips hear (unless it was built with --babble-pool). This re-renders
the first bundle's held-out clips with the next eight negatives (`--from`) as babble, each
clip otherwise as its build rendered it, and scores every bundle given on them. The bundles
must share the first one's held-out plan (same catalog, seed and voices). A few minutes per
bundle on 2 cores.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from quantize.heldout import heldout_clips, score_heldout


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.fresh_babble", description=__doc__.split("\n\n")[0])
    p.add_argument("--bundle", action="append", required=True, help="bundle to score (repeatable)")
    p.add_argument("--from", dest="first", type=int, default=8,
                   help="index of the first catalog negative whose speech is the babble (default 8)")
    args = p.parse_args(argv)
    bundles = [Path(b) for b in args.bundle]
    try:
        own = heldout_clips(bundles[0])
        fresh = heldout_clips(bundles[0], babble_from=args.first)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print("| bundle | held-out clips as built | with fresh babble |\n|---|---:|---:|")
    for bundle in bundles:
        a = score_heldout(bundle, own, progress=False)["accuracy"]
        b = score_heldout(bundle, fresh, progress=False)["accuracy"]
        print(f"| {bundle} | {a:.1%} | {b:.1%} |", flush=True)
    print(json.dumps({"clips": len(own), "babble_from": args.first}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
