"""Phrase catalogs: one TOML file per language and vocabulary (see models/catalog/)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import tomllib

from quantize.voices import LANGUAGES

TASKS = ("command", "wake", "phrase", "langid")


class CatalogError(ValueError):
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


def load_catalog(path: str | Path, language: str | None = None) -> Catalog:
    """Read a catalog. A phrasebook (a [phrases] table of id → {language: text}) needs the
    `language` to build for; its negatives come from that language's command catalog."""
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise CatalogError(f"catalog '{path}': no such file") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise CatalogError(f"catalog '{path}': not valid TOML ({exc})") from None
    if "phrases" in data:
        data = _phrasebook_as_catalog(path, data, language)
    if data.get("task") == "langid":
        data = _langid_as_catalog(path, data)
    unknown = sorted(set(data) - {"language", "task", "intents", "negatives", "name"})
    if unknown:
        raise CatalogError(f"catalog '{path}': unknown key {unknown[0]!r}")
    language = data.get("language")
    if language not in LANGUAGES and not (language == "*" and data.get("task") == "langid"):
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
        if unspeakable := next((p for p in phrasings if not spoken_form(p)), None):
            raise CatalogError(f"catalog '{path}': intent {key!r}: {unspeakable!r} has no letter or digit to say")
        if key.startswith("_"):
            raise CatalogError(f"catalog '{path}': intent ids may not start with '_' ({key!r})")
        intents[key] = tuple(p.strip() for p in phrasings)
    neg = data.get("negatives", {})
    if isinstance(neg, dict) and (typo := sorted(set(neg) - {"phrases"})):
        raise CatalogError(f"catalog '{path}': unknown key 'negatives.{typo[0]}' (the list is negatives.phrases)")
    negatives = neg.get("phrases", []) if isinstance(neg, dict) else neg
    if not isinstance(negatives, list) or not all(isinstance(p, str) for p in negatives):
        raise CatalogError(f"catalog '{path}': negatives.phrases must be a list of strings")
    said: dict[str, str] = {}
    for key, ps in intents.items():
        for p in ps:
            other = said.setdefault(spoken_form(p), key)
            # One sound, two labels: the model could only guess. (Language id is the exception:
            # German and English "Pause" are two languages' words.)
            if other != key and task != "langid":
                raise CatalogError(f"catalog '{path}': {p!r} of intent {key!r} sounds like a phrasing of {other!r}")
    for text in negatives:
        if (intent := said.get(spoken_form(text))) is not None:
            raise CatalogError(f"catalog '{path}': negative {text!r} is also a phrasing of intent {intent!r}")
    if task == "wake":
        if len(intents) != 1:
            raise CatalogError(f"catalog '{path}': a wake catalog holds one intent, the wake phrase and its "
                               f"phrasings, not {len(intents)} ({', '.join(intents)})")
        intents = {"wake": next(iter(intents.values()))}  # what wake events are called, whatever the id
    name = data.get("name") or path.stem
    return Catalog(path, str(name), language, task, intents, tuple(negatives))


def spoken_form(text: str) -> str:
    """A phrasing as it sounds, as far as text can tell: case, punctuation and spacing aside."""
    kept = "".join(c if c.isalnum() or c in "'’" else " " for c in text.casefold())
    return " ".join(kept.split())


def read_phrasebook(path: str | Path) -> dict[str, dict[str, str]]:
    """phrase id → {language: text}."""
    data = tomllib.loads(Path(path).read_text(encoding="utf-8"))
    phrases = data.get("phrases")
    if not isinstance(phrases, dict):
        raise CatalogError(f"phrasebook '{path}': needs a [phrases] table")
    return {k: dict(v) for k, v in phrases.items()}


def _phrasebook_as_catalog(path: Path, data: dict, language: str | None) -> dict:
    if language not in LANGUAGES:
        raise CatalogError(f"phrasebook '{path}': say which language to build (--language {'|'.join(LANGUAGES)})")
    intents = {}
    for pid, texts in data["phrases"].items():
        if not isinstance(texts, dict) or language not in texts:
            raise CatalogError(f"phrasebook '{path}': phrase {pid!r} has no {language} text")
        intents[pid] = [texts[language]]
    sibling = path.with_name(f"{language}-command.toml")
    # The command catalog's negatives include words that are phrases here ("ten", "buenos días",
    # 一杯咖啡): trained as unknown, they contradicted their own phrase's examples.
    phrased = {spoken_form(ps[0]) for ps in intents.values()}
    negatives = [t for t in (load_catalog(sibling).negatives if sibling.is_file() else ())
                 if spoken_form(t) not in phrased]
    return {"language": language, "task": "phrase", "intents": intents, "negatives": {"phrases": negatives},
            "name": f"{language}-phrase"}


def _langid_as_catalog(path: Path, data: dict) -> dict:
    """Spoken-language identification: one intent per language, phrased by every text of that
    language in the sibling catalogs (commands, their negatives, the phrasebook)."""
    languages = data.get("languages", list(LANGUAGES))
    intents: dict[str, list[str]] = {}
    book = path.with_name("phrasebook.toml")
    phrases = read_phrasebook(book) if book.is_file() else {}
    for lang in languages:
        if lang not in LANGUAGES:
            raise CatalogError(f"catalog '{path}': unknown language {lang!r}")
        texts: list[str] = []
        sibling = path.with_name(f"{lang}-command.toml")
        if sibling.is_file():
            c = load_catalog(sibling)
            texts += [p for ps in c.intents.values() for p in ps] + list(c.negatives)
        texts += [t[lang] for t in phrases.values() if lang in t]
        if not texts:
            raise CatalogError(f"catalog '{path}': no {lang} texts found next to it")
        intents[lang] = sorted(set(texts))
    return {"language": "*", "task": "langid", "intents": intents, "negatives": {"phrases": []}, "name": "langid"}
