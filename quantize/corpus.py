"""Synthetic corpus → training windows, computed with the edge frontend, VAD and embedder.

Each example is a TTS rendering of one phrasing (or a negative, or pure noise), augmented and
placed in a window of audio. Its features are taken exactly where the device would take
them: a command window ends at the frame where the edge VAD closes the utterance; wake
windows are taken at the embedding steps around the end of the phrase.
Synthesized audio and features are cached under .cache/, keyed by what made them.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
from dataclasses import asdict, dataclass, field
from multiprocessing import get_context
from pathlib import Path

import numpy as np

from edge.audio import AudioError
from edge.frontend import Frontend, FrontendConfig
from edge.models import EMBEDDING_HOP, Embedder
from edge.vad import Vad, VadConfig
from quantize.augment import RATE, AugmentRecipe, augment, make_noise, set_level
from quantize.voices import Prosody, Voice, audio_revision, synthesize, trim_silence

log = logging.getLogger(__name__)

CACHE = Path(os.environ.get("POLYVOX_CACHE", Path(__file__).resolve().parent.parent / ".cache"))
WINDOW = 16
"""Embeddings per head window (1.28 s of embeddings, ~2 s of audio)."""
MEL_WINDOW = 120
"""Log-mel frames per window for the direct DS-CNN profile (1.2 s)."""


@dataclass(frozen=True)
class Example:
    text: str
    """Phrase to speak; empty for a noise-only example."""
    label: int
    voice: Voice | None
    prosody: Prosody
    seed: int
    split: str
    """train or heldout."""


@dataclass(frozen=True)
class CorpusRecipe:
    task: str
    frontend: FrontendConfig
    vad: VadConfig
    augment: AugmentRecipe = field(default_factory=AugmentRecipe)
    total_s: float = 2.6
    tail_s: tuple[float, float] = (0.4, 0.9)
    """Audio after the end of speech, so the VAD hangover fits in."""

    def hash(self, examples: list[Example], embedding_sha: str, babble: Babble | None = None) -> str:
        data = {"task": self.task, "frontend": self.frontend.hash, "vad": asdict(self.vad),
                "augment": self.augment.to_dict(), "total_s": self.total_s, "tail_s": self.tail_s,
                "embedding": embedding_sha, "examples": [repr(e) for e in examples],
                "heldout_recipe": self.augment.heldout().to_dict(),
                "v": 5}  # 5: the VAD's typical-noise level (edge.vad) moved windows over babble
        if babble is not None and babble.train is not None:  # a pool of its own (Babble): what it says
            data["babble"] = [f"{v.id}|{t}" for t, v in babble.train]
        # Repaired audio is new audio; corpora without it keep their keys ("own-pho" kept the key
        # name it had when it was the only repair).
        revisions = {audio_revision(e.voice) for e in examples if e.voice is not None} - {""}
        if "own-pho" in revisions:
            data["spanish_mbrola"] = 1
        if revisions - {"own-pho"}:
            data["audio_revisions"] = sorted(revisions - {"own-pho"})
        return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:16]


def synth_cached(text: str, voice: Voice, prosody: Prosody) -> np.ndarray:
    engine = f"{voice.id}|{text}|{prosody}"
    revision = audio_revision(voice)
    if revision:  # repaired audio: a new cache entry
        engine += f"|{revision}"
    key = hashlib.sha256(engine.encode()).hexdigest()[:20]
    path = CACHE / "synth" / key[:2] / f"{key}.npy"
    if path.is_file():
        audio = np.load(path)
    else:
        audio = trim_silence(synthesize(text, voice, prosody))
        path.parent.mkdir(parents=True, exist_ok=True)
        np.save(path, audio)
    if len(audio) < RATE // 50:  # some voices say nothing for some words (an abbreviation, a foreign name)
        raise AudioError(f"{voice.id} spoke nothing for {text!r}")
    return audio


@dataclass(frozen=True)
class Babble:
    """Who speaks the babble noise, as (text, voice) pairs. Held-out clips hear the catalog's
    first eight negatives; training clips hear those too unless a build draws a pool of its own
    (`BuildOptions.babble_pool`), so that its held-out clips' babble is none it trained on."""

    heldout: list[tuple[str, Voice]]
    train: list[tuple[str, Voice]] | None = None


