"""Voice profiles: a user's own recordings of a model's commands, to bias it toward their voice.

The heads were trained on synthetic voices only, and a real speaker far from all of them (an
accent, a clipped word onset) is misheard in the same way again and again. A profile keeps, for
a few recordings of each intent by one user, the speech-embedding window the head classified at
the utterance's end (16 x 96 values, 6 KB each). At run time the window being decided is
compared with them:

- every window has the mean of the profile's windows taken away (what all of this user's
  recordings share: voice, room, microphone), then cosine similarity to each recording;
- each enrolled intent scores its best recording's similarity, and "none of them" scores
  `floor` (more when some of the model's intents have no recording); a softmax at
  `temperature` turns these into the profile's own opinion;
- the head's posteriors and that opinion are mixed, `weight` for the profile. When the profile
  says "none of them", its share goes back to the head's own posteriors.

Nothing is retrained and the model file is untouched: the profile is a small .npz next to it,
tied to the model by its sha256. The defaults were chosen on synthetic users (held-out espeak-ng
voices, see bench/enrollment.py) and then measured on real speech.
"""

from __future__ import annotations

import json
import zipfile
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np

from edge.bundle import UNKNOWN, Bundle, BundleError, file_sha256
from edge.decisions import DecisionConfig

PROFILE_VERSION = 1


@dataclass(frozen=True)
class ProfileConfig:
    weight: float = 0.7
    """Share of the profile's opinion in the posteriors (0 = the head alone)."""
    temperature: float = 0.2
    """Softmax temperature over cosine similarities (which span about -0.2 to 0.9)."""
    floor: float = 0.3
    """Similarity that "none of my recordings" scores: below it, the head decides alone."""
    threshold: float = 0.3
    """Decision threshold for the enrolled intents (the others keep the bundle's)."""
    unenrolled_weight: float = 0.3
    """"None of them" stands for every intent without a recording too: its score gains this times
    ln(1 + their number). Without it, a profile of three commands out of thirty pulled the others
    toward those three (synthetic users, one take: wrong 7.7 -> 11.3 %); with it, 6.4 %."""

    def check(self, where: str) -> None:
        if not (0.0 <= self.weight <= 1.0 and self.temperature > 0 and -1.0 <= self.floor <= 1.0
                and 0.0 < self.threshold < 1.0 and self.unenrolled_weight >= 0):
            raise BundleError(f"{where}: weight must be 0-1, temperature > 0, floor -1..1, threshold "
                              f"between 0 and 1 and unenrolled_weight >= 0 (got {self})")


