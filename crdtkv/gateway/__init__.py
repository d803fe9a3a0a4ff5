"""The PoP's faces: an HTTP API shaped like Workers KV and the Redis protocol (RESP).

Both serve a :class:`~crdtkv.Node`'s store with exactly ``KvStore``'s local
semantics (read-your-writes at this node, replication in the background), each
on its own port, inside the node's event loop.
"""
