"""Feature flags: flip a flag at one PoP, and every PoP serves it and hears about it.

Three PoP replicas (london, sydney, new-york) replicate over loopback
WebSockets. Each PoP watches ``flag:`` keys, as a service would to rebuild its
routing or invalidate a local cache. London turns a flag on, then Sydney rolls
it back; every watcher sees each change, milliseconds later.

Run: python examples/feature_flags.py
"""

import time

import anyio

from crdtkv import KvStore, Node

POPS = ("london", "sydney", "new-york")
SECRET = b"example-secret"


async def main() -> None:
    stores = {name: KvStore.open("edge", replica_id=name) for name in POPS}
    seen: dict[str, list[tuple[float, str | None, object]]] = {name: [] for name in POPS}

    async def watcher(name: str) -> None:
        async for change in stores[name].watch("flag:"):
            seen[name].append((time.perf_counter(), change.key, change.value))

    async with (
        Node(stores["london"], listen="ws://127.0.0.1:0", secret=SECRET) as london,
        Node(stores["sydney"], listen="ws://127.0.0.1:0", peers=[london.url], secret=SECRET) as sydney,  # type: ignore[list-item]
        Node(stores["new-york"], peers=[london.url, sydney.url], secret=SECRET) as new_york,  # type: ignore[list-item]
        anyio.create_task_group() as watchers,
    ):
        for node in (london, sydney, new_york):
            await node.wait_for_peers(2)
        for name in POPS:
            watchers.start_soon(watcher, name)
        await anyio.sleep(0.01)  # the watchers are registered

        for step, (writer, value) in enumerate([("london", True), ("sydney", False)], start=1):
            flipped = time.perf_counter()
            stores[writer].put("flag:new-checkout", value)
            print(f"{writer} sets flag:new-checkout = {value}")
            with anyio.fail_after(5):
                while any(len(seen[name]) < step for name in POPS):
                    await anyio.sleep(0.001)
            for name in POPS:
                at, key, seen_value = seen[name][step - 1]
                note = "  (local write)" if name == writer else ""
                after = (at - flipped) * 1000
                print(f"  {name:>8} watcher saw {key} = {seen_value} after {after:5.2f} ms{note}")
                assert (key, seen_value) == ("flag:new-checkout", value)
        watchers.cancel_scope.cancel()

    for name, store in stores.items():
        assert store.get("flag:new-checkout") is False, name
        assert [value for _, _, value in seen[name]] == [True, False], name
    print("every PoP serves flag:new-checkout = False; every watcher saw both changes")


anyio.run(main)
