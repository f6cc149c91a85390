"""Several daphne processes serving one port: the web process of the Procfile.

    python -m tredye.serve [--processes N] [--host 127.0.0.1] [--port 8000] [daphne options]

One daphne process runs Python on one core; a host with more cores runs more of them. This
binds the listening TCP socket itself (SO_REUSEADDR) and starts N daphne processes that each
adopt it (`daphne --fd`), so they share one port and one accept queue: the kernel hands each
new connection to whichever process accepts it first, and no proxy is needed in front to
spread them. N defaults to WEB_PROCESSES (tredye/settings/base.py: the CPUs this process may
run on). Options it does not know are daphne's (`--proxy-headers`, `-v 0`, ...).

SIGTERM, SIGINT and SIGHUP are a request to stop: each daphne gets SIGTERM (SIGINT stays
SIGINT) and this exits once they have all stopped (0), killing any still running after
--stop-timeout seconds. It restarts nothing itself: if a daphne exits unasked, the others
are stopped and this exits with status 1, so the supervisor (`scripts/respawn.py`, systemd)
starts the group again on a free port rather than running with a process missing.

Each daphne runs in a process group of its own (a signal to this one's group reaches them
once, forwarded from here) and gets SIGKILL if this process dies without a word (Linux:
PR_SET_PDEATHSIG), so none outlives it holding the port. Prometheus metrics need nothing
more: each process writes its own files in PROMETHEUS_MULTIPROC_DIR (tredye/metrics.py) and a
scrape of any of them merges them all.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import functools
import os
import signal
import socket
import subprocess
import sys
import time

APPLICATION = "tredye.asgi:application"
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
PR_SET_PDEATHSIG = 1
# Connections the kernel queues for the processes to accept (capped at net.core.somaxconn):
# a burst of sockets reconnecting after a restart should wait in the queue, not be refused.
BACKLOG = 4096
POLL_S = 0.2
# Daphne's own binding options: this process binds; passing one of them would make every
# daphne bind the port again.
BINDING_OPTIONS = ("-b", "--bind", "-p", "-u", "--unix-socket", "--fd", "-e", "--endpoint")


def log(message: str) -> None:
    print(f"serve: {message}", file=sys.stderr, flush=True)


def default_processes() -> int:
    """WEB_PROCESSES from the settings (the environment, else the CPUs usable here)."""
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tredye.settings.local")
    from django.conf import settings

    return int(settings.WEB_PROCESSES)


def listening_socket(host: str, port: int) -> socket.socket:
    """A TCP socket bound to host:port and listening, for the daphne processes to adopt."""
    family, kind, proto, _name, address = socket.getaddrinfo(
        host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
    )[0]
    listener = socket.socket(family, kind, proto)
    try:
        # A restart must not wait for the previous run's connections to leave TIME_WAIT.
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(address)
        listener.listen(BACKLOG)
    except OSError:
        listener.close()
        raise
    return listener


def daphne_command(listener: socket.socket, daphne_args: list[str]) -> list[str]:
    """The command of one daphne process adopting `listener` (inherited at the same number)."""
    fd = listener.fileno()
    if listener.family == socket.AF_INET6:
        # `--fd` adopts an IPv4 socket; Twisted's endpoint string names the family.
        binding = ["--endpoint", f"fd:fileno={fd}:domain=INET6"]
    else:
        binding = ["--fd", str(fd)]
    return [sys.executable, "-m", "daphne", *binding, *daphne_args, APPLICATION]


def _die_with(parent: int) -> None:
    """In the child, before exec: get SIGKILL when the parent dies (Linux only)."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    except (OSError, AttributeError):
        return  # not Linux: a parent killed with SIGKILL may leave its daphnes running
    if os.getppid() != parent:
        os._exit(1)  # the parent died before the request above was made


def describe(returncode: int) -> str:
    if returncode < 0:
        try:
            return f"signal {signal.Signals(-returncode).name}"
        except ValueError:
            return f"signal {-returncode}"
    return f"status {returncode}"


