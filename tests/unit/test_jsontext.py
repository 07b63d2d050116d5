from __future__ import annotations

import json
from typing import Any

import pytest

from agentmarket.core.jsontext import (
    DEPTH_MESSAGE,
    MAX_DEPTH,
    NON_FINITE_MESSAGE,
    NUL_MESSAGE,
    SURROGATE_MESSAGE,
    json_problems,
    text_problem,
)


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("plain", None),
        ("emoji \U0001f600 and noncharacter \uffff", None),
        ("a\x00b", NUL_MESSAGE),
        ("\ud800", SURROGATE_MESSAGE),
        ("x\udfffy", SURROGATE_MESSAGE),
    ],
)
def test_text_problem(text: str, problem: str | None) -> None:
    assert text_problem(text) == problem


def test_json_problems_point_at_each_bad_value_and_key() -> None:
    value = json.loads(
        r'{"ok": [1, 2.5, "fine"], "a": {"b": [NaN, "\ud800"]}, "k\udc00": -Infinity,'
        r' "n": 1e400, "z": "\u0000"}'
    )
    assert sorted(json_problems(value), key=repr) == sorted(
        [
            (("a", "b", 0), NON_FINITE_MESSAGE),
            (("a", "b", 1), SURROGATE_MESSAGE),
            (("k\ufffd",), "field name " + SURROGATE_MESSAGE),
            (("k\ufffd",), NON_FINITE_MESSAGE),
            (("n",), NON_FINITE_MESSAGE),
            (("z",), NUL_MESSAGE),
        ],
        key=repr,
    )


def test_a_valid_surrogate_pair_is_one_ordinary_character() -> None:
    assert json_problems(json.loads(r'{"s": "\ud83d\ude00"}')) == []


def test_nesting_is_bounded_without_recursion() -> None:
    value: Any = "leaf"
    for _ in range(10_000):  # far deeper than the interpreter's recursion limit
        value = [value]
    [(path, message)] = json_problems({"deep": value})
    assert message == DEPTH_MESSAGE
    assert len(path) == MAX_DEPTH
    nested: Any = 1
    for _ in range(MAX_DEPTH - 1):
        nested = [nested]
    assert json_problems(nested) == []
