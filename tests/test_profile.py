"""Voice profiles (`polyvox enroll`, edge.profile): made from real espeak-ng speech, applied by the
real edge loop with the shipped English command model."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from edge.audio import WavSource, write_wav
from edge.bundle import BundleError
from edge.config import frontend_config
from edge.enroll import Enroller, enroll_files, enroll_live, read_recordings
from edge.pipeline import Pipeline, PipelineConfig, load_models
from edge.profile import ProfileConfig, VoiceProfile
from tests.conftest import ROOT, espeak, with_silence

BUNDLE = ROOT / "models" / "en-command"
VOICE = "en-gb-scotland"  # a held-out voice of en-command: never trained on


def _events(audio: np.ndarray, profiles: tuple[Path, ...] = ()) -> list[str]:
    models = load_models([BUNDLE], frontend_config(), profiles=profiles)
    pipe = Pipeline(PipelineConfig(frontend=frontend_config(), wake="off"), models)
    pipe.lead_in()
    audio = audio.astype(np.float32)
    events = [e for i in range(0, len(audio), 640) for e in pipe.feed(audio[i : i + 640])] + pipe.finish()
    return [e.intent for e in events if e.type == "command"]


@pytest.fixture(scope="module")
def recordings(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A user's enrollment folder, <intent>/<n>.wav, with "yes" and "no" filed under each other."""
    root = tmp_path_factory.mktemp("recordings")
    for intent, text in (("no", "yes"), ("yes", "no"), ("stop", "stop"), ("play", "play")):
        (root / intent).mkdir()
        write_wav(root / intent / "1.wav", with_silence(espeak(text, VOICE, 150), gap_s=0.6))
    return root


@pytest.fixture(scope="module")
def swapped_profile(recordings: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    enroller = Enroller(BUNDLE)
    takes = enroll_files(enroller, read_recordings(recordings), progress=lambda _: None)
    assert sorted(t.intent for t in takes) == ["no", "play", "stop", "yes"]
    path = tmp_path_factory.mktemp("profile") / "me.npz"
    enroller.profile(takes).save(path)
    return path


def test_a_profile_decides_with_the_model(swapped_profile: Path):
    # The user filed "yes" as no: a fresh "yes" (another rate) is heard as yes by the model alone
    # and as no with the profile, which is how far a profile can pull the model toward a voice.
    fresh = with_silence(espeak("yes", VOICE, 175), espeak("stop", VOICE, 175))
    assert _events(fresh) == ["yes", "stop"]
    assert _events(fresh, (swapped_profile,)) == ["no", "stop"]


def test_a_profile_round_trips_and_binds_to_its_model(swapped_profile: Path, tmp_path: Path):
    profile = VoiceProfile.load(swapped_profile)
    assert profile.bundle_name == "en-command" and profile.windows.shape[1:] == (16, 96)
    models = load_models([BUNDLE], frontend_config(), profiles=(swapped_profile,))
    head = models.command_heads[0]
    assert head.profile is not None and head.decision.threshold == ProfileConfig().threshold
    # Recorded for another model of the same name: refused in one line.
    other = VoiceProfile(profile.bundle_name, "0" * 64, profile.intents, profile.windows)
    other.save(tmp_path / "other.npz")
    with pytest.raises(BundleError, match="recorded for another model") as exc:
        load_models([BUNDLE], frontend_config(), profiles=(tmp_path / "other.npz",))
    assert "\n" not in str(exc.value)
    # For a model not loaded (another language's): left for later, the models still load.
    VoiceProfile("de-command", "0" * 64, profile.intents, profile.windows).save(tmp_path / "de.npz")
    assert load_models([BUNDLE], frontend_config(), profiles=(tmp_path / "de.npz",)).command_heads[0].profile is None


@pytest.mark.parametrize("content, words", [(b"not a profile", "is not a voice profile"), (None, "does not exist")])
def test_a_bad_profile_file_is_one_line(tmp_path: Path, content: bytes | None, words: str):
    path = tmp_path / "bad.npz"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(BundleError, match=words) as exc:
        VoiceProfile.load(path)
    assert "\n" not in str(exc.value)


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
    # What was kept enrolls again from files, to the same windows.
    again = enroll_files(Enroller(BUNDLE), read_recordings(tmp_path / "kept"), progress=lambda _: None)
    assert len(again) == 3


def test_enroll_and_run_from_the_command_line(recordings: Path, tmp_path: Path):
    profile = tmp_path / "me.npz"
    tsv = tmp_path / "takes.tsv"
    tsv.write_text("".join(f"{p}\t{p.parent.name}\n" for p in sorted(recordings.glob("*/*.wav"))))
    proc = subprocess.run([sys.executable, "-m", "edge", "enroll", "--language", "en", "--profile", str(profile),
                           "--data", str(tsv)], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "4 recordings of 4 commands" in proc.stdout
    write_wav(tmp_path / "yes.wav", with_silence(espeak("yes", VOICE, 175)))
    run = [sys.executable, "-m", "edge", "run", "--source", str(tmp_path / "yes.wav"), "--wake", "off", "--bundle",
           str(BUNDLE)]
    plain = subprocess.run(run, cwd=ROOT, capture_output=True, text=True, timeout=120)
    adapted = subprocess.run([*run, "--profile", str(profile)], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert '"intent": "yes"' in plain.stdout and '"intent": "no"' in adapted.stdout, adapted.stderr[-2000:]
    # An intent the model does not have: refused before anything is recorded, in one line.
    tsv.write_text(f"{next(recordings.glob('*/*.wav'))}\topen_the_garage\n")
    bad = subprocess.run([sys.executable, "-m", "edge", "enroll", "--profile", str(profile), "--data", str(tsv)],
                         cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and "Traceback" not in bad.stderr
    errors = [x for x in bad.stderr.splitlines() if "error" in x]
    assert len(errors) == 1 and errors[0].startswith("polyvox: error: intent 'open_the_garage' is not one of")
