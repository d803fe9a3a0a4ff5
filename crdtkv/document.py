"""Document values: a pycrdt document bound to one key of a store.

``store.doc(key)`` returns a :class:`Document`. Its roots (``map``,
``array``, ``text``) are pycrdt shared types; every transaction on them is
captured as a Yrs update and recorded in the store at once (read-your-writes),
so it reaches peers, watchers and storage like any other write. Changes that
arrive from peers are applied to the bound document as they are merged.

Values written through the roots are checked first: Yrs keeps numbers as
64-bit floats, so an integer beyond +-2**53 raises
:class:`~crdtkv.errors.InvalidValue` instead of silently losing precision.
"""

from __future__ import annotations

import logging
import math
import weakref
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import pycrdt

from .core.document import Gen
from .core.replica import ReplicaState
from .core.yrs import EMPTY_UPDATE, check_number, client_id, plain_content
from .errors import (
    CrdtKvError,
    InvalidArgument,
    InvalidArgumentType,
    InvalidValue,
    InvalidValueType,
    StaleDocument,
    WrongType,
)

logger = logging.getLogger("crdtkv.document")


def _check_text(text: object, what: str) -> None:
    """Refuse a str that is not valid UTF-8 (a lone surrogate) before Yrs sees it."""
    if isinstance(text, str) and not text.isascii():
        try:
            text.encode("utf-8")
        except UnicodeEncodeError as exc:
            raise InvalidValue(f"{what} in a document is not valid UTF-8: {exc.reason}") from exc


def check_document_value(value: object) -> None:
    """Raise InvalidValue unless ``value`` is a JSON value Yrs keeps exactly.

    That is str, bool, None, an int within +-2**53 (Yrs keeps numbers as
    64-bit floats), a finite float, and lists and str-keyed dicts of those,
    or pycrdt shared types holding them.
    """
    if isinstance(value, str):
        _check_text(value, "a string")
        return
    if isinstance(value, bool) or value is None:
        return
    if isinstance(value, int):
        check_number(value)
    elif isinstance(value, float):
        if not math.isfinite(value):
            raise InvalidValue(f"document values are JSON values: {value!r} has no JSON form")
    elif isinstance(value, Mapping):
        for item_key, item in value.items():
            if not isinstance(item_key, str):
                raise InvalidValueType(f"map keys in documents must be str, not {type(item_key).__name__}")
            _check_text(item_key, "a map key")
            check_document_value(item)
    elif isinstance(value, (list, tuple)):
        for item in value:
            check_document_value(item)
    elif isinstance(value, (pycrdt.Map, pycrdt.Array, pycrdt.Text)):
        if not value.is_integrated:
            # a shared type not yet in a document carries its initial content
            check_document_value(value.prelim)
    else:
        raise InvalidValueType(
            f"document values are JSON values (str, int, float, bool, None, list, dict) or pycrdt "
            f"Map / Array / Text, not {type(value).__name__}"
        )


def _checked(value: Any) -> Any:
    """A shared type read from a document, as its checked class."""
    kind = _CHECKED.get(type(value))
    if kind is None:
        return value
    return kind(_doc=value.doc, _integrated=value.integrated)


#: pycrdt documents a Document has let go of (reloaded or closed): their roots are stale
_RETIRED: weakref.WeakSet[pycrdt.Doc[Any]] = weakref.WeakSet()


def _edit(root: Any, *values: object) -> None:
    """Check an edit to ``root`` before it is applied: the root is current and the values fit."""
    doc = root.doc if root.is_integrated else None
    if doc is not None and doc in _RETIRED:
        raise StaleDocument(
            "this root belongs to a document that was reloaded (its key deleted, overwritten or "
            "given a newer generation) or closed: fetch the root again from the Document"
        )
    for value in values:
        check_document_value(value)


def _refused_when_stale(base: type[Any], name: str) -> Callable[..., Any]:
    """``base.name`` behind the stale-root check (for edits that carry no new values)."""
    method = getattr(base, name)

    def checked(self: Any, *args: Any) -> Any:
        _edit(self)
        return method(self, *args)

    checked.__name__ = name
    return checked


