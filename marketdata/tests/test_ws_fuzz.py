"""Generated bad input over a real socket to a real daphne: every refusal is an error op with
a code, the socket is never closed (no 1011), and the subscriptions it had are unchanged.

One socket takes every example (about a hundred): after each generated frame the test sends a
ping with an id of its own and reads up to its pong, so each frame's answers are known.
A frame over daphne's own limit (1 MiB, `--websocket_max_message_size`) never reaches the
application: daphne drops the connection (no 1011, no close frame); the last check shows it.
"""

from __future__ import annotations

import json
import os
import uuid

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from testing.helpers import daphne_command, wait_for_http
from tredye.devbroker import free_port

pytestmark = pytest.mark.django_db(transaction=True)

SYMBOL = "FUZZ"
CHANNEL = f"ticker.{SYMBOL}"
OPS = ["subscribe", "unsubscribe", "ping", "heartbeat"]
# What the server may send unasked, and answers that change nothing.
UNASKED = {"heartbeat", "status"}

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.integers(min_value=2**63, max_value=2**200)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=40),
    lambda children: (
        st.lists(children, max_size=6) | st.dictionaries(st.text(max_size=12), children, max_size=6)
    ),
    max_leaves=25,
)


def nested(depth: int, inner: str = "1", kind: str = "[") -> str:
    opening, closing = ("[", "]") if kind == "[" else ('{"a":', "}")
    return opening * depth + inner + closing * depth


every_op_with_wrong_types = st.fixed_dictionaries(
    {"op": st.sampled_from(OPS)},
    optional={
        "channels": json_values | st.lists(json_values, max_size=300),
        "id": json_values,
        "extra": json_values,
    },
).map(json.dumps)

any_json = json_values.map(json.dumps)

deep_nesting = st.builds(
    nested, st.integers(min_value=50, max_value=9000), st.just("1"), st.sampled_from(["[", "{"])
) | st.integers(min_value=50, max_value=5000).map(
    lambda depth: '{"op": "subscribe", "channels": ' + nested(depth, "[]") + "}"
)

with_nul_bytes = st.sampled_from(
    [
        '{"op": "sub\\u0000scribe", "channels": ["ticker.A\\u0000"]}',
        '{"op": "ping", "id": "\\u0000"}',
        '{"op": "subscribe", "channels": ["\\u0000"]}',
        '{"op": "unsubscribe", "channels": ["ticker.\\u0000"]}',
        '{"op": "ping"}\x00',
        "\x00",
    ]
) | st.text(max_size=30).map(lambda text: json.dumps({"op": text + "\x00", "channels": [text]}))

# Up to 900 kB a frame: daphne itself drops a connection that sends a frame over 1 MiB before
# the application sees it (checked at the end).
huge_strings = st.integers(min_value=1_000, max_value=150_000).flatmap(
    lambda size: st.sampled_from(
        [
            '{"op": "ping", "id": "' + "x" * size + '"}',
            '{"op": "subscribe", "channels": ["ticker.' + "A" * size + '"]}',
            '{"op": "' + "p" * size + '"}',
            json.dumps({"op": "unsubscribe", "channels": ["é" * size]}),
        ]
    )
)

odd_numbers = st.sampled_from(
    [
        '{"op": "ping", "id": NaN}',
        '{"op": "ping", "id": Infinity}',
        '{"op": "ping", "id": -Infinity}',
        '{"op": "ping", "id": 1e999}',
        '{"op": "ping", "id": ' + "9" * 5000 + "}",
        '{"op": "ping", "id": 1.5}',
        '{"op": "ping", "id": true}',
        '{"op": "subscribe", "channels": [' + ", ".join(["0"] * 2000) + "]}",
        '{"op": "subscribe", "channels": ["ticker.' + SYMBOL + '\\n"]}',
        '{"op": "subscribe", "channels": [" ' + CHANNEL + '"]}',
        '{"op": "subscribe", "channels": ["TICKER.' + SYMBOL + '"]}',
    ]
)

