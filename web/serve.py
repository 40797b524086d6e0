"""Run the app under uvicorn: one process, or ``workers`` processes that each listen on a
socket of their own, bound with ``SO_REUSEPORT`` (Linux), so the kernel spreads connections
evenly over them.

Why not uvicorn's own ``--workers``: it binds one socket that every worker shares, and the
worker that wakes first accepts every connection then waiting (uvloop accepts until the
backlog is empty). A burst of keep-alive connections (a proxy's pool, the benchmark's 50
clients) then lands mostly on one worker: 40 of 50 on one of two workers in bench/api.py, whose
clients waited about four times longer than the others. With a socket per worker the kernel
hashes each new connection to one of them (26/24 there).

    python -m web.serve --port 8000 --workers 2
"""

from __future__ import annotations

import argparse
import gc
import logging
import multiprocessing
import signal
import socket
import threading
from multiprocessing.process import BaseProcess
from types import FrameType

import uvicorn

__all__ = ["APP", "serve"]

APP = "web.app:create_app"
BACKLOG = 2048

log = logging.getLogger(__name__)


def _socket(host: str, port: int, *, reuse_port: bool) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if reuse_port:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host, port))
    return sock


def _listen(host: str, port: int) -> socket.socket:
    sock = _socket(host, port, reuse_port=True)
    sock.listen(BACKLOG)
    return sock


def _run(config: uvicorn.Config, sockets: list[socket.socket] | None = None) -> None:
    config.load()  # imports and builds the app
    # What exists now (modules, the app, its routes, settings) lives as long as the process:
    # keep it out of the garbage collector's full passes, which otherwise walk all of it (~0.1
    # s on this app, a stall of every request in flight on the worker) every few seconds.
    gc.collect()
    gc.freeze()
    uvicorn.Server(config).run(sockets=sockets)


def _worker(host: str, port: int, log_level: str, access_log: bool) -> None:
    sock = _listen(host, port)
    config = uvicorn.Config(
        APP, factory=True, log_level=log_level, access_log=access_log, backlog=BACKLOG
    )
    _run(config, [sock])


def serve(
    host: str = "127.0.0.1",
    port: int = 8000,
    workers: int = 1,
    log_level: str = "info",
    access_log: bool = True,
) -> None:
    """Serve :data:`APP` until SIGINT or SIGTERM: in this process, or with ``workers > 1``
    (and SO_REUSEPORT) in that many processes, each restarted if it dies."""
    if workers <= 1:
        config = uvicorn.Config(
            APP, factory=True, host=host, port=port, log_level=log_level, access_log=access_log
        )
        _run(config)
        return
    if not hasattr(socket, "SO_REUSEPORT"):  # not Linux: uvicorn's workers, one shared socket
        uvicorn.run(
            APP,
            factory=True,
            host=host,
            port=port,
            workers=workers,
            log_level=log_level,
            access_log=access_log,
        )
        return
    logging.basicConfig(level=log_level.upper(), format="%(levelname)s:     %(message)s")
    # A port in use fails here, once, not in every worker. This bind is without SO_REUSEPORT,
    # so another server of ours already on the port is refused too (with it, the kernel would
    # let both listen and split the connections between them).
    try:
        _socket(host, port, reuse_port=False).close()
    except OSError as exc:
        raise SystemExit(f"cannot listen on {host}:{port}: {exc.strerror}") from exc
    stop = threading.Event()

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        stop.set()

    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, on_signal)
    context = multiprocessing.get_context("spawn")

    def start() -> BaseProcess:
        process = context.Process(target=_worker, args=(host, port, log_level, access_log))
        process.start()
        return process

    processes = [start() for _ in range(workers)]
    log.info("serving on http://%s:%d with %d worker processes", host, port, workers)
    while not stop.wait(0.5):
        for i, process in enumerate(processes):
            # A worker that stopped cleanly (exit 0) was told to; one that died is replaced.
            died = not process.is_alive() and process.exitcode not in (0, None)
            if died and not stop.is_set():
                log.warning("worker %s exited (%s): restarting it", process.pid, process.exitcode)
                processes[i] = start()
        if all(not p.is_alive() and p.exitcode == 0 for p in processes):
            break
    for process in processes:
        if process.is_alive():
            process.terminate()  # SIGTERM: uvicorn finishes the requests in flight
    for process in processes:
        process.join(30)
        if process.is_alive():
            process.kill()
            process.join()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--log-level", default="info")
    parser.add_argument("--no-access-log", action="store_true")
    args = parser.parse_args()
    serve(args.host, args.port, args.workers, args.log_level, not args.no_access_log)


if __name__ == "__main__":
    main()
