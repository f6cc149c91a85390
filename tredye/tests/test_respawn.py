"""scripts/respawn.py: the local runner's supervisor restarts what crashes, stops when asked."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from testing.helpers import ROOT, wait_for

RESPAWN = ROOT / "scripts" / "respawn.py"

# A child that notes each start (its pid) in a file, then exits with `code` or, with `sleep`,
# waits for SIGTERM and notes that it was asked to stop.
CHILD = """
import os, signal, sys, time
path, mode = sys.argv[1], sys.argv[2]
with open(path, "a") as f:
    f.write(f"start {os.getpid()}\\n")
def stop(*_):
    with open(path, "a") as f:
        f.write("terminated\\n")
    sys.exit(0)
signal.signal(signal.SIGTERM, stop)
if mode == "sleep":
    time.sleep(60)
sys.exit(int(mode))
"""


def supervise(tmp_path: Path, mode: str, *options: str) -> tuple[subprocess.Popen, Path]:
    journal = tmp_path / "journal"
    journal.touch()
    process = subprocess.Popen(
        [sys.executable, str(RESPAWN), "--name", "feed", *options, "--"]
        + [sys.executable, "-c", CHILD, str(journal), mode],
        stderr=subprocess.PIPE,
        text=True,
    )
    return process, journal


def starts(journal: Path) -> list[int]:
    lines = journal.read_text().splitlines()
    return [int(line.split()[1]) for line in lines if line.startswith("start")]


def alive(pid: int) -> bool:
    """Running, not gone and not a zombie waiting to be reaped."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return False
    return "\nState:\tZ" not in status


def test_a_command_that_crashes_is_restarted_with_backoff_and_a_loud_line(tmp_path):
    # given a command that exits with status 1 as soon as it starts
    process, journal = supervise(tmp_path, "1", "--base-delay", "0.1", "--max-delay", "0.4")
    # then it is started again and again
    wait_for(lambda: len(starts(journal)) >= 4)
    process.send_signal(signal.SIGTERM)
    assert process.wait(10) == 0
    stderr = process.stderr.read()
    # each time with one line saying what happened, the delay doubling up to the cap
    assert "respawn: feed exited with status 1; restarting in 0.1 s (restart 1)" in stderr
    assert "respawn: feed exited with status 1; restarting in 0.2 s (restart 2)" in stderr
    assert "respawn: feed exited with status 1; restarting in 0.4 s (restart 3)" in stderr
    assert "restarting in 0.8 s" not in stderr


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_stop_signal_is_forwarded_and_nothing_is_restarted(tmp_path, signum):
    # given a running command
    process, journal = supervise(tmp_path, "sleep", "--base-delay", "0.1")
    wait_for(lambda: len(starts(journal)) == 1)
    [pid] = starts(journal)
    # when the runner is asked to stop (Ctrl-C, or honcho's SIGTERM)
    process.send_signal(signum)
    # then the command gets the signal, and the supervisor exits cleanly without a restart
    assert process.wait(10) == 0
    wait_for(lambda: not alive(pid), 5)
    time.sleep(0.3)
    assert len(starts(journal)) == 1
    if signum == signal.SIGTERM:
        assert "terminated" in journal.read_text()
    assert "restarting" not in process.stderr.read()


def test_a_stop_during_the_backoff_ends_the_wait_at_once(tmp_path):
    process, journal = supervise(tmp_path, "3", "--base-delay", "20", "--max-delay", "20")
    wait_for(lambda: len(starts(journal)) == 1)
    time.sleep(0.3)  # it has exited; the supervisor is waiting 20 s
    asked = time.monotonic()
    process.send_signal(signal.SIGTERM)
    assert process.wait(10) == 0
    assert time.monotonic() - asked < 2
    stderr = process.stderr.read()
    assert "feed exited with status 3; restarting in 20.0 s (restart 1)" in stderr
    assert "not restarted: stop requested" in stderr
    assert len(starts(journal)) == 1


def test_the_command_does_not_outlive_a_killed_supervisor(tmp_path):
    process, journal = supervise(tmp_path, "sleep")
    wait_for(lambda: len(starts(journal)) == 1)
    [pid] = starts(journal)
    process.kill()  # as honcho does when a process ignores SIGTERM
    process.wait(10)
    wait_for(lambda: not alive(pid), 5)


def test_every_procfile_process_runs_under_the_supervisor():
    lines = [line for line in (ROOT / "Procfile").read_text().splitlines() if ":" in line]
    processes = [line for line in lines if not line.startswith("#")]
    assert len(processes) >= 8
    for line in processes:
        name, command = line.split(":", 1)
        assert command.strip().startswith(f"exec python scripts/respawn.py --name {name} -- ")


def test_under_honcho_a_crash_restarts_that_process_and_ctrl_c_stops_all(tmp_path):
    # given honcho running a process that keeps crashing beside one that runs steadily
    honcho = Path(sys.executable).with_name("honcho")
    steady_pids = tmp_path / "steady"
    respawn = f"exec {sys.executable} {RESPAWN}"
    (tmp_path / "Procfile").write_text(
        f"crashy: {respawn} --name crashy --base-delay 0.2 -- sh -c 'sleep 0.3; exit 1'\n"
        f"steady: {respawn} --name steady -- sh -c 'echo $$ > {steady_pids}; exec sleep 60'\n"
    )
    runner = subprocess.Popen(
        [str(honcho), "start", "-f", str(tmp_path / "Procfile")],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        wait_for(lambda: steady_pids.exists() and steady_pids.read_text().strip())
        steady = int(steady_pids.read_text())
        time.sleep(1.5)
        # then the crashing one has been restarted, and the steady one was never stopped
        assert runner.poll() is None
        assert alive(steady)
        # when Ctrl-C reaches honcho, everything stops, and nothing is started again
        runner.send_signal(signal.SIGINT)
        runner.wait(15)
    finally:
        if runner.poll() is None:
            runner.kill()
    output = runner.stdout.read()
    assert "crashy exited with status 1; restarting in 0.4 s (restart 2)" in output, output
    assert "steady stopped" in output, output
    wait_for(lambda: not alive(steady), 5)