text_frames = (
    every_op_with_wrong_types
    | any_json
    | deep_nesting
    | with_nul_bytes
    | huge_strings
    | odd_numbers
    | st.text(max_size=200)
).filter(lambda text: CHANNEL not in text)  # naming the real channel would be good input

frames = st.one_of(
    text_frames.map(lambda text: ("text", text)),
    st.binary(max_size=2000).map(lambda data: ("binary", data)),
)


@pytest.fixture
def fuzz_server(start_test_process, make_instrument):
    make_instrument(SYMBOL, price="200.00")
    port = free_port()
    process = start_test_process(
        "daphne-fuzz", *daphne_command(port), env={"KAFKA_TOPIC_PREFIX": f"fuzz{port}."}
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for_http(f"{url}/healthz", 30, process.popen)
    except RuntimeError as error:
        raise RuntimeError(f"{error}\n{process.output()}") from error
    yield url, process
    log = process.output()
    assert "Traceback" not in log, log


def _refuse(constant: str) -> None:
    raise ValueError(f"{constant} is not JSON")


def send_and_read_until_closed(socket, text: str) -> None:
    socket.send(text)
    while True:
        socket.recv(timeout=15)


class Stream:
    def __init__(self, socket, server) -> None:
        self.socket = socket
        self.server = server

    def answers(self, probe_id: str) -> list[dict]:
        """Frames up to the pong of `probe_id`; fails if the socket closes on the way."""
        self.socket.send(json.dumps({"op": "ping", "id": probe_id}))
        frames = []
        while True:
            try:
                raw = self.socket.recv(timeout=15)
            except ConnectionClosed as closed:
                pytest.fail(
                    f"the socket closed: {closed!r} after {frames}\n"
                    f"daphne's log:\n{self.server.output()[-4000:]}"
                )
            frame = json.loads(raw, parse_constant=_refuse)  # only ever standard JSON
            if frame == {"op": "pong", "id": probe_id}:
                return frames
            frames.append(frame)


def test_generated_bad_input_is_refused_with_an_error_code_and_changes_nothing(fuzz_server):
    url, server = fuzz_server
    with connect(
        url.replace("http://", "ws://") + "/ws/stream/",
        origin=url,
        max_size=None,
        open_timeout=10,
    ) as socket:
        stream = Stream(socket, server)
        socket.send(json.dumps({"op": "subscribe", "channels": [CHANNEL]}))
        assert {"op": "subscribed", "channels": [CHANNEL]} in stream.answers("start")

        @settings(
            max_examples=int(os.environ.get("WS_FUZZ_EXAMPLES", "100")),
            deadline=None,
            database=None,
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
        )
        @given(frame=frames)
        def one_frame(frame):
            _kind, payload = frame
            try:
                socket.send(payload)  # str: a text frame; bytes: a binary one
            except ConnectionClosed as closed:
                pytest.fail(
                    f"the socket closed: {closed!r}\ndaphne's log:\n{server.output()[-4000:]}"
                )
            probe = f"probe-{uuid.uuid4().hex[:12]}"
            for answer in stream.answers(probe):
                op = answer.get("op")
                if op in UNASKED or "batch" in answer:
                    continue
                if op == "pong":  # a generated ping that was well formed
                    continue
                if op == "unsubscribed":  # nothing it named was subscribed: no change
                    assert answer["channels"] == [], answer
                    continue
                assert op == "error", f"{payload!r:.200} was answered {answer!r:.300}"
                assert isinstance(answer.get("code"), str), answer
                assert answer["code"] != "internal_error", f"{payload!r:.200}"
                assert answer.get("detail"), answer

        one_frame()

        # the subscription that existed is still there: unsubscribing removes it
        socket.send(json.dumps({"op": "unsubscribe", "channels": [CHANNEL]}))
        assert {"op": "unsubscribed", "channels": [CHANNEL]} in stream.answers("end")

        # past daphne's transport limit the connection is dropped, never closed with 1011
        with pytest.raises(ConnectionClosed) as closed:
            send_and_read_until_closed(socket, '{"op": "ping", "id": "' + "x" * 2**20 + '"}')
        assert closed.value.rcvd is None or closed.value.rcvd.code != 1011
