"""`polyvox bench`: cost of the streaming loop on a fixed recording, one thread.

Each configuration runs in a fresh child process so that peak RSS and load time are its own:
- frontend + VAD only;
- wake model only (embedding + wake head);
- wake + command models (the language's defaults).
RTF is process CPU seconds per audio second over the streaming loop only.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from edge.audio import read_wav
from edge.config import DEFAULT_MODELS_DIR, RunConfig, frontend_config
from edge.pipeline import ModelSet, Pipeline, PipelineConfig, load_models
from edge.runner import bundles_for

DEMO = DEFAULT_MODELS_DIR / "demo" / "demo-en.wav"
CONFIGS = ("frontend+vad", "wake", "wake+command")


def fixed_recording(seconds: float) -> tuple[np.ndarray, list[float]]:
    """The demo recording repeated to `seconds`; returns audio and its speech-end times (s)."""
    clip = read_wav(DEMO).astype(np.float32)
    reps = int(np.ceil(seconds * 16000 / len(clip)))
    audio = np.tile(clip, reps)[: int(seconds * 16000)]
    return audio, []


def process_age_s() -> float | None:
    """Seconds since this process was exec'd (Linux /proc), for start-up-to-ready."""
    try:
        start_ticks = int(Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()[19])
        btime = next(int(x.split()[1]) for x in Path("/proc/stat").read_text().splitlines() if x.startswith("btime"))
    except (OSError, ValueError, IndexError, StopIteration):
        return None
    return time.time() - (btime + start_ticks / os.sysconf("SC_CLK_TCK"))