class CheckedMap(pycrdt.Map):  # type: ignore[type-arg]
    """A pycrdt ``Map`` that refuses numbers Yrs cannot keep exact, and edits to a stale root."""

    def __setitem__(self, key: str, value: Any) -> None:
        _check_text(key, "a map key")
        _edit(self, value)
        super().__setitem__(key, value)

    def update(self, value: dict[str, Any]) -> None:
        _edit(self, value)
        super().update(value)

    __delitem__ = _refused_when_stale(pycrdt.Map, "__delitem__")
    pop = _refused_when_stale(pycrdt.Map, "pop")
    clear = _refused_when_stale(pycrdt.Map, "clear")

    def _maybe_as_type_or_doc(self, obj: Any) -> Any:
        return _checked(super()._maybe_as_type_or_doc(obj))


class CheckedArray(pycrdt.Array):  # type: ignore[type-arg]
    """A pycrdt ``Array`` that refuses numbers Yrs cannot keep exact, and edits to a stale root."""

    def append(self, value: Any) -> None:
        _edit(self, value)
        super().append(value)

    def extend(self, value: list[Any]) -> None:
        _edit(self, value)
        super().extend(value)

    def insert(self, index: int, object: Any) -> None:
        _edit(self, object)
        super().insert(index, object)

    def __setitem__(self, key: Any, value: Any) -> None:
        _edit(self, value)
        super().__setitem__(key, value)

    def __add__(self, value: list[Any]) -> CheckedArray:
        _edit(self, value)
        super().__add__(value)
        return self

    __delitem__ = _refused_when_stale(pycrdt.Array, "__delitem__")
    pop = _refused_when_stale(pycrdt.Array, "pop")
    clear = _refused_when_stale(pycrdt.Array, "clear")

    def _maybe_as_type_or_doc(self, obj: Any) -> Any:
        return _checked(super()._maybe_as_type_or_doc(obj))


class CheckedText(pycrdt.Text):
    """A pycrdt ``Text`` whose attributes and embeds are checked, and that refuses edits when stale."""

    def insert(self, index: int, value: str, attrs: dict[str, Any] | None = None) -> None:
        _check_text(value, "text")
        _edit(self, attrs)
        super().insert(index, value, attrs)

    def insert_embed(self, index: int, value: Any, attrs: dict[str, Any] | None = None) -> None:
        _edit(self, value, attrs)
        super().insert_embed(index, value, attrs)

    def format(self, start: int, stop: int, attrs: dict[str, Any]) -> None:
        _edit(self, attrs)
        super().format(start, stop, attrs)

    def __iadd__(self, value: str) -> CheckedText:
        _check_text(value, "text")
        _edit(self)
        super().__iadd__(value)
        return self

    def __setitem__(self, key: Any, value: str) -> None:
        _check_text(value, "text")
        _edit(self)
        super().__setitem__(key, value)

    __delitem__ = _refused_when_stale(pycrdt.Text, "__delitem__")
    clear = _refused_when_stale(pycrdt.Text, "clear")


_CHECKED: dict[type[Any], type[Any]] = {
    pycrdt.Map: CheckedMap,
    pycrdt.Array: CheckedArray,
    pycrdt.Text: CheckedText,
}
_ROOT_CLASSES: dict[str, type[Any]] = {"array": CheckedArray, "map": CheckedMap, "text": CheckedText}


def _dispatch(document: weakref.ref[Document], token: int, update: bytes) -> None:
    """Hand a committed pycrdt transaction to its Document, if it still exists."""
    bound = document()
    if bound is None:
        raise StaleDocument("this root's Document was closed and released: the edit is not recorded")
    bound._captured(token, update)


def _kind_of(root_type: type[Any]) -> str:
    for pycrdt_type, kind in ((pycrdt.Map, "map"), (pycrdt.Array, "array"), (pycrdt.Text, "text")):
        if isinstance(root_type, type) and issubclass(root_type, pycrdt_type):
            return kind
    raise InvalidArgumentType(
        f"document roots are pycrdt Map, Array or Text, not {getattr(root_type, '__name__', root_type)!r}"
    )


