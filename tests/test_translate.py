"""Translation mode round trip on the shipped phrasebook bundles, and no self-triggering."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from edge.audio import write_wav
from tests.conftest import ROOT, espeak, with_silence

LANGS = ["zh", "en", "de", "fr", "es"]
VOICE = {"zh": "cmn-latn-pinyin", "en": "en-us", "de": "de", "fr": "fr-fr", "es": "es"}
PHRASES = ["thank_you", "where_is_station", "call_doctor"]


def _phrasebook() -> dict:
    import tomllib

    return tomllib.loads((ROOT / "models" / "catalog" / "phrasebook.toml").read_text())["phrases"]


def _bundles_present() -> bool:
    return all((ROOT / "models" / f"{lang}-phrase" / "manifest.json").is_file() for lang in LANGS)


pytestmark = pytest.mark.skipif(not _bundles_present(), reason="phrase bundles are not built")


def _say(text: str, lang: str) -> np.ndarray:
    if lang == "zh":
        from quantize.voices import hanzi_to_pinyin

        text = hanzi_to_pinyin(text)
    return espeak(text, VOICE[lang], 150)


def _run(*args: str) -> list[dict]:
    proc = subprocess.run([sys.executable, "-m", "edge", "run", "--wake", "off", "--json", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return [json.loads(x) for x in proc.stdout.splitlines()]


@pytest.mark.parametrize("src", LANGS)
def test_round_trip_through_every_target_language(src, tmp_path: Path):
    book = _phrasebook()
    wav = tmp_path / f"{src}.wav"
    write_wav(wav, with_silence(*[_say(book[p][src], src) for p in PHRASES], gap_s=3.0))
    for dst in LANGS:
        if dst == src:
            continue
        out = tmp_path / f"{src}-{dst}.wav"
        events = _run("--mode", "translate", "--language", src, "--target-language", dst, "--source", str(wav),
                      "--output", str(out))
        assert [e["phrase"] for e in events] == PHRASES, (src, dst, events)
        for e in events:
            assert e["type"] == "translation"
            assert e["source"]["language"] == src and e["target"]["language"] == dst
            assert e["target"]["text"] == book[e["phrase"]][dst]
        # Our own phrasebook model for the target language hears the spoken translation.
        heard = _run("--bundle", str(ROOT / "models" / f"{dst}-phrase"), "--source", str(out))
        assert [e["intent"] for e in heard] == PHRASES, (src, dst, heard)


@pytest.mark.parametrize("rule", ["tiebreak", "joint"])
def test_auto_language_picks_the_source_language(tmp_path: Path, rule: str):
    if not (ROOT / "models" / "langid" / "manifest.json").is_file():
        pytest.skip("language-id bundle is not built")
    book = _phrasebook()
    for src in ["fr", "de", "zh"]:
        wav = tmp_path / f"{src}.wav"
        write_wav(wav, with_silence(_say(book["where_is_station"][src], src), gap_s=2.0))
        events = _run("--mode", "translate", "--language", "auto", "--langid-rule", rule, "--target-language", "en",
                      "--source", str(wav), "--output", str(tmp_path / "out.wav"))
        assert [(e["source"]["language"], e["phrase"]) for e in events] == [(src, "where_is_station")], events


def test_a_conversation_speaks_each_phrase_in_the_other_language(tmp_path: Path):
    if not (ROOT / "models" / "langid" / "manifest.json").is_file():
        pytest.skip("language-id bundle is not built")
    book = _phrasebook()
    turns = [("fr", "thank_you"), ("en", "where_is_station"), ("fr", "call_doctor"), ("en", "no")]
    wav, out = tmp_path / "talk.wav", tmp_path / "spoken.wav"
    write_wav(wav, with_silence(*[_say(book[p][lang], lang) for lang, p in turns], gap_s=3.0))
    events = _run("--mode", "translate", "--language", "fr+en", "--target-language", "en", "--source", str(wav),
                  "--output", str(out))
    other = {"fr": "en", "en": "fr"}
    assert [(e["source"]["language"], e["phrase"], e["target"]["language"]) for e in events] == [
        (lang, p, other[lang]) for lang, p in turns]
    # What the box said, heard back by the same conversation: each phrase in the other language.
    heard = _run(*[f"--bundle={ROOT / 'models' / b}" for b in ("en-phrase", "fr-phrase", "langid")],
                 "--source", str(out))
    assert [(e["language"], e["intent"]) for e in heard] == [(other[lang], p) for lang, p in turns]


def test_a_file_output_does_not_deafen_the_box(tmp_path: Path):
    # Only a speaker is heard in the room: phrases 1 s apart all translate when speech goes to a file.
    book = _phrasebook()
    wav = tmp_path / "quick.wav"
    write_wav(wav, with_silence(*[_say(book[p]["en"], "en") for p in PHRASES], gap_s=1.0))
    events = _run("--mode", "translate", "--language", "en", "--target-language", "de", "--source", str(wav),
                  "--output", str(tmp_path / "out.wav"))
    assert [e["phrase"] for e in events] == PHRASES


def test_a_phrase_heard_in_the_target_language_goes_to_the_one_other_language():
    from edge.translate import Translator

    t = Translator.__new__(Translator)  # the rule alone; no models or speech needed
    t.target_language, t.heard = "en", ("en", "fr")
    assert (t.target_for("fr"), t.target_for("en")) == ("en", "fr")
    t.heard = ("de", "en", "fr")  # no one other language: not translated, not echoed
    assert (t.target_for("de"), t.target_for("fr"), t.target_for("en")) == ("en", "en", None)


def test_conversation_evaluation_scores_each_clip_in_every_pair_it_belongs_to():
    if not (ROOT / "models" / "langid" / "manifest.json").is_file():
        pytest.skip("language-id bundle is not built")
    from quantize.autoeval import Clip, evaluate_conversations

    book = _phrasebook()
    clips = [Clip(lang, "where_is_station", with_silence(_say(book["where_is_station"][lang], lang)).astype(np.float32))
             for lang in ("fr", "en")]
    result = evaluate_conversations(ROOT / "models", clips)
    assert len(result["by_pair"]) == 10 and result["utterances"] == 8  # each language is in four pairs
    assert result["by_pair"]["en+fr"]["utterances"] == 2
    assert result["by_pair"]["en+fr"]["phrase_accuracy"] == 1.0
    assert result["by_pair"]["de+zh"]["utterances"] == 0


def test_language_memory_keeps_a_word_that_sounds_alike_in_the_language_being_spoken():
    """German "nein" on its own is heard as English "nine" (both phrase heads fire, English more
    surely); after a German "danke" in the same stream, the language memory keeps it German."""
    if not (_bundles_present() and (ROOT / "models" / "langid" / "manifest.json").is_file()):
        pytest.skip("phrasebook bundles are not built")
    from edge.pipeline import Pipeline, PipelineConfig
    from quantize.autoeval import _models
    from quantize.evaluate import run_stream

    book = _phrasebook()
    stream = [with_silence(_say(book[pid]["de"], "de"), gap_s=0.5).astype(np.float32) for pid in ("thank_you", "no")]
    models = _models(ROOT / "models", tuple(LANGS))
    heard = {}
    for memory_s in (0.0, 60.0):
        pipe = Pipeline(PipelineConfig(wake="off", language_memory_s=memory_s), models)
        heard[memory_s] = [[(e.language, e.intent) for e in events] for events in run_stream(pipe, stream)]
    assert heard[0.0] == [[("de", "thank_you")], [("en", "number_9")]]
    assert heard[60.0] == [[("de", "thank_you")], [("de", "no")]]
    # The memory lasts as long as it is set: the same words 61 s apart are each on their own.
    pause = np.zeros(61 * 16000, np.float32)
    pipe = Pipeline(PipelineConfig(wake="off", language_memory_s=60.0), models)
    events = [e for evs in run_stream(pipe, [stream[0], pause, stream[1]]) for e in evs]
    assert [(e.language, e.intent) for e in events] == [("de", "thank_you"), ("en", "number_9")]


def test_stream_evaluation_carries_the_memory_from_turn_to_turn():
    if not (_bundles_present() and (ROOT / "models" / "langid" / "manifest.json").is_file()):
        pytest.skip("phrasebook bundles are not built")
    from quantize.autoeval import Clip, conversation_streams, evaluate_streams, speaker_streams

    book = _phrasebook()
    clips = [Clip(lang, pid, with_silence(_say(book[pid][lang], lang), gap_s=0.5).astype(np.float32), f"v-{lang}")
             for lang in ("de", "en") for pid in ("thank_you", "no")]
    assert sorted(len(s) for s in speaker_streams(clips)) == [2, 2]
    talks = conversation_streams(clips)
    assert len(talks) == 1 and [c.language for c in talks[0]] == ["en", "de", "en", "de"]  # LANGUAGES order
    result = evaluate_streams(ROOT / "models", clips)
    assert result["speakers"]["streams"] == 2 and result["pairs"]["streams"] == 1
    for kind in ("speakers", "conversations", "pairs"):
        assert result[kind]["memory_0s"]["utterances"] == result[kind]["memory_60s"]["utterances"] == 4
    # German "nein" is English "nine" on its own, German after "danke".
    assert result["speakers"]["memory_0s"]["language_right"] == 3
    assert result["speakers"]["memory_60s"]["language_right"] == 4


def test_a_speech_output_that_fails_loses_no_translation(tmp_path: Path):
    """A full disk or an unplugged speaker: the box says so and keeps listening and publishing."""
    book = _phrasebook()
    wav = tmp_path / "two.wav"
    write_wav(wav, with_silence(*[_say(book[p]["en"], "en") for p in PHRASES[:2]], gap_s=3.0))
    proc = subprocess.run([sys.executable, "-m", "edge", "run", "--wake", "off", "--mode", "translate", "--language",
                           "en", "--target-language", "de", "--source", str(wav), "--output", "/dev/full"],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
    events = [json.loads(x) for x in proc.stdout.splitlines()]
    assert [(e["phrase"], e["spoken"]) for e in events] == [(p, False) for p in PHRASES[:2]], proc.stderr
    assert proc.stderr.count("translation not spoken: cannot write '/dev/full'") == 2
    assert "Traceback" not in proc.stderr
