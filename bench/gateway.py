#!/usr/bin/env python3
"""The PoP's faces under load: RESP against redis-server, HTTP against its bare server stack.

One case, ``gateway``, in one run:

* ``redis-benchmark -t get,set,incr -c 50`` against ``crdtkv serve --resp`` and
  against a real ``redis-server``, without and with ``-P 16``
  (:mod:`gateway_resp`; goal: the face at least 0.25x redis-server);
* ``wrk`` against ``GET /v1/kv/{key}`` on ``crdtkv serve --http`` and against a
  hello world on the same h11 + anyio server loop (:mod:`gateway_http`; goal:
  at least 0.5x the bare stack).

Usage: ``python bench/run.py gateway`` (about a minute), ``python bench/run.py
--quick gateway`` (seconds). Needs redis-server, redis-tools and wrk (Debian).
"""

from __future__ import annotations

import gateway_http
import gateway_resp
from report import Options, Row, case


@case("gateway", "The PoP's faces: RESP vs redis-server, HTTP GET vs the bare server stack")
def gateway(options: Options) -> list[Row]:
    rows = gateway_resp.rows(options)
    for row in gateway_http.rows(options):
        row.num = str(len(rows) + 1)
        rows.append(row)
    return rows
