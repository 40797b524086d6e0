"""A lean closed-loop HTTP/1.1 load generator for the API benchmark (its own process).

``clients`` keep-alive connections to one host; each sends a GET, reads the answer (status line
and ``Content-Length`` body), then sends its next GET, until ``seconds`` passed or
``max_requests`` were sent. Requests are prebuilt bytes; the client is an asyncio ``Protocol``
on uvloop when it is installed, so a request costs the generator a few tens of microseconds of
CPU instead of the ~1 ms of a full client library, leaving the cores to the server it measures.
It speaks only what the benchmark needs: GET, fixed headers, ``Content-Length`` bodies (a
chunked answer is an error).

    python bench/loadgen.py --port 8765 --paths paths.txt --header "Authorization: Bearer T" \\
        --clients 50 --seconds 10 --out result.json

``result.json``: ``{"latencies_s": [...], "errors": n, "statuses": {...}, "wall_s": s,
"cpu_s": user+system seconds of this process while it sent}``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import resource
import time
from collections import Counter
from pathlib import Path
from typing import cast

__all__ = ["run"]


class _Run:
    def __init__(self, requests: list[bytes], seconds: float, max_requests: int) -> None:
        self.requests = requests
        self.max_requests = max_requests
        self.start = time.perf_counter()
        self.stop = self.start + seconds
        self.sent = 0
        self.latencies: list[float] = []
        self.statuses: Counter[int] = Counter()
        self.errors = 0
        self.last = self.start

    def more(self) -> bool:
        return self.sent < self.max_requests and time.perf_counter() < self.stop


class _Client(asyncio.Protocol):
    """One keep-alive connection, one request in flight."""

    def __init__(self, run: _Run, seed: int, closed: asyncio.Future[None]) -> None:
        self.run = run
        self.rng = random.Random(seed)
        self.closed = closed
        self.buf = bytearray()
        self.need = -1  # bytes of the whole answer once its head is parsed
        self.status = 0
        self.t0 = 0.0
        self.in_flight = False
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is no subclass
        self._send()

    def _send(self) -> None:
        assert self.transport is not None
        if not self.run.more():
            self.transport.close()
            return
        self.run.sent += 1
        self.buf.clear()
        self.t0 = time.perf_counter()
        self.in_flight = True
        self.transport.write(self.rng.choice(self.run.requests))

    def data_received(self, data: bytes) -> None:
        self.buf += data
        if self.need < 0:
            end = self.buf.find(b"\r\n\r\n")
            if end < 0:
                return
            head = bytes(self.buf[:end]).lower()
            self.status = int(head[9:12])
            at = head.find(b"\r\ncontent-length:")
            if at < 0:
                raise RuntimeError(f"an answer without Content-Length: {head[:200]!r}")
            stop = head.find(b"\r\n", at + 2)
            self.need = end + 4 + int(head[at + 17 :] if stop < 0 else head[at + 17 : stop])
        if len(self.buf) < self.need:
            return
        now = time.perf_counter()
        run = self.run
        run.latencies.append(now - self.t0)
        run.statuses[self.status] += 1
        run.last = now
        if self.status != 200:
            run.errors += 1
        self.need = -1
        self.in_flight = False
        self._send()

    def connection_lost(self, exc: Exception | None) -> None:
        if self.in_flight or exc is not None:
            self.run.errors += 1  # closed with an answer pending
        if not self.closed.done():
            self.closed.set_result(None)


async def _drive(host: str, port: int, run: _Run, clients: int) -> None:
    loop = asyncio.get_running_loop()

    async def one(seed: int) -> None:
        closed: asyncio.Future[None] = loop.create_future()
        transport, _ = await loop.create_connection(lambda: _Client(run, seed, closed), host, port)
        try:  # bounded: a server that stops answering ends the run, counted as errors
            await asyncio.wait_for(closed, timeout=run.stop - time.perf_counter() + 30)
        except TimeoutError:
            run.errors += 1
            transport.abort()

    await asyncio.gather(*(one(i) for i in range(clients)))


def run(
    host: str,
    port: int,
    paths: list[str],
    headers: list[str],
    clients: int,
    seconds: float,
    max_requests: int,
) -> dict[str, object]:
    """Drive the server; the measurement as a JSON-able dict (see the module doc)."""
    extra = "".join(f"{h}\r\n" for h in headers)
    requests = [
        f"GET {p} HTTP/1.1\r\nHost: {host}:{port}\r\n{extra}\r\n".encode("latin-1") for p in paths
    ]
    try:
        import uvloop

        runner = uvloop.run
    except ImportError:  # pragma: no cover - uvicorn[standard] brings uvloop
        runner = asyncio.run
    cpu0 = resource.getrusage(resource.RUSAGE_SELF)
    state = _Run(requests, seconds, max_requests)
    runner(_drive(host, port, state, clients))
    cpu1 = resource.getrusage(resource.RUSAGE_SELF)
    cpu = (cpu1.ru_utime - cpu0.ru_utime) + (cpu1.ru_stime - cpu0.ru_stime)
    return {
        "latencies_s": state.latencies,
        "errors": state.errors,
        "statuses": {str(k): v for k, v in state.statuses.items()},
        "wall_s": state.last - state.start,
        "cpu_s": cpu,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--paths", type=Path, required=True, help="One path (and query) a line.")
    parser.add_argument("--header", action="append", default=[], help="'Name: value'.")
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--max-requests", type=int, default=1_000_000)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    paths = [p for p in args.paths.read_text().splitlines() if p]
    result = run(
        args.host, args.port, paths, args.header, args.clients, args.seconds, args.max_requests
    )
    args.out.write_text(json.dumps(result))


if __name__ == "__main__":
    main()
