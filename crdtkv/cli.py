"""The ``crdtkv`` command line.

Exit codes: 0 done, 1 the key is missing (``get``), 2 any error, with one line
on stderr and never a traceback.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import math
import os
import resource
import signal
import ssl
import sys
import tempfile
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

import anyio

from . import demo
from .build import describe_build
from .client import Client, check_url
from .config import ENV_CONFIG, ENVIRONMENT, ConfigError, ServeConfig, parse_address, resolve
from .cursor import MAX_PAGE
from .display import format_value
from .errors import CrdtKvError
from .logs import configure_logging
from .node import Node
from .status import format_status
from .store import KvStore
from .version import __version__

log = logging.getLogger("crdtkv.cli")

#: Environment variables that stand in for flags left out.
ENV_NODE = "CRDTKV_NODE"
ENV_SECRET_FILE = "CRDTKV_SECRET_FILE"

EXIT_OK, EXIT_MISSING, EXIT_ERROR = 0, 1, 2


class CommandError(Exception):
    """A command cannot run as asked; the message says why and what to do instead."""


def _env(name: str) -> str | None:
    """An environment variable, None when unset or empty."""
    return os.environ.get(name) or None


def _read_snapshot(path: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise CommandError(f"cannot read {path}: {exc.strerror or exc}") from exc


def _write_atomically(path: str, data: bytes) -> None:
    """Write ``data`` to ``path`` so readers see the old file or the whole new one."""
    target = Path(path)
    try:
        handle, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.")
    except OSError as exc:
        raise CommandError(f"cannot write {path}: {exc.strerror or exc}") from exc
    try:
        with os.fdopen(handle, "wb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, target)
    except OSError as exc:
        Path(tmp).unlink(missing_ok=True)
        raise CommandError(f"cannot write {path}: {exc.strerror or exc}") from exc
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
        raise CommandError(f"cannot read secret file {path}: {exc.strerror or exc}") from exc
    if not secret:
        raise CommandError(f"secret file {path} is empty")
    return secret


def _client_tls(ca_file: str | None) -> ssl.SSLContext | None:
    """A context that trusts ``ca_file`` (for self-signed node certificates), or None."""
    if ca_file is None:
        return None
    try:
        return ssl.create_default_context(cafile=ca_file)
    except (OSError, ssl.SSLError) as exc:
        raise CommandError(f"cannot load --tls-ca {ca_file}: {exc}") from exc


def _server_tls(listen: str | None, cert: str | None, key: str | None) -> ssl.SSLContext | None:
    """The server context for a ``wss://`` --listen URL; refuses TLS flags that would do nothing."""
    wss = listen is not None and listen.lower().startswith("wss://")
    if cert is None and key is None:
        if wss:
            raise CommandError(
                f"--listen {listen} needs a certificate: add --tls-cert FILE --tls-key FILE "
                "(or listen on ws:// without TLS)"
            )
        return None
    if cert is None or key is None:
        raise CommandError("--tls-cert and --tls-key go together: give both")
    if not wss:
        raise CommandError(
            "--tls-cert and --tls-key are for a wss:// --listen URL; "
            f"listen on wss:// to use them (--listen is {listen or 'not set'})"
        )
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    try:
        context.load_cert_chain(cert, key)
    except (OSError, ssl.SSLError) as exc:
        raise CommandError(f"cannot load the TLS certificate or key: {exc}") from exc
    return context


#: Signals that stop ``serve`` cleanly: flush, close links, exit 0.
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


#: The serve flags that configuration files and CRDTKV_* variables may stand in for.
SERVE_FLAGS = (
    "id",
    "listen",
    "data",
    "durability",
    "secret_file",
    "store",
    "tls_cert",
    "tls_key",
    "tls_ca",
    "http",
    "resp",
    "log_format",
    "verbose",
)


def _serve_config(args: argparse.Namespace) -> ServeConfig:
    """The file (``--config`` or $CRDTKV_CONFIG), then CRDTKV_* variables, then the flags."""
    flags = {name: getattr(args, name) for name in SERVE_FLAGS}
    flags["peers"] = args.peer
    return resolve(flags, os.environ, args.config)


def _url_of(host: str, port: int, scheme: str) -> str:
    return f"{scheme}://[{host}]:{port}" if ":" in host else f"{scheme}://{host}:{port}"


