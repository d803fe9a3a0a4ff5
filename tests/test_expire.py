"""``expire``, ``persist``, ``ttl``, absolute expirations, ``get_many``, ``kind`` and detailed listings.

How an expire meets a concurrent write is checked between replicas merged by
hand, through the deterministic network simulator, and by property tests that
mix expire and persist into random programs (the CRDT laws, and the counter
model: no increment lost or counted twice).
"""

from __future__ import annotations

import itertools
import math
import random
from typing import Any

import pytest
from hypothesis import given, note
from hypothesis import strategies as st

from crdtkv import KeyInfo, KvStore, Page
from crdtkv.core.limits import DEFAULT_LIMITS
from crdtkv.core.wire import decode_snapshot
from crdtkv.errors import InvalidArgument, InvalidArgumentType, InvalidKeyType, WrongType
from crdtkv.storage.rows import decode_rows, encode_row

from .helpers import TRUSTING, FakeClock, assert_logs_cover_dots, copy_of, observer_clock
from .model import CounterModel
from .test_store_properties import converge


def pair(skew: float = 0.0) -> tuple[FakeClock, FakeClock, KvStore, KvStore]:
    ca, cb = FakeClock(), FakeClock(skew)
    return ca, cb, KvStore.open("t", replica_id="a", clock=ca), KvStore.open("t", replica_id="b", clock=cb)


def now_s(clock: FakeClock) -> float:
    return clock.ns / 1e9


def sync(*stores: KvStore) -> None:
    for dst, src in itertools.product(stores, repeat=2):
        dst.merge(src)


# -- one replica ----------------------------------------------------------------------


def test_expire_sets_and_replaces_the_expiry_of_a_register() -> None:
    clock = FakeClock()
    store = KvStore.open("t", clock=clock)
    store.put("k", "v", metadata={"owner": "ana"})
    assert store.ttl("k") is None and "k" in store
    assert store.expire("k", 10) is True
    assert store.ttl("k") == 10.0
    assert store.get_with_metadata("k").metadata == {"owner": "ana"}  # type: ignore[union-attr]
    assert store.expire("k", 100) is True  # longer
    assert store.expire("k", 5) is True  # and shorter again
    assert store.ttl("k") == 5.0
    clock.advance(4)
    assert store.ttl("k") == 1.0
    clock.advance(1)
    assert store.get("k") is None and store.ttl("k") is None and "k" not in store


def test_expire_sets_and_shortens_the_expiry_of_a_counter() -> None:
    clock = FakeClock()
    store = KvStore.open("t", clock=clock)
    store.incr("n", 5, ttl=100)
    assert store.expire("n", 10) is True  # shorter than the incr's: an expire replaces it
    assert store.ttl("n") == 10.0
    assert store.incr("n", 2, ttl=5) == 7  # an incr's ttl only lengthens
    assert store.ttl("n") == 10.0
    assert store.incr("n", 1, ttl=20) == 8
    assert store.ttl("n") == 20.0
    assert store.get("n") == 8
    clock.advance(20)
    assert store.get("n") is None
    assert store.incr("n") == 1  # a new life without the old expiry
    assert store.ttl("n") is None


def test_persist_removes_an_expiry_and_reports_whether_there_was_one() -> None:
    clock = FakeClock()
    store = KvStore.open("t", clock=clock)
    store.put("r", "v", ttl=5)
    store.incr("c", 3, ttl=5)
    store.put("plain", "p")
    for key in ("r", "c"):
        assert store.persist(key) is True
        assert store.ttl(key) is None
        assert store.persist(key) is False  # no expiry any more
    digest = store.digest()
    assert store.persist("plain") is False
    assert store.persist("missing") is False
    assert store.digest() == digest  # nothing was written
    clock.advance(10)
    assert store.get("r") == "v" and store.get("c") == 3
    assert store.incr("c", 1, ttl=7) == 4  # an incr sets an expiry again after a persist
    assert store.ttl("c") == 7.0


