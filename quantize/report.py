"""report.md for a bundle: what it recognizes, how it was made, what it scored."""

from __future__ import annotations

import json
from pathlib import Path


def write_report(out_dir: Path, manifest: dict) -> None:
    m = manifest["metrics"]
    tr = manifest["training"]
    sel = manifest["model_selection"]
    lines = [
        f"# {manifest['name']}: {manifest['language']} {manifest['task']} model",
        "",
        f"Labels ({len(manifest['labels'])}): " + ", ".join(f"`{x}`" for x in manifest["labels"]),
        "",
        "## Training data (synthetic only)",
        f"- catalog `{tr['catalog']}`; {tr['examples']} examples from {tr['train_voices']} training voices "
        f"plus {len(tr['heldout_voices'])} held-out voices (never trained on): "
        + ", ".join(f"`{v}`" for v in tr["heldout_voices"]),
        f"- augmentation: {json.dumps(tr['augment'])}",
        f"- the edge VAD closed the utterance in {tr['vad_fired_fraction'] * 100:.1f}% of examples",
        "",
        "## Model",
        f"- chosen: `{sel['chosen']}` ({sel['why']})",
        "",
        "| candidate | weights | float acc | int8 acc | bytes | train s |",
        "|---|---|---|---|---|---|",
    ]
    for c in sel["candidates"]:
        lines.append(f"| {c['arch']} | {c.get('weights', 'per-channel')} | {c['float_accuracy']:.4f} | "
                     f"{c['int8_accuracy']:.4f} | {c['bytes']} | {c['train_s']} |")
    lines += [
        "",
        "## Held-out synthetic voices",
        f"- float accuracy {m['heldout_float_accuracy']:.4f}, int8 accuracy {m['heldout_int8_accuracy']:.4f}",
        f"- decision: {json.dumps(manifest['decision'])}",
    ]
    calib = manifest["decision"].get("calibration")
    if calib:
        hours, fa = calib["negative_hours"], calib["false_accepts_per_hour"]
        stream = f"{hours['speech and noise']} h of held-out speech and noise streamed through the edge loop"
        met = fa["speech and noise"] <= 1.0
        lines.append(f"- threshold {manifest['decision']['threshold']}: "
                     + (f"the lowest at which {stream} fires at most once an hour" if met
                        else f"the highest candidate; {stream} still fires more than once an hour")
                     + f" ({fa['speech and noise']}/h); the sound-alikes ({hours['sound-alikes']} h) "
                     f"fire {fa['sound-alikes']}/h there")
    edge = m.get("heldout_edge")
    if edge:
        lines.append(f"- through the edge loop as the device hears them (VAD, threshold, no end-of-stream flush): "
                     f"{edge['accuracy']:.1%} of {edge['clips']} clips right; "
                     f"intents {edge['intents_right']:.1%} right, "
                     f"{edge['intents_wrong']:.1%} wrong, {edge['intents_silent']:.1%} silent; "
                     f"{edge['negatives_fired']:.1%} of negatives fired")
    if "heldout_vad_closed_on_intents" in m:
        lines.append(f"- the edge VAD closed an utterance on {m['heldout_vad_closed_on_intents']:.1%} of held-out "
                     "intent clips (on the others the device would classify nothing)")
    if "heldout_int8_accuracy_cross_selected" in m:
        lines.append(f"- int8 accuracy with the model chosen on the other half of the held-out clips: "
                     f"{m['heldout_int8_accuracy_cross_selected']:.4f} (the build chooses on all of them)")
    for k in ("heldout_accept_accuracy", "heldout_unknown_false_accept"):
        if k in m:
            lines.append(f"- {k.replace('_', ' ')}: {m[k]}")
    by_voice = m.get("heldout_int8_accuracy_by_voice")
    if by_voice:
        lines.append("- int8 accuracy by held-out voice, weakest first: "
                     + ", ".join(f"`{v}` {r['accuracy']:.1%} ({r['clips']})" for v, r in by_voice.items()))
    lines += ["", "![confusion](confusion_heldout.png)", ""]
    real = m.get("real")
    if real:
        lines += ["## Real human speech (through the edge streaming loop)", ""]
        for name, res in real.items():
            lines.append(f"- **{name}**: " + ", ".join(f"{k} {v}" for k, v in res.items()
                                                     if not isinstance(v, dict | list)))
            speakers = res.get("by_speaker")
            if speakers:
                lines.append("- by speaker (right / wrong / rejected): " + ", ".join(
                    f"{k} {r['accuracy']:.1%} / {r['wrong']:.1%} / {r['rejected']:.1%} ({r['clips']})"
                    for k, r in speakers.items()))
            best = res.get("frr_at_1fa_per_hour")
            if best:
                lines.append(f"- at <= 1 false accept per hour of {best['negative_audio']} negative audio: "
                             f"{best['frr']:.1%} of the real keyword clips missed (threshold {best['threshold']})")
            sweep = res.get("by_threshold")
            if sweep:
                lines += ["", "| threshold | correct | wrong | rejected |", "|---|---|---|---|"]
                lines += [f"| {r['threshold']:.2f} | {r['correct']:.1%} | {r['wrong']:.1%} | {r['rejected']:.1%} |"
                          for r in sweep]
                lines.append("")
        lines += [""] + [f"![{p.stem}]({p.name})" for p in sorted(out_dir.glob("real_*.png"))] + [""]
    else:
        lines += ["## Real human speech", "", "No real recordings were available for this bundle.", ""]
    (out_dir / "report.md").write_text("\n".join(lines))