def _speak_all(texts: list[tuple[str, Voice]]) -> list[np.ndarray]:
    out = []
    for text, voice in texts:
        with contextlib.suppress(AudioError):
            out.append(synth_cached(text, voice, Prosody()).astype(np.float32))
    return out


class CorpusAudio:
    """Renders an example's audio as the build does (speech placed, augmented, babble from the
    build's own voices); on its own it re-renders a build's held-out clips (`build.heldout_audio`)."""

    def __init__(self, recipe: CorpusRecipe, babble: Babble) -> None:
        self.recipe = recipe
        self.babble = _speak_all(babble.heldout)
        self._train_texts = babble.train
        self._train_babble = self.babble if babble.train is None else None

    def babble_for(self, split: str) -> list[np.ndarray]:
        """The babble speech a clip of `split` hears; a pool of its own is spoken when first
        needed (re-rendering held-out clips needs none of it)."""
        if split == "heldout":
            return self.babble
        if self._train_babble is None:
            self._train_babble = _speak_all(self._train_texts or [])
        return self._train_babble

    def audio_for(self, ex: Example) -> tuple[np.ndarray, int]:
        rng = np.random.default_rng(ex.seed)
        r = self.recipe
        babble = self.babble_for(ex.split)
        if ex.voice is None:  # noise / silence only
            n = int(r.total_s * RATE)
            out = make_noise(n, rng, babble) if rng.random() < 0.85 else np.zeros(n, np.float32)
            out = set_level(out + 1e-3, rng.uniform(-60, -15)) if out.any() else out
            return np.clip(out, -32768, 32767), n - int(0.5 * RATE)
        speech = synth_cached(ex.text, ex.voice, ex.prosody)
        dur = len(speech) / RATE
        tail = rng.uniform(*r.tail_s)
        lead = max(0.3, r.total_s - tail - dur * 1.15) + rng.uniform(0, 0.2)
        recipe = r.augment.heldout() if ex.split == "heldout" else r.augment
        return augment(speech, rng, recipe, lead, lead + dur * 1.15 + tail, babble)

