"""The procedure catalogue: the national list (loaded for every municipality) plus local ones.

`NATIONAL` is data (procedures.py). A municipality may switch any of them off and add its own
(stored by the area's store); `fold()` is the keyword normalisation used by search.
"""

from __future__ import annotations

import unicodedata

from server.application.catalogue.procedures import NATIONAL
from server.application.catalogue.schema import (CATEGORIES, CONTENT_TYPES, FIELD_TYPES, LIFE_EVENTS, Field, Notice,
                                                 Procedure, Slot)

BY_CODE: dict[str, Procedure] = {p.code: p for p in NATIONAL}
assert len(BY_CODE) == len(NATIONAL), "duplicate procedure code"

__all__ = ["NATIONAL", "BY_CODE", "Field", "Slot", "Notice", "Procedure", "CATEGORIES", "LIFE_EVENTS",
           "FIELD_TYPES", "CONTENT_TYPES", "fold", "matches"]

_HIRA_START, _HIRA_END, _KATA_OFFSET = 0x3041, 0x3096, 0x60


def fold(text: str) -> str:
    """Search form of a text: NFKC (full/half width), katakana -> hiragana, lower case, no spaces."""
    text = unicodedata.normalize("NFKC", text)
    out = []
    for ch in text:
        code = ord(ch)
        if _HIRA_START + _KATA_OFFSET <= code <= _HIRA_END + _KATA_OFFSET:
            ch = chr(code - _KATA_OFFSET)
        if not ch.isspace():
            out.append(ch)
    return "".join(out).lower()


def search_text(procedure: Procedure) -> str:
    return fold(" ".join((procedure.title, procedure.description, *procedure.keywords,
                          *(n.title for n in procedure.notices))))


def matches(procedure: Procedure, keyword: str) -> bool:
    """Every space-separated word of `keyword` occurs in the procedure's folded text."""
    haystack = search_text(procedure)
    words = [fold(w) for w in unicodedata.normalize("NFKC", keyword).split()]
    return all(w in haystack for w in words if w)
