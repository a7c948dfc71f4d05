"""Everyday words of a language, as negatives: what a keyword model hears all day and must leave alone.

A few dozen hand-picked sound-alikes teach a wake model little about the rest of the language:
real speech of other words fired the "computer" model several times an hour. The words come
from the frequency lists inside the `wordfreq` wheel (train extra; its data is CC BY-SA 4.0 and
only becomes training text, nothing of it ships).
"""

from __future__ import annotations

import logging
import re

import numpy as np

log = logging.getLogger(__name__)

SKIP_TOP = 30
"""The most frequent entries are clitics and particles ("l", "d", "的"): too short to be a negative."""


def everyday_words(language: str, n: int, exclude: list[str]) -> list[str]:
    """Up to `n` common words of `language`, none equal to or containing an excluded phrase."""
    try:
        import wordfreq
    except ImportError:
        log.warning("wordfreq is not installed (pip install -e '.[train]'): no everyday-word negatives")
        return []
    banned = [e.lower() for e in exclude]
    words = []
    for w in wordfreq.top_n_list(language, 4 * n + SKIP_TOP)[SKIP_TOP:]:
        ok = re.fullmatch(r"[\u4e00-\u9fff]+", w) if language == "zh" else (w.isalpha() and len(w) >= 3)
        if ok and not any(w == b or b in w for b in banned):
            words.append(w)
        if len(words) == n:
            break
    return words


def everyday_texts(language: str, n: int, exclude: list[str], seed: int = 0) -> list[str]:
    """`n` single words plus `n // 2` runs of 2-4 of them: negatives for a keyword model."""
    words = everyday_words(language, n, exclude)
    if not words:
        return []
    rng = np.random.default_rng(seed)
    sep = "" if language == "zh" else " "
    banned = [e.lower() for e in exclude]
    runs: list[str] = []
    while len(runs) < n // 2:
        run = sep.join(rng.choice(words, size=int(rng.integers(2, 5)), replace=False))
        if not any(b in run.lower() for b in banned):  # "hallo" + "Computer" is the German keyword
            runs.append(run)
    return words + runs