def test_expire_of_a_missing_or_expired_key_writes_nothing() -> None:
    clock = FakeClock()
    store = KvStore.open("t", clock=clock)
    store.put("gone", "v", ttl=1)
    store.put("deleted", "v")
    store.delete("deleted")
    clock.advance(1)
    digest, vv = store.digest(), dict(store.replica.vv)
    for key in ("missing", "gone", "deleted"):
        assert store.expire(key, 10) is False
        assert store.expire(key, expiration=now_s(clock) + 10) is False
        assert store.persist(key) is False
    assert store.digest() == digest and store.replica.vv == vv


def test_an_expiration_in_the_past_makes_the_key_read_as_missing() -> None:
    clock = FakeClock()
    store = KvStore.open("t", clock=clock)
    store.put("r", "v")
    store.incr("c", 2)
    assert store.expire("r", expiration=now_s(clock) - 1) is True
    assert store.expire("c", expiration=0) is True
    assert store.get("r") is None and store.get("c") is None and list(store.keys()) == []
    assert store.incr("c") == 1  # deleted, so a new counter
    store.put("p", "v", expiration=now_s(clock) - 60)
    assert store.get("p") is None and "p" not in store
    clock.ns -= clock.ns % 10**9  # on a whole second: an expiration of exactly now has passed
    store.incr("q", 3, expiration=now_s(clock))
    assert store.get("q") is None


def test_absolute_expiration_on_put_and_incr() -> None:
    clock = FakeClock()
    store = KvStore.open("t", clock=clock)
    at = math.floor(now_s(clock)) + 30.5
    store.put("r", "v", expiration=at)
    store.incr("c", expiration=at)
    for key in ("r", "c"):
        assert store.get_with_metadata(key).expires_at == at  # type: ignore[union-attr]
    clock.ns = int(at * 1e9) - 1_000_000
    assert store.get("r") == "v" and store.get("c") == 1
    clock.ns = int(at * 1e9)
    assert store.get("r") is None and store.get("c") is None


def test_documents_do_not_expire() -> None:
    store = KvStore.open("t")
    store.doc("d").text("t").insert(0, "hi")
    assert store.kind("d") == "document"
    with pytest.raises(WrongType, match="documents do not expire"):
        store.expire("d", 10)
    assert store.persist("d") is False and store.ttl("d") is None


@pytest.mark.parametrize(
    ("call", "error"),
    [
        (lambda s: s.expire("k"), InvalidArgument),
        (lambda s: s.expire("k", 10, expiration=10), InvalidArgument),
        (lambda s: s.expire("k", -1), InvalidArgument),
        (lambda s: s.expire("k", 0), InvalidArgument),
        (lambda s: s.expire("k", float("nan")), InvalidArgument),
        (lambda s: s.expire("k", "10"), InvalidArgumentType),
        (lambda s: s.expire("k", expiration="soon"), InvalidArgumentType),
        (lambda s: s.expire("k", expiration=True), InvalidArgumentType),
        (lambda s: s.expire("k", expiration=-1), InvalidArgument),
        (lambda s: s.expire("k", expiration=float("inf")), InvalidArgument),
        (lambda s: s.expire("k", expiration=1e15), InvalidArgument),
        (lambda s: s.put("k", "v", ttl=5, expiration=10**9), InvalidArgument),
        (lambda s: s.incr("k", ttl=5, expiration=10**9), InvalidArgument),
        (lambda s: s.incr("k", expiration=float("nan")), InvalidArgument),
        (lambda s: s.expire(3, 10), InvalidKeyType),
        (lambda s: s.ttl(b"k"), InvalidKeyType),
        (lambda s: s.kind(None), InvalidKeyType),
        (lambda s: s.persist(""), InvalidArgument),
        (lambda s: s.get_many("abc"), InvalidArgumentType),
        (lambda s: s.get_many(["a", 3]), InvalidKeyType),
    ],
)
def test_bad_arguments_raise_typed_errors_and_change_nothing(call: Any, error: type[Exception]) -> None:
    store = KvStore.open("t")
    store.put("k", "v")
    store.incr("c")
    digest = store.digest()
    with pytest.raises(error):
        call(store)
    assert store.digest() == digest