def cmd_serve(args: argparse.Namespace) -> int:
    """Run a replica node until SIGINT, SIGTERM or SIGHUP."""
    config = _serve_config(args)
    if config.id is None:
        raise CommandError(f"serve needs --id NAME (or {ENVIRONMENT['id']}, or id in the config file)")
    if config.listen is None and not config.peers:
        raise CommandError(
            "serve needs --listen URL (to accept peers and clients) or --peer URL (to dial a peer), or both"
        )
    for url in [config.listen, *config.peers]:
        if url is not None:
            check_url(url, "--listen" if url is config.listen else "--peer")
    faces = {
        face: parse_address(address, f"--{face}")
        for face in ("http", "resp")
        if (address := getattr(config, face))
    }
    configure_logging(config.id, config.log_format, verbose=config.verbose)
    secret = _read_secret(config.secret_file)
    tls = dataclasses.replace(
        config.node.transport,
        ssl_context=_client_tls(config.tls_ca),
        server_ssl_context=_server_tls(config.listen, config.tls_cert, config.tls_key),
    )
    settings = dataclasses.replace(config.node, transport=tls)
    store = KvStore.open(
        config.store,
        replica_id=config.id,
        path=config.data,
        durability=config.durability,
        limits=config.limits,
    )
    if secret is None:
        where = f"anyone who can reach {config.listen}" if config.listen else "any process that can reach it"
        log.warning(
            "no shared secret: %s can read and write store %r; set one with --secret-file FILE (or %s)",
            where,
            store.name,
            ENV_SECRET_FILE,
        )

    _raise_open_file_limit(settings.max_connections + settings.max_handshaking + len(config.peers) + 64)

    async def serve() -> None:
        # handle the stop signals before saying "serving": one sent right after that line stops cleanly
        with anyio.open_signal_receiver(*STOP_SIGNALS) as signals:
            async with (
                Node(
                    store, listen=config.listen, peers=config.peers, secret=secret, settings=settings
                ) as node,
                anyio.create_task_group() as faces_group,
            ):
                if "http" in faces:
                    from .gateway.http import HttpFace

                    host, port = await faces_group.start(
                        HttpFace(node, config.http_settings).serve, *faces["http"]
                    )
                    print(f"http on {_url_of(host, port, 'http')}", flush=True)
                if "resp" in faces:
                    from .gateway.resp import RespFace

                    host, port = await faces_group.start(
                        RespFace(node, config.resp_settings).serve, *faces["resp"]
                    )
                    print(f"resp on {_url_of(host, port, 'redis')}", flush=True)
                print(f"serving store {store.name!r} as {store.origin} on {node.url}", flush=True)
                async for signum in signals:
                    log.info("%s: stopping", signal.Signals(signum).name)
                    break
                faces_group.cancel_scope.cancel()
        print(f"stopped; digest {store.digest()}", flush=True)

    try:
        anyio.run(serve)
    finally:
        store.close()  # a durable store flushes here
    return 0


