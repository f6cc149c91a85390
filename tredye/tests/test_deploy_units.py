"""deploy/systemd: one unit per Procfile process, each restarting its process for ever."""

from __future__ import annotations

import configparser

import pytest

from testing.helpers import ROOT

UNITS = ROOT / "deploy" / "systemd"


def procfile() -> dict[str, list[str]]:
    """Process name -> the command respawn.py runs, as words."""
    commands = {}
    for line in (ROOT / "Procfile").read_text().splitlines():
        if line.startswith("#") or ":" not in line:
            continue
        name, command = line.split(":", 1)
        commands[name] = command.split(" -- ", 1)[1].split()
    return commands


def unit(name: str) -> configparser.ConfigParser:
    path = UNITS / (f"tredye-{name}@.service" if name == "web" else f"tredye-{name}.service")
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.optionxform = str  # systemd keys are case-sensitive
    parser.read_string(path.read_text())
    return parser


@pytest.mark.parametrize("name", sorted(procfile()))
def test_each_process_has_a_unit_that_always_restarts_it(name):
    service = unit(name)["Service"]
    assert service["Restart"] == "always"
    assert float(service["RestartSec"]) > 0
    assert service["EnvironmentFile"] == "/etc/tredye/tredye.env"
    assert unit(name)["Unit"]["StartLimitIntervalSec"] == "0"
    # the same command as `make run` starts, but for addresses and paths
    words = service["ExecStart"].replace("/opt/tredye/.venv/bin/", "").split()
    for word in procfile()[name]:
        if "$" not in word and "/" not in word:
            assert word in words, f"{word!r} of the Procfile's {name} is not in its unit"
    assert f"tredye-{name}" in (UNITS / "tredye.target").read_text()
