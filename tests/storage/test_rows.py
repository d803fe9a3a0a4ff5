"""Storage rows: the register fast path writes exactly the bytes of the general encoder."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from crdtkv.core.entry import TOMBSTONE, Entry
from crdtkv.core.limits import DEFAULT_LIMITS
from crdtkv.core.values import Packed
from crdtkv.storage.rows import decode_rows, encode_register_row, encode_row

STAMPS = st.one_of(
    st.integers(min_value=1, max_value=2**64 - 1),  # beyond what a clock gives too: the general encoder
    st.integers(min_value=2**32, max_value=2**63),
)
VALUES = st.one_of(
    st.text(max_size=40),
    st.text(min_size=24, max_size=300),  # text heads of 1 and 2 bytes
    st.binary(max_size=300),
    st.integers(min_value=-(2**70), max_value=2**70),  # big integers take the general encoder
    st.floats(allow_nan=False),
    st.booleans(),
    st.none(),
    st.binary(min_size=1, max_size=40).map(Packed),
    st.just(TOMBSTONE),
)


@given(
    key=st.text(min_size=1, max_size=30),
    stamp=STAMPS,
    writer=st.text(min_size=1, max_size=40),
    value=VALUES,
    expires=st.one_of(st.none(), st.integers(min_value=0, max_value=2**40)),
    meta=st.one_of(st.none(), st.text(max_size=10)),
)
def test_register_rows_are_the_bytes_of_the_general_encoder(
    key: str, stamp: int, writer: str, value: object, expires: int | None, meta: object
) -> None:
    names: dict[str, bytes] = {}
    entry = Entry(stamp, writer, value, expires, meta)
    row = encode_register_row(key, (stamp, writer, value, expires, meta), names)
    assert row == encode_row(key, entry)
    assert encode_register_row(key, (stamp, writer, value, expires, meta), names) == row  # cached name


def test_a_register_row_reads_back_as_its_entry() -> None:
    names: dict[str, bytes] = {}
    stamp = 1_800_000_000_000 << 16
    rows = [
        ("s", encode_register_row("s", (stamp, "london~1", "héllo", None, None), names)),
        ("gone", encode_register_row("gone", (stamp + 1, "london~1", TOMBSTONE, None, None), names)),
        ("n", encode_register_row("n", (stamp + 2, "sydney", -7, None, None), names)),
    ]
    assert decode_rows(rows, DEFAULT_LIMITS) == [
        ("s", Entry(stamp, "london~1", "héllo")),
        ("gone", Entry(stamp + 1, "london~1", TOMBSTONE)),
        ("n", Entry(stamp + 2, "sydney", -7)),
    ]
