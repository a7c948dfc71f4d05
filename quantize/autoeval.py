"""`--language auto` on held-out voices: phrasebook phrases in every language, spoken by voices
the language-id model never trained on, through the edge pipeline with each language rule:
"argmax" (the language-id model picks), "joint" (each language's best phrase weighed by its
language probability), "tiebreak" (the default: the most confident phrase head, the language-id
model deciding near-ties) and "off" (the most confident phrase head alone); the same
utterances in every two-language conversation (`--language en+fr`); and the same utterances as
streams (one speaker's phrases in a row, or two speakers of two languages taking turns), where
the pipeline's language memory carries from one utterance to the next."""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edge.config import canonical_language
from edge.events import Event
from edge.frontend import FrontendConfig
from edge.pipeline import Pipeline, PipelineConfig, load_models
from quantize.catalog import read_phrasebook
from quantize.evaluate import run_clip, run_stream
from quantize.voices import LANGUAGES, Voice, synthesize

ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class Clip:
    language: str
    phrase: str
    audio: np.ndarray
    voice: str = ""


PHRASE_SETS = {"even": slice(0, None, 2), "odd": slice(1, None, 2), "all": slice(None)}
"""Which phrases (in sorted id order) to speak: the recorded figures use the even half; the odd
half checks that a rule chosen on them holds on phrases it was not chosen on."""


def heldout_clips(models_dir: Path = ROOT / "models", voices_per_language: int = 4,
                  phrases: str = "even") -> list[Clip]:
    """Phrasebook phrases in each language, spoken by up to `voices_per_language` of the
    language-id model's held-out voices, with half a second of silence after each."""
    manifest = json.loads((models_dir / "langid" / "manifest.json").read_text())
    book = read_phrasebook(models_dir / "catalog" / "phrasebook.toml")
    pids = sorted(book)[PHRASE_SETS[phrases]]
    by_language: dict[str, list[Voice]] = {lang: [] for lang in LANGUAGES}
    for vid in manifest["training"]["heldout_voices"]:
        engine, name = vid.split(":", 1)
        lang = _language_of(name)
        if lang and len(by_language[lang]) < voices_per_language:
            by_language[lang].append(Voice(engine, name, lang))
    return [Clip(lang, pid, np.concatenate([synthesize(book[pid][lang], voice).astype(np.float32),
                                            np.zeros(8000, np.float32)]), voice.id)
            for lang, voices in by_language.items() for voice in voices for pid in pids]


def _tally(pipe: Pipeline, clips: list[Clip]) -> dict:
    # Each clip from a fresh state, after 0.5 s of silence: nothing carries over.
    return _tally_events((clip, run_clip(pipe, clip.audio)) for clip in clips)


def _tally_events(heard: Iterable[tuple[Clip, list[Event]]]) -> dict:
    r: dict = {"language_right": 0, "phrase_right": 0, "no_event": 0, "utterances": 0, "by_language": {},
               "misses_by_phrase": {}}
    for clip, events in heard:
        right = bool(events) and events[0].language == clip.language
        per = r["by_language"].setdefault(clip.language, {"right": 0, "utterances": 0})
        per["utterances"] += 1
        per["right"] += right
        r["utterances"] += 1
        r["no_event"] += not events
        r["language_right"] += right
        r["phrase_right"] += right and events[0].intent == clip.phrase
        if not right:  # where the misses gather: one-word phrases that sound alike across languages
            r["misses_by_phrase"][clip.phrase] = r["misses_by_phrase"].get(clip.phrase, 0) + 1
    r["language_accuracy"] = round(r["language_right"] / max(1, r["utterances"]), 4)
    r["phrase_accuracy"] = round(r["phrase_right"] / max(1, r["utterances"]), 4)
    for per in r["by_language"].values():
        per["accuracy"] = round(per["right"] / max(1, per["utterances"]), 4)
    r["misses_by_phrase"] = dict(sorted(r["misses_by_phrase"].items(), key=lambda kv: -kv[1]))
    return r


def _models(models_dir: Path, languages: tuple[str, ...]):
    return load_models([models_dir / f"{lang}-phrase" for lang in languages] + [models_dir / "langid"],
                       FrontendConfig())


