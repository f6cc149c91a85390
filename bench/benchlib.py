"""What the benchmarks share. Import it before anything of Django's: it sets Django up.

Benchmarks measure what production runs (DEBUG off: it wraps every cursor and keeps every
query in memory) on the settings' PostgreSQL, with scratch databases of their own.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import quote

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tredye.settings.local")
os.environ.setdefault("DJANGO_DEBUG", "false")

import django  # noqa: E402

django.setup()

from django.conf import settings  # noqa: E402

if TYPE_CHECKING:
    from tredye.devbroker import Broker

D = Decimal


def log(message: str) -> None:
    print(message, flush=True)


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds a process has used so far (Linux /proc); NaN once gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return float("nan")
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def database_url(db_name: str) -> str:
    """DATABASE_URL for child processes on `db_name` of the settings' server (a Unix socket,
    as in postgres://user@/db?host=/var/run/postgresql, stays one)."""
    db = settings.DATABASES["default"]
    user = quote(db.get("USER") or "postgres")
    password = f":{quote(db['PASSWORD'])}" if db.get("PASSWORD") else ""
    socket = db.get("OPTIONS", {}).get("host") or (db["HOST"] if db["HOST"].startswith("/") else "")
    server = (
        f"@/{db_name}?host={quote(socket)}" if socket else f"@{db['HOST']}:{db['PORT']}/{db_name}"
    )
    return f"postgres://{user}{password}{server}"


def daphne_command(port: int) -> list[str]:
    """The web process, as the Procfile runs it, on 127.0.0.1:`port`."""
    return [
        sys.executable, "-m", "daphne", "-b", "127.0.0.1", "-p", str(port),
        "tredye.asgi:application",
    ]  # fmt: skip


def bench_market(*, symbol: str, traders: int, base_amount: str = "0") -> tuple:
    """An instrument of its own (USD quote, tick 0.01, lot 1) and `traders` funded accounts;
    returns (instrument, accounts)."""
    from django.contrib.auth import get_user_model

    from accounts import services as ledger
    from accounts.models import Asset
    from trading.models import Instrument

    usd, _ = Asset.objects.get_or_create(code="USD", defaults={"name": "US dollar", "precision": 2})
    base = Asset.objects.create(code=symbol, name="Bench", precision=0)
    instrument = Instrument.objects.create(
        symbol=symbol,
        name="Bench",
        base=base,
        quote=usd,
        tick_size=D("0.01"),
        lot_size=D("1"),
        maker_fee_rate=D("0.001"),
        taker_fee_rate=D("0.002"),
    )
    accounts = []
    for index in range(traders):
        user = get_user_model().objects.create_user(f"{symbol.lower()}{index}", password=None)
        account = ledger.account_open(user=user)
        for asset, amount in ((usd, D("100000000")), (base, D(base_amount))):
            if amount:
                ledger.deposit(
                    account=account,
                    asset=asset,
                    amount=amount,
                    reference="bench",
                    idempotency_key=f"bench-{symbol}-{index}-{asset.code}",
                )
        accounts.append(account)
    return instrument, accounts


def child_pids(pid: int) -> list[int]:
    """The processes whose parent is `pid`, in pid order (`testing.helpers.child_pids`)."""
    from testing.helpers import child_pids as children

    return sorted(children(pid))


def machine_busy_seconds() -> float:
    """CPU seconds the whole machine has spent busy (all CPUs, /proc/stat)."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + fields[4]  # idle + iowait
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def connections_by_pid(port: int, pids: list[int]) -> dict[int, int]:
    """Established TCP connections to local `port` that each of `pids` holds (/proc)."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            # state 01: ESTABLISHED; the server's end has the port as its local one
            if fields[3] == "01" and int(fields[1].rsplit(":", 1)[1], 16) == port:
                inodes.add(f"socket:[{fields[9]}]")
    counts = {}
    for pid in pids:
        held = 0
        try:
            for name in os.listdir(f"/proc/{pid}/fd"):
                try:
                    held += os.readlink(f"/proc/{pid}/fd/{name}") in inodes
                except OSError:
                    continue
        except OSError:
            pass
        counts[pid] = held
    return counts


def drop_scratch_database(name: str, maintenance_db: str) -> None:
    """Drop a bench's scratch database, ending what is still connected to it, from the
    settings' own database (`maintenance_db`)."""
    from django.db import connection

    connection.close()
    connection.settings_dict["NAME"] = maintenance_db
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
            " WHERE datname = %s AND pid <> pg_backend_pid()",
            [name],
        )
        cursor.execute(f'DROP DATABASE IF EXISTS "{name}"')


@dataclass
class ScratchVenue:
    """What `scratch_venue` made: a work directory, the scratch database's name, the private
    broker (None when KAFKA_BOOTSTRAP_SERVERS names one) and the processes to stop at the end."""

    workdir: Path
    db_name: str
    broker: Broker | None
    processes: list[subprocess.Popen] = field(default_factory=list)


@contextmanager
def scratch_venue(name: str) -> Iterator[ScratchVenue]:
    """A private broker (unless KAFKA_BOOTSTRAP_SERVERS names one), a topic prefix and a scratch
    database of this process's own, so two runs at once never clobber each other; on the way
    out the processes started (`venue.processes`) are stopped, the database and broker dropped."""
    from django.db import connection, connections

    from tredye.devbroker import Broker, free_port

    workdir = Path(tempfile.mkdtemp(prefix=f"bench-{name}-"))
    broker = None
    db_name = None
    processes: list[subprocess.Popen] = []
    try:
        if "KAFKA_BOOTSTRAP_SERVERS" not in os.environ:
            broker = Broker(free_port(), workdir)
            broker.start()
            settings.KAFKA_BOOTSTRAP_SERVERS = [broker.address]
        settings.KAFKA_TOPIC_PREFIX = f"bench{name}{os.getpid()}."
        connection.settings_dict["TEST"]["NAME"] = f"bench_{name}_{os.getpid()}"
        db_name = connection.creation.create_test_db(verbosity=0, autoclobber=True)
        yield ScratchVenue(workdir, db_name, broker, processes)
    finally:
        for process in processes:
            process.terminate()
        for process in processes:
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                log(f"{process.args[-1]} ignored SIGTERM for 10 s: killed")
                process.kill()
                process.wait()
        connections.close_all()
        if db_name is not None:
            connection.creation.destroy_test_db(db_name, verbosity=0)
        if broker is not None:
            broker.kill()