class Document:
    """A collaborative document stored as the value of one key.

    Get one with :meth:`KvStore.doc <crdtkv.KvStore.doc>`; a store hands out
    one ``Document`` per key. Edit through the roots::

        cart = store.doc("cart:42")
        items = cart.map("items")
        items["apple"] = 2            # recorded in the store at once
        with cart.transaction():      # several edits, one update
            items["pear"] = 1
            del items["apple"]

    An edit the store refuses (a document over ``max_value_bytes``, say) is
    undone by reloading, and its error reaches the caller, wrapped by pycrdt
    in an ``ExceptionGroup`` ("Observer callback error").

    Root objects stay valid while the document's *generation* does. If the
    key is deleted, overwritten with ``put``, or replaced by a newer
    generation from a peer, the document is reloaded (empty, or with the
    winner's content) and roots must be fetched again: an edit to a root
    fetched before raises :class:`~crdtkv.errors.StaleDocument` and changes
    nothing (through ``ydoc``'s own roots it would go unnoticed, unrecorded).
    A store keeps each Document it hands out until :meth:`close`.
    """

    def __init__(self, replica: ReplicaState, key: str, release: Callable[[], object]) -> None:
        """Use :meth:`KvStore.doc`; this constructor is internal.

        ``release`` is called once when the document closes (the store forgets it).
        """
        self._replica = replica
        self._release = release
        self._key = key
        self._gen: Gen | None = None
        self._schema: dict[str, str] = {}
        self._applying = False
        self._capturing = False
        self._closed = False
        #: pycrdt documents loaded so far; edits to an older one are stale
        self._loads = 0
        self._ydoc: pycrdt.Doc[Any] = self._load(None)
        self.refresh()

    # -- binding -------------------------------------------------------------------

    def _load(self, current: Any) -> pycrdt.Doc[Any]:
        """A fresh pycrdt document holding ``current`` (a DocState), captured from now on."""
        ydoc: pycrdt.Doc[Any] = pycrdt.Doc(client_id=client_id(self._replica.origin))
        self._pristine = current is None
        if current is not None:
            self._schema = dict(current.schema)
            self._applying = True
            try:
                if current.update != EMPTY_UPDATE:
                    ydoc.apply_update(current.update)
                for name, kind in sorted(self._schema.items()):
                    ydoc.get(name, type=_ROOT_CLASSES[kind])
            finally:
                self._applying = False
        else:
            self._schema = {}
        # The callback holds no strong reference to this Document or the pycrdt
        # document: pycrdt keeps it in Rust, where Python's collector cannot see
        # a cycle through it, so one would keep both alive for good.
        self._loads += 1
        document, token = weakref.ref(self), self._loads
        self._subscription = ydoc.observe(lambda event: _dispatch(document, token, event.update))
        return ydoc

    def _rebind(self, current: Any) -> None:
        """Let the bound pycrdt document go and load a new one holding ``current`` (or empty)."""
        self._retire()
        self._ydoc = self._load(current)

    def _retire(self) -> None:
        # pycrdt keeps an observed document alive for good (the callback lives in
        # Rust); unobserving frees it once nothing else refers to it
        self._ydoc.unobserve(self._subscription)
        _RETIRED.add(self._ydoc)

    def _captured(self, token: int, update: bytes) -> None:
        """A transaction committed on a bound pycrdt document: record it in the store."""
        if self._applying or update == EMPTY_UPDATE:
            return
        if token != self._loads or self._closed:
            raise StaleDocument(
                f"document {self._key!r} was reloaded (deleted, overwritten, replaced by a newer "
                "generation, or closed): this edit to a root fetched before is not recorded; "
                "fetch the root again"
            )
        state = self._replica
        current = state.document(self._key)
        incremental = self._gen is not None and current is not None and current.gen == self._gen
        if not incremental and not self._pristine:
            # cannot happen while refresh() follows every change; never record a partial document
            logger.error("document %r: out of step with the store; edit undone", self._key)
            self.refresh(force=True)
            return
        self._capturing = True
        try:
            # an edit to a pristine (empty) pycrdt document is the whole document
            self._gen = state.edit_document(
                self._key, self._gen if incremental else None, update, self._schema
            )
            self._pristine = False
        except CrdtKvError:
            self._capturing = False
            # the edit is in the pycrdt document but the store refused it: undo by reloading
            self.refresh(force=True)
            raise
        finally:
            self._capturing = False

    def refresh(self, *, force: bool = False) -> None:
        """Bring the bound pycrdt document up to date with the store (called on every change)."""
        if self._closed or self._capturing:
            return
        current = self._replica.document(self._key)
        if current is None:
            if self._gen is not None or force:
                self._gen = None
                self._rebind(None)
            return
        retyped = any(self._schema.get(name, kind) != kind for name, kind in current.schema.items())
        if force or retyped or current.gen != self._gen:
            # a root declared elsewhere under another kind that won is read as that kind here too
            self._gen = current.gen
            self._rebind(current)
            return
        for name, kind in current.schema.items():
            if name not in self._schema:
                self._schema[name] = kind
        self._applying = True
        try:
            vector = bytes(self._ydoc.get_state())
            self._ydoc.apply_update(bytes(pycrdt.get_update(current.update, vector)))
        except Exception as exc:  # not expected: the store's state was checked when it changed
            logger.error("document %r: reloading after a failed update: %s", self._key, exc)
            self._rebind(current)
        finally:
            self._applying = False

    # -- roots -------------------------------------------------------------------

    def _root(self, name: str, kind: str) -> Any:
        self._check_open()
        if type(name) is not str or not 0 < len(name) <= 256:
            raise InvalidArgument("a root name must be a str of 1 to 256 characters")
        _check_text(name, "a root name")
        declared = self._schema.get(name)
        if declared is not None and declared != kind:
            raise WrongType(f"root {name!r} of document {self._key!r} is a {declared}, not a {kind}")
        if declared is None:
            self._schema[name] = kind
        return self._ydoc.get(name, type=_ROOT_CLASSES[kind])

    def map(self, name: str) -> CheckedMap:
        """The map root ``name`` (declared as a map on first use)."""
        root: CheckedMap = self._root(name, "map")
        return root

    def array(self, name: str) -> CheckedArray:
        """The array root ``name`` (declared as an array on first use)."""
        root: CheckedArray = self._root(name, "array")
        return root

    def text(self, name: str) -> CheckedText:
        """The text root ``name`` (declared as a text on first use)."""
        root: CheckedText = self._root(name, "text")
        return root

    # pycrdt's Doc interface for roots, so code written for a pycrdt Doc works here

    def get(self, name: str, *, type: type[Any]) -> Any:
        """The root ``name`` as pycrdt type ``type`` (``Map``, ``Array`` or ``Text``), as ``Doc.get``."""
        return self._root(name, _kind_of(type))

    def __getitem__(self, name: str) -> Any:
        """A declared root, as ``doc[name]`` on a pycrdt Doc; KeyError if not declared."""
        kind = self._schema.get(name)
        if kind is None:
            raise KeyError(name)
        return self._root(name, kind)

    def __setitem__(self, name: str, value: Any) -> None:
        """Declare root ``name`` with a pycrdt shared type and its initial content, as on a pycrdt Doc.

        ``doc["items"] = Map({"apple": 2})``: ``value`` becomes the root. Its
        content is checked now; later edits through ``value`` itself are
        checked as they are recorded (use ``doc["items"]`` for roots that check
        values before applying them).
        """
        kind = _kind_of(type(value))
        check_document_value(value)
        self._root(name, kind)
        self._ydoc[name] = value

    def __contains__(self, name: object) -> bool:
        return name in self._schema

    def keys(self) -> list[str]:
        """Names of the declared roots."""
        return sorted(self._schema)

    @contextmanager
    def transaction(self) -> Iterator[None]:
        """Group edits into one transaction: one Yrs update, one store write."""
        self._check_open()
        with self._ydoc.transaction():
            yield

    # -- reading -------------------------------------------------------------------

    @property
    def key(self) -> str:
        return self._key

    @property
    def generation(self) -> Gen | None:
        """``(stamp, origin)`` that started the document's current generation; None if not created yet."""
        return self._gen

    @property
    def roots(self) -> dict[str, str]:
        """Declared roots: name -> ``"array"``, ``"map"`` or ``"text"``."""
        return dict(self._schema)

    @property
    def ydoc(self) -> pycrdt.Doc[Any]:
        """The bound pycrdt document. Edits through it are recorded too, but
        only the root methods above check numbers before they are applied."""
        return self._ydoc

    def to_py(self) -> dict[str, Any]:
        """The content as plain Python data (as ``store.get(key)`` returns it)."""
        self._check_open()
        for name, kind in self._schema.items():
            self._ydoc.get(name, type=_ROOT_CLASSES[kind])
        return plain_content(self._ydoc, self._schema)

    # -- lifetime ------------------------------------------------------------------

    def _check_open(self) -> None:
        if self._closed:
            raise InvalidArgument(f"document {self._key!r} is closed; call store.doc() again")

    def close(self) -> None:
        """Unbind from the store; edits after this are not recorded."""
        if not self._closed:
            self._closed = True
            self._retire()
            self._release()

    @property
    def closed(self) -> bool:
        return self._closed

    def __repr__(self) -> str:
        return f"<Document {self._key!r} generation={self._gen!r} roots={sorted(self._schema)}>"


__all__ = ["CheckedArray", "CheckedMap", "CheckedText", "Document", "check_document_value"]
