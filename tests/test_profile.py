"""Voice profiles (`polyvox enroll`, edge.profile): made from real espeak-ng speech, applied by the
real edge loop with the shipped English command model."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from edge.audio import WavSource, write_wav
from edge.bundle import BundleError
from edge.config import frontend_config
from edge.decisions import DecisionConfig
from edge.enroll import Enroller, enroll_files, enroll_live, read_recordings, self_check
from edge.pipeline import Pipeline, PipelineConfig, load_models
from edge.profile import ProfileConfig, ProfileScorer, VoiceProfile, profile_decision
from tests.conftest import ROOT, espeak, with_silence

BUNDLE = ROOT / "models" / "en-command"
VOICE = "en-gb-scotland"  # a held-out voice of en-command: never trained on


def _heard(audio: np.ndarray, profiles: tuple[Path, ...] = ()) -> tuple[list[str], list[dict[str, float]]]:
    """Command events and, per utterance, the posteriors the decision saw."""
    models = load_models([BUNDLE], frontend_config(), profiles=profiles)
    pipe = Pipeline(PipelineConfig(frontend=frontend_config(), wake="off"), models)
    pipe.heard = []
    pipe.lead_in()
    audio = audio.astype(np.float32)
    events = [e for i in range(0, len(audio), 640) for e in pipe.feed(audio[i : i + 640])] + pipe.finish()
    labels = models.command_heads[0].bundle.labels
    return ([e.intent for e in events if e.type == "command"],
            [dict(zip(labels, probs.tolist(), strict=True)) for _, _, probs in pipe.heard])


@pytest.fixture(scope="module")
def recordings(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A user's enrollment folder, <intent>/<n>.wav, one take of every command of en-command,
    with "yes" and "no" filed under each other."""
    from edge.bundle import load_bundle

    root = tmp_path_factory.mktemp("recordings")
    texts = {i: t for i, t in load_bundle(BUNDLE).texts.items() if i != "_unknown_"}
    texts["yes"], texts["no"] = texts["no"], texts["yes"]
    for intent, text in texts.items():
        (root / intent).mkdir()
        write_wav(root / intent / "1.wav", with_silence(espeak(text, VOICE, 150), gap_s=0.6))
    return root