def test_get_many_kind_and_ttl() -> None:
    store = KvStore.open("t")
    store.put("r", {"a": [1]})
    store.incr("c", 4)
    assert store.get_many(["c", "missing", "r", "c"]) == [4, None, {"a": [1]}, 4]
    assert store.get_many(("missing",), default=0) == [0]
    assert store.get_many([]) == []
    assert [store.kind(k) for k in ("r", "c", "missing")] == ["register", "counter", None]
    store.put("c", "now a register")
    assert store.kind("c") == "register"
    store.delete("c")
    assert store.kind("c") is None


def test_a_detailed_listing_gives_expiration_and_metadata_per_key() -> None:
    clock = FakeClock()
    store = KvStore.open("t", clock=clock)
    store.put("u:1", "a", metadata={"owner": "ana"})
    store.put("u:2", "b", ttl=60)
    store.incr("u:3", ttl=30)
    store.put("u:4", "gone", ttl=1)
    store.put("other", "x")
    clock.advance(1)
    now = now_s(clock)
    page = store.list("u:", limit=2, detailed=True)
    assert page.keys == ["u:1", "u:2"] and page.cursor is not None
    assert page.details == [
        KeyInfo("u:1", None, {"owner": "ana"}),
        KeyInfo("u:2", pytest.approx(now + 59), None),  # type: ignore[arg-type]
    ]
    rest = store.list("u:", cursor=page.cursor, detailed=True)
    assert rest == Page(["u:3"], None, [KeyInfo("u:3", pytest.approx(now + 29), None)])  # type: ignore[arg-type]
    assert store.list("u:").details is None  # plain listings carry none


# -- replicas: an expire meets a concurrent write -----------------------------------


def test_a_register_expire_meets_a_later_concurrent_put_which_wins_whole() -> None:
    _, _, a, b = pair(skew=+1)  # b's stamps are later
    a.put("k", "old")
    b.merge(a)
    a.expire("k", 10)  # a writes "old" again with the expiry
    b.put("k", "new")  # concurrently, stamped later, no ttl
    sync(a, b)
    assert a.digest() == b.digest()
    assert a.get("k") == b.get("k") == "new"
    assert a.ttl("k") is None and b.ttl("k") is None  # the put's own expiry (none)


def test_a_register_expire_beats_an_earlier_concurrent_put() -> None:
    ca, _cb, a, b = pair(skew=-1)  # b's stamps are earlier
    a.put("k", "old")
    b.merge(a)
    b.put("k", "new")
    ca.advance(0.001)
    a.expire("k", 10)  # concurrently, stamped later: its write of "old" wins whole
    sync(a, b)
    assert a.digest() == b.digest()
    assert a.get("k") == b.get("k") == "old"
    assert a.ttl("k") == 10.0


def test_a_counter_expire_meets_concurrent_increments_and_loses_none() -> None:
    ca, cb, a, b = pair()
    a.incr("n", 5, ttl=100)
    b.merge(a)
    a.expire("n", 10)
    b.incr("n", 3, ttl=200)  # concurrent: counts, but does not undo the expire it did not see
    b.incr("n", 4)
    sync(a, b)
    assert a.digest() == b.digest()
    assert a.get("n") == b.get("n") == 12
    assert a.ttl("n") == b.ttl("n") == 10.0
    b.incr("n", 1, ttl=50)  # once seen, an incr's ttl lengthens it again
    sync(a, b)
    assert a.get("n") == 13 and a.ttl("n") == 50.0
    ca.advance(50)
    cb.advance(50)
    assert a.get("n") is None and b.get("n") is None


def test_a_counter_persist_meets_a_concurrent_incr_with_a_ttl() -> None:
    _, _, a, b = pair()
    a.incr("n", 1, ttl=10)
    b.merge(a)
    assert a.persist("n") is True
    b.incr("n", 1, ttl=20)
    sync(a, b)
    assert a.digest() == b.digest()
    assert a.get("n") == b.get("n") == 2
    assert a.ttl("n") is None and b.ttl("n") is None


