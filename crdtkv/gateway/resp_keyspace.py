"""RESP commands over the keyspace: keys, strings and counters, expiry (``KvStore`` calls on this replica)."""

from __future__ import annotations

import re
import time
from typing import Any

from ..core.values import check_key
from ..cursor import MAX_PAGE, encode_cursor
from ..errors import WrongType
from .resp_protocol import (
    OK,
    ONE,
    ZERO,
    Command,
    encode_array,
    encode_bulk,
    encode_error,
    encode_integer,
    null,
)
from .resp_state import (
    INT64_MAX,
    INT64_MIN,
    MISSING,
    SYNTAX,
    Client,
    ReplyError,
    integer,
    reply_value,
    stored_value,
    text,
)

# -- keys --------------------------------------------------------------------------------


TYPE_NAMES = {"register": "string", "counter": "counter", "document": "document"}


def cmd_type(client: Client, args: Command) -> bytes:
    kind = client.store.kind(text(args[1]))
    return b"+%b\r\n" % (b"none" if kind is None else TYPE_NAMES[kind].encode())


def cmd_del(client: Client, args: Command) -> bytes:
    store = client.store
    return encode_integer(sum(store.delete(text(raw)) for raw in args[1:]))


def cmd_exists(client: Client, args: Command) -> bytes:
    store = client.store
    return encode_integer(sum(text(raw) in store for raw in args[1:]))


def glob_regex(pattern: str) -> re.Pattern[str]:
    """A regex matching what the Redis glob ``pattern`` matches (``* ? [abc] [^a-z] \\x``)."""
    out: list[str] = []
    i, n = 0, len(pattern)
    while i < n:
        char = pattern[i]
        i += 1
        if char == "*":
            out.append(".*")
        elif char == "?":
            out.append(".")
        elif char == "\\" and i < n:
            out.append(re.escape(pattern[i]))
            i += 1
        elif char == "[":
            end = i
            negate = end < n and pattern[end] == "^"
            if negate:
                end += 1
            members: list[str] = []
            while end < n and pattern[end] != "]":
                if pattern[end] == "\\" and end + 1 < n:
                    members.append(re.escape(pattern[end + 1]))
                    end += 2
                elif end + 2 < n and pattern[end + 1] == "-" and pattern[end + 2] != "]":
                    low, high = sorted((pattern[end], pattern[end + 2]))
                    members.append(f"{re.escape(low)}-{re.escape(high)}")
                    end += 3
                else:
                    members.append(re.escape(pattern[end]))
                    end += 1
            i = end + 1
            if not members:
                out.append("[^\\s\\S]" if not negate else "[\\s\\S]")
            else:
                out.append(f"[{'^' if negate else ''}{''.join(members)}]")
        else:
            out.append(re.escape(char))
    return re.compile("".join(out), re.DOTALL)


def literal_prefix(pattern: str) -> str:
    """The text every key matching the glob ``pattern`` starts with."""
    for index, char in enumerate(pattern):
        if char in "*?[\\":
            return pattern[:index]
    return pattern


def cmd_keys(client: Client, args: Command) -> bytes:
    pattern = text(args[1])
    prefix = literal_prefix(pattern)
    keys = client.store.keys(prefix)
    if pattern != prefix + "*":
        match = glob_regex(pattern).fullmatch
        keys = (key for key in keys if match(key))
    return encode_array([encode_bulk(key.encode("utf-8")) for key in keys])


def cmd_scan(client: Client, args: Command) -> bytes:
    face = client.face
    store = client.store
    number = integer(args[1])
    pattern: str | None = None
    count = 10
    wanted_type: str | None = None
    position = 2
    while position < len(args):
        option = args[position].upper()
        if position + 1 >= len(args):
            return SYNTAX
        if option == b"MATCH":
            pattern = text(args[position + 1])
        elif option == b"COUNT":
            count = integer(args[position + 1])
            if count < 1:
                return SYNTAX
        elif option == b"TYPE":
            wanted_type = args[position + 1].decode("utf-8", "replace").lower()
        else:
            return SYNTAX
        position += 2
    after: str | None = None
    if number != 0:
        found = face.scan_cursors.pop(number, None)
        if found is None:
            return encode_error("ERR invalid cursor")
        after = found
    prefix = literal_prefix(pattern) if pattern is not None else ""
    page = store.list(
        prefix, limit=min(count, MAX_PAGE), cursor=None if after is None else encode_cursor(after)
    )
    keys = page.keys
    next_number = 0
    if page.cursor is not None and keys:
        next_number = face.next_scan_cursor
        face.next_scan_cursor += 1
        cursors = face.scan_cursors
        cursors[next_number] = keys[-1]
        while len(cursors) > face.settings.max_scan_cursors:
            cursors.popitem(last=False)
    if pattern is not None and pattern != prefix + "*":
        match = glob_regex(pattern).fullmatch
        keys = [key for key in keys if match(key)]
    if wanted_type is not None:
        keys = [key for key in keys if TYPE_NAMES.get(store.kind(key) or "") == wanted_type]
    return b"*2\r\n%b%b" % (
        encode_bulk(b"%d" % next_number),
        encode_array([encode_bulk(key.encode("utf-8")) for key in keys]),
    )