def evaluate_auto(models_dir: Path = ROOT / "models", clips: list[Clip] | None = None) -> dict:
    """All five languages listened for, with each language rule."""
    clips = clips if clips is not None else heldout_clips(models_dir)
    models = _models(models_dir, LANGUAGES)
    return {rule: _tally(Pipeline(PipelineConfig(wake="off", langid_rule=rule), models), clips)
            for rule in ("argmax", "joint", "tiebreak", "off")}


def evaluate_conversations(models_dir: Path = ROOT / "models", clips: list[Clip] | None = None) -> dict:
    """Every two-language conversation (`--language en+fr`, the default rule): the clips of its two
    languages, with only their phrase heads listening."""
    clips = clips if clips is not None else heldout_clips(models_dir)
    pairs = {}
    for pair in itertools.combinations(LANGUAGES, 2):
        pipe = Pipeline(PipelineConfig(wake="off"), _models(models_dir, pair))
        pairs[canonical_language("+".join(pair))] = _tally(pipe, [c for c in clips if c.language in pair])
    right = sum(p["language_right"] for p in pairs.values())
    phrase_right = sum(p["phrase_right"] for p in pairs.values())
    n = sum(p["utterances"] for p in pairs.values())
    return {"utterances": n, "language_accuracy": round(right / max(1, n), 4),
            "phrase_accuracy": round(phrase_right / max(1, n), 4),
            "by_pair": {k: {"language_accuracy": p["language_accuracy"], "phrase_accuracy": p["phrase_accuracy"],
                            "utterances": p["utterances"], "misses_by_phrase": p["misses_by_phrase"]}
                        for k, p in pairs.items()}}


def speaker_streams(clips: list[Clip], seed: int = 0) -> list[list[Clip]]:
    """One stream per voice: all its clips, in a shuffled order."""
    rng = np.random.default_rng(seed)
    by_voice: dict[tuple[str, str], list[Clip]] = {}
    for clip in clips:
        by_voice.setdefault((clip.language, clip.voice), []).append(clip)
    return [[cs[i] for i in rng.permutation(len(cs))] for cs in by_voice.values()]


def conversation_streams(clips: list[Clip], seed: int = 0) -> list[list[Clip]]:
    """Two voices of two languages taking turns, for every pair of languages: the j-th voice of
    one with the j-th of the other, each speaking all its clips in a shuffled order; who starts
    alternates with j."""
    speakers: dict[str, list[list[Clip]]] = {}
    for stream in speaker_streams(clips, seed):
        speakers.setdefault(stream[0].language, []).append(stream)
    streams = []
    for a, b in itertools.combinations(LANGUAGES, 2):
        for j, (sa, sb) in enumerate(zip(speakers.get(a, []), speakers.get(b, []), strict=False)):
            first, second = (sa, sb) if j % 2 == 0 else (sb, sa)
            turns = [c for pair in itertools.zip_longest(first, second) for c in pair if c is not None]
            streams.append(turns)
    return streams


def _heard(pipe: Pipeline, stream: list[Clip]) -> list[tuple[Clip, list[Event]]]:
    return list(zip(stream, run_stream(pipe, [c.audio for c in stream]), strict=True))


def evaluate_streams(models_dir: Path = ROOT / "models", clips: list[Clip] | None = None,
                     memories_s: tuple[float, ...] = (0.0, 60.0)) -> dict:
    """The default rule on streams, with each language memory: `--language auto` on one
    speaker's phrases in a row ("speakers") and on two speakers of two languages taking turns
    ("conversations"); and those turns with only their two languages listened for
    (`--language en+fr`, "pairs")."""
    clips = clips if clips is not None else heldout_clips(models_dir)
    talks = conversation_streams(clips)
    five = _models(models_dir, LANGUAGES)
    by_pair: dict[tuple[str, ...], list[list[Clip]]] = {}
    for talk in talks:
        by_pair.setdefault(tuple(sorted({c.language for c in talk})), []).append(talk)
    runs = {"speakers": [(five, speaker_streams(clips))], "conversations": [(five, talks)],
            "pairs": [(_models(models_dir, pair), streams) for pair, streams in by_pair.items()]}
    out: dict = {}
    for kind, sets in runs.items():
        out[kind] = {"streams": sum(len(streams) for _, streams in sets)}
        for memory_s in memories_s:
            cfg = PipelineConfig(wake="off", language_memory_s=memory_s)
            out[kind][f"memory_{memory_s:g}s"] = _tally_events(
                pair for models, streams in sets for s in streams for pair in _heard(Pipeline(cfg, models), s))
    return out


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
