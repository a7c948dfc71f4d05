"""`--language auto` on held-out voices: phrasebook phrases in every language, spoken by voices
the language-id model never trained on, through the edge pipeline with each language rule:
"argmax" (the language-id model picks), "joint" (each language's best phrase weighed by its
language probability), "tiebreak" (the default: the most confident phrase head, the language-id
model deciding near-ties) and "off" (the most confident phrase head alone)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from edge.frontend import FrontendConfig
from edge.pipeline import Pipeline, PipelineConfig, load_models
from quantize.catalog import read_phrasebook
from quantize.evaluate import run_clip
from quantize.voices import LANGUAGES, Voice, synthesize

ROOT = Path(__file__).resolve().parent.parent


def evaluate_auto(models_dir: Path = ROOT / "models", voices_per_language: int = 4, every: int = 2) -> dict:
    models = load_models([models_dir / f"{lang}-phrase" for lang in LANGUAGES] + [models_dir / "langid"],
                         FrontendConfig())
    manifest = json.loads((models_dir / "langid" / "manifest.json").read_text())
    held = manifest["training"]["heldout_voices"]
    book = read_phrasebook(models_dir / "catalog" / "phrasebook.toml")
    pids = sorted(book)[::every]
    by_language = {lang: [] for lang in LANGUAGES}
    for vid in held:  # the manifest lists held-out voices language by language, in LANGUAGES order
        engine, name = vid.split(":", 1)
        lang = _language_of(name)
        if lang and len(by_language[lang]) < voices_per_language:
            by_language[lang].append(Voice(engine, name, lang))
    rules = ("argmax", "joint", "tiebreak", "off")
    results = {rule: {"language_right": 0, "phrase_right": 0, "no_event": 0, "utterances": 0, "by_language": {},
                      "misses_by_phrase": {}} for rule in rules}
    pipes = {rule: Pipeline(PipelineConfig(wake="off", langid_rule=rule), models) for rule in rules}
    for lang, voices in by_language.items():
        for voice in voices:
            for pid in pids:
                speech = synthesize(book[pid][lang], voice).astype(np.float32)
                audio = np.concatenate([speech, np.zeros(8000, np.float32)])
                for rule, r in results.items():
                    events = run_clip(pipes[rule], audio)  # from a fresh state, after 0.5 s of silence
                    right = bool(events) and events[0].language == lang
                    per = r["by_language"].setdefault(lang, {"right": 0, "utterances": 0})
                    per["utterances"] += 1
                    per["right"] += right
                    r["utterances"] += 1
                    r["no_event"] += not events
                    r["language_right"] += right
                    r["phrase_right"] += right and events[0].intent == pid
                    if not right:  # where the misses gather: one-word phrases that sound alike across languages
                        r["misses_by_phrase"][pid] = r["misses_by_phrase"].get(pid, 0) + 1
    for r in results.values():
        r["language_accuracy"] = round(r["language_right"] / max(1, r["utterances"]), 4)
        r["phrase_accuracy"] = round(r["phrase_right"] / max(1, r["utterances"]), 4)
        for per in r["by_language"].values():
            per["accuracy"] = round(per["right"] / max(1, per["utterances"]), 4)
        r["misses_by_phrase"] = dict(sorted(r["misses_by_phrase"].items(), key=lambda kv: -kv[1]))
    return results


def _language_of(voice_name: str) -> str | None:
    name = voice_name.lower()
    if name.startswith("cmn"):
        return "zh"
    if name.startswith(("en", "mb-us", "mb-en")) or name.endswith("-en") or name in ("slt", "rms", "awb", "kal16"):
        return "en"
    for lang, prefixes in (("de", ("de", "mb-de")), ("fr", ("fr", "mb-fr")), ("es", ("es", "mb-es", "mb-mx", "mb-vz"))):
        if name.startswith(prefixes):
            return lang
    return None
