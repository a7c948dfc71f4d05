"""bench.compare: the scoring rules on hand-made events, and a whole tiny run (about 15 s) that
must write the table, JSON and chart and skip a peer that is not installed."""

from __future__ import annotations

import json
import shutil

import pytest

from bench import compare
from bench.recording import Item


def item(kind: str, label: str, start_s: float, end_s: float) -> Item:
    return Item(kind, label, label, "test", start_s, end_s)


ITEMS = [
    item("wake", "alexa", 1.0, 1.5),
    item("command", "stop", 4.0, 4.4),
    item("sentence", "sentence", 7.0, 9.0),
    item("noise", "pink", 11.0, 12.0),
]


def test_score_matches_labels_within_the_window() -> None:
    events = [("alexa", 1.8), ("stop", 6.2), ("stop", 8.0)]
    s = compare.score(ITEMS, events, ["alexa", "stop"])
    assert (s.targets, s.hits, s.false_alarms) == (2, 1, 2)  # "stop" came 1.8 s late, then fired on a sentence
    assert s.latencies_s == [pytest.approx(0.3)]
    assert s.by_label["stop"] == {"targets": 1, "hits": 0, "false_alarms": 2}


def test_score_wrong_label_is_a_false_alarm() -> None:
    s = compare.score(ITEMS, [("okay nabu", 1.6)], ["alexa", "okay nabu"])
    assert (s.hits, s.false_alarms) == (0, 1)


def test_score_vad_counts_every_spoken_item_and_repeats_apart() -> None:
    events = [("speech", 1.9), ("speech", 4.8), ("speech", 7.9), ("speech", 9.4), ("speech", 12.3)]
    s = compare.score(ITEMS, events, None)
    assert (s.targets, s.hits, s.repeats, s.false_alarms) == (3, 3, 1, 1)  # a split sentence; a noise burst
    assert len(s.latencies_s) == 2  # sentences are left out of latency


def test_peer_endpointing_repeats_polyvox_vad_defaults() -> None:
    from edge.vad import VadConfig

    cfg = VadConfig()
    peers = (compare.VAD_START_S, compare.VAD_HANGOVER_S, compare.VAD_MIN_S)
    assert peers == (cfg.start_frames * cfg.frame_s, cfg.hangover_s, cfg.min_utterance_s)


def test_frame_endpointer_closes_after_the_hangover() -> None:
    ep = compare.FrameEndpointer(frame_s=0.01)
    closed = [ep.step(speech) for speech in [True] * 30 + [False] * 40]
    assert closed.index(True) == 30 + 19  # the 20th silent frame is 0.2 s of silence
    assert sum(closed) == 1
    blip = compare.FrameEndpointer(frame_s=0.01)
    assert not any(blip.step(speech) for speech in [True] * 3 + [False] * 40)  # shorter than the start run


