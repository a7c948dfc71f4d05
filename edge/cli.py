"""The `polyvox` command line."""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
from dataclasses import replace
from pathlib import Path

from edge import __version__
from edge.audio import AudioError
from edge.bundle import BundleError, find_bundles, read_manifest
from edge.config import DEFAULT_MODELS_DIR, LANGUAGES, ConfigError, RunConfig, load_config
from edge.decisions import LANGID_RULES

log = logging.getLogger("polyvox")
DEMO_WAV = DEFAULT_MODELS_DIR / "demo" / "demo-en.wav"

RUN_HELP = """\
Listen and print what was heard. Every event is one JSON object per line on stdout (logs go
to stderr; with --mqtt, events go to the broker instead, and also to stdout with --json):
{"type": "command", "intent": "lights_on", "language": "en", "text": "lights on",
"confidence": 0.93, "t_start": 1.23, "t_end": 2.01, ...}.

examples:
  polyvox run --source mic --language de            # German, default microphone
  polyvox run --source kitchen.wav --wake off --json  # every utterance goes to the command model
  arecord -f S16_LE -r 16000 -c 1 | polyvox run --source - --rate 16000
  polyvox run --source mic --bundle my-words/        # your own vocabulary (python -m quantize build)
  polyvox run --mode translate --language fr+en --target-language en  # French <-> English conversation
"""


def _add_run_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--source", help="mic (default), a WAV file, or - for raw 16-bit mono PCM on stdin")
    p.add_argument("--rate", dest="rate_hz", type=int, help="sample rate of PCM on stdin (default 16000)")
    p.add_argument("--device", help="microphone index or name substring (see `polyvox devices`)")
    p.add_argument("--language", help=f"language to listen for: {', '.join(LANGUAGES)} (default en); auto: any of "
                                      "them, picked per utterance; a conversation such as fr+en: either of those "
                                      "(translate mode speaks a phrase heard in the target language in the other one)")
    p.add_argument("--mode", choices=("command", "translate"), help="command (default) or translate")
    p.add_argument("--target-language", dest="target_language", help="translation target language")
    p.add_argument("--config", help="TOML config file; flags override it")
    p.add_argument("--models-dir", dest="models_dir", help=f"where bundles live (default {DEFAULT_MODELS_DIR})")
    p.add_argument("--bundle", dest="bundles", action="append",
                   help="run this bundle directory instead of the language's defaults (repeatable)")
    p.add_argument("--wake", choices=("auto", "on", "off"),
                   help="on: commands only for a few seconds after the wake phrase; off: every utterance "
                        "goes to the command model (push-to-talk, evaluation); auto (default): on when a "
                        "wake model is loaded")
    p.add_argument("--listen", dest="listen_s", type=float, help="seconds to listen for a command after wake")
    p.add_argument("--sensitivity", type=float, help="0..1; higher fires more easily (default 0.5)")
    p.add_argument("--langid-rule", dest="langid_rule", choices=LANGID_RULES,
                   help="with --language auto: tiebreak (default: the most confident phrase head, the "
                        "language-id model deciding near-ties), joint (language probability x phrase "
                        "confidence), argmax (the language-id model picks) or off (phrase heads alone)")
    p.add_argument("--language-memory", dest="language_memory_s", type=float, metavar="SECONDS",
                   help="with several languages (auto, fr+en): languages heard in the last SECONDS win when "
                        "their phrase models also fire, so an English 'no' stays English in an English "
                        "conversation (default 60; 0: every utterance on its own)")
    p.add_argument("--json", action="store_true", default=None,
                   help="with --mqtt: also print events as JSON lines on stdout (without a broker they always are)")
    p.add_argument("--realtime", action="store_true", default=None, help="pace a WAV file at real time")
    p.add_argument("--threads", dest="num_threads", type=int, help="TFLite threads (default 1)")
    p.add_argument("--output", help="WAV file for spoken output (translate mode; default: the speaker)")
    p.add_argument("--output-device", dest="output_device",
                   help="speaker for translate mode: index or name substring (see `polyvox devices`)")
    p.add_argument("--profile", dest="profiles", action="append", metavar="FILE",
                   help="a voice profile made by `polyvox enroll` (repeatable; each applies to the model it "
                        "was recorded for)")
    p.add_argument("--mqtt", dest="mqtt_url", help="broker URL, mqtt://user:pass@host:port or mqtts://...")
    p.add_argument("--metrics", action="store_true", help="print run metrics (RTF, stage costs) to stderr at exit")


RUN_KEYS = ("source", "rate_hz", "device", "language", "mode", "target_language", "models_dir", "bundles", "wake",
            "listen_s", "sensitivity", "langid_rule", "language_memory_s", "json", "realtime", "num_threads", "output",
            "output_device", "profiles")