@pytest.fixture(scope="module")
def swapped_profile(recordings: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    enroller = Enroller(BUNDLE)
    takes = enroll_files(enroller, read_recordings(recordings), progress=lambda _: None)
    assert len(takes) == 30 and {"no", "play", "stop", "yes"} <= {t.intent for t in takes}
    path = tmp_path_factory.mktemp("profile") / "me.npz"
    enroller.profile(takes).save(path)
    return path


def test_a_profile_decides_with_the_model(swapped_profile: Path):
    # The user filed "yes" as no: a fresh "yes" (another rendition, at another rate) is heard as
    # yes by the model alone, and the profile pulls it toward no, which is how far a profile can
    # pull the model toward a voice. (At 160 words a minute it wins, at 165 the model's own "yes"
    # still does: the margin, not the flip, is what does not depend on espeak-ng's version.)
    fresh = with_silence(espeak("yes", VOICE, 160), espeak("stop", VOICE, 160))
    plain_events, plain = _heard(fresh)
    events, adapted = _heard(fresh, (swapped_profile,))
    assert plain_events == ["yes", "stop"] and plain[0]["no"] < 0.05
    assert adapted[0]["no"] > plain[0]["no"] + 0.3 and adapted[0]["yes"] < plain[0]["yes"] - 0.3
    assert events[-1] == "stop" and adapted[1]["stop"] > 0.5  # an enrolled command said as enrolled


def test_a_profile_round_trips_and_binds_to_its_model(swapped_profile: Path, tmp_path: Path,
                                                      caplog: pytest.LogCaptureFixture):
    profile = VoiceProfile.load(swapped_profile)
    assert profile.bundle_name == "en-command" and profile.windows.shape[1:] == (16, 96)
    models = load_models([BUNDLE], frontend_config(), profiles=(swapped_profile,))
    head = models.command_heads[0]
    assert head.profile is not None and head.decision.thresholds["no"] == ProfileConfig().threshold
    # The bundle's own, for anything not enrolled.
    assert head.decision.threshold == DecisionConfig.from_manifest(head.bundle.decision).threshold
    assert models.summary()[0]["voice_profile"] is True  # as the MQTT state reports it
    # Recorded for another version of the model (an update replaced it): one warning line, and
    # the service listens without it rather than not at all.
    other = VoiceProfile(profile.bundle_name, "0" * 64, profile.intents, profile.windows)
    other.save(tmp_path / "other.npz")
    with caplog.at_level(logging.WARNING, logger="edge.pipeline"):
        stale = load_models([BUNDLE], frontend_config(), profiles=(tmp_path / "other.npz",))
    assert stale.command_heads[0].profile is None
    assert any("recorded for another model" in r.getMessage() and "\n" not in r.getMessage() for r in caplog.records)
    # For a model not loaded (another language's): left for later, the models still load.
    VoiceProfile("de-command", "0" * 64, profile.intents, profile.windows).save(tmp_path / "de.npz")
    assert load_models([BUNDLE], frontend_config(), profiles=(tmp_path / "de.npz",)).command_heads[0].profile is None


def test_the_scorer_mixes_as_documented(tmp_path: Path):
    """ProfileScorer against the rule written out longhand: intents in any order, two takes each."""
    rng = np.random.default_rng(3)
    labels = ("_unknown_", "a", "b", "c", "d")
    intents = ("c", "a", "c", "b", "a", "b")
    windows = rng.normal(size=(6, 4, 3)).astype(np.float32)
    config = ProfileConfig(weight=0.6, temperature=0.25, floor=0.2, threshold=0.35)
    profile = VoiceProfile("m", "sha", intents, windows, config)
    profile.save(tmp_path / "p")  # no .npz suffix: kept as given
    loaded = VoiceProfile.load(tmp_path / "p")
    assert loaded.intents == intents and loaded.config == config and loaded.bundle_name == "m"
    np.testing.assert_allclose(loaded.windows, windows, atol=2e-3)  # stored as float16
    scorer = ProfileScorer(profile, labels)
    flat = windows.reshape(6, -1)
    mean = flat.mean(0)
    unit = (flat - mean) / np.linalg.norm(flat - mean, axis=1, keepdims=True)
    for _ in range(5):
        window = rng.normal(size=(4, 3)).astype(np.float32)
        probs = rng.dirichlet(np.ones(5)).astype(np.float32)
        x = window.reshape(-1) - mean
        sim = unit @ (x / np.linalg.norm(x))
        best = {i: max(sim[j] for j in range(6) if intents[j] == i) for i in "abc"}
        z = np.array([best["a"], best["b"], best["c"], 0.2 + 0.25 * 0.3 * np.log(2)]) / 0.25  # "d": no recording
        opinion = np.exp(z - z.max()) / np.exp(z - z.max()).sum()
        want = probs * (0.4 + 0.6 * opinion[3])
        want[1:4] += 0.6 * opinion[:3]
        got = scorer.adapt(probs.copy(), window)
        np.testing.assert_allclose(got, want, rtol=1e-5)
        assert abs(got.sum() - 1) < 1e-5
    # Only the enrolled intents move to the profile's threshold.
    decision = profile_decision(DecisionConfig(threshold=0.5, thresholds={"d": 0.9, "a": 0.8}), profile)
    assert [decision.thresholds[x] for x in "abcd"] == [0.35, 0.35, 0.35, 0.9] and decision.threshold == 0.5


def _npy(path: Path) -> None:
    with open(path, "wb") as f:  # np.save would add ".npy" to the name
        np.save(f, np.zeros(3))


def _listed_config(path: Path) -> None:
    with open(path, "wb") as f:
        np.savez(f, windows=np.zeros((2, 16, 96)), intents=np.array(["yes", "no"]),
                 meta=np.array('{"version": 1, "config": [1, 2]}'))


@pytest.mark.parametrize("make, words", [
    (lambda p: p.write_bytes(b"not a profile"), "is not a voice profile"),
    (lambda p: p.write_bytes(b""), "is not a voice profile"),
    (_npy, "is not a voice profile"),
    (_listed_config, "config object"),
    (lambda p: None, "does not exist"),
])
def test_a_bad_profile_file_is_one_line(tmp_path: Path, make, words: str):
    path = tmp_path / "bad.npz"
    make(path)
    with pytest.raises(BundleError, match=words) as exc:
        VoiceProfile.load(path)
    assert "\n" not in str(exc.value)
    with pytest.raises(BundleError, match="cannot write"):
        VoiceProfile("m", "s", ("a", "b"), np.zeros((2, 1, 1), np.float32)).save(tmp_path / "no" / "dir.npz")


def test_profiles_need_two_intents_of_the_model():
    windows = np.zeros((2, 16, 96), np.float32)
    with pytest.raises(BundleError, match="at least two intents"):
        VoiceProfile("en-command", "x", ("yes", "yes"), windows)
    from edge.bundle import file_sha256, load_bundle

    bundle = load_bundle(BUNDLE)
    sha = file_sha256(bundle.model_path)
    assert VoiceProfile("en-command", sha, ("yes", "no"), windows).fits(bundle) is None
    assert "'open_the_garage' is not one of" in VoiceProfile("en-command", sha, ("yes", "open_the_garage"),
                                                             windows).fits(bundle)
    assert "windows are [8, 96]" in VoiceProfile("en-command", sha, ("yes", "no"), windows[:, :8]).fits(bundle)


def test_live_enrollment_prompts_and_keeps_the_takes(tmp_path: Path):
    # The microphone is the one thing mocked: a WAV of the user answering each prompt.
    answers = with_silence(espeak("yes", VOICE), espeak("no", VOICE), espeak("stop", VOICE), gap_s=1.2)
    write_wav(tmp_path / "mic.wav", answers)
    prompts: list[str] = []
    with WavSource(tmp_path / "mic.wav") as mic:
        takes = enroll_live(Enroller(BUNDLE), mic, ["yes", "no", "stop"], 1, {"yes": "yes"}, say=prompts.append,
                            keep_dir=tmp_path / "kept")
    assert [t.intent for t in takes] == ["yes", "no", "stop"]
    assert prompts[0].startswith('say "yes"') and len(prompts) == 6
    assert sorted(p.parent.name for p in (tmp_path / "kept").glob("*/*.wav")) == ["no", "stop", "yes"]
    # What was kept enrolls again from files.
    again = enroll_files(Enroller(BUNDLE), read_recordings(tmp_path / "kept"), progress=lambda _: None)
    assert sorted(t.intent for t in again) == ["no", "stop", "yes"]
    with WavSource(tmp_path / "mic.wav") as mic, pytest.raises(BundleError, match="at least two intents"):
        enroll_live(Enroller(BUNDLE), mic, ["yes"], 3, {}, say=prompts.append)


def test_live_enrollment_asks_again_when_nothing_is_heard(tmp_path: Path):
    from edge.enroll import TAKE_TIMEOUT_S

    late = np.zeros(int((TAKE_TIMEOUT_S + 1) * 16000), np.int16)  # the user answers the first prompt late
    write_wav(tmp_path / "mic.wav", np.concatenate([late, with_silence(espeak("yes", VOICE), espeak("no", VOICE))]))
    prompts: list[str] = []
    with WavSource(tmp_path / "mic.wav") as mic:
        takes = enroll_live(Enroller(BUNDLE), mic, ["yes", "no"], 1, {}, say=prompts.append)
    assert [t.intent for t in takes] == ["yes", "no"]
    assert "  nothing heard; again, please" in prompts


def test_enroll_and_run_from_the_command_line(recordings: Path, tmp_path: Path):
    profile = tmp_path / "me.npz"
    tsv = tmp_path / "takes.tsv"
    tsv.write_text("".join(f"{p}\t{p.parent.name}\n" for p in sorted(recordings.glob("*/*.wav"))))
    proc = subprocess.run([sys.executable, "-m", "edge", "enroll", "--language", "en", "--profile", str(profile),
                           "--data", str(tsv)], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "30 recordings of 30 commands" in proc.stdout
    write_wav(tmp_path / "yes.wav", with_silence(espeak("yes", VOICE, 160)))
    run = [sys.executable, "-m", "edge", "run", "--source", str(tmp_path / "yes.wav"), "--wake", "off", "--bundle",
           str(BUNDLE)]
    plain = subprocess.run(run, cwd=ROOT, capture_output=True, text=True, timeout=120)
    adapted = subprocess.run([*run, "--profile", str(profile)], cwd=ROOT, capture_output=True, text=True, timeout=120)
    plain_event, adapted_event = json.loads(plain.stdout), json.loads(adapted.stdout)
    assert plain_event["intent"] == "yes", plain.stderr[-2000:]
    # The profile pulled it toward "no": it says so, or it is far less sure of "yes".
    assert adapted_event["intent"] == "no" or adapted_event["confidence"] < plain_event["confidence"] - 0.3
    # Somewhere the takes cannot be kept: said before anything is recorded.
    bad_keep = subprocess.run([sys.executable, "-m", "edge", "enroll", "--profile", str(profile), "--data", str(tsv),
                               "--keep", "/proc/kept"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert bad_keep.returncode == 2 and "cannot write to '/proc/kept'" in bad_keep.stderr
    # An intent the model does not have: refused before anything is recorded, in one line.
    tsv.write_text(f"{next(recordings.glob('*/*.wav'))}\topen_the_garage\n")
    bad = subprocess.run([sys.executable, "-m", "edge", "enroll", "--profile", str(profile), "--data", str(tsv)],
                         cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and "Traceback" not in bad.stderr
    errors = [x for x in bad.stderr.splitlines() if "error" in x]
    assert len(errors) == 1 and errors[0].startswith("polyvox: error: intent 'open_the_garage' is not one of")


def test_enroll_takes_the_service_config_and_says_so_without_a_microphone(tmp_path: Path):
    config = tmp_path / "polyvox.toml"
    config.write_text(f'models_dir = "{ROOT / "models"}"\ndevice = "no such microphone"\n[vad]\nhangover_s = 0.2\n')
    proc = subprocess.run([sys.executable, "-m", "edge", "enroll", "--config", str(config), "--profile",
                           str(tmp_path / "me.npz"), "--record", "--intents", "yes,no"],
                          cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    errors = [x for x in proc.stderr.splitlines() if "error" in x]
    assert len(errors) == 1 and errors[0].startswith("polyvox: error:") and not (tmp_path / "me.npz").exists()


def test_a_phrasebook_profile_in_translate_mode(tmp_path: Path):
    # French takes of three phrases by a French held-out voice; translate mode listens with them.
    tsv = tmp_path / "takes.tsv"
    lines = []
    takes = (("thank_you", "merci"), ("goodbye", "au revoir"), ("where_is_toilet", "où sont les toilettes"))
    for intent, text in takes:
        write_wav(tmp_path / f"{intent}.wav", with_silence(espeak(text, "fr-be", 150), gap_s=0.6))
        lines.append(f"{intent}.wav\t{intent}\n")
    tsv.write_text("".join(lines))
    profile = tmp_path / "me-fr.npz"
    proc = subprocess.run([sys.executable, "-m", "edge", "enroll", "--language", "fr", "--mode", "translate",
                           "--profile", str(profile), "--data", str(tsv)], cwd=ROOT, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0 and "3 recordings of 3 commands for fr-phrase" in proc.stdout, proc.stderr[-2000:]
    write_wav(tmp_path / "said.wav", with_silence(espeak("merci", "fr-be", 160)))
    run = subprocess.run([sys.executable, "-m", "edge", "run", "--mode", "translate", "--language", "fr",
                          "--target-language", "en", "--source", str(tmp_path / "said.wav"), "--profile", str(profile),
                          "--output", str(tmp_path / "out.wav")], cwd=ROOT, capture_output=True, text=True, timeout=120)
    events = [json.loads(line) for line in run.stdout.splitlines()]
    heard = [(e["type"], e["phrase"], e["target"]["text"]) for e in events]
    assert heard == [("translation", "thank_you", "thank you")], run.stderr[-2000:]
    assert "fr-phrase: voice profile" in run.stderr


def test_the_self_check_scores_each_take_against_the_others():
    # "yes" filed as no and "no" as yes, two takes of each: the model alone gets only "stop"
    # right; each swapped take, against a profile holding its twin, goes the user's way.
    enroller = Enroller(BUNDLE)
    takes = [enroller.from_audio(with_silence(espeak(text, VOICE, rate), gap_s=0.6).astype(np.float32), intent)
             for intent, text in (("no", "yes"), ("yes", "no"), ("stop", "stop")) for rate in (150, 160)]
    check = self_check(enroller, enroller.profile(takes), takes)
    assert check.takes == 6 and check.right_alone == 2
    assert check.right_with_profile >= 4
    single = [takes[0], takes[2], takes[4]]  # one take of each: nothing to leave out
    assert self_check(enroller, enroller.profile(single), single).takes == 0