def test_tiny_benchmark_writes_results_and_skips_missing_peers(tmp_path, monkeypatch, capsys) -> None:
    pytest.importorskip("matplotlib")
    if not shutil.which("espeak-ng"):
        pytest.skip("espeak-ng is not installed")
    ghost = compare.EngineSpec("ghost-peer", "ghost peer", "nothing", ("polyvox_test_no_such_module",))
    monkeypatch.setattr(compare, "ENGINES", [*compare.ENGINES, ghost])

    assert compare.main(["--tiny", "--out", str(tmp_path)]) == 0

    table = capsys.readouterr().out
    assert "| engine | detects | RTF |" in table
    assert "| ghost peer | nothing | skipped: polyvox_test_no_such_module is not installed" in table
    assert (tmp_path / "results.md").read_text() == table
    assert (tmp_path / "results.png").stat().st_size > 10_000

    results = json.loads((tmp_path / "results.json").read_text())
    rows = {r["engine"]: r for r in results["engines"]}
    assert set(rows) == {s.name for s in compare.ENGINES}
    assert rows["ghost-peer"]["skipped"].endswith("is not installed (pip install -e '.[bench]')")
    for spec in compare.ENGINES:
        row = rows[spec.name]
        if compare.missing_reason(spec):
            assert row["skipped"], spec.name  # a missing peer or bundle is skipped, not run
            continue
        # An installed engine must run: a failure here is a broken adapter, not a missing peer.
        assert row["skipped"] is None, (spec.name, row["skipped"])
        assert row["rtf"] > 0 and row["peak_rss_mb"] > 0 and row["threads"] == 1
        assert 0 <= row["hits"] <= row["targets"] > 0
    assert rows["polyvox-vad"]["hits"] >= rows["polyvox-vad"]["targets"] - 1  # clean TTS speech
    specs = {s.name: s for s in compare.ENGINES}
    for name in ("microwakeword", "openwakeword"):
        if not compare.missing_reason(specs[name]):
            assert rows[name]["hits"] >= 2, rows[name]["events"]  # their own wake words, two clear voices
    if compare.FSDD_DIR.is_dir() and not compare.missing_reason(specs["polyvox-commands"]):
        digits = {d["engine"]: d for d in results["digits"]}
        assert digits["polyvox en-command"]["clips"] == compare.FSDD_TINY_CLIPS


def test_peers_with_x86_only_libraries_are_skipped_on_a_raspberry_pi(monkeypatch):
    import platform

    from bench import compare

    specs = {s.name: s for s in compare.ENGINES}
    monkeypatch.setattr(platform, "machine", lambda: "aarch64")
    for name in ("microwakeword", "openwakeword"):
        assert "not aarch64" in compare.missing_reason(specs[name])
    assert compare.missing_reason(specs["polyvox-vad"]) is None


def test_enrollment_bench_scores_only_the_takes_it_did_not_enroll() -> None:
    """bench.enrollment's arithmetic on windows whose answer is known: every speaker's "yes" and
    "no" windows sit apart, and the model alone says "yes" to everything."""
    import numpy as np

    from bench.enrollment import Clips, measure
    from edge.enroll import Enroller
    from edge.profile import ProfileConfig
    from tests.conftest import ROOT

    enroller = Enroller(ROOT / "models" / "en-command")
    labels = enroller.bundle.labels
    rng = np.random.default_rng(0)
    yes, no = rng.normal(size=(16, 96)), rng.normal(size=(16, 96))
    windows, intents, speakers = [], [], []
    for speaker in ("a", "b"):
        for intent, base in (("yes", yes), ("no", no)):
            for _ in range(4):
                windows.append(base + 0.1 * rng.normal(size=(16, 96)))
                intents.append(intent)
                speakers.append(speaker)
    probs = np.zeros((16, len(labels)), np.float32)
    probs[:, labels.index("yes")] = 0.9
    probs[:, 0] = 0.1
    clips = Clips(np.array(windows, np.float32), probs, np.array(intents), np.array(speakers))
    unknown = np.tile(np.eye(len(labels), dtype=np.float32)[0], (2, 1))
    negatives = Clips(rng.normal(size=(2, 16, 96)).astype(np.float32), unknown, np.array(["_unknown_"] * 2),
                      np.array(["x"] * 2))
    out = measure(enroller, clips, negatives, {"a": 10, "b": 8, "_negatives": 2}, k=1, draws=1,
                  config=ProfileConfig())
    # Speaker a has 10 clips (2 heard nothing), b 8: after 2 enrolled each, 8 and 6 are scored.
    alone = {"a": {"right": 0.375, "wrong": 0.375}, "b": {"right": 0.5, "wrong": 0.5}}
    assert out["model alone"]["by_speaker"] == alone
    assert out["with profile"]["by_speaker"] == {"a": {"right": 0.75, "wrong": 0.0}, "b": {"right": 1.0, "wrong": 0.0}}
    assert out["with profile"]["negatives_fired"] == 0.0