# -- strings -------------------------------------------------------------------------------


def cmd_get(client: Client, args: Command) -> bytes:
    value = client.store.get(text(args[1]), MISSING)
    if type(value) is str:
        data = value.encode("utf-8")
        return b"$%d\r\n%b\r\n" % (len(data), data)
    return reply_value(client, value)


def cmd_mget(client: Client, args: Command) -> bytes:
    store = client.store
    values = store.get_many([text(raw) for raw in args[1:]], MISSING)
    return encode_array([reply_value(client, value) for value in values])


def expiry_argument(raw: bytes, unit: float, command: str) -> float:
    """Seconds of a TTL (or epoch seconds) given in ``unit`` seconds; positive or an error."""
    amount = integer(raw)
    if amount <= 0 or (unit == 1.0 and amount > INT64_MAX // 1000):
        raise ReplyError(f"ERR invalid expire time in '{command}' command")
    return amount * unit


def cmd_set(client: Client, args: Command) -> bytes:
    store = client.store
    key = text(args[1])
    value = stored_value(args[2])
    if len(args) == 3:
        store.put(key, value)
        return OK
    condition: bytes | None = None
    want_old = keep_ttl = False
    ttl: float | None = None
    expiration: float | None = None
    position = 3
    while position < len(args):
        option = args[position].upper()
        has_value = position + 1 < len(args)
        timed = ttl is not None or expiration is not None or keep_ttl
        if option in (b"NX", b"XX") and condition is None:
            condition = option
        elif option == b"GET" and not want_old:
            want_old = True
        elif option == b"KEEPTTL" and not timed:
            keep_ttl = True
        elif option in (b"EX", b"PX") and has_value and not timed:
            position += 1
            ttl = expiry_argument(args[position], 1.0 if option == b"EX" else 0.001, "set")
        elif option in (b"EXAT", b"PXAT") and has_value and not timed:
            position += 1
            expiration = expiry_argument(args[position], 1.0 if option == b"EXAT" else 0.001, "set")
        else:
            return SYNTAX
        position += 1
    old: Any = MISSING
    if want_old or condition is not None:
        old = store.get(key, MISSING)
    if (condition == b"NX" and old is not MISSING) or (condition == b"XX" and old is MISSING):
        return reply_value(client, old) if want_old else null(client.protocol)
    if keep_ttl:
        record = store.get_with_metadata(key)
        if record is not None and record.expires_at is not None:
            expiration = record.expires_at
    if expiration is not None:
        store.put(key, value, expiration=expiration)
    else:
        store.put(key, value, ttl=ttl)
    return reply_value(client, old) if want_old else OK


def cmd_setnx(client: Client, args: Command) -> bytes:
    store = client.store
    key = text(args[1])
    if key in store:
        return ZERO
    store.put(key, stored_value(args[2]))
    return ONE


def cmd_setex(client: Client, args: Command) -> bytes:
    unit = 1.0 if args[0].upper() == b"SETEX" else 0.001
    ttl = expiry_argument(args[2], unit, args[0].decode().lower())
    client.store.put(text(args[1]), stored_value(args[3]), ttl=ttl)
    return OK


def cmd_getdel(client: Client, args: Command) -> bytes:
    store = client.store
    key = text(args[1])
    value = store.get(key, MISSING)
    if value is not MISSING:
        store.delete(key)
    return reply_value(client, value)


def cmd_mset(client: Client, args: Command) -> bytes:
    if len(args) % 2 == 0:
        return encode_error("ERR wrong number of arguments for 'mset' command")
    pairs = [(text(args[i]), stored_value(args[i + 1])) for i in range(1, len(args), 2)]
    store = client.store
    for key, value in pairs:
        store.put(key, value)
    return OK


def incr_by(client: Client, raw_key: bytes, by: int) -> bytes:
    """Add ``by`` to the counter at the key; a result outside Redis's 64-bit range is taken back."""
    store = client.store
    key = text(raw_key)
    try:
        # KvStore.incr is the same two calls, interpreted: this module runs compiled (the
        # replica raises StoreClosed once the store is closed, as the store would)
        value = store.replica.incr(check_key(key, store.limits), by)
    except WrongType:
        if store.kind(key) == "register":
            raise ReplyError(
                f"WRONGTYPE key '{key}' holds a value set with SET; a crdtkv counter is its own kind of "
                "value: it starts with INCR (or INCRBY, DECR, DECRBY) on a missing key, so DEL the key first"
            ) from None
        raise
    if INT64_MIN <= value <= INT64_MAX:
        return encode_integer(value)
    store.incr(key, -by)  # rare: an increment and its reverse, which replicate as no change
    return encode_error("ERR increment or decrement would overflow")


def cmd_incr(client: Client, args: Command) -> bytes:
    return incr_by(client, args[1], 1)


def cmd_decr(client: Client, args: Command) -> bytes:
    return incr_by(client, args[1], -1)


def cmd_incrby(client: Client, args: Command) -> bytes:
    return incr_by(client, args[1], integer(args[2]))


def cmd_decrby(client: Client, args: Command) -> bytes:
    by = integer(args[2])
    if by == INT64_MIN:
        return encode_error("ERR decrement would overflow")
    return incr_by(client, args[1], -by)


# -- expiry --------------------------------------------------------------------------------


def cmd_expire(client: Client, args: Command) -> bytes:
    """EXPIRE, PEXPIRE, EXPIREAT and PEXPIREAT, with Redis 7's NX XX GT LT."""
    name = args[0].upper()
    store = client.store
    key = text(args[1])
    amount = integer(args[2])
    unit = 0.001 if name.startswith(b"P") else 1.0
    absolute = name.endswith(b"AT")
    if abs(amount) > INT64_MAX // 1000:
        return encode_error(f"ERR invalid expire time in '{name.decode().lower()}' command")
    condition: set[bytes] = {arg.upper() for arg in args[3:]}
    if not condition <= {b"NX", b"XX", b"GT", b"LT"} or len(condition) != len(args) - 3:
        return SYNTAX
    if (
        {b"NX", b"XX"} <= condition
        or {b"GT", b"LT"} <= condition
        or (b"NX" in condition and condition & {b"GT", b"LT"})
    ):
        return encode_error("ERR NX and XX, GT or LT options at the same time are not compatible")
    if key not in store:
        return ZERO
    seconds = amount * unit - (time.time() if absolute else 0.0)
    if condition:
        current = store.ttl(key)  # None: no expiry, which counts as infinite for GT and LT
        if b"NX" in condition and current is not None:
            return ZERO
        if b"XX" in condition and current is None:
            return ZERO
        if b"GT" in condition and (current is None or seconds <= current):
            return ZERO
        if b"LT" in condition and current is not None and seconds >= current:
            return ZERO
    if seconds <= 0:
        return ONE if store.delete(key) else ZERO
    done = store.expire(key, expiration=amount * unit) if absolute else store.expire(key, seconds)
    return ONE if done else ZERO


def cmd_ttl(client: Client, args: Command) -> bytes:
    store = client.store
    key = text(args[1])
    left = store.ttl(key)
    if left is None:
        return encode_integer(-1 if key in store else -2)
    if args[0].upper() == b"PTTL":
        return encode_integer(max(0, round(left * 1000)))
    return encode_integer(max(0, int(left + 0.5)))


def cmd_persist(client: Client, args: Command) -> bytes:
    return ONE if client.store.persist(text(args[1])) else ZERO


__all__ = [
    "TYPE_NAMES",
    "cmd_decr",
    "cmd_decrby",
    "cmd_del",
    "cmd_exists",
    "cmd_expire",
    "cmd_get",
    "cmd_getdel",
    "cmd_incr",
    "cmd_incrby",
    "cmd_keys",
    "cmd_mget",
    "cmd_mset",
    "cmd_persist",
    "cmd_scan",
    "cmd_set",
    "cmd_setex",
    "cmd_setnx",
    "cmd_ttl",
    "cmd_type",
    "expiry_argument",
    "glob_regex",
    "incr_by",
    "literal_prefix",
]