def test_concurrent_expires_of_a_counter_pick_the_later_stamp_everywhere() -> None:
    _, _, a, b = pair(skew=+1)
    c = KvStore.open("t", replica_id="c", clock=FakeClock(-1))
    a.incr("n")
    sync(a, b, c)
    a.expire("n", 300)
    b.expire("n", 30)  # stamped latest: wins, though shorter
    c.persist("n")
    sync(a, b, c)
    assert len({s.digest() for s in (a, b, c)}) == 1
    assert [s.ttl("n") for s in (a, b, c)] == [31.0, 30.0, 32.0]  # each by its own clock
    assert {s.get_with_metadata("n").expires_at for s in (a, b, c)} == {a.get_with_metadata("n").expires_at}  # type: ignore[union-attr]


def test_an_expire_in_the_past_deletes_only_what_it_saw() -> None:
    ca, _, a, b = pair()
    a.incr("n", 5)
    b.merge(a)
    b.incr("n", 2)  # a has not seen it
    assert a.expire("n", expiration=now_s(ca) - 1) is True
    sync(a, b)
    assert a.get("n") == b.get("n") == 2  # like a delete: the unseen increment survives


def test_an_expire_meets_concurrent_writes_through_a_lossy_network() -> None:
    from .sim import Faults, Simulation

    sim = Simulation(3, 5, faults=Faults(drop=0.1, duplicate=0.1, reorder=0.2))
    london, sydney, newyork = sim.stores
    london.put("session", "s1")
    london.incr("views", 10, ttl=300)
    sim.settle()
    sim.cut = {0}  # london alone
    london.expire("session", 5)
    london.expire("views", 5)
    sydney.incr("views", 7, ttl=600)
    newyork.put("session", "s2")  # concurrent with london's expire: the later stamp wins whole
    newyork.incr("views", 1)
    sim.run(0.5)
    sim.cut = set()
    sim.settle()
    for store in sim.stores:
        assert_logs_cover_dots(store)
    assert [s.get("views") for s in sim.stores] == [18, 18, 18]
    assert len({s.ttl("views") for s in sim.stores}) == 1
    assert sim.stores[0].ttl("views") <= 5  # type: ignore[operator]
    winner = {s.get("session") for s in sim.stores}
    assert len(winner) == 1
    sim.run(5.0)
    assert [s.get("views") for s in sim.stores] == [None, None, None]


# -- old files and snapshots -------------------------------------------------------------

#: A snapshot written before expire existed (commit fc511a0): a counter with a ttl,
#: a register with a ttl and metadata, a plain register; and that state's digest.
OLD_SNAPSHOT = bytes.fromhex(
    "435244544b56005386016174816c6f6c647e61336364666439658182001b018bcfe568000002848165706c61696e"
    "811b018bcfe56800000281008161708283657669657773808481840005001b018bcfe568000000808182001b018b"
    "cfe56800000082001b0000018bd01c5680826773657373696f6e851b018bcfe5680000010061731b0000018bcfe6"
    "5260814ba1656f776e657263616e6104d373631ce837ad986de0087c5b26e7"
)
OLD_DIGEST = "872a542161ddc52c5015f3bd5df04ebba2290947326a361ca899f7325f1bc2fa"
#: The storage row of that counter, as the same commit wrote it.
OLD_ROW = bytes.fromhex(
    "76edf9bd82808481846c6f6c647e613363646664396505001b018bcfe5680000008081826c6f6c647e6133636466"
    "6439651b018bcfe56800000082001b0000018bd01c5680"
)
OLD_NS = 1_700_000_000_000_000_000


