"""Tokens of queries and item documents: lower-case words plus each word's character trigrams.

Words make an exact match count most (a word is a rare token, so BM25 weighs it high); the
trigrams of "^word$" let a partial query ("kela" for "kelano") or a typo ("kelnao") still
match most of the word's trigrams. Both sides use the same function, so the index and the
queries agree on every token.
"""

from __future__ import annotations

import re

_WORD = re.compile(r"\w+", re.UNICODE)
TRIGRAM_MIN_WORD = 3  # shorter words give only their own (padded) trigram: noise, not signal


def words(text: str | None) -> list[str]:
    """Lower-case words (letters, digits, underscore) in order; [] for None or blank text."""
    return _WORD.findall(text.lower()) if text else []


def trigrams(word: str) -> list[str]:
    """The character trigrams of "^word$": 'kelano' -> ['^ke', 'kel', 'ela', 'lan', 'ano', 'no$']."""
    if len(word) < TRIGRAM_MIN_WORD:
        return []
    padded = f"^{word}$"
    return [padded[start:start + 3] for start in range(len(padded) - 2)]


def search_tokens(text: str | None) -> list[str]:
    """The words of text, then the trigrams of each (marked by ^/$ or their position, never a word)."""
    found = words(text)
    return found + [f"#{gram}" for word in found for gram in trigrams(word)]
