"""What the order-entry limit costs a request: one pipelined INCR + EXPIRE to Redis.

    .venv/bin/python bench/ratelimit.py [--calls 2000] [--rounds 3]

Prints the median and p99 of `tredye.ratelimit.per_second` per round, against the settings'
REDIS_URL. Bounded by the round trip to Redis (loopback here) and redis-py's pipeline.
"""

from __future__ import annotations

import argparse
import statistics
import time

from benchlib import log, percentile

from tredye import ratelimit


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    for round_number in range(1, args.rounds + 1):
        took = []
        for call in range(args.calls):
            start = time.perf_counter()
            ratelimit.per_second("bench", call % 50, 10**9)
            took.append((time.perf_counter() - start) * 1e6)
        log(
            f"round {round_number}: {args.calls} calls, median {statistics.median(took):.0f} µs, "
            f"p99 {percentile(took, 0.99):.0f} µs"
        )


if __name__ == "__main__":
    main()
