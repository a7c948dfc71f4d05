"""python -m quantize {embedding,build,build-all,evaluate}: see --help of each."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from quantize.train import ARCHS

if TYPE_CHECKING:
    from quantize.build import BuildOptions

ROOT = Path(__file__).resolve().parent.parent
MODELS = ROOT / "models"


def _embedding(args: argparse.Namespace) -> int:
    from edge.frontend import FrontendConfig
    from quantize.embedding import build_embedding_bundle
    from quantize.voices import Voice, synthesize

    speech = [synthesize(t, Voice("espeak", v, "en")) for t in ("turn on the lights", "seven", "what time is it")
              for v in ("en-us", "en-gb+f3")]
    manifest = build_embedding_bundle(Path(args.out), speech, FrontendConfig())
    print(json.dumps(manifest["quantization"], indent=2))
    return 0


def _at_least_one(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be 1 or more, not {value}")
    return value


def _probability(text: str) -> float:
    value = float(text)
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"must be between 0 and 1, not {text}")
    return value


def _count(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, not {text}")
    return value


def _recipe_of(bundle: Path, opts: BuildOptions) -> tuple[Path, str | None, BuildOptions]:
    """(catalog, phrasebook language, options) of the build that made `bundle`, from its manifest:
    the same corpus (its feature cache is reused) and head training; `opts` gives the rest."""
    from dataclasses import replace

    from edge.bundle import read_manifest
    from quantize.negstream import build_options_of, catalog_of

    manifest = read_manifest(bundle)
    catalog = catalog_of(manifest)
    if catalog is None:
        raise SystemExit(f"error: {bundle}: its catalog {manifest.get('training', {}).get('catalog')} is not in "
                         "models/catalog with the same contents")
    recorded = build_options_of(manifest)
    return catalog, manifest["language"] if manifest["task"] == "phrase" else None, replace(
        recorded, workers=opts.workers, progress=opts.progress, embedding_dir=opts.embedding_dir, archs=opts.archs,
        members=opts.members, mix_heads=opts.mix_heads, accents=opts.accents or recorded.accents,
        onset_cut=opts.onset_cut or recorded.onset_cut)


def _build(args: argparse.Namespace) -> int:
    from quantize.build import BuildOptions, build
    from quantize.report import write_report
    from quantize.voices import OPT_IN_ENGINES

    opts = BuildOptions(quick=args.quick, workers=args.workers, archs=tuple(args.arch or ()),
                        embedding_dir=Path(args.embedding), seed=args.seed, members=args.members,
                        head_augment=args.head_augment, voice_swap=args.voice_swap, vtlp=args.vtlp,
                        speech_level=args.speech_level, babble_pool=args.babble_pool, accents=args.accents,
                        onset_cut=args.onset_cut,
                        mix_heads=args.mix_heads,
                        drr_db=tuple(args.drr) if args.drr else None,
                        skip_engines=tuple(sorted((set(OPT_IN_ENGINES) - set(args.with_engines))
                                                  | set(args.skip_engines)
                                                  | ({"kokoro"} if args.no_kokoro else set()))),
                        train_reps=args.reps,
                        max_espeak_voices=args.espeak_voices, natural_weight=args.natural_weight,
                        progress=not args.quiet)
    catalog, language = Path(args.catalog or ""), args.language
    if args.like:
        catalog, language, opts = _recipe_of(Path(args.like), opts)
    elif not args.catalog:
        raise SystemExit("error: build needs --catalog FILE (or --like BUNDLE)")
    out = Path(args.out)
    manifest = build(catalog, out, opts, language=language)
    if manifest["task"] in ("command", "phrase") and not opts.quick:
        from quantize.heldout import evaluate_heldout

        manifest["metrics"]["heldout_edge"] = evaluate_heldout(out, not args.quiet, catalog, opts)
        (out / "manifest.json").write_text(json.dumps(manifest, indent=2, ensure_ascii=False) + "\n")
    if not args.no_real:
        from quantize.realdev import evaluate_real

        real = evaluate_real(out, progress=not args.quiet)
        if real:
            manifest["metrics"]["real"] = real
            (out / "manifest.json").write_text(json.dumps(manifest, indent=2, ensure_ascii=False) + "\n")
    write_report(out, manifest)
    print(json.dumps(manifest["metrics"], indent=2, ensure_ascii=False))
    return 0


def _record(bundle: Path, key: str, value: dict) -> None:
    from edge.bundle import read_manifest
    from quantize.report import write_report

    manifest = read_manifest(bundle)
    manifest["metrics"][key] = value
    (bundle / "manifest.json").write_text(json.dumps(manifest, indent=2, ensure_ascii=False) + "\n")
    write_report(bundle, manifest)


def _evaluate(args: argparse.Namespace) -> int:
    from quantize.evaluate import evaluate_commands, read_labelled

    if args.heldout:
        from quantize.heldout import evaluate_heldout

        try:
            result = evaluate_heldout(Path(args.bundle), progress=not args.quiet)
        except ValueError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        _record(Path(args.bundle), "heldout_edge", result)
        print(json.dumps(result, indent=2))
        return 0
    if args.real:
        from quantize.realdev import REAL_DEV, evaluate_real

        if not REAL_DEV.is_dir():  # a Pi: keep the figures measured where the recordings were
            print(f"error: no real recordings at {REAL_DEV}; the recorded figures stay as they are", file=sys.stderr)
            return 2
        real = evaluate_real(Path(args.bundle), progress=not args.quiet)
        _record(Path(args.bundle), "real", real)
        print(json.dumps(real, indent=2))
        return 0
    if not args.data:
        print("error: give --data DIR_OR_TSV or --real", file=sys.stderr)
        return 2
    items = read_labelled(Path(args.data))
    if not items:
        print(f"error: no labelled audio found in {args.data}", file=sys.stderr)
        return 2
    problem = _data_problem(Path(args.bundle), items)
    if problem:
        print(f"error: {args.data}: {problem}", file=sys.stderr)
        return 2
    res = evaluate_commands(Path(args.bundle), items, progress=not args.quiet)
    print(json.dumps(res.to_dict(), indent=2))
    return 0


def _data_problem(bundle: Path, items: list[tuple[Path, str]]) -> str | None:
    """What would make `evaluate --data` score something other than what was asked, or None."""
    from edge.bundle import UNKNOWN, read_manifest

    manifest = read_manifest(bundle)
    if manifest.get("task") not in ("command", "phrase"):
        return (f"--data scores command and phrase bundles, and {bundle} is a {manifest.get('task')} bundle "
                "(wake bundles: --real)")
    missing = [p for p, _ in items if not p.is_file()]
    if missing:
        return (f"{len(missing)} of {len(items)} audio files not found, the first '{missing[0]}' "
                "(paths in a TSV are relative to the TSV's folder)")
    unknown = sorted({intent for _, intent in items} - set(manifest.get("labels", [])) - {UNKNOWN})
    if unknown:
        return (f"intent {unknown[0]!r} is not one of {bundle.name}'s labels "
                f"(use {UNKNOWN} for clips that must not fire)")
    return None


def _recalibrate(args: argparse.Namespace) -> int:
    from quantize.recalibrate import recalibrate

    print(json.dumps(recalibrate(Path(args.bundle)), indent=2))
    return 0


def _promote(args: argparse.Namespace) -> int:
    from quantize.promote import promote

    dest = promote(Path(args.bundle), Path(args.to))
    print(f"{args.bundle} -> {dest}")
    return 0


def _evaluate_auto(args: argparse.Namespace) -> int:
    from quantize.autoeval import evaluate_auto, evaluate_conversations, evaluate_streams, heldout_clips

    models_dir = Path(args.models_dir)
    clips = heldout_clips(models_dir, phrases=args.phrases)
    results = {"auto_mode_heldout": evaluate_auto(models_dir, clips),
               "conversation_mode_heldout": evaluate_conversations(models_dir, clips),
               "streams_heldout": evaluate_streams(models_dir, clips)}
    if args.phrases == "even":  # the recorded figures are the even half's
        manifest_path = models_dir / "langid" / "manifest.json"
        manifest = json.loads(manifest_path.read_text())
        manifest["metrics"].update(results)
        manifest_path.write_text(json.dumps(manifest, indent=2, ensure_ascii=False) + "\n")
    print(json.dumps(results, indent=2))
    return 0


def _table(args: argparse.Namespace) -> int:
    from edge.bundle import find_bundles
    from quantize.table import models_table

    if not find_bundles(args.models_dir):
        print(f"error: no model bundles in {args.models_dir}", file=sys.stderr)
        return 2
    print(models_table(Path(args.models_dir)))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m quantize", description=(
        "polyvox toolchain: turn a phrase catalog (TOML) into an int8 TFLite model bundle, from text alone."))
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    sub = parser.add_subparsers(dest="cmd", required=True)

    p = sub.add_parser("embedding", help="quantize the pretrained speech embedding into models/embedding")
    p.add_argument("--out", default=str(MODELS / "embedding"))
    p.set_defaults(func=_embedding)

    p = sub.add_parser("build", help="build one bundle from a catalog: synthesize, augment, train, int8, evaluate")
    p.add_argument("--catalog", help="catalog TOML (see models/catalog/)")
    p.add_argument("--like", metavar="BUNDLE",
                   help="rebuild with the catalog and recipe recorded in BUNDLE's manifest (corpus, seed, "
                        "augmentation, head training; the recipe options below are then ignored, except --accents "
                        "and --onset-cut, which add to it), reusing its cached features: new candidates or "
                        "training code on the same corpus, or the same recipe with accents or onset cuts")
    p.add_argument("--out", required=True, help="bundle directory to write")
    p.add_argument("--language", help="for a phrasebook: the source language to build")
    p.add_argument("--quick", action="store_true", help="few voices, one augmentation, short training (tests)")
    p.add_argument("--arch", action="append", choices=ARCHS,
                   help="candidate architecture (repeatable); default: cnn and cgru (wake: cnn and dense); "
                        "dense with --quick")
    p.add_argument("--members", type=_at_least_one, default=0,
                   help="heads trained per candidate and averaged into one model; default: 3 for phrasebooks "
                        "and language id, 2 for commands, 1 for wake words and --quick")
    p.add_argument("--mix-heads", action="store_true",
                   help="also try a candidate that takes cnn and cgru heads in turn (off by default: it won on "
                        "en-command's held-out voices, 89.9 against 88.9 %%, and lost on real digits)")
    p.add_argument("--workers", type=_at_least_one, default=2, help="processes for synthesis and features")
    p.add_argument("--embedding", default=str(MODELS / "embedding"), help="speech-embedding bundle")
    p.add_argument("--no-real", action="store_true", help="skip evaluation on ../shared/data/real-dev")
    p.add_argument("--seed", type=int, default=0,
                   help="seed of the corpus draw (voices per negative, prosody, augmentation) and of training; "
                        "another seed is another sample of the same recipe")
    p.add_argument("--reps", type=_at_least_one, default=3,
                   help="renditions of each phrasing by each training voice, each augmented apart; a small "
                        "vocabulary can afford more (default 3; langid: 14 voices per text at 3, scaled alike)")
    p.add_argument("--espeak-voices", type=_at_least_one, default=24,
                   help="espeak-ng voice variants to use per language, about a fifth of them held out "
                        "(default 24; en has over 300 distinct ones, es 88, the others 45)")
    p.add_argument("--natural-weight", type=_at_least_one, default=3,
                   help="renditions per repetition by each MBROLA, Pico, Flite, Festival and RHVoice training "
                        "voice, the voices "
                        "closest to real speech (default 3; espeak-ng and Kokoro voices: 1)")
    p.add_argument("--no-kokoro", action="store_true",
                   help="leave out the Kokoro neural voices (as --skip-engine kokoro): a first build "
                        "several times faster, less robust to real voices")
    p.add_argument("--skip-engine", dest="skip_engines", action="append", default=[],
                   choices=("mbrola", "pico", "flite", "kokoro"), metavar="ENGINE",
                   help="leave out one TTS engine's voices (repeatable; mbrola, pico, flite, kokoro), as a "
                        "manifest's training.train_voices_by_engine may list")
    p.add_argument("--with-engine", dest="with_engines", action="append", default=[],
                   choices=("festival", "rhvoice"), metavar="ENGINE",
                   help="also train on Festival's or RHVoice's voices (repeatable; off by default: with both, "
                        "en-command lost about 5 points on real English digits)")
    p.add_argument("--head-augment", choices=("auto", "on", "shift", "off"), default="auto",
                   help="train heads on shifted windows blended in pairs (mixup); shift: no mixup; auto: both for "
                        "command and phrasebook catalogs (real English digits 81.9 -> 88.1 %%), the shift "
                        "for wake words (real 'jarvis' misses 18.2 -> 10.9 %%)")
    p.add_argument("--voice-swap", type=_probability, default=0.0, metavar="P",
                   help="probability that a training window takes another training voice's style (its "
                        "voice's mean embedding swapped for the other's), so that heads learn words, not "
                        "voices (default 0: off)")
    p.add_argument("--vtlp", type=_probability, default=0.0, metavar="P",
                   help="probability that a training clip has every frequency scaled by 0.87-1.15 at the "
                        "same tempo (vocal-tract length perturbation; the default speed perturbation moves "
                        "tempo, pitch and vocal tract together) (default 0: off)")
    p.add_argument("--speech-level", action="store_true",
                   help="draw each clip's level (-45 to -15 dBFS) for its spoken part, as a microphone's "
                        "meter reads it, instead of over the whole mostly silent clip, which left speech "
                        "7-12 dB louder and a third of clips clipped (held-out clips levelled alike)")
    p.add_argument("--babble-pool", type=_count, default=0, metavar="N",
                   help="training clips' babble from N sentences of everyday words spoken by training voices, "
                        "half in the catalog's language, half in the others (default 0: the eight negatives "
                        "whose babble the held-out clips hear)")
    p.add_argument("--onset-cut", type=_probability, default=0.0, metavar="P",
                   help="cut the first 20-80 ms (at most a third) of a training word, whose synthesized clip starts "
                        "10 ms before its speech, with probability P, as tightly trimmed recordings and soft "
                        "onsets in noise lose it (default 0)")
    p.add_argument("--accents", type=int, choices=range(5), default=0, metavar="N",
                   help="also train on each training Kokoro voice speaking with N (0-4) foreign accents (French, "
                        "German, Spanish, Mandarin speakers' English: quantize/accent.py; English catalogs only; "
                        "default 0)")
    p.add_argument("--drr", type=float, nargs=2, metavar=("LOW", "HIGH"),
                   help="direct-to-reverberant ratio range (dB) of the training rooms, drawn per reverberant "
                        "clip (default: every room at +10.5 dB, a talker close to the microphone)")
    p.set_defaults(func=_build)

    p = sub.add_parser("evaluate", help="evaluate a bundle through the edge loop on labelled audio")
    p.add_argument("--bundle", required=True)
    p.add_argument("--data", help="folder of FSDD-style digit WAVs, or a TSV of file<TAB>intent (paths relative "
                                  "to the TSV's folder; intent _unknown_ for clips that must not fire)")
    p.add_argument("--real", action="store_true",
                   help="evaluate on ../shared/data/real-dev as the build does and record it in the manifest")
    p.add_argument("--heldout", action="store_true",
                   help="play the build's held-out clips through the edge loop as the device hears them "
                        "(command and phrase bundles) and record it in the manifest as metrics.heldout_edge")
    p.set_defaults(func=_evaluate)

    p = sub.add_parser("recalibrate", help="re-derive a bundle's threshold from its cached held-out features")
    p.add_argument("--bundle", required=True)
    p.set_defaults(func=_recalibrate)

    p = sub.add_parser("promote", help="copy a candidate bundle (e.g. built in .cache/) to where it ships, "
                                       "fixing its path to the speech embedding")
    p.add_argument("--bundle", required=True, help="the candidate bundle directory")
    p.add_argument("--to", required=True, help="destination, e.g. models/en-command (replaced)")
    p.set_defaults(func=_promote)

    p = sub.add_parser("evaluate-auto", help="--language auto and every two-language conversation (en+fr ...) "
                                             "on held-out voices, each utterance on its own and in streams "
                                             "with and without the language memory (recorded in models/langid)")
    p.add_argument("--models-dir", default=str(MODELS),
                   help="where the five phrasebook bundles, langid and catalog/ are (try candidates in a copy)")
    p.add_argument("--phrases", choices=("even", "odd", "all"), default="even",
                   help="which half of the phrasebook to speak (sorted ids); only the default, even, is "
                        "recorded in the manifest: odd checks the figures on phrases no rule was chosen on")
    p.set_defaults(func=_evaluate_auto)

    p = sub.add_parser("table", help="print the Markdown table of shipped bundles and their measured figures")
    p.add_argument("--models-dir", default=str(MODELS))
    p.set_defaults(func=_table)

    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    from edge.bundle import BundleError

    try:
        return args.func(args)
    except (RuntimeError, ValueError, OSError, BundleError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    raise SystemExit(main())
