"""Integers beyond 2**53 in document content: exact in both builds (pure Python and compiled)."""

from __future__ import annotations

import pytest

from crdtkv.core.yrs import MAX_SAFE_INTEGER, parse_content
from crdtkv.errors import InvalidValue


@pytest.mark.parametrize(
    ("number", "expected"),
    [
        (MAX_SAFE_INTEGER - 1, MAX_SAFE_INTEGER - 1),
        (MAX_SAFE_INTEGER, MAX_SAFE_INTEGER),
        (MAX_SAFE_INTEGER + 2, float(MAX_SAFE_INTEGER + 2)),
        (-MAX_SAFE_INTEGER, -MAX_SAFE_INTEGER),
        (-(MAX_SAFE_INTEGER + 2), -float(MAX_SAFE_INTEGER + 2)),
        (2**60, 2.0**60),
        (2**1023, 2.0**1023),
    ],
)
def test_a_number_a_float_holds_reads_back_exactly(number: int, expected: int | float) -> None:
    read = parse_content(f'{{"m":{{"n":{number}}}}}')["m"]["n"]
    assert read == expected and type(read) is type(expected)


@pytest.mark.parametrize(
    "number",
    [MAX_SAFE_INTEGER + 1, -(MAX_SAFE_INTEGER + 1), MAX_SAFE_INTEGER + 3, 2**60 + 1, 2**1024, -(10**400)],
)
def test_an_integer_no_float_holds_is_refused(number: int) -> None:
    with pytest.raises(InvalidValue, match=r"outside \+-2\*\*53"):
        parse_content(f'{{"m":{{"n":{number}}}}}')