def _raise_open_file_limit(wanted: int) -> None:
    """Raise the soft limit on open files toward ``wanted`` (a hub serves ~1,000 links).

    Many systems start processes at a soft limit of 1,024, which a hub at
    ``max_connections`` would exceed; the hard limit is the ceiling, and a
    shortfall is logged rather than failing the start.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY or soft >= wanted:
        return
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if target > soft:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    if target < wanted:
        log.warning(
            "open-file limit is %d (hard limit %d): fewer links than max_connections can be served",
            target,
            hard,
        )


def _client_command(
    run: Callable[[Client, argparse.Namespace], Awaitable[int]],
) -> Callable[[argparse.Namespace], int]:
    """Wrap a client call: connect to ``--node``, run it, map the exit code."""

    def command(args: argparse.Namespace) -> int:
        if args.node is None:
            raise CommandError(f"which node? pass --node URL or set {ENV_NODE}, e.g. ws://127.0.0.1:7001")
        secret = _read_secret(args.secret_file)
        tls = _client_tls(args.tls_ca)

        async def main() -> int:
            async with Client(
                args.node, store=args.store, secret=secret, timeout=args.timeout, ssl_context=tls
            ) as client:
                return await run(client, args)

        return anyio.run(main)

    return command


async def _get(client: Client, args: argparse.Namespace) -> int:
    missing = object()
    value = await client.get(args.key, missing)
    if value is missing:
        return EXIT_MISSING
    print(format_value(value, as_json=args.json))
    return EXIT_OK


def _parse_json(text: str, what: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise CommandError(f"{what} is not valid JSON: {exc}") from exc


def _value_of(args: argparse.Namespace) -> Any:
    """The value to put: the argument, or stdin for ``-``; parsed as JSON with --json."""
    text: str = args.value
    if text == "-":
        try:
            text = sys.stdin.buffer.read().decode("utf-8")
        except UnicodeDecodeError as exc:
            raise CommandError(f"the value on stdin is not UTF-8 text: {exc}") from exc
        except OSError as exc:
            raise CommandError(f"cannot read the value from stdin: {exc.strerror or exc}") from exc
    return _parse_json(text, "the value") if args.json else text


async def _put(client: Client, args: argparse.Namespace) -> int:
    value = _value_of(args)
    metadata = None
    if args.metadata is not None:
        metadata = _parse_json(args.metadata, "--metadata")
        if not isinstance(metadata, dict):
            raise CommandError('--metadata must be a JSON object, e.g. \'{"owner": "ana"}\'')
    await client.put(args.key, value, ttl=args.ttl, metadata=metadata)
    return EXIT_OK


async def _incr(client: Client, args: argparse.Namespace) -> int:
    print(await client.incr(args.key, args.by, ttl=args.ttl))
    return 0


async def _watch(client: Client, args: argparse.Namespace) -> int:
    """Print changes as they happen, until interrupted (exit 0) or the link closes (exit 2)."""
    failure: CrdtKvError | None = None
    async with anyio.create_task_group() as group:

        async def stop_on_signal() -> None:
            with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
                async for _ in signals:
                    group.cancel_scope.cancel()
                    return

        group.start_soon(stop_on_signal)
        try:
            async for change in client.watch(args.prefix):
                if change.overflow:
                    print("(overflow: changes were lost; resync with keys/get)", flush=True)
                elif change.value is None:
                    print(f"{change.key}\t(deleted)", flush=True)
                else:
                    print(f"{change.key}\t{format_value(change.value)}", flush=True)
        except CrdtKvError as exc:  # raised outside the task group, not wrapped in a group
            failure = exc
        group.cancel_scope.cancel()
    if failure is not None:
        raise failure
    return EXIT_OK


async def _delete(client: Client, args: argparse.Namespace) -> int:
    await client.delete(args.key)
    return 0


async def _keys(client: Client, args: argparse.Namespace) -> int:
    """Print every key (page by page), or --limit keys and the cursor that continues."""
    wanted = args.limit
    cursor = args.cursor
    printed = 0
    while wanted is None or printed < wanted:
        limit = MAX_PAGE if wanted is None else min(MAX_PAGE, wanted - printed)
        page = await client.list(args.prefix, limit=limit, cursor=cursor)
        if page.keys:
            print("\n".join(page.keys), flush=True)
        printed += len(page.keys)
        cursor = page.cursor
        if cursor is None:
            return EXIT_OK
    print(f"crdtkv: more keys follow; continue with --cursor {cursor}", file=sys.stderr)
    return EXIT_OK


async def _snapshot(client: Client, args: argparse.Namespace) -> int:
    """Fetch the node's state and write it as a snapshot file for merge and show."""
    data = await client.snapshot()
    store = KvStore.from_snapshot(data)  # checks the bytes before they replace a file
    keys = sum(1 for _ in store.keys())
    _write_atomically(args.output, data)
    print(
        f"wrote a snapshot of store {store.name!r} to {args.output}: {len(data)} bytes, "
        f"{keys} live keys, digest {store.digest()}"
    )
    return EXIT_OK


async def _digest(client: Client, args: argparse.Namespace) -> int:
    print(await client.digest())
    return 0


async def _status(client: Client, args: argparse.Namespace) -> int:
    """Print the node's status: its id, uptime, keys, digest and a table of its peers."""
    status = await client.call("status")
    if args.json:
        print(json.dumps(status, indent=2, sort_keys=True))
    else:
        print(format_status(status))
    return EXIT_OK


