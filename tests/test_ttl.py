"""Expiry with a controlled clock: registers and counters, through merges and replicas."""

from __future__ import annotations

import pytest

from crdtkv import KvStore
from crdtkv.errors import WrongType

from .helpers import FakeClock


def pair(skew: float = 0.0) -> tuple[FakeClock, FakeClock, KvStore, KvStore]:
    ca, cb = FakeClock(), FakeClock(skew)
    return ca, cb, KvStore.open("t", replica_id="a", clock=ca), KvStore.open("t", replica_id="b", clock=cb)


def test_a_value_expires_at_every_replica_without_any_message() -> None:
    ca, cb, a, b = pair()
    a.put("session", "s", ttl=10)
    b.merge(a)
    ca.advance(9.999)
    cb.advance(9.999)
    assert a.get("session") == b.get("session") == "s"
    ca.advance(0.001)
    cb.advance(0.001)
    assert a.get("session") is None and b.get("session") is None  # nobody sent anything
    assert list(a.keys()) == list(b.keys()) == []


def test_expiry_is_absolute_so_it_travels_through_snapshots() -> None:
    ca, cb, a, b = pair()
    a.put("k", "v", ttl=5)
    ca.advance(3)
    cb.advance(3)
    b.merge(a.snapshot())  # arrives 3 s later: 2 s left, not 5
    cb.advance(2)
    assert b.get("k") is None


def test_a_counter_with_a_ttl_expires_and_starts_again_from_zero() -> None:
    ca, _, a, _ = pair()
    assert a.incr("rl:window", ttl=60) == 1
    assert a.incr("rl:window", 4) == 5
    ca.advance(60)
    assert a.get("rl:window") is None
    assert a.incr("rl:window") == 1  # a new life, without the old expiry
    ca.advance(3600)
    assert a.get("rl:window") == 1


def test_concurrent_counter_expiries_resolve_to_the_longest_everywhere() -> None:
    ca, cb, a, b = pair()
    a.incr("n", ttl=30)
    b.merge(a)
    a.incr("n", ttl=10)  # shorter: does not shorten
    b.incr("n", ttl=50)  # concurrently, longer
    a.merge(b)
    b.merge(a)
    assert a.digest() == b.digest()
    for clock in (ca, cb):
        clock.advance(49.9)
    assert a.get("n") == b.get("n") == 3
    for clock in (ca, cb):
        clock.advance(0.1)
    assert a.get("n") is None and b.get("n") is None


def test_a_reset_after_expiry_wins_over_the_old_expiry_on_every_replica() -> None:
    ca, cb, a, b = pair()
    a.incr("n", 5, ttl=10)
    b.merge(a)
    ca.advance(11)
    cb.advance(11)
    assert a.incr("n", 2) == 2  # no ttl this time: the counter lives on
    b.merge(a)
    assert b.get("n") == 2
    ca.advance(1000)
    cb.advance(1000)
    assert a.get("n") == b.get("n") == 2


def test_concurrent_register_writes_with_different_ttls_follow_the_register_rule() -> None:
    ca, _, a, b = pair(skew=1)  # b's clock is ahead: its write is the later one
    a.put("k", "short", ttl=5)
    b.put("k", "long", ttl=500)
    a.merge(b)
    b.merge(a)
    assert a.get("k") == b.get("k") == "long"
    ca.advance(100)
    assert a.get("k") == "long"


def test_ttl_is_not_rounded_to_a_minimum() -> None:
    ca, _, a, _ = pair()
    a.put("blink", 1, ttl=0.001)
    assert a.get("blink") == 1
    ca.advance(0.001)
    assert a.get("blink") is None


def test_ttl_through_replication_over_the_protocol() -> None:
    from .sim import Simulation

    sim = Simulation(3, 11)
    london, sydney, newyork = sim.stores
    london.put("session", "s", ttl=2.0)
    sydney.incr("rl", 3, ttl=1.0)
    sim.settle()
    assert newyork.get("session") == "s" and newyork.get("rl") == 3
    sim.run(1.0)  # advances every replica's clock by 1 s
    assert [store.get("rl") for store in sim.stores] == [None, None, None]
    assert [store.get("session") for store in sim.stores] == ["s", "s", "s"]
    sim.run(1.0)
    assert [store.get("session") for store in sim.stores] == [None, None, None]
    assert newyork.get_with_metadata("session") is None


def test_an_expired_counter_does_not_uncover_the_write_it_beat() -> None:
    ca, _cb, a, b = pair(skew=-1)  # b's clock is behind: a's increment is the later write
    b.put("x", "v")
    a.incr("x")  # concurrently: the counter wins
    a.merge(b)
    assert a.get("x") == 1
    a.incr("x", ttl=1)
    ca.advance(1)
    assert a.get("x") is None  # expired: missing, not the older "v"
    assert a.incr("x") == 1  # the key is missing, so incr starts a new counter


def test_incr_on_a_live_register_raises_even_with_a_hidden_counter() -> None:
    _ca, _cb, a, b = pair(skew=1)  # b's clock is ahead: its put is the later write
    a.incr("x", 5)
    b.put("x", "v")  # concurrently: the register wins
    a.merge(b)
    assert a.get("x") == "v"
    with pytest.raises(WrongType):
        a.incr("x")
    assert a.get("x") == "v"
