"""VAD endpoints on real espeak-ng speech; decisions driven by time without audio."""

from __future__ import annotations

import numpy as np
import pytest

from edge.decisions import DecisionConfig, WakeDecider, decide_command
from edge.frontend import Frontend
from edge.vad import Vad, VadConfig
from tests.conftest import espeak, with_silence


def _utterances(audio: np.ndarray, cfg: VadConfig | None = None) -> list[tuple[float, float]]:
    fe = Frontend()
    fe.compute(audio)
    vad = Vad(cfg)
    out = []
    for e, f in zip(fe.energy_db, fe.flatness, strict=True):
        u = vad.step(float(e), float(f))
        if u:
            out.append((u.start_frame / 100, u.end_frame / 100))
    return out


def test_vad_finds_each_utterance_with_its_bounds():
    a, b = espeak("turn on the lights"), espeak("seven")
    audio = with_silence(a, b, gap_s=1.0)
    utts = _utterances(audio)
    assert len(utts) == 2
    starts = [1.0, 1.0 + len(a) / 16000 + 1.0]
    for (s, e), want_s, clip in zip(utts, starts, (a, b), strict=True):
        assert abs(s - want_s) < 0.15
        assert 0.5 * len(clip) / 16000 < e - s < 1.1 * len(clip) / 16000 + 0.1


def test_vad_ignores_steady_noise_and_hears_speech_in_it():
    rng = np.random.default_rng(0)
    speech = espeak("what time is it").astype(np.float32)
    noise = rng.standard_normal(16000 * 4).astype(np.float32) * 300
    assert _utterances(noise) == []
    mixed = noise.copy()
    mixed[32000 : 32000 + len(speech)] += speech
    assert len(_utterances(mixed)) == 1


def test_vad_closes_an_utterance_over_babble():
    """Talk in the background (a TV, other people) dips far below its peaks, so the quietest
    frame alone held every utterance open for as long as the babble went on (0.7-1.1 s past
    the end here, or for good)."""
    rng = np.random.default_rng(0)
    n = 16000 * 5
    babble = np.zeros(n, dtype=np.float32)
    for text, voice in [("the weather will be sunny tomorrow afternoon", "en-us"),
                        ("ich habe heute keine Zeit dafür", "de"), ("nous allons au marché ce matin", "fr"),
                        ("vamos a la playa el domingo", "es")]:
        talk = np.tile(espeak(text, voice).astype(np.float32), 8)
        off = int(rng.integers(0, len(talk) - n))
        babble += talk[off : off + n] / np.std(talk)
    speech = espeak("turn on the lights").astype(np.float32)
    loud = np.flatnonzero(np.abs(speech) > 0.02 * np.abs(speech).max())
    start, end_s = 32000, (32000 + loud[-1]) / 16000
    audio = babble * np.std(speech) / np.std(babble) / 10 ** (20 / 20)  # 20 dB below the speech
    audio[start : start + len(speech)] += speech
    ends = [e for s, e in _utterances(audio) if s < end_s and e > start / 16000]
    assert len(ends) == 1
    assert abs(ends[0] - end_s) < 0.3


def test_babble_that_starts_in_a_quiet_room_is_learned_after_one_long_utterance():
    """A TV switched on in a quiet room: the typical level between utterances is learned only
    between them, so its talk kept opening 4-second utterances for half a minute."""
    rng = np.random.default_rng(1)
    n = 16000 * 20
    babble = np.zeros(n, dtype=np.float32)
    for text, voice in [("the weather will be sunny tomorrow afternoon", "en-us"),
                        ("ich habe heute keine Zeit dafür", "de"), ("nous allons au marché ce matin", "fr"),
                        ("vamos a la playa el domingo", "es"), ("we will meet again next week", "en-gb")]:
        talk = np.tile(espeak(text, voice).astype(np.float32), 12)
        off = int(rng.integers(0, len(talk) - n))
        babble += talk[off : off + n] * 0.5
    audio = np.concatenate([rng.normal(0, 20, 16000 * 3), babble + rng.normal(0, 20, n)]).astype(np.float32)
    utts = _utterances(audio)
    assert len(utts) <= 2 and all(e < 8.5 for _, e in utts), utts


def test_vad_config_is_validated():
    with pytest.raises(ValueError, match="hangover"):
        VadConfig(hangover_s=0)


def test_wake_decider_smooths_thresholds_and_stays_quiet_after_an_accept():
    d = WakeDecider(("_unknown_", "wake"), DecisionConfig(threshold=0.6, smoothing_steps=2, refractory_s=1.0))
    hi, lo = np.array([0.1, 0.9]), np.array([0.9, 0.1])
    assert d.update(hi, 0.0) is None  # one high step alone: (0.9 + 0) / 2
    d.reset()
    assert d.update(lo, 0.0) is None
    assert d.update(hi, 0.08) is None  # mean 0.5 < 0.6
    hit = d.update(hi, 0.16)
    assert hit is not None and hit[0] == "wake"
    assert d.update(hi, 0.5) is None and d.update(hi, 0.9) is None  # refractory
    assert d.update(hi, 1.2) is not None


def test_command_decision_per_label_threshold_unknown_and_sensitivity():
    labels = ("_unknown_", "yes", "no")
    cfg = DecisionConfig(threshold=0.5, thresholds={"no": 0.8})
    assert decide_command(labels, np.array([0.1, 0.7, 0.2]), cfg) == ("yes", pytest.approx(0.7))
    assert decide_command(labels, np.array([0.1, 0.2, 0.7]), cfg) is None  # "no" needs 0.8
    assert decide_command(labels, np.array([0.7, 0.2, 0.1]), cfg) is None  # unknown never fires
    assert decide_command(labels, np.array([0.1, 0.2, 0.7]), cfg, sensitivity=1.0) is not None
    assert decide_command(labels, np.array([0.1, 0.6, 0.3]), cfg, sensitivity=0.0) is None


def test_sensitivity_moves_a_near_certain_wake_threshold_smoothly_and_never_caps_it():
    cfg = DecisionConfig(threshold=0.9999, smoothing_steps=1)
    assert cfg.threshold_for("wake") == pytest.approx(0.9999)  # was silently capped at 0.995
    steps = [cfg.threshold_for("wake", s) for s in (1.0, 0.75, 0.5, 0.25, 0.0)]
    assert steps == sorted(steps) and 0.98 < steps[1] < 0.9999 < steps[3] < 1.0
    d = WakeDecider(("_unknown_", "wake"), cfg)
    assert d.update(np.array([0.002, 0.998]), 0.0) is None
    assert d.update(np.array([0.002, 0.998]), 0.2, sensitivity=0.75) is not None


def test_frames_not_heard_keep_the_rooms_noise_level():
    """Muted, or the box speaking: zeros reach the frontend, and a VAD that learned their level
    would take the room's own noise for speech when sound returns."""
    rng = np.random.default_rng(0)
    room = 60.0 + rng.normal(0, 1.5, 900)  # steady fan noise, not flat enough to rule out by flatness
    silence_db = 5.0  # digital zeros through the frontend's dither

    def utterances(hold: bool) -> list:
        vad = Vad(VadConfig())
        found = [vad.step(e, 0.3) for e in room[:300]]
        for _ in range(300):  # three seconds muted
            if hold:
                vad.hold()
            else:
                found.append(vad.step(silence_db, 0.3))
        found += [vad.step(e, 0.3) for e in room[300:]]
        return [u for u in found if u is not None]

    assert utterances(hold=True) == []
    assert len(utterances(hold=False)) == 1  # what learning the zeros did: a false utterance