def _add_client_command(commands: Any, name: str, help_text: str, run: Any) -> argparse.ArgumentParser:
    parser: argparse.ArgumentParser = commands.add_parser(
        name, help=help_text, description=help_text, epilog=EXIT_CODES
    )
    parser.add_argument(
        "--node",
        default=_env(ENV_NODE),
        metavar="URL",
        help=f"the node to ask, e.g. ws://127.0.0.1:7001 (default: ${ENV_NODE})",
    )
    _add_secret_file(parser)
    parser.add_argument("--store", default="default", help="store name (default: default)")
    parser.add_argument(
        "--timeout",
        type=_positive_seconds,
        default=10.0,
        metavar="SECONDS",
        help="how long connecting and each request may take (default: 10)",
    )
    parser.add_argument("--tls-ca", metavar="FILE", help="CA certificate(s) to trust for a wss:// node")
    parser.set_defaults(func=_client_command(run))
    return parser


EXIT_CODES = "exit codes: 0 done, 1 key missing (get), 2 any error (one line on stderr)"


def _positive_seconds(text: str) -> float:
    """An argparse type: a finite number of seconds above zero."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"must be a positive number of seconds, not {text!r}")
    return value


def _add_secret_file(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--secret-file",
        default=_env(ENV_SECRET_FILE),
        metavar="FILE",
        help=f"file holding the shared secret (default: ${ENV_SECRET_FILE})",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="crdtkv",
        description="Edge key-value store built on CRDTs.",
        epilog=(
            f"environment: {ENV_NODE} is the default --node URL, {ENV_SECRET_FILE} the default "
            f"--secret-file. {EXIT_CODES}."
        ),
    )
    parser.add_argument("--version", action="version", version=f"crdtkv {__version__} ({describe_build()})")
    commands = parser.add_subparsers(dest="command", required=True)

    merge = commands.add_parser("merge", help="merge snapshot files offline", epilog=EXIT_CODES)
    merge.add_argument("snapshots", nargs="+", metavar="SNAPSHOT")
    merge.add_argument("-o", "--output", required=True, metavar="OUT")
    merge.set_defaults(func=cmd_merge)

    show = commands.add_parser(
        "show", help="print the live keys and values of a snapshot file", epilog=EXIT_CODES
    )
    show.add_argument("snapshot", metavar="SNAPSHOT")
    show.add_argument("prefix", nargs="?", default="")
    show.set_defaults(func=cmd_show)

    serve = commands.add_parser(
        "serve",
        help="run a replica node",
        description="Run a replica node until SIGINT, SIGTERM or SIGHUP, then flush and exit 0.",
        epilog=EXIT_CODES,
    )
    env = ENVIRONMENT
    serve.add_argument("--id", help=f"this replica's id, e.g. london (${env['id']})")
    serve.add_argument(
        "--listen",
        metavar="URL",
        help=f"where peers and clients connect, e.g. ws://127.0.0.1:7001 (${env['listen']})",
    )
    serve.add_argument(
        "--peer",
        action="append",
        default=[],
        metavar="URL",
        help=f"a peer to dial (repeatable; ${env['peers']}: URLs separated by commas or spaces)",
    )
    serve.add_argument("--data", metavar="PATH", help=f"SQLite file for a durable replica (${env['data']})")
    serve.add_argument(
        "--durability",
        choices=["batch", "sync"],
        help="with --data: batch (group commit, the default) or sync (durable before each reply) "
        f"(${env['durability']})",
    )
    serve.add_argument(
        "--secret-file", metavar="FILE", help=f"file holding the shared secret (${env['secret_file']})"
    )
    serve.add_argument("--store", help=f"store name (default: default; ${env['store']})")
    serve.add_argument("--tls-cert", metavar="FILE", help="certificate for listening on wss://")
    serve.add_argument("--tls-key", metavar="FILE", help="private key of --tls-cert")
    serve.add_argument(
        "--tls-ca", metavar="FILE", help="CA certificate(s) to trust when dialing wss:// peers"
    )
    serve.add_argument(
        "--http",
        type=_address,
        metavar="HOST:PORT",
        help=f"serve the HTTP API, health, metrics and status page there (port 0: any; ${env['http']})",
    )
    serve.add_argument(
        "--resp",
        type=_address,
        metavar="HOST:PORT",
        help=f"serve the Redis protocol there (port 0: any; ${env['resp']})",
    )
    serve.add_argument(
        "--config",
        metavar="FILE.toml",
        help=f"settings file; flags and CRDTKV_* variables override it (${ENV_CONFIG})",
    )
    serve.add_argument(
        "--log-format",
        choices=["text", "json"],
        help=f"text (default) or json: one JSON object per line (${env['log_format']})",
    )
    serve.add_argument("-v", "--verbose", action="store_true")
    serve.set_defaults(func=cmd_serve)

    get = _add_client_command(commands, "get", "print a key's value (exit 1 if missing)", _get)
    get.add_argument("key")
    get.add_argument("--json", action="store_true", help="print the value as JSON (strings quoted)")
    put = _add_client_command(commands, "put", "set a key to a value (a string unless --json)", _put)
    put.add_argument("key")
    put.add_argument("value", help="the value; - reads it from stdin, as is")
    put.add_argument("--json", action="store_true", help="parse the value as JSON (numbers, objects, ...)")
    put.add_argument(
        "--metadata", metavar="JSON", help='a JSON object stored with the write, e.g. {"owner": "ana"}'
    )
    put.add_argument("--ttl", type=_positive_seconds, metavar="SECONDS")
    incr = _add_client_command(commands, "incr", "add to a counter and print its new value", _incr)
    incr.add_argument("key")
    incr.add_argument("by", nargs="?", type=int, default=1)
    incr.add_argument("--ttl", type=_positive_seconds, metavar="SECONDS")
    delete = _add_client_command(commands, "del", "delete a key", _delete)
    delete.add_argument("key")
    keys = _add_client_command(commands, "keys", "list live keys, one a line, all of them by default", _keys)
    keys.add_argument("prefix", nargs="?", default="")
    keys.add_argument(
        "--limit",
        type=_positive_int,
        metavar="N",
        help="print at most N keys; if more follow, stderr names the --cursor that continues",
    )
    keys.add_argument("--cursor", metavar="CURSOR", help="continue a listing cut by --limit")
    _add_client_command(commands, "digest", "print the node's state digest", _digest)
    status = _add_client_command(
        commands, "status", "print the node's id, uptime, keys, digest and peers with state and lag", _status
    )
    status.add_argument("--json", action="store_true", help="print the status as JSON")
    snapshot = _add_client_command(
        commands,
        "snapshot",
        "write the node's whole state to a snapshot file (for merge and show)",
        _snapshot,
    )
    snapshot.add_argument("-o", "--output", required=True, metavar="FILE")
    watch = _add_client_command(commands, "watch", "print changes under a prefix as they happen", _watch)
    watch.add_argument("prefix", nargs="?", default="")

    run_demo = commands.add_parser("demo", help="three PoPs counting page views two ways", epilog=EXIT_CODES)
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


def _address(text: str) -> str:
    """An argparse type: ``HOST:PORT`` (checked here, so a bad one is a usage error)."""
    try:
        parse_address(text, "the address")
    except ConfigError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return text


def _positive_int(text: str) -> int:
    """An argparse type: an integer above zero."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {value}")
    return value