def peak_rss_mb() -> float:
    """VmHWM from /proc (ru_maxrss can carry the parent's peak over a fork)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        pass
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def run_translate(source: str, target: str, chunk_samples: int | None = None) -> dict:
    """End of a spoken source phrase → first sample of target speech, for 24 phrases spoken by
    espeak-ng: chunk arrival + processing + phrase lookup and (cached) speech rendering."""
    from edge.speech import Tts
    from edge.translate import Translator

    cfg = RunConfig()
    paths = bundles_for(cfg.models_dir, source, ("phrase",))
    if not paths:
        return {"config": f"translate {source}->{target}", "error": f"no {source} phrasebook bundle"}
    models = load_models(paths, frontend_config())
    tts = Tts()
    translator = Translator(models, target, tts)  # pre-renders every target phrase, as the service does
    spoken = translator.spoken
    pids = sorted(spoken)[:: max(1, len(spoken) // 24)][:24]
    gap = np.zeros(int(1.5 * 16000), np.float32)
    parts, ends, t = [gap], [], len(gap)
    for pid in pids:
        clip = tts.render(spoken[pid][source], source).astype(np.float32)
        parts += [clip, gap]
        # The end of speech is the last sample above 2% of the peak (TTS pads with silence).
        loud = np.flatnonzero(np.abs(clip) > 0.02 * np.abs(clip).max())
        ends.append((t + (loud[-1] + 1 if len(loud) else len(clip))) / 16000)
        t += len(clip) + len(gap)
    audio = np.concatenate(parts)
    pipe = Pipeline(PipelineConfig(frontend=frontend_config(), wake="off"), models)
    latencies, correct = [], 0
    step = chunk_samples or cfg.chunk_samples  # the microphone hands over a chunk once its last sample is recorded
    for i in range(0, len(audio), step):
        w0 = time.perf_counter()
        events = pipe.feed(audio[i : i + step])
        for e in events:
            result = translator.translate(e)
            wall = time.perf_counter() - w0
            end = min(ends, key=lambda x: abs(x - e.t_end))
            latencies.append((i + step) / 16000 - end + wall)
            correct += result is not None and e.intent == pids[ends.index(end)]
    lat = np.array(latencies) if latencies else np.array([np.nan])
    return {"config": f"translate {source}->{target}", "phrases": len(pids), "correct": int(correct),
            "latency_s_p50": round(float(np.percentile(lat, 50)), 3),
            "latency_s_p95": round(float(np.percentile(lat, 95)), 3)}


def run_child(config: str, language: str, seconds: float) -> dict:
    t0 = time.perf_counter()
    cfg = RunConfig(language=language)
    if config == "frontend+vad":
        models = ModelSet([], None, language)
    else:
        tasks = ("wake",) if config == "wake" else ("wake", "command")
        paths = bundles_for(cfg.models_dir, language, tasks)
        if not paths:
            return {"config": config, "error": f"no {'+'.join(tasks)} bundles for {language}"}
        models = load_models(paths, frontend_config(), num_threads=1)
    pipe = Pipeline(PipelineConfig(frontend=frontend_config(), wake="off" if config != "wake" else "on"), models)
    ready_s = time.perf_counter() - t0
    age = process_age_s()
    audio, _ = fixed_recording(seconds)
    cpu0 = time.process_time()
    events = []
    step = cfg.chunk_samples
    for i in range(0, len(audio), step):
        events += pipe.feed(audio[i : i + step])
    cpu = time.process_time() - cpu0
    m = pipe.metrics.to_dict()
    return {
        "config": config,
        "models": [h.bundle.name for h in models.heads],
        "audio_s": round(len(audio) / 16000, 2),
        "rtf": round(cpu / (len(audio) / 16000), 5),
        "stage_rtf": m["stage_rtf"],
        "events": len(events),
        "latency_s_mean": m["latency_s_mean"],
        "model_load_s": round(models.load_s, 3),
        "models_to_ready_s": round(ready_s, 3),
        "process_start_to_ready_s": round(age, 2) if age is not None else None,
        "peak_rss_mb": peak_rss_mb(),
    }


def main(args: argparse.Namespace) -> int:
    rows = []
    for config in (*CONFIGS, "translate"):
        # A fresh interpreter per configuration: its RSS and start-up are its own.
        proc = subprocess.run([sys.executable, "-m", "edge.bench", config, args.language, str(args.seconds)],
                              capture_output=True, text=True, env=os.environ | {"OMP_NUM_THREADS": "1"})
        if proc.returncode != 0:
            rows.append({"config": config, "error": proc.stderr.strip().splitlines()[-1:]})
            continue
        rows.append(json.loads(proc.stdout.strip().splitlines()[-1]))
    print(f"polyvox bench: {args.seconds:.0f} s recording ({DEMO.name} looped), language {args.language}, 1 thread")
    print(f"{'configuration':<14} {'RTF':>8} {'frontend':>9} {'vad':>8} {'embed':>8} {'wake':>8} {'command':>8} "
          f"{'RSS MB':>7} {'load s':>7} {'ready s':>7} {'latency s':>9}")
    for r in rows:
        if r["config"].startswith("translate") and "error" not in r:
            print(f"{r['config']:<14} end of source phrase → first target sample: p50 {r['latency_s_p50']:.3f} s, "
                  f"p95 {r['latency_s_p95']:.3f} s ({r['correct']}/{r['phrases']} phrases right)")
            continue
        if "error" in r:
            print(f"{r['config']:<14} skipped: {r['error']}")
            continue
        s = r["stage_rtf"]
        lat = f"{r['latency_s_mean']:.3f}" if r["latency_s_mean"] is not None else "-"
        print(f"{r['config']:<14} {r['rtf']:>8.4f} {s['frontend']:>9.4f} {s['vad']:>8.4f} {s['embedding']:>8.4f} "
              f"{s['wake']:>8.4f} {s['command']:>8.4f} {r['peak_rss_mb']:>7.1f} {r['model_load_s']:>7.3f} "
              f"{r['process_start_to_ready_s'] or 0:>7.2f} {lat:>9}")
    if args.out:
        Path(args.out).write_text(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    config, language, seconds = sys.argv[1], sys.argv[2], float(sys.argv[3])
    if config == "translate":
        print(json.dumps(run_translate("fr" if language == "en" else language, "en" if language != "en" else "de")))
    else:
        print(json.dumps(run_child(config, language, seconds)))