@dataclass(frozen=True)
class VoiceProfile:
    """Enrolled windows (n, window, dim) with their intents, for one bundle's model."""

    bundle_name: str
    model_sha256: str
    intents: tuple[str, ...]
    windows: np.ndarray
    config: ProfileConfig = ProfileConfig()

    def __post_init__(self) -> None:
        if len(set(self.intents)) < 2:
            raise BundleError("a voice profile needs recordings of at least two intents (it compares them)")
        if len(self.intents) != len(self.windows):
            raise BundleError(f"a voice profile has {len(self.windows)} windows for {len(self.intents)} intents")

    def save(self, path: str | Path) -> None:
        meta = {"version": PROFILE_VERSION, "bundle": self.bundle_name, "model_sha256": self.model_sha256,
                "config": asdict(self.config)}
        path = Path(path)
        # Written aside and renamed: a service reloading its config never reads half a profile.
        part = path.with_name(path.name + ".part")
        try:
            with open(part, "wb") as f:  # np.savez would append ".npz" to a name without it
                np.savez_compressed(f, windows=self.windows.astype(np.float16), intents=np.array(self.intents),
                                    meta=np.array(json.dumps(meta)))
            part.replace(path)
        except OSError as exc:
            part.unlink(missing_ok=True)
            raise BundleError(f"cannot write voice profile '{path}': {exc.strerror or exc}") from None

    @classmethod
    def load(cls, path: str | Path) -> VoiceProfile:
        where = f"voice profile '{path}'"
        try:
            with np.load(path, allow_pickle=False) as data:
                meta = json.loads(str(data["meta"]))
                windows = data["windows"].astype(np.float32)
                if data["intents"].ndim != 1:
                    raise ValueError("intents must be a list")
                intents = tuple(str(x) for x in data["intents"])
        except FileNotFoundError:
            raise BundleError(f"{where} does not exist") from None
        except (OSError, ValueError, KeyError, TypeError, EOFError, zipfile.BadZipFile) as exc:
            # A .npy file or an empty one fail as TypeError / EOFError rather than as a bad archive.
            raise BundleError(f"{where} is not a voice profile ({type(exc).__name__}: {exc})") from None
        if not isinstance(meta, dict) or not isinstance(meta.get("config", {}), dict):
            raise BundleError(f"{where}: its metadata is not a JSON object with a config object")
        if meta.get("version") != PROFILE_VERSION:
            raise BundleError(f"{where}: version {meta.get('version')!r} is not supported (expected {PROFILE_VERSION})")
        if windows.ndim != 3 or not np.isfinite(windows).all():
            raise BundleError(f"{where}: its windows are not a finite (n, window, dim) array")
        try:
            config = ProfileConfig(**{k: float(v) for k, v in meta.get("config", {}).items()})
        except (TypeError, ValueError) as exc:
            raise BundleError(f"{where}: its config is invalid ({exc})") from None
        config.check(where)
        try:
            return cls(str(meta.get("bundle", "")), str(meta.get("model_sha256", "")), intents, windows, config)
        except BundleError as exc:
            raise BundleError(f"{where}: {exc}") from None

    def fits(self, bundle: Bundle) -> str | None:
        """Why this profile cannot be used with `bundle`, or None when it can."""
        if self.model_sha256 != file_sha256(bundle.model_path):
            return (f"it was recorded for another model ({self.bundle_name}, sha256 {self.model_sha256[:12]}); "
                    "enroll again for this one")
        if bundle.input_features != "embedding" or bundle.task not in ("command", "phrase") or bundle.state:
            return f"{bundle.name} is not an utterance model over the speech embedding"
        if self.windows.shape[1:] != tuple(bundle.input.shape[1:]):
            return f"its windows are {list(self.windows.shape[1:])}, the model's {list(bundle.input.shape[1:])}"
        unknown = sorted(set(self.intents) - set(bundle.labels) | ({UNKNOWN} & set(self.intents)))
        if unknown:
            return f"intent {unknown[0]!r} is not one of {bundle.name}'s commands"
        return None


class ProfileScorer:
    """A profile bound to one bundle's labels: mixes its opinion into the head's posteriors."""

    def __init__(self, profile: VoiceProfile, labels: tuple[str, ...]) -> None:
        cfg = profile.config
        self.weight, self.temperature = cfg.weight, cfg.temperature
        order = np.argsort(np.array(profile.intents), kind="stable")
        flat = profile.windows[order].reshape(len(order), -1)
        self._mean = flat.mean(axis=0)
        self._templates = _unit(flat - self._mean)
        intents = [profile.intents[i] for i in order]
        # Templates sorted by intent: each intent's best is one maximum.reduceat over its run.
        self._starts = np.array([i for i, name in enumerate(intents) if i == 0 or name != intents[i - 1]])
        self._columns = np.array([labels.index(intents[i]) for i in self._starts])
        self._logits = np.empty(len(self._starts) + 1, dtype=np.float32)
        unenrolled = sum(1 for x in labels if x != UNKNOWN) - len(self._starts)
        self._logits[-1] = cfg.floor / self.temperature + cfg.unenrolled_weight * np.log1p(unenrolled)

    def adapt(self, probs: np.ndarray, window: np.ndarray) -> np.ndarray:
        """The head's posteriors for `window`, mixed with the profile's opinion of it."""
        x = window.reshape(-1) - self._mean
        similarity = self._templates @ (x / (np.linalg.norm(x) + 1e-8))
        np.divide(np.maximum.reduceat(similarity, self._starts), self.temperature, out=self._logits[:-1])
        opinion = np.exp(self._logits - self._logits.max())
        opinion /= opinion.sum()
        # "None of them" hands its share back to the head.
        out = probs * (1.0 - self.weight + self.weight * opinion[-1])
        out[self._columns] += self.weight * opinion[:-1]
        return out


def profile_decision(decision: DecisionConfig, profile: VoiceProfile) -> DecisionConfig:
    """The bundle's decision rule with the profile's threshold for the intents it enrolled: an
    intent without recordings gains nothing from the profile, so it keeps its calibrated one."""
    return replace(decision, thresholds={**decision.thresholds,
                                         **dict.fromkeys(profile.intents, profile.config.threshold)})


def _unit(x: np.ndarray) -> np.ndarray:
    return x / (np.linalg.norm(x, axis=-1, keepdims=True) + 1e-8)
