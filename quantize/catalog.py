"""Phrase catalogs: one TOML file per language and vocabulary (see models/catalog/)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import tomllib

from quantize.voices import LANGUAGES

TASKS = ("command", "wake", "phrase")


class CatalogError(Exception):
    """A catalog that cannot be used; one line naming the file and the problem."""


@dataclass(frozen=True)
class Catalog:
    path: Path
    name: str
    language: str
    task: str
    intents: dict[str, tuple[str, ...]]
    """intent id → phrasings."""
    negatives: tuple[str, ...]

    @property
    def labels(self) -> list[str]:
        return list(self.intents)

    def text_of(self, intent: str) -> str:
        return self.intents[intent][0]


def load_catalog(path: str | Path) -> Catalog:
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise CatalogError(f"catalog '{path}': no such file") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise CatalogError(f"catalog '{path}': not valid TOML ({exc})") from None
    unknown = sorted(set(data) - {"language", "task", "intents", "negatives", "name"})
    if unknown:
        raise CatalogError(f"catalog '{path}': unknown key {unknown[0]!r}")
    language = data.get("language")
    if language not in LANGUAGES:
        raise CatalogError(f"catalog '{path}': language must be one of {', '.join(LANGUAGES)}, not {language!r}")
    task = data.get("task", "command")
    if task not in TASKS:
        raise CatalogError(f"catalog '{path}': task must be one of {', '.join(TASKS)}, not {task!r}")
    raw = data.get("intents")
    if not isinstance(raw, dict) or not raw:
        raise CatalogError(f"catalog '{path}': [intents] must map intent ids to lists of phrasings")
    intents: dict[str, tuple[str, ...]] = {}
    for key, value in raw.items():
        phrasings = [value] if isinstance(value, str) else value
        if not isinstance(phrasings, list) or not phrasings or not all(isinstance(p, str) and p.strip()
                                                                       for p in phrasings):
            raise CatalogError(f"catalog '{path}': intent {key!r} needs one or more non-empty phrasings")
        if key.startswith("_"):
            raise CatalogError(f"catalog '{path}': intent ids may not start with '_' ({key!r})")
        intents[key] = tuple(p.strip() for p in phrasings)
    neg = data.get("negatives", {})
    negatives = neg.get("phrases", []) if isinstance(neg, dict) else neg
    if not isinstance(negatives, list) or not all(isinstance(p, str) for p in negatives):
        raise CatalogError(f"catalog '{path}': negatives.phrases must be a list of strings")
    name = data.get("name") or path.stem
    return Catalog(path, str(name), language, task, intents, tuple(negatives))
