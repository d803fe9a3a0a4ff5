"""Transport plug-ins for crdtkv replication (in-process and WebSocket).

Transports depend on :mod:`crdtkv`, never the reverse. They arrive with the
replication layer; this package is their home.
"""
