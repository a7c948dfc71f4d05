"""The models table for README.md, from the manifests (the figures each build measured)."""

from __future__ import annotations

import json
from pathlib import Path

from edge.bundle import find_bundles


def models_table(models_dir: Path) -> str:
    dirs = find_bundles(models_dir) + find_bundles(models_dir / "keywords")
    rows = ["| bundle | language | task | labels | model | bytes | held-out float | held-out int8 "
            "| held-out, edge loop | real speech |",
            "|---|---|---|---|---|---|---|---|---|---|"]
    for d in dirs:
        m = json.loads((d / "manifest.json").read_text())
        if m["task"] == "embedding":
            continue
        met = m.get("metrics", {})
        real = met.get("real", {})
        notes = []
        if "fsdd_digits" in real:
            r = real["fsdd_digits"]
            notes.append(f"EN digits (FSDD, 1,500 clips): {r['accuracy']:.1%} correct, {r['rejected']:.1%} rejected, "
                         f"{r['wrong']:.1%} wrong")
        if "wakewords" in real:
            r = real["wakewords"]
            if "false_reject_rate" in r:
                notes.append(f"FRR {r['false_reject_rate']:.1%} on {r['keyword_clips']} real clips")
            notes.append(f"{r['false_accepts_per_hour_real']} FA/h on {r['negative_real_hours']} h real speech")
            if "negative_synthetic_hours" in r:
                notes.append(f"{r['false_accepts_per_hour_synthetic']} FA/h on {r['negative_synthetic_hours']} h "
                             f"held-out synthetic speech and noise ({r['false_accepts_per_hour_sound_alikes']} on "
                             f"sound-alikes)")
            if "false_reject_rate" in r:
                best = r.get("frr_at_1fa_per_hour")
                notes.append(f"at <= 1 FA/h of all that: FRR {best['frr']:.1%} (threshold {best['threshold']})" if best
                             else "no threshold reaches <= 1 FA/h")
        if "cmn_words" in real:
            r = real["cmn_words"]
            notes.append(f"real Mandarin words (1 speaker): {r['accuracy']:.1%} of {r['clips']}")
        if "cmn_words_not_commands" in real:
            r = real["cmn_words_not_commands"]
            notes.append(f"fires on {r['false_command_rate']:.0%} of {r['clips']} real non-command words")
        edge = met.get("heldout_edge")  # what the device gets right (quantize.heldout); command and phrase bundles
        edge_acc = f"{edge['accuracy']:.1%}" if edge else "-"
        n_labels = len([x for x in m["labels"] if not x.startswith("_")])
        rows.append(f"| `{d.relative_to(models_dir)}` | {m['language']} | {m['task']} | {n_labels} | "
                    f"{m['model_selection']['chosen']} | {met.get('model_bytes', '')} | "
                    f"{met.get('heldout_float_accuracy', 0):.1%} | {met.get('heldout_int8_accuracy', 0):.1%} | "
                    f"{edge_acc} | "
                    f"{'; '.join(notes) or '-'} |")
    return "\n".join(rows)