def _single(exc: BaseException) -> BaseException:
    """The one exception inside (nested) single-exception groups, else ``exc`` itself."""
    while isinstance(exc, BaseExceptionGroup) and len(exc.exceptions) == 1:
        exc = exc.exceptions[0]
    return exc


def _fail(message: str) -> int:
    print(f"crdtkv: {message}", file=sys.stderr)
    return EXIT_ERROR


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; return its exit code (argparse exits 2 itself on bad usage)."""
    args = build_parser().parse_args(argv)
    try:
        code: int = args.func(args)
    except BaseException as raised:  # every way out becomes one line and an exit code
        exc = _single(raised)
        if isinstance(exc, SystemExit):
            raise
        if isinstance(exc, CrdtKvError | CommandError):
            return _fail(str(exc))
        if isinstance(exc, KeyboardInterrupt):
            return _fail("interrupted")
        if isinstance(exc, BrokenPipeError):  # e.g. `crdtkv keys | head`: the reader left
            _silence_stdout()
            return EXIT_ERROR
        if isinstance(exc, OSError):
            return _fail(f"{exc.strerror or exc}" + (f": {exc.filename}" if exc.filename else ""))
        return _fail(f"unexpected {type(exc).__name__}: {exc} (this is a bug in crdtkv; please report it)")
    return code


def _silence_stdout() -> None:
    """Point stdout at /dev/null so the interpreter's final flush cannot fail again."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)


if __name__ == "__main__":
    sys.exit(main())