class CorpusWorker(CorpusAudio):
    """Per-process state of a feature build: the audio, one frontend, one VAD, one embedder."""

    def __init__(self, recipe: CorpusRecipe, embedding_path: str, babble: Babble) -> None:
        super().__init__(recipe, babble)
        self.frontend = Frontend(recipe.frontend)
        self.embedder = Embedder(embedding_path, recipe.frontend)

    def command_window(self, audio: np.ndarray, speech_end: int) -> tuple[np.ndarray, np.ndarray, bool]:
        """(embedding window, mel window, vad_fired) taken where the device would classify."""
        mel = self.frontend.compute(audio)
        energy, flatness = self.frontend.energy_db, self.frontend.flatness
        vad = Vad(self.recipe.vad)
        fire = None
        for t in range(len(mel)):
            if vad.step(float(energy[t]), float(flatness[t])) is not None:
                fire = t  # the last utterance closed is the one classified
        fired = fire is not None
        if fire is None:
            fire = min(len(mel) - 1, speech_end // self.recipe.frontend.hop_samples + vad._hangover)
        return self._embed_window(mel, fire), self._mel_window(mel, fire), fired

    def _embed_window(self, mel: np.ndarray, frame: int) -> np.ndarray:
        last = (frame + 1) // EMBEDDING_HOP - 1
        embs = self.embedder.compute(mel[: (last + 1) * EMBEDDING_HOP], first=max(0, last - WINDOW + 1))
        pad = WINDOW - len(embs)
        if pad > 0:
            embs = np.concatenate([np.tile(self.embedder.silence_embedding, (pad, 1)), embs])
        return embs.astype(np.float16)

    def _mel_window(self, mel: np.ndarray, frame: int) -> np.ndarray:
        win = mel[max(0, frame + 1 - MEL_WINDOW) : frame + 1]
        if len(win) < MEL_WINDOW:
            silence = self.embedder._silence
            win = np.concatenate([np.tile(silence, (MEL_WINDOW - len(win), 1)), win])
        return win.astype(np.float16)

    def wake_windows(self, audio: np.ndarray, speech_end: int, positive: bool) -> list[tuple[np.ndarray, int]]:
        """Embedding windows at every other embedding step; positives are the steps within
        0-0.3 s after the phrase ends, steps before (a partial phrase) are negatives."""
        mel = self.frontend.compute(audio)
        embs = self.embedder.compute(mel)
        fill = np.tile(self.embedder.silence_embedding, (WINDOW - 1, 1))
        padded = np.concatenate([fill, embs])
        end_frame = speech_end // self.recipe.frontend.hop_samples
        out = []
        for k in range(len(embs)):
            frame = (k + 1) * EMBEDDING_HOP - 1
            win = padded[k : k + WINDOW].astype(np.float16)
            if positive and end_frame <= frame <= end_frame + 30:
                out.append((win, 1))
            elif (not positive or frame < end_frame - 25) and k % 2 == 0:
                out.append((win, 0))
        return out


_worker: CorpusWorker | None = None


def _init(recipe: CorpusRecipe, embedding_path: str, babble: Babble) -> None:
    global _worker
    _worker = CorpusWorker(recipe, embedding_path, babble)


def _run(ex: Example) -> tuple[Example, list, bool]:
    assert _worker is not None
    try:
        audio, end = _worker.audio_for(ex)
    except AudioError as exc:
        log.warning("skipped: %s", exc)
        return ex, [], False
    if _worker.recipe.task == "wake":
        return ex, _worker.wake_windows(audio, end, ex.label == 1), True
    emb, mel, fired = _worker.command_window(audio, end)
    return ex, [(emb, mel, ex.label)], fired


def features_path(examples: list[Example], recipe: CorpusRecipe, embedding_path: Path, babble: Babble) -> Path:
    """Where a corpus's features are cached: keyed by everything that makes them."""
    from quantize.util import sha256_file

    return CACHE / "features" / f"{recipe.task}-{recipe.hash(examples, sha256_file(embedding_path), babble)}.npz"


def build_features(
    examples: list[Example],
    recipe: CorpusRecipe,
    embedding_path: Path,
    babble: Babble,
    workers: int = 2,
    progress: bool = True,
    path: Path | None = None,
) -> dict[str, np.ndarray]:
    """Features for every example, cached on disk by recipe hash (at `path` when the caller has
    it already: hashing a large corpus is not free)."""
    path = path or features_path(examples, recipe, embedding_path, babble)
    if path.is_file():
        log.info("features: reusing %s", path.name)
        return dict(np.load(path))
    from tqdm import tqdm

    if any(ex.voice is not None and ex.voice.engine == "kokoro" for ex in examples):
        from quantize.kokoro import prepare

        prepare()
    rows_emb, rows_mel, labels, splits, voices, closed, fired_count = [], [], [], [], [], [], 0
    # Babble speech is synthesized here first: two workers writing one cache file race.
    _speak_all(babble.heldout + (babble.train or []))
    ctx = get_context("fork")
    with ctx.Pool(workers, initializer=_init, initargs=(recipe, str(embedding_path), babble)) as pool:
        it = pool.imap(_run, examples, chunksize=8)
        for ex, rows, fired in tqdm(it, total=len(examples), desc=f"features ({recipe.task})", disable=not progress,
                                    mininterval=2.0):
            fired_count += fired
            for row in rows:
                if recipe.task == "wake":
                    emb, lab = row
                else:
                    emb, mel, lab = row
                    rows_mel.append(mel)
                rows_emb.append(emb)
                labels.append(lab)
                splits.append(ex.split == "heldout")
                voices.append(ex.voice.id if ex.voice else "noise")
                closed.append(fired)
    data = {
        "emb": np.stack(rows_emb),
        "label": np.array(labels, dtype=np.int32),
        "heldout": np.array(splits, dtype=bool),
        "voice": np.array(voices),
        "vad_fired": np.array([fired_count / max(1, len(examples))]),
        # Per row: the edge VAD closed an utterance in its clip. Where it did not, the window sits
        # where the speech ended, but the device would classify nothing.
        "vad_closed": np.array(closed, dtype=bool),
    }
    if rows_mel:
        data["mel"] = np.stack(rows_mel)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, **data)
    return data
