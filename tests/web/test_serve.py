"""``annotator serve --workers N`` (web.serve): one SO_REUSEPORT socket per worker, so the
kernel spreads connections over the workers; a second server on the port is refused; SIGTERM
stops every worker."""

from __future__ import annotations

import http.client
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.skipif(
    not hasattr(socket, "SO_REUSEPORT") or not Path("/proc/net/tcp").exists(),
    reason="SO_REUSEPORT and /proc (Linux)",
)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _children(pid: int) -> list[int]:
    out = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                out.append(int(entry.name))
    return out


def _established(pid: int, port: int) -> int:
    """Connections to ``port`` that process ``pid`` holds open (from /proc)."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    count = 0
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        local_port = int(fields[1].split(":")[1], 16)
        if local_port == port and fields[3] == "01" and fields[9] in inodes:  # ESTABLISHED
            count += 1
    return count


def _serve(port: int, tmp_path: Path) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "ANNOTATOR_DATABASE_URL": f"sqlite:///{tmp_path / 'serve.db'}",
        "ANNOTATOR_MEDIA_ROOT": str(tmp_path / "media"),
    }
    cmd = [sys.executable, "-m", "web.serve", "--port", str(port), "--workers", "2"]
    return subprocess.Popen(
        [*cmd, "--log-level", "warning"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )


def test_workers_share_the_connections_and_stop_on_sigterm(tmp_path: Path) -> None:
    port = _free_port()
    server = _serve(port, tmp_path)
    try:
        deadline = time.monotonic() + 60
        while not _listening(port, 2):  # a socket per worker
            assert server.poll() is None, server.stdout.read()  # type: ignore[union-attr]
            assert time.monotonic() < deadline, "the workers did not start"
            time.sleep(0.2)
        worker_pids = [  # not multiprocessing's resource tracker
            p
            for p in _children(server.pid)
            if b"spawn_main" in Path(f"/proc/{p}/cmdline").read_bytes()
        ]
        assert len(worker_pids) == 2
        connections = []
        for _ in range(24):
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
            conn.request("GET", "/health")
            answer = conn.getresponse()
            assert answer.status == 200 and answer.read() == b'{"status":"ok"}'
            connections.append(conn)  # kept open (keep-alive)
        held = [_established(p, port) for p in worker_pids]
        assert sum(held) == 24 and sorted(held)[-2] > 0, held  # both workers got connections
        # A second server on the same port is refused, not let in to split the traffic.
        second = _serve(port, tmp_path)
        out, _ = second.communicate(timeout=60)
        assert second.returncode != 0 and b"cannot listen on 127.0.0.1" in out, out
        for conn in connections:
            conn.close()
        server.send_signal(signal.SIGTERM)
        assert server.wait(timeout=30) == 0
        assert not [p for p in worker_pids if Path(f"/proc/{p}").exists()]
        assert not _listening(port, 1)
    finally:
        if server.poll() is None:
            server.kill()
            server.wait()


def _listening(port: int, sockets: int) -> bool:
    """At least ``sockets`` sockets listen on ``port`` (one per worker)."""
    n = 0
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        if int(fields[1].split(":")[1], 16) == port and fields[3] == "0A":  # LISTEN
            n += 1
    return n >= sockets