def cmd_run(args: argparse.Namespace) -> int:
    from edge.service import run_service

    overrides = {k: getattr(args, k, None) for k in RUN_KEYS}

    def read_config() -> RunConfig:
        """The file with the flags on top; SIGHUP calls it again."""
        cfg = load_config(args.config, overrides)
        if args.mqtt_url:
            cfg = replace(cfg, mqtt=replace(cfg.mqtt, url=args.mqtt_url))
        return cfg

    return run_service(read_config(), print_metrics=args.metrics, config_path=args.config, reload_config=read_config)


ENROLL_HELP = """\
Make a voice profile: a few recordings of you saying the commands, so that the model hears your
voice better. Nothing is retrained; `polyvox run --profile FILE` mixes what the model thinks with
how close each utterance is to your recordings. One or two takes of each command are enough.
Measured on real English digits (3 speakers), one take of each digit: 88.0 -> 93.8 % right,
3.9 -> 2.6 % wrong; only the 3 worst-heard digits: 92.7 % right (python -m bench.enrollment).

examples:
  polyvox enroll --language en --profile me-en.npz --record                # prompts for every command
  polyvox enroll --language en --profile me-en.npz --record --intents digit_4,digit_6 --takes 3
  polyvox enroll --bundle my-words/ --profile me.npz --data recordings/   # recordings/<intent>/*.wav
  polyvox enroll --language fr --mode translate --profile me-fr.npz --record --intents hello,thank_you,where_is_toilet
  polyvox run --language en --profile me-en.npz
"""


def cmd_enroll(args: argparse.Namespace) -> int:
    from edge.audio import open_source
    from edge.enroll import CHUNK, Enroller, enroll_files, enroll_live, read_recordings, self_check
    from edge.runner import bundles_for

    # The service's config, when given: its microphone, models and VAD are what the profile is for.
    cfg = load_config(args.config) if args.config else RunConfig()
    if args.bundle:
        bundle = Path(args.bundle)
    else:
        task = "phrase" if args.mode == "translate" else "command"
        found = bundles_for(args.models_dir or cfg.models_dir, args.language, (task,))
        if not found:
            raise BundleError(f"no {task} model for language {args.language!r}; name one with --bundle")
        bundle = found[0]
    if args.takes < 1:
        raise BundleError(f"--takes must be at least 1, not {args.takes}")
    enroller = Enroller(bundle, cfg.vad)
    # Before anyone speaks: a profile or takes that cannot be written would lose the session.
    keep = Path(args.keep) if args.keep else None
    for folder in (Path(args.profile).resolve().parent, keep):
        if folder is None:
            continue
        try:
            folder.mkdir(parents=True, exist_ok=True)
            with tempfile.TemporaryFile(dir=folder):
                pass
        except OSError as exc:
            raise BundleError(f"cannot write to '{folder}': {exc.strerror or exc}") from None
    if args.data:
        takes = enroll_files(enroller, read_recordings(args.data), progress=print)
    else:
        intents = args.intents.split(",") if args.intents else enroller.intents
        print(f"enrolling {len(intents)} commands of {enroller.bundle.name}, {args.takes} take(s) each: "
              "speak after each prompt, as you would to the device", flush=True)
        with open_source("mic", device=args.device or cfg.device or None, chunk_samples=CHUNK) as source:
            takes = enroll_live(enroller, source, intents, args.takes, enroller.bundle.texts,
                                say=lambda line: print(line, flush=True),
                                keep_dir=keep)
    profile = enroller.profile(takes)
    profile.save(args.profile)
    print(f"wrote {args.profile}: {len(takes)} recordings of {len(set(profile.intents))} commands for "
          f"{enroller.bundle.name}; use it with `polyvox run --profile {args.profile}`")
    check = self_check(enroller, profile, takes)
    if check.takes:
        print(f"self-check, each take against a profile of the others: the model alone heard "
              f"{check.right_alone} of {check.takes} right, with your profile {check.right_with_profile}")
    else:
        print("record two takes of a command to see how much the profile helps (a self-check needs them)")
    return 0


def cmd_devices(_args: argparse.Namespace) -> int:
    from edge.audio import describe_devices

    print(describe_devices())
    return 0


