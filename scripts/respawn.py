"""Run one command and start it again whenever it exits, until asked to stop.

    python scripts/respawn.py --name feed -- python manage.py run_feed

The local runner (`make run`, honcho and the Procfile) stops every process when one exits;
each Procfile line runs its command through this instead, so a process that crashes is
started again after an exponential backoff (1 s, 2 s, 4 s ... up to --max-delay, back to 1 s
once it has run for --reset-after seconds), with one loud line on stderr each time:

    respawn: feed exited with status 1; restarting in 2.0 s (restart 3)

SIGINT, SIGTERM and SIGHUP are a request to stop: they are forwarded to the command, which
is then waited for and not started again. The command runs in a process group of its own (a
signal reaches it once, from here) and is killed if this supervisor dies without a word
(Linux: PR_SET_PDEATHSIG), so it never outlives the runner.

Standard library only, and outside the `tredye` package, whose import loads Celery: one of
these runs beside every process. Production uses systemd's Restart= instead (deploy/).
"""

from __future__ import annotations

import argparse
import ctypes
import os
import signal
import subprocess
import sys
import time

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    """In the child, before exec: get SIGKILL when the supervisor dies (Linux only)."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    except (OSError, AttributeError):
        pass  # not Linux: a supervisor killed with SIGKILL may leave the command running


def describe(returncode: int) -> str:
    if returncode < 0:
        try:
            return f"signal {signal.Signals(-returncode).name}"
        except ValueError:
            return f"signal {-returncode}"
    return f"status {returncode}"


class Supervisor:
    def __init__(
        self,
        command: list[str],
        *,
        name: str,
        base_delay: float = 1.0,
        max_delay: float = 30.0,
        reset_after: float = 60.0,
    ) -> None:
        self.command = command
        self.name = name
        self.base_delay = base_delay
        self.max_delay = max_delay
        self.reset_after = reset_after
        self.child: subprocess.Popen | None = None
        self.stop_signal: int | None = None
        self.restarts = 0

    def log(self, message: str) -> None:
        print(f"respawn: {message}", file=sys.stderr, flush=True)

    def request_stop(self, signum: int, _frame: object = None) -> None:
        self.stop_signal = signum
        if self.child is not None and self.child.poll() is None:
            os.killpg(self.child.pid, signum)  # its own group: the command and its children

    def sleep(self, seconds: float) -> None:
        """Sleep, but return at once when a stop is requested."""
        deadline = time.monotonic() + seconds
        while self.stop_signal is None and (left := deadline - time.monotonic()) > 0:
            time.sleep(min(left, 0.05))

    def run(self) -> int:
        for signum in STOP_SIGNALS:
            signal.signal(signum, self.request_stop)
        failures = 0  # in a row, each after a short run
        while True:
            started = time.monotonic()
            try:
                self.child = subprocess.Popen(  # noqa: S603 - the operator's own command
                    self.command, start_new_session=True, preexec_fn=_die_with_parent
                )
            except OSError as error:
                self.log(f"{self.name}: cannot start {self.command[0]!r}: {error}")
                return 127
            if self.stop_signal is not None:  # asked to stop while it was starting
                self.request_stop(self.stop_signal)
            returncode = self.child.wait()
            if self.stop_signal is not None:
                self.log(f"{self.name} stopped ({describe(returncode)})")
                requested = returncode in (0, -self.stop_signal, 128 + self.stop_signal)
                return 0 if requested else (returncode if returncode > 0 else 1)
            failures = 1 if time.monotonic() - started >= self.reset_after else failures + 1
            delay = min(self.max_delay, self.base_delay * 2 ** (failures - 1))
            self.restarts += 1
            self.log(
                f"{self.name} exited with {describe(returncode)}; "
                f"restarting in {delay:.1f} s (restart {self.restarts})"
            )
            self.sleep(delay)
            if self.stop_signal is not None:
                self.log(f"{self.name} not restarted: stop requested")
                return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="Run a command; start it again with backoff whenever it exits.",
        usage="%(prog)s [--name NAME] [options] -- command [args ...]",
    )
    parser.add_argument("--name", help="Name in log lines (default: the command).")
    parser.add_argument("--base-delay", type=float, default=1.0, help="First delay, seconds.")
    parser.add_argument("--max-delay", type=float, default=30.0, help="Longest delay, seconds.")
    parser.add_argument(
        "--reset-after",
        type=float,
        default=60.0,
        help="A run at least this long (seconds) starts the backoff again from the first delay.",
    )
    parser.add_argument("command", nargs=argparse.REMAINDER)
    options = parser.parse_args(argv)
    command = options.command[1:] if options.command[:1] == ["--"] else options.command
    if not command:
        parser.error("no command given (put it after --)")
    if options.base_delay <= 0 or options.max_delay < options.base_delay:
        parser.error("--base-delay must be positive and at most --max-delay")
    supervisor = Supervisor(
        command,
        name=options.name or os.path.basename(command[0]),
        base_delay=options.base_delay,
        max_delay=options.max_delay,
        reset_after=options.reset_after,
    )
    return supervisor.run()


if __name__ == "__main__":
    sys.exit(main())
