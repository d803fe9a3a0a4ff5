"""The ``crdtkv`` command line."""

from __future__ import annotations

import argparse
import logging
import os
import signal
import ssl
import sys
import tempfile
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

import anyio

from . import __version__, demo
from .client import Client
from .display import format_value
from .errors import CrdtKvError
from .node import Node, NodeSettings
from .store import KvStore
from .transport import TransportSettings


def _read_snapshot(path: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise SystemExit(f"crdtkv: cannot read {path}: {exc.strerror}") from exc


def _write_atomically(path: str, data: bytes) -> None:
    """Write ``data`` to ``path`` so readers see the old file or the whole new one."""
    target = Path(path)
    handle, tmp = tempfile.mkstemp(dir=target.parent or Path("."), prefix=f".{target.name}.")
    try:
        with os.fdopen(handle, "wb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def cmd_merge(args: argparse.Namespace) -> int:
    """Offline merge: join snapshot files into one."""
    first, *rest = args.snapshots
    store = KvStore.from_snapshot(_read_snapshot(first))
    for path in rest:
        store.merge(_read_snapshot(path))
    _write_atomically(args.output, store.snapshot())
    keys = sum(1 for _ in store.keys())
    print(
        f"merged {len(args.snapshots)} snapshots of store {store.name!r} into {args.output}: "
        f"{keys} live keys, digest {store.digest()}"
    )
    return 0


def cmd_show(args: argparse.Namespace) -> int:
    """Print a snapshot's live keys and values, one per line."""
    store = KvStore.from_snapshot(_read_snapshot(args.snapshot))
    for key in store.keys(args.prefix):
        print(f"{key}\t{format_value(store.get(key))}")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    return demo.run(total=args.views, seconds=args.seconds, seed=args.seed, wan_delay=args.wan_delay / 1000)


def _read_secret(path: str | None) -> bytes | None:
    """The shared secret from a file (surrounding whitespace ignored)."""
    if path is None:
        return None
    try:
        secret = Path(path).read_bytes().strip()
    except OSError as exc:
        raise SystemExit(f"crdtkv: cannot read secret file {path}: {exc.strerror}") from exc
    if not secret:
        raise SystemExit(f"crdtkv: secret file {path} is empty")
    return secret


def _client_tls(ca_file: str | None) -> ssl.SSLContext | None:
    """A context that trusts ``ca_file`` (for self-signed node certificates), or None."""
    if ca_file is None:
        return None
    try:
        return ssl.create_default_context(cafile=ca_file)
    except (OSError, ssl.SSLError) as exc:
        raise SystemExit(f"crdtkv: cannot load --tls-ca {ca_file}: {exc}") from exc


def _server_tls(cert: str | None, key: str | None) -> ssl.SSLContext | None:
    if cert is None and key is None:
        return None
    if cert is None or key is None:
        raise SystemExit("crdtkv: --tls-cert and --tls-key go together")
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    try:
        context.load_cert_chain(cert, key)
    except (OSError, ssl.SSLError) as exc:
        raise SystemExit(f"crdtkv: cannot load the TLS certificate or key: {exc}") from exc
    return context


def cmd_serve(args: argparse.Namespace) -> int:
    """Run a replica node until SIGINT or SIGTERM."""
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format=f"%(asctime)s {args.id} %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    if not args.verbose:
        logging.getLogger("websockets").setLevel(logging.WARNING)
    secret = _read_secret(args.secret_file)
    store = KvStore.open(args.store, replica_id=args.id, path=args.data, durability=args.durability)

    tls = TransportSettings(
        ssl_context=_client_tls(args.tls_ca), server_ssl_context=_server_tls(args.tls_cert, args.tls_key)
    )

    async def serve() -> None:
        settings = NodeSettings(transport=tls)
        async with Node(store, listen=args.listen, peers=args.peer, secret=secret, settings=settings) as node:
            print(f"serving store {store.name!r} as {store.origin} on {node.url}", flush=True)
            with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
                async for _ in signals:
                    break
        print(f"stopped; digest {store.digest()}", flush=True)

    try:
        anyio.run(serve)
    finally:
        store.close()  # a durable store flushes here
    return 0


def _client_command(
    run: Callable[[Client, argparse.Namespace], Awaitable[int]],
) -> Callable[[argparse.Namespace], int]:
    """Wrap a client call: connect to ``--node``, run it, map the exit code."""

    def command(args: argparse.Namespace) -> int:
        async def main() -> int:
            secret = _read_secret(args.secret_file)
            tls = _client_tls(args.tls_ca)
            async with Client(
                args.node, store=args.store, secret=secret, timeout=args.timeout, ssl_context=tls
            ) as client:
                return await run(client, args)

        try:
            return anyio.run(main)
        except TimeoutError:
            print(f"crdtkv: no answer from {args.node} within {args.timeout:g} s", file=sys.stderr)
            return 2

    return command


async def _get(client: Client, args: argparse.Namespace) -> int:
    found, value = await client.get(args.key)
    if not found:
        return 1
    print(format_value(value))
    return 0


async def _put(client: Client, args: argparse.Namespace) -> int:
    await client.put(args.key, args.value, ttl=args.ttl)
    return 0


async def _incr(client: Client, args: argparse.Namespace) -> int:
    print(await client.incr(args.key, args.by, ttl=args.ttl))
    return 0


async def _watch(client: Client, args: argparse.Namespace) -> int:
    """Print changes as they happen, until interrupted."""
    async with anyio.create_task_group() as group:

        async def stop_on_signal() -> None:
            with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
                async for _ in signals:
                    group.cancel_scope.cancel()
                    return

        group.start_soon(stop_on_signal)
        async for change in client.watch(args.prefix):
            if change.overflow:
                print("(overflow: changes were lost; resync with keys/get)", flush=True)
            elif change.value is None:
                print(f"{change.key}\t(deleted)", flush=True)
            else:
                print(f"{change.key}\t{format_value(change.value)}", flush=True)
    return 0


async def _delete(client: Client, args: argparse.Namespace) -> int:
    await client.delete(args.key)
    return 0


async def _keys(client: Client, args: argparse.Namespace) -> int:
    for key in await client.keys(args.prefix):
        print(key)
    return 0


async def _digest(client: Client, args: argparse.Namespace) -> int:
    print(await client.digest())
    return 0


def _add_client_command(commands: Any, name: str, help_text: str, run: Any) -> argparse.ArgumentParser:
    parser: argparse.ArgumentParser = commands.add_parser(name, help=help_text)
    parser.add_argument(
        "--node", required=True, metavar="URL", help="the node to ask, e.g. ws://127.0.0.1:7001"
    )
    parser.add_argument("--secret-file", metavar="FILE")
    parser.add_argument("--store", default="default", help="store name (default: default)")
    parser.add_argument("--timeout", type=float, default=10.0, metavar="SECONDS")
    parser.add_argument("--tls-ca", metavar="FILE", help="CA certificate(s) to trust for a wss:// node")
    parser.set_defaults(func=_client_command(run))
    return parser


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="crdtkv", description="Edge key-value store built on CRDTs.")
    parser.add_argument("--version", action="version", version=f"crdtkv {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)

    merge = commands.add_parser("merge", help="merge snapshot files offline")
    merge.add_argument("snapshots", nargs="+", metavar="SNAPSHOT")
    merge.add_argument("-o", "--output", required=True, metavar="OUT")
    merge.set_defaults(func=cmd_merge)

    show = commands.add_parser("show", help="print the live keys and values of a snapshot file")
    show.add_argument("snapshot", metavar="SNAPSHOT")
    show.add_argument("prefix", nargs="?", default="")
    show.set_defaults(func=cmd_show)

    serve = commands.add_parser("serve", help="run a replica node")
    serve.add_argument("--id", required=True, help="this replica's id, e.g. london")
    serve.add_argument(
        "--listen", metavar="URL", help="where peers and clients connect, e.g. ws://127.0.0.1:7001"
    )
    serve.add_argument(
        "--peer", action="append", default=[], metavar="URL", help="a peer to dial (repeatable)"
    )
    serve.add_argument("--data", metavar="PATH", help="SQLite file for a durable replica")
    serve.add_argument(
        "--durability",
        choices=["batch", "sync"],
        default="batch",
        help="with --data: batch (group commit, the default) or sync (durable before each reply)",
    )
    serve.add_argument("--secret-file", metavar="FILE", help="file holding the shared secret")
    serve.add_argument("--store", default="default", help="store name (default: default)")
    serve.add_argument("--tls-cert", metavar="FILE", help="certificate for listening on wss://")
    serve.add_argument("--tls-key", metavar="FILE", help="private key of --tls-cert")
    serve.add_argument(
        "--tls-ca", metavar="FILE", help="CA certificate(s) to trust when dialing wss:// peers"
    )
    serve.add_argument("-v", "--verbose", action="store_true")
    serve.set_defaults(func=cmd_serve)

    get = _add_client_command(commands, "get", "print a key's value (exit 1 if missing)", _get)
    get.add_argument("key")
    put = _add_client_command(commands, "put", "set a key to a string value", _put)
    put.add_argument("key")
    put.add_argument("value")
    put.add_argument("--ttl", type=float, metavar="SECONDS")
    incr = _add_client_command(commands, "incr", "add to a counter and print its new value", _incr)
    incr.add_argument("key")
    incr.add_argument("by", nargs="?", type=int, default=1)
    incr.add_argument("--ttl", type=float, metavar="SECONDS")
    delete = _add_client_command(commands, "del", "delete a key", _delete)
    delete.add_argument("key")
    keys = _add_client_command(commands, "keys", "list live keys, one a line", _keys)
    keys.add_argument("prefix", nargs="?", default="")
    _add_client_command(commands, "digest", "print the node's state digest", _digest)
    watch = _add_client_command(commands, "watch", "print changes under a prefix as they happen", _watch)
    watch.add_argument("prefix", nargs="?", default="")

    run_demo = commands.add_parser("demo", help="three PoPs counting page views two ways")
    run_demo.add_argument("--views", type=int, default=30_000, help="page views in all")
    run_demo.add_argument("--seconds", type=float, default=5.0, help="how long the traffic runs")
    run_demo.add_argument(
        "--wan-delay",
        type=float,
        default=0.0,
        metavar="MS",
        help="hold every message between PoPs back MS ms",
    )
    run_demo.add_argument("--seed", type=int, default=2026)
    run_demo.set_defaults(func=cmd_demo)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        code: int = args.func(args)
    except CrdtKvError as exc:
        print(f"crdtkv: {exc}", file=sys.stderr)
        return 2
    return code


if __name__ == "__main__":
    sys.exit(main())
