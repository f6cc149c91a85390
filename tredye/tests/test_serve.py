"""`python -m tredye.serve`: several daphne processes answer on one port, and stop together."""

from __future__ import annotations

import os
import re
import signal
import socket
import sys
from pathlib import Path

import pytest

from testing.helpers import child_pids, wait_for, wait_for_http
from tredye.devbroker import free_port


def alive(pid: int) -> bool:
    """Whether `pid` runs (a zombie, ended but not yet reaped, does not)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def server_side_inode(server_port: int, client_port: int) -> str | None:
    """The inode of the server's end of the TCP connection from `client_port` (/proc/net/tcp)."""
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        local_port = int(fields[1].rsplit(":", 1)[1], 16)
        remote_port = int(fields[2].rsplit(":", 1)[1], 16)
        if local_port == server_port and remote_port == client_port and fields[9] != "0":
            return fields[9]
    return None


def holder(pids: set[int], inode: str) -> int | None:
    """Which of `pids` has the socket `inode` open: the process that accepted the connection."""
    target = f"socket:[{inode}]"
    for pid in pids:
        fd_dir = Path(f"/proc/{pid}/fd")
        try:
            names = os.listdir(fd_dir)
        except OSError:
            continue
        for name in names:
            try:
                if os.readlink(fd_dir / name) == target:
                    return pid
            except OSError:
                continue  # closed meanwhile
    return None


def get(connection: socket.socket, path: str) -> tuple[int, bytes]:
    """One keep-alive HTTP/1.1 GET on an open connection: (status, body)."""
    connection.sendall(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode())
    received = b""
    while b"\r\n\r\n" not in received:
        chunk = connection.recv(65536)
        assert chunk, f"connection closed before the headers: {received!r}"
        received += chunk
    head, body = received.split(b"\r\n\r\n", 1)
    length = int(re.search(rb"(?i)content-length: *(\d+)", head).group(1))
    while len(body) < length:
        chunk = connection.recv(65536)
        assert chunk, "connection closed before the body"
        body += chunk
    return int(head.split()[1]), body


def accepted_by(daphnes: set[int], port: int, connection: socket.socket) -> int:
    """The daphne process that accepted `connection` (it is the only one holding it)."""
    client_port = connection.getsockname()[1]

    def found() -> int | None:
        inode = server_side_inode(port, client_port)
        return holder(daphnes, inode) if inode else None

    return wait_for(found, 10, "a daphne process to accept the connection")  # type: ignore[return-value]


@pytest.fixture
def serve(start_test_process, tmp_path: Path):
    """`python -m tredye.serve --processes 2` on a free port, with a metrics directory of its
    own; returns (process, port, daphne pids)."""
    port = free_port()
    process = start_test_process(
        "serve",
        sys.executable, "-m", "tredye.serve", "--processes", "2",
        "--host", "127.0.0.1", "--port", str(port),
        env={"PROMETHEUS_MULTIPROC_DIR": str(tmp_path / "prometheus")},
    )  # fmt: skip
    try:
        wait_for_http(f"http://127.0.0.1:{port}/healthz", 60, process.popen)
        wait_for(lambda: len(child_pids(process.popen.pid)) == 2, 10, "two daphne processes")
    except (RuntimeError, AssertionError) as error:
        raise AssertionError(f"{error}\n{process.output()}") from error
    daphnes = child_pids(process.popen.pid)
    for pid in daphnes:
        command = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        assert b"daphne" in command, command
        assert b"--fd" in command, command
    return process, port, daphnes


def metrics_scrapes(body: bytes) -> float:
    return float(re.search(rb"(?m)^tredye_metrics_scrapes_total (\S+)$", body).group(1))


def test_two_daphne_processes_answer_on_one_port_and_sigterm_stops_them_all(serve) -> None:
    # given two daphne processes sharing one listening socket
    process, port, daphnes = serve

    # when connections are opened one after another (each kept open, so a process that
    # accepted one is busy a moment), until each process has accepted and answered one
    answered_by: dict[int, socket.socket] = {}
    connections = []
    try:
        for _ in range(200):
            connection = socket.create_connection(("127.0.0.1", port), timeout=10)
            connections.append(connection)
            pid = accepted_by(daphnes, port, connection)
            status, body = get(connection, "/healthz")
            assert (status, body) == (200, b'{"status": "ok"}')
            answered_by.setdefault(pid, connection)
            if len(answered_by) == 2:
                break

        # then both processes serve requests on the one port
        assert set(answered_by) == daphnes, f"only {set(answered_by)} of {daphnes} answered"

        # and /metrics on either process counts what every process counted: scraped once
        # through each, the second scrape sees both
        first, second = (answered_by[pid] for pid in sorted(daphnes))
        before = metrics_scrapes(get(first, "/metrics")[1])
        assert metrics_scrapes(get(second, "/metrics")[1]) == before + 1
        assert metrics_scrapes(get(first, "/metrics")[1]) == before + 2
    finally:
        for connection in connections:
            connection.close()

    # when the server is asked to stop
    process.popen.send_signal(signal.SIGTERM)

    # then every daphne stops, and so does the server, with success
    assert process.popen.wait(30) == 0, process.output()
    assert not [pid for pid in daphnes if alive(pid)]
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", port), timeout=2).close()


def test_a_daphne_that_dies_stops_the_others_and_the_server_fails(serve) -> None:
    # given two daphne processes sharing one listening socket
    process, _port, daphnes = serve
    dead, survivor = sorted(daphnes)

    # when one of them dies
    os.kill(dead, signal.SIGKILL)

    # then the server stops the other and exits with a failure, for its supervisor to restart
    assert process.popen.wait(30) != 0
    assert not alive(survivor)
    assert f"daphne {dead} exited unasked with signal SIGKILL" in process.output()


def test_a_binding_option_for_daphne_is_refused(start_test_process) -> None:
    # when daphne is given a port of its own to bind
    process = start_test_process(
        "serve", sys.executable, "-m", "tredye.serve", "--processes", "1", "-p", "8000"
    )

    # then the server refuses to start, saying why
    assert process.popen.wait(30) == 2
    assert "this binds the socket; give --host and --port" in process.output()
