"""The ``crdtkv`` command line."""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

from . import demo
from .display import format_value
from .errors import CrdtKvError
from .store import KvStore


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
    return demo.run(total=args.views, rounds=args.rounds, seed=args.seed)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="crdtkv", description="Edge key-value store built on CRDTs.")
    commands = parser.add_subparsers(dest="command", required=True)

    merge = commands.add_parser("merge", help="merge snapshot files offline")
    merge.add_argument("snapshots", nargs="+", metavar="SNAPSHOT")
    merge.add_argument("-o", "--output", required=True, metavar="OUT")
    merge.set_defaults(func=cmd_merge)

    show = commands.add_parser("show", help="print the live keys and values of a snapshot file")
    show.add_argument("snapshot", metavar="SNAPSHOT")
    show.add_argument("prefix", nargs="?", default="")
    show.set_defaults(func=cmd_show)

    run_demo = commands.add_parser("demo", help="three PoPs counting page views two ways")
    run_demo.add_argument("--views", type=int, default=30_000, help="page views in all")
    run_demo.add_argument("--rounds", type=int, default=20, help="traffic rounds between merges")
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
