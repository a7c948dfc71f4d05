"""Voice profiles (`polyvox enroll`) measured: each speaker enrolls k takes of every intent, and
the rest of their clips are scored with and without their profile.

    .venv/bin/python -m bench.enrollment [--bundle models/en-command] [--takes 1 2] [--draws 3]

1. Synthetic users: the bundle's held-out espeak-ng voices (never trained on) say the first
   phrasing of every intent three times (jittered rate and pitch, the build's augmentation), and
   30 everyday English words or runs of them that must not fire. The profile's defaults were
   chosen here.
2. Real speakers: the FSDD digits (1,500 clips, 3 speakers) in ../shared/data/real-dev, each
   speaker enrolling k of their own takes of each digit; the real keyword clips ("alexa",
   "computer", "jarvis", crowd-sourced) are the speech that must not fire, scored against every
   speaker's profile. Real recordings are only evaluated on: the enrolled takes are never scored,
   and nothing here changes a shipped model.

Every clip streams through the edge loop (`polyvox run`'s Pipeline); the windows its head
classified at each utterance's end are kept, and the profile (edge.profile.ProfileScorer) and the
decision (edge.decisions.decide_command) are applied to them as the loop applies them.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edge.bundle import UNKNOWN
from edge.decisions import DecisionConfig, decide_command
from edge.enroll import Enroller, Take, self_check
from edge.profile import ProfileConfig, ProfileScorer, VoiceProfile, profile_decision

ROOT = Path(__file__).resolve().parent.parent
REAL_DEV = ROOT.parent / "shared" / "data" / "real-dev"


@dataclass
class Clips:
    """Per clip: the head's window and posteriors at the (best) utterance's end, its intent, its speaker."""

    windows: np.ndarray
    probs: np.ndarray
    intents: np.ndarray
    speakers: np.ndarray


def capture(enroller: Enroller, items: list[tuple[np.ndarray, str, str]]) -> Clips:
    """Stream each (audio, intent, speaker); a clip in which no utterance closed is dropped (it is
    silent with or without a profile, and counted as such by `score`'s caller)."""
    w, p, y, s = [], [], [], []
    for audio, intent, speaker in items:
        # A negative's first utterance is the one the device would decide on; a command's is the
        # one most like it (as enrollment picks it).
        take = enroller.from_audio(audio, intent if intent != UNKNOWN else enroller.intents[0])
        if take is None:
            continue
        if intent == UNKNOWN:
            _, window, probs = next(h for h in enroller.pipeline.heard if h[0] == enroller.bundle.name)
        else:
            window, probs = take.window, take.probs
        w.append(window.copy())
        p.append(probs.copy())
        y.append(intent)
        s.append(speaker)
    return Clips(np.array(w), np.array(p), np.array(y), np.array(s))


def decide(labels: tuple[str, ...], probs: np.ndarray, decision: DecisionConfig) -> list[str | None]:
    return [hit[0] if (hit := decide_command(labels, p, decision)) else None for p in probs]


def adapt_all(scorer: ProfileScorer, probs: np.ndarray, windows: np.ndarray) -> np.ndarray:
    return np.array([scorer.adapt(p.copy(), w) for p, w in zip(probs, windows, strict=True)])


def rates(got: list[str | None], want: np.ndarray, total: int) -> tuple[float, float]:
    right = sum(g == w for g, w in zip(got, want, strict=True))
    wrong = sum(g is not None and g != w for g, w in zip(got, want, strict=True))
    return right / total, wrong / total


def worst_intents(labels: tuple[str, ...], clips: Clips, mine: np.ndarray, decision: DecisionConfig,
                  n: int) -> list[str]:
    """The speaker's `n` intents the model alone gets right least often: the ones a user who
    enrolls only a few would pick, having heard the device miss them."""
    got = decide(labels, clips.probs[mine], decision)
    right: dict[str, list[bool]] = {}
    for g, want in zip(got, clips.intents[mine], strict=True):
        right.setdefault(str(want), []).append(g == want)
    return sorted(right, key=lambda i: np.mean(right[i]))[:n]


def measure(enroller: Enroller, clips: Clips, negatives: Clips, totals: dict[str, int], k: int, draws: int,
            config: ProfileConfig, worst: int = 0) -> dict:
    """Per draw and speaker: enroll k takes of each intent (of the speaker's `worst` intents alone,
    when given), score the speaker's other clips and the negatives with the profile and without it."""
    labels = enroller.bundle.labels
    head = DecisionConfig.from_manifest(enroller.bundle.decision)
    rng = np.random.default_rng(0)
    rows: dict[str, list] = {}
    for _ in range(draws):
        for speaker in sorted(set(clips.speakers)):
            mine = np.flatnonzero(clips.speakers == speaker)
            chosen = worst_intents(labels, clips, mine, head, worst) if worst else sorted(set(clips.intents[mine]))
            enrolled = np.concatenate([rng.choice(mine[clips.intents[mine] == i], k, replace=False)
                                       for i in chosen if (clips.intents[mine] == i).sum() > k])
            test = np.setdiff1d(mine, enrolled)
            # Clips where no utterance closed count as silent: scale to all of the speaker's clips.
            total = totals[speaker] - len(enrolled)
            profile = VoiceProfile(enroller.bundle.name, "", tuple(clips.intents[enrolled]),
                                   clips.windows[enrolled], config)
            scorer = ProfileScorer(profile, labels)
            with_profile = profile_decision(head, profile)
            adapted = adapt_all(scorer, clips.probs[test], clips.windows[test])
            neg_adapted = adapt_all(scorer, negatives.probs, negatives.windows)
            n_neg = totals["_negatives"]
            scored = {}
            for name, probs, neg, decision in (("model alone", clips.probs[test], negatives.probs, head),
                                                ("with profile", adapted, neg_adapted, with_profile)):
                right, wrong = rates(decide(labels, probs, decision), clips.intents[test], total)
                fired = sum(g is not None for g in decide(labels, neg, decision)) / n_neg
                scored[name] = (right, wrong, fired)
            # The model alone can also trade hits for fewer errors, by its threshold: the one whose
            # wrong + fired is closest to the profile's, chosen on these very clips (in its favour).
            target = scored["with profile"][1] + scored["with profile"][2]
            best = None
            for threshold in np.arange(0.4, 0.991, 0.01):
                decision = DecisionConfig(threshold=float(threshold))
                right, wrong = rates(decide(labels, clips.probs[test], decision), clips.intents[test], total)
                fired = sum(g is not None for g in decide(labels, negatives.probs, decision)) / n_neg
                if best is None or abs(wrong + fired - target) < abs(best[1] + best[2] - target):
                    best = (right, wrong, fired)
            scored["model alone, as few errors"] = best
            for name, (right, wrong, fired) in scored.items():
                rows.setdefault(name, []).append((speaker, right, wrong, fired))
    out = {}
    for name, r in rows.items():
        by = {spk: np.mean([x[1:] for x in r if x[0] == spk], axis=0) for spk in sorted({x[0] for x in r})}
        mean = np.mean([x[1:] for x in r], axis=0)
        out[name] = {"right": round(float(mean[0]), 4), "wrong": round(float(mean[1]), 4),
                     "negatives_fired": round(float(mean[2]), 4),
                     "by_speaker": {s: {"right": round(float(v[0]), 4), "wrong": round(float(v[1]), 4)}
                                    for s, v in by.items()}}
    return out


def self_checks(enroller: Enroller, clips: Clips, k: int = 2) -> str:
    """What `polyvox enroll` would print for each speaker enrolling k random takes of each intent."""
    labels = enroller.bundle.labels
    rng = np.random.default_rng(0)
    lines = []
    for speaker in sorted(set(clips.speakers)):
        mine = np.flatnonzero(clips.speakers == speaker)
        chosen = np.concatenate([rng.choice(mine[clips.intents[mine] == i], k, replace=False)
                                 for i in sorted(set(clips.intents[mine])) if (clips.intents[mine] == i).sum() >= k])
        intents = [str(clips.intents[i]) for i in chosen]
        takes = [Take(intent, clips.windows[i], float(clips.probs[i][labels.index(intent)]), clips.probs[i])
                 for intent, i in zip(intents, chosen, strict=True)]
        check = self_check(enroller, enroller.profile(takes), takes)
        lines.append(f"- {speaker}: the model alone {check.right_alone} of {check.takes}, "
                     f"with the profile {check.right_with_profile}")
    return "self-check of `polyvox enroll`, " + f"{k} takes of each intent:\n" + "\n".join(lines)


def digit_streams(enroller: Enroller, root: Path, gap_s: float = 0.35) -> str:
    """The FSDD digits as a keypad hears them: each speaker's clips in a shuffled row, `gap_s`
    apart, through one pipeline, without and with a profile of one random take of each digit
    (the enrolled takes are left out of the row)."""
    import tempfile

    from edge.audio import read_wav
    from edge.config import frontend_config
    from edge.pipeline import Pipeline, PipelineConfig, load_models
    from quantize.evaluate import read_labelled, run_stream
    from quantize.realdev import fsdd_speaker

    rng = np.random.default_rng(0)
    gap = np.zeros(int(gap_s * 16000), np.float32)
    counts = {"model alone": [0, 0, 0], "with profile": [0, 0, 0]}
    items = read_labelled(root / "fsdd")
    with tempfile.TemporaryDirectory() as tmp:
        for speaker in sorted({fsdd_speaker(p) for p, _ in items}):
            mine = [(p, i) for p, i in items if fsdd_speaker(p) == speaker]
            enrolled = {}
            for intent in sorted({i for _, i in mine}):
                paths = [p for p, i in mine if i == intent]
                enrolled[intent] = paths[rng.integers(len(paths))]
            takes = [enroller.from_audio(read_wav(p), i) for i, p in enrolled.items()]
            profile = Path(tmp) / f"{speaker}.npz"
            enroller.profile([t for t in takes if t is not None]).save(profile)
            rest = [(p, i) for p, i in mine if enrolled[i] != p]
            row = [rest[k] for k in rng.permutation(len(rest))]
            audio = [np.concatenate([read_wav(p).astype(np.float32), gap]) for p, _ in row]
            for name, profiles in (("model alone", ()), ("with profile", (profile,))):
                models = load_models([enroller.bundle.path], frontend_config(), profiles=profiles)
                heard = run_stream(Pipeline(PipelineConfig(frontend=frontend_config()), models), audio)
                for (_, want), events in zip(row, heard, strict=True):
                    got = [e.intent for e in events if e.type == "command"]
                    counts[name][0] += bool(got) and got[0] == want
                    counts[name][1] += bool(got) and got[0] != want
                    counts[name][2] += 1
    return f"digits in a row ({gap_s} s apart), one take of each digit enrolled:\n" + "\n".join(
        f"- {name}: right {r / n:.1%}, wrong {w / n:.1%} of {n}" for name, (r, w, n) in counts.items())


def synthetic_users(enroller: Enroller, bundle: Path) -> tuple[list, list]:
    from quantize.augment import AugmentRecipe, augment
    from quantize.catalog import load_catalog
    from quantize.negstream import catalog_of
    from quantize.vocabulary import everyday_texts
    from quantize.voices import Prosody, Voice, synthesize

    manifest = json.loads((bundle / "manifest.json").read_text())
    catalog = load_catalog(catalog_of(manifest))
    voices = [v.removeprefix("espeak:") for v in manifest["training"]["heldout_voices"] if v.startswith("espeak:")]
    phrasings = {i: catalog.intents[i][0] for i in enroller.intents}
    negatives = everyday_texts(manifest["language"], 20, [t for ts in catalog.intents.values() for t in ts], seed=3)
    rng = np.random.default_rng(1)
    recipe = AugmentRecipe()
    pos, neg = [], []
    for name in voices:
        voice = Voice("espeak", name, manifest["language"])
        jobs = [(i, t) for i, t in phrasings.items() for _ in range(3)] + [(UNKNOWN, t) for t in negatives]
        for intent, text in jobs:
            speech = synthesize(text, voice, Prosody(rate=rng.uniform(0.85, 1.15), pitch=int(rng.integers(35, 66))))
            audio, _ = augment(speech, rng, recipe, 1.6, 3.5)
            (neg if intent == UNKNOWN else pos).append((audio, intent, name))
    return pos, neg


def real_speakers(root: Path) -> tuple[list, list]:
    from edge.audio import read_wav
    from quantize.evaluate import read_audio_any, read_labelled
    from quantize.realdev import fsdd_speaker

    pos = [(read_wav(p), i, fsdd_speaker(p)) for p, i in read_labelled(root / "fsdd")]
    neg = []
    for folder in sorted((root / "wakewords").iterdir()):
        for f in sorted(x for x in folder.iterdir() if x.suffix.lower() in (".flac", ".wav")):
            try:
                neg.append((read_audio_any(f), UNKNOWN, "keyword"))
            except Exception as exc:  # noqa: BLE001 - one damaged file in the crowd-sourced set
                logging.warning("skipped %s: %s", f.name, exc)
    return pos, neg


def report(title: str, results: dict[str, dict]) -> str:
    lines = [f"### {title}", "",
             "| takes per intent | | right | wrong | must-not-fire clips that fired | by speaker (right / wrong) |",
             "|---:|---|---:|---:|---:|---|"]
    for k, res in results.items():
        for name, r in res.items():
            by = ", ".join(f"{s} {v['right']:.1%} / {v['wrong']:.1%}" for s, v in r["by_speaker"].items())
            lines.append(f"| {k} | {name} | {r['right']:.1%} | {r['wrong']:.1%} | {r['negatives_fired']:.1%} | {by} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.enrollment", description=__doc__.split("\n\n")[0])
    p.add_argument("--bundle", default=str(ROOT / "models" / "en-command"))
    p.add_argument("--takes", type=int, nargs="+", default=[1, 2], help="enrolled takes per intent")
    p.add_argument("--draws", type=int, default=3, help="random choices of the enrolled takes")
    p.add_argument("--worst", type=int, default=3,
                   help="also enroll only each speaker's N worst-heard intents (0: skip that case)")
    p.add_argument("--skip-synthetic", action="store_true")
    p.add_argument("--out", help="also write the figures as JSON here")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    bundle = Path(args.bundle)
    enroller = Enroller(bundle)
    config = ProfileConfig()
    sets = []
    if not args.skip_synthetic:
        sets.append(("synthetic users (held-out espeak-ng voices)", synthetic_users(enroller, bundle)))
    real = (REAL_DEV / "fsdd").is_dir()
    if real:
        sets.append(("real speakers (FSDD digits; real keyword clips must not fire)", real_speakers(REAL_DEV)))
    else:
        print(f"{REAL_DEV} is absent: real speakers skipped", file=sys.stderr)
    figures = {}
    for title, (pos, neg) in sets:
        clips, negatives = capture(enroller, pos), capture(enroller, neg)
        print(f"{title}: {len(pos)} command clips, {len(neg)} clips that must not fire", file=sys.stderr)
        totals = {s: sum(1 for _, _, sp in pos if sp == s) for s in {sp for _, _, sp in pos}}
        totals["_negatives"] = len(neg)
        results = {str(k): measure(enroller, clips, negatives, totals, k, args.draws, config) for k in args.takes}
        if args.worst:
            for k in args.takes:
                results[f"{k}, of the {args.worst} worst-heard intents only"] = measure(
                    enroller, clips, negatives, totals, k, args.draws, config, args.worst)
        figures[title] = results
        print(report(title, results) + "\n", flush=True)
        print(self_checks(enroller, clips) + "\n", flush=True)
    if real:
        print(digit_streams(enroller, REAL_DEV) + "\n", flush=True)
    if args.out:
        Path(args.out).write_text(json.dumps({"config": config.__dict__, "figures": figures}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
