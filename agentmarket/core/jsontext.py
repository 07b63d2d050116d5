"""What a parsed JSON document may hold before it is stored or used.

Python's `json` accepts more than JSON: `NaN`, `Infinity` and `-Infinity` (and numbers too large
for a float, which become infinite), and `\\ud800`-style escapes that leave a lone UTF-16 surrogate
in a string. PostgreSQL refuses all of those (jsonb has no NaN, text has no surrogates and no
U+0000), so they are bad input, found here, before anything reaches the database. Nesting is
bounded too, so that nothing downstream (copies, schema validation) runs out of stack.

`json_problems` walks a value without recursion and says where each problem is, as a path of keys
and indexes; the request models turn that into JSON Pointers.
"""

from __future__ import annotations

import math
import re
from typing import Any, Final

__all__ = [
    "DEPTH_MESSAGE",
    "MAX_DEPTH",
    "NON_FINITE_MESSAGE",
    "NUL_MESSAGE",
    "SURROGATE_MESSAGE",
    "Path",
    "json_problems",
    "text_problem",
]

MAX_DEPTH: Final = 64

_SURROGATE: Final = re.compile("[\ud800-\udfff]")

NUL_MESSAGE: Final = "must not contain NUL characters"
SURROGATE_MESSAGE: Final = (
    "must be valid Unicode: unpaired surrogates (\\ud800-\\udfff escapes) are not allowed"
)
NON_FINITE_MESSAGE: Final = "must be a finite number: NaN and Infinity are not JSON"
DEPTH_MESSAGE: Final = f"is nested too deeply (at most {MAX_DEPTH} levels)"

Path = tuple[str | int, ...]


def text_problem(value: str) -> str | None:
    """Why PostgreSQL would refuse this text (a message ending a sentence), or None."""
    if "\x00" in value:
        return NUL_MESSAGE
    if not value.isascii() and _SURROGATE.search(value):
        return SURROGATE_MESSAGE
    return None


def json_problems(value: Any) -> list[tuple[Path, str]]:
    """Every place in a parsed JSON value that cannot be stored, with why.

    Strings and object keys must be storable text (`text_problem`); numbers must be finite;
    containers may nest at most `MAX_DEPTH` deep (deeper ones are reported once, not entered).
    A bad key is reported at the path that names it; in paths, U+FFFD stands in for each lone
    surrogate of a key (a path must be text that can be written out).
    """
    problems: list[tuple[Path, str]] = []
    stack: list[tuple[Path, Any]] = [((), value)]
    while stack:
        path, item = stack.pop()
        if isinstance(item, str):
            if (problem := text_problem(item)) is not None:
                problems.append((path, problem))
        elif isinstance(item, float):
            if not math.isfinite(item):
                problems.append((path, NON_FINITE_MESSAGE))
        elif isinstance(item, dict | list):
            if len(path) >= MAX_DEPTH:
                problems.append((path, DEPTH_MESSAGE))
                continue
            if isinstance(item, dict):
                for key, child in item.items():
                    if isinstance(key, str) and (problem := text_problem(key)) is not None:
                        key = _SURROGATE.sub("\ufffd", key)
                        problems.append(((*path, key), "field name " + problem))
                    stack.append(((*path, key), child))
            else:
                stack.extend(((*path, index), child) for index, child in enumerate(item))
    return problems