def cmd_models(args: argparse.Namespace) -> int:
    root = Path(args.models_dir or DEFAULT_MODELS_DIR)
    paths = find_bundles(root)
    if not paths:
        print(f"no model bundles in {root}")
        return 0
    for path in paths:
        try:
            m = read_manifest(path)
        except BundleError as exc:
            print(f"{path.name:<16} unusable: {exc}")
            continue
        metrics = m.get("metrics", {})
        acc = metrics.get("heldout_int8_accuracy")
        real = metrics.get("real", {})
        real_txt = ""
        if "fsdd_digits" in real:
            real_txt = f", real EN digits {real['fsdd_digits']['accuracy']:.1%}"
        if "wakewords" in real and "false_reject_rate" in real["wakewords"]:
            real_txt = f", real FRR {real['wakewords']['false_reject_rate']:.1%}"
        labels = [x for x in m.get("labels", []) if not x.startswith("_")]
        acc_txt = f"held-out {acc:.1%}" if isinstance(acc, float) else "no accuracy recorded"
        print(f"{path.name:<16} {m.get('language', '?'):<3} {m.get('task', '?'):<9} {len(labels):>3} labels  "
              f"{acc_txt}{real_txt}")
        if args.verbose and labels:
            print("    " + ", ".join(labels))
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    """Run the bundled English recording through the loop, with a readable transcript."""
    from edge.config import RunConfig
    from edge.runner import Runner

    if not DEMO_WAV.is_file():
        raise AudioError(f"demo recording '{DEMO_WAV}' is missing")
    printed: list[str] = []

    def show(event) -> None:
        line = (f"{event.t_start:6.2f}-{event.t_end:6.2f} s  {event.type:<8} {event.intent:<16} "
                f"\"{event.text}\"  ({event.confidence:.0%}, {event.language})")
        printed.append(line)
        print(line, flush=True)

    cfg = RunConfig(source=str(DEMO_WAV), language="en", wake="auto", realtime=args.realtime)
    print(f"polyvox {__version__} demo: {DEMO_WAV.name}, English, wake phrase \"computer\" then a command",
          flush=True)
    runner = Runner(cfg, sinks=[show])
    metrics = runner.run()
    print(f"{len(printed)} events; {metrics['audio_s']:.1f} s of audio, real-time factor {metrics['rtf']:.4f}, "
          f"start-up {metrics['startup_s']:.2f} s")
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    from edge.bench import main as bench_main

    return bench_main(args)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="polyvox", description=(
        "Offline, multilingual voice commands for Raspberry Pi-class devices. Nothing leaves the box."))
    parser.add_argument("--version", action="version", version=f"polyvox {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("run", help="listen and emit events", description=RUN_HELP,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    _add_run_args(p)
    p.set_defaults(func=cmd_run)
    p = sub.add_parser("enroll", help="record your voice for a command model (a voice profile)",
                       description=ENROLL_HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--profile", required=True, metavar="FILE", help="the voice profile to write (.npz)")
    p.add_argument("--language", default="en", help="the language whose command model to enroll for (default en)")
    p.add_argument("--mode", choices=("command", "translate"), default="command",
                   help="translate: enroll for the language's phrasebook model instead (translate mode)")
    p.add_argument("--bundle", help="enroll for this bundle directory instead")
    p.add_argument("--models-dir", dest="models_dir", help=f"where bundles live (default {DEFAULT_MODELS_DIR})")
    how = p.add_mutually_exclusive_group(required=True)
    how.add_argument("--record", action="store_true", help="prompt for each command and record it from the microphone")
    how.add_argument("--data", help="recordings: a folder with one subfolder of WAV files per intent, "
                                    "or a TSV of file<TAB>intent lines")
    p.add_argument("--intents", help="with --record: only these intents, comma-separated (default: all)")
    p.add_argument("--takes", type=int, default=2, help="with --record: takes of each intent (default 2)")
    p.add_argument("--device", help="microphone index or name substring (see `polyvox devices`)")
    p.add_argument("--keep", metavar="DIR", help="with --record: also save the takes as DIR/<intent>/<n>.wav")
    p.add_argument("--config", help="the TOML config `polyvox run` uses: its device, models_dir and [vad] "
                                    "apply here too (flags win)")
    p.set_defaults(func=cmd_enroll)
    p = sub.add_parser("devices", help="list audio input and output devices")
    p.set_defaults(func=cmd_devices)
    p = sub.add_parser("models", help="list model bundles with language, task, labels and accuracy")
    p.add_argument("--models-dir", dest="models_dir")
    p.set_defaults(func=cmd_models)
    p = sub.add_parser("demo", help="run the bundled demo recording (no microphone or broker needed)")
    p.add_argument("--realtime", action="store_true", help="play it at real-time pace")
    p.set_defaults(func=cmd_demo)
    p = sub.add_parser("bench", help="benchmark the loop on a fixed 60 s recording (RTF, RSS, latency)")
    p.add_argument("--seconds", type=float, default=60.0, help="length of the test recording")
    p.add_argument("--language", default="en")
    p.add_argument("--out", help="write the results as JSON here")
    p.set_defaults(func=cmd_bench)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        return args.func(args)
    except (ConfigError, BundleError, AudioError) as exc:
        print(f"polyvox: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