def test_old_snapshots_and_rows_load_with_the_same_digest_and_expiry() -> None:
    store = KvStore.from_snapshot(OLD_SNAPSHOT, clock=lambda: OLD_NS, limits=TRUSTING)
    assert store.digest() == OLD_DIGEST  # an unstamped expiry is written as before
    assert store.get("views") == 5 and store.ttl("views") == 3600.0
    assert store.get_with_metadata("session").metadata == {"owner": "ana"}  # type: ignore[union-attr]
    assert store.ttl("session") == 60.0
    [(key, entry)] = decode_rows([("views", OLD_ROW)], DEFAULT_LIMITS)
    assert key == "views" and entry == dict(decode_snapshot(OLD_SNAPSHOT, DEFAULT_LIMITS).entries)["views"]
    assert encode_row("views", entry) == OLD_ROW
    # an expire changes the form; it loads back the same, from a row and a snapshot
    assert store.expire("views", 10) is True
    entry = store.replica.entries["views"]
    assert encode_row("views", entry) != OLD_ROW
    assert decode_rows([("views", encode_row("views", entry))], DEFAULT_LIMITS) == [("views", entry)]
    again = KvStore.from_snapshot(store.snapshot(), clock=lambda: OLD_NS, limits=TRUSTING)
    assert again.digest() == store.digest() and again.ttl("views") == 10.0


def test_an_expire_and_a_persist_survive_a_durable_restart(tmp_path: Any) -> None:
    path = tmp_path / "s.db"
    with KvStore.open("t", path=path, replica_id="a", durability="sync") as store:
        store.incr("c", 2, ttl=100)
        store.put("r", "v", ttl=100)
        store.expire("c", 10)
        store.persist("r")
        digest = store.digest()
    with KvStore.open("t", path=path, replica_id="a") as store:
        assert store.digest() == digest
        assert store.ttl("c") is not None and store.ttl("c") <= 10  # type: ignore[operator]
        assert store.ttl("r") is None and store.get("r") == "v"


# -- properties ----------------------------------------------------------------------

KEYS = ["a", "b", "c"]
replica_index = st.integers(0, 2)
key = st.sampled_from(KEYS)
ops = st.one_of(
    st.tuples(st.just("put"), replica_index, key, st.text(max_size=3)),
    st.tuples(st.just("put_ttl"), replica_index, key, st.text(max_size=3), st.floats(0.5, 20)),
    st.tuples(st.just("delete"), replica_index, key),
    st.tuples(st.just("incr"), replica_index, key, st.integers(-5, 5)),
    st.tuples(st.just("incr_ttl"), replica_index, key, st.integers(-5, 5), st.floats(0.5, 20)),
    st.tuples(st.just("expire"), replica_index, key, st.floats(0.5, 20)),
    st.tuples(st.just("expire_at"), replica_index, key, st.floats(-10, 20)),
    st.tuples(st.just("persist"), replica_index, key),
    st.tuples(st.just("merge"), replica_index, replica_index),
    st.tuples(st.just("tick"), replica_index, st.floats(0, 5)),
)
programs = st.lists(ops, max_size=40)
offsets = st.lists(st.floats(-30, 30), min_size=3, max_size=3)


def run(
    program: list[tuple[Any, ...]], skews: list[float], model: CounterModel | None = None
) -> list[KvStore]:
    clocks = [FakeClock(skew) for skew in skews]
    stores = [KvStore.open("t", replica_id=f"r{i}", clock=c, limits=TRUSTING) for i, c in enumerate(clocks)]
    for op in program:
        kind, who = op[0], op[1]
        store = stores[who]
        if kind in ("put", "put_ttl"):
            store.put(op[2], op[3], ttl=op[4] if kind == "put_ttl" else None)
            if model:
                model.remove(who, op[2])
        elif kind == "delete":
            store.delete(op[2])
            if model:
                model.remove(who, op[2])
        elif kind in ("incr", "incr_ttl"):
            try:
                store.incr(op[2], op[3], ttl=op[4] if kind == "incr_ttl" else None)
            except WrongType:
                continue
            if model:
                model.incr(who, op[2], op[3])
        elif kind == "expire":
            store.expire(op[2], op[3])
        elif kind == "expire_at":
            past = op[3] <= 0
            if store.expire(op[2], expiration=now_s(clocks[who]) + op[3]) and past and model:
                model.remove(who, op[2])  # an expiration in the past deletes what it saw
        elif kind == "persist":
            store.persist(op[2])
        elif kind == "merge":
            store.merge(stores[op[2]])
            if model:
                model.merge(who, op[2])
        elif kind == "tick":
            clocks[who].advance(op[2])
    for store in stores:
        assert_logs_cover_dots(store)
    return stores