class Group:
    """N daphne processes on one listening socket, stopped together."""

    def __init__(self, command: list[str], processes: int, fd: int, stop_timeout: float) -> None:
        self.command = command
        self.processes = processes
        self.fd = fd
        self.stop_timeout = stop_timeout
        self.children: list[subprocess.Popen] = []
        self.stop_requested: int | None = None
        self.stopping_since: float | None = None

    def request_stop(self, signum: int, _frame: object = None) -> None:
        if self.stop_requested is None:
            self.stop_requested = signum
        self._stop(signal.SIGINT if signum == signal.SIGINT else signal.SIGTERM)

    def _stop(self, signum: int) -> None:
        if self.stopping_since is None:
            self.stopping_since = time.monotonic()
        for child in self.children:
            if child.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(child.pid, signum)

    def start(self) -> None:
        parent = os.getpid()
        for _ in range(self.processes):
            if self.stopping_since is not None:
                return  # asked to stop while starting
            self.children.append(
                subprocess.Popen(  # noqa: S603 - daphne, with the operator's options
                    self.command,
                    pass_fds=(self.fd,),  # inherited, at the same number, by this child only
                    process_group=0,
                    preexec_fn=functools.partial(_die_with, parent),
                )
            )
        log(
            f"{len(self.children)} daphne processes on one socket: "
            + ", ".join(str(child.pid) for child in self.children)
        )

    def wait(self) -> int:
        """Wait until every child has exited; the exit status of this process."""
        failed = False
        reported: set[int] = set()
        while True:
            running = 0
            for child in self.children:
                returncode = child.poll()
                if returncode is None:
                    running += 1
                elif child.pid not in reported:
                    reported.add(child.pid)
                    if self.stopping_since is None:
                        failed = True
                        log(
                            f"daphne {child.pid} exited unasked with {describe(returncode)}; "
                            "stopping the others (the supervisor restarts the group)"
                        )
                        self._stop(signal.SIGTERM)
                    elif returncode != 0 and self.stop_requested is not None:
                        log(f"daphne {child.pid} stopped with {describe(returncode)}")
            if not running:
                return 1 if failed else 0
            if (
                self.stopping_since is not None
                and time.monotonic() - self.stopping_since > self.stop_timeout
            ):
                log(f"{running} daphne processes still running after {self.stop_timeout:g} s")
                for child in self.children:
                    if child.poll() is None:
                        child.kill()
                failed = True
                self.stopping_since = time.monotonic()  # do not kill twice a second
            time.sleep(POLL_S)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tredye.serve",
        description=__doc__.splitlines()[0],
        allow_abbrev=False,  # a daphne option must never pass for an abbreviation of ours
        epilog="Any other option is passed to each daphne process.",
    )
    parser.add_argument(
        "--processes", type=int, default=None, help="daphne processes (default WEB_PROCESSES)"
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument(
        "--stop-timeout",
        type=float,
        default=25.0,
        help="seconds the processes get to stop before they are killed",
    )
    args, daphne_args = parser.parse_known_args(argv)
    if daphne_args[:1] == ["--"]:
        daphne_args = daphne_args[1:]
    binding = [arg for arg in daphne_args if arg.split("=", 1)[0] in BINDING_OPTIONS]
    if binding:
        parser.error(f"{' '.join(binding)}: this binds the socket; give --host and --port")
    processes = args.processes if args.processes is not None else default_processes()
    if processes < 1:
        parser.error("--processes must be at least 1")

    listener = listening_socket(args.host, args.port)
    group = Group(
        daphne_command(listener, daphne_args), processes, listener.fileno(), args.stop_timeout
    )
    for signum in STOP_SIGNALS:
        signal.signal(signum, group.request_stop)
    log(f"listening on {args.host}:{args.port}")
    try:
        group.start()
    finally:
        # The children hold the socket now; the port is freed when the last of them exits.
        listener.close()
    return group.wait()


if __name__ == "__main__":
    sys.exit(main())