def reads(store: KvStore) -> list[Any]:
    return [(store.get(k), store.ttl(k)) for k in KEYS]


@given(programs, offsets, st.randoms(use_true_random=False))
def test_any_merge_or_delivery_order_gives_the_same_state(
    program: list[tuple[Any, ...]], skews: list[float], rnd: random.Random
) -> None:
    stores = run(program, skews)
    sinks = [converge(stores, list(order)) for order in itertools.permutations(range(3))]
    noisy = [rnd.randrange(3) for _ in range(5)] + [0, 1, 2]
    rnd.shuffle(noisy)
    sinks.append(converge(stores, noisy))
    deltas = [s.replica.delta_since({o: t - 1 for o, t in s.replica.vv.items()}) for s in stores]
    deltas += [s.replica.delta_since({}) for s in stores]
    rnd.shuffle(deltas)
    by_delta = KvStore.open("t", replica_id="sink", limits=TRUSTING, clock=observer_clock())
    for delta in deltas:
        by_delta.replica.apply(delta)
    sinks.append(by_delta)
    assert len({sink.digest() for sink in sinks}) == 1
    assert len({repr(reads(sink)) for sink in sinks}) == 1


@given(programs, programs, programs, offsets)
def test_merge_is_commutative_associative_idempotent(
    p1: list[tuple[Any, ...]], p2: list[tuple[Any, ...]], p3: list[tuple[Any, ...]], skews: list[float]
) -> None:
    a, b, c = (run(p, skews)[0] for p in (p1, p2, p3))
    a1 = copy_of(a)
    a1.merge(a)
    assert a1.digest() == a.digest()
    ab, ba = copy_of(a), copy_of(b)
    ab.merge(b)
    ba.merge(a)
    assert ab.digest() == ba.digest() and reads(ab) == reads(ba)
    ab_c, bc = copy_of(ab), copy_of(b)
    ab_c.merge(c)
    bc.merge(c)
    a_bc = copy_of(a)
    a_bc.merge(bc)
    assert ab_c.digest() == a_bc.digest()


# Expiries here lie far beyond every clock in the program (at most 230 s ahead) and the
# observer's (1000 s ahead), so only deletes (and expirations in the past) remove increments.
long_ops = st.one_of(
    st.tuples(st.just("delete"), replica_index, key),
    st.tuples(st.just("incr"), replica_index, key, st.integers(-1000, 1000)),
    st.tuples(st.just("incr_ttl"), replica_index, key, st.integers(-1000, 1000), st.floats(2000, 3000)),
    st.tuples(st.just("expire"), replica_index, key, st.floats(2000, 3000)),
    st.tuples(st.just("expire_at"), replica_index, key, st.sampled_from([-5.0, 2500.0])),
    st.tuples(st.just("persist"), replica_index, key),
    st.tuples(st.just("merge"), replica_index, replica_index),
    st.tuples(st.just("tick"), replica_index, st.floats(0, 5)),
)


@given(st.lists(long_ops, max_size=40), offsets)
def test_expire_and_persist_never_lose_or_double_count_an_increment(
    program: list[tuple[Any, ...]], skews: list[float]
) -> None:
    model = CounterModel(3)
    stores = run(program, skews, model)
    note(f"model events={model.events} removed={model.removed}")
    for order in ([2, 0, 1], [0, 1, 2, 1, 0]):
        sink = converge(stores, order)
        assert [sink.get(k) for k in KEYS] == [model.value(k) for k in KEYS]
