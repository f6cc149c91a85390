import json

import pytest

from tredye import kafka
from tredye.kafka import EnvelopeError


def test_envelope_round_trip():
    raw = kafka.encode(type="tick", key="AAPL", seq=4, data={"last": "1.23"}, ts=1700)
    envelope = kafka.decode(raw)
    assert (envelope.type, envelope.v, envelope.key, envelope.seq, envelope.ts) == (
        "tick",
        1,
        "AAPL",
        4,
        1700,
    )
    assert envelope.data == {"last": "1.23"}


def test_an_envelope_around_json_text_is_the_same_message():
    data = {"symbol": "AAPL", "bids": [["1.23", "4"]], "note": 'quote " and \\ back'}
    # PostgreSQL's jsonb text: its own key order and spacing
    text = '{"note": "quote \\" and \\\\ back", "bids": [["1.23", "4"]], "symbol": "AAPL"}'
    assert json.loads(text) == data
    spliced = kafka.encode_json(type="book.delta", key="AAPL", seq=9, ts=1700, data_json=text)
    encoded = kafka.encode(type="book.delta", key="AAPL", seq=9, ts=1700, data=data)
    assert json.loads(spliced) == json.loads(encoded)
    assert kafka.decode(spliced) == kafka.decode(encoded)


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (None, "empty record"),
        (b"\xff\xfe", "not JSON"),
        (b"{not json", "not JSON"),
        (b"[1, 2]", "not an object"),
        (
            json.dumps({"type": "tick", "v": 1, "key": "A", "seq": "1", "ts": 1, "data": {}}),
            "'seq' missing or not int",
        ),
        (
            json.dumps({"type": "tick", "v": 1, "key": "A", "seq": True, "ts": 1, "data": {}}),
            "'seq' missing or not int",
        ),
        (
            json.dumps({"type": "tick", "v": 9, "key": "A", "seq": 1, "ts": 1, "data": {}}),
            "unsupported envelope version",
        ),
        (json.dumps({"type": "tick", "v": 1, "key": "A", "seq": 1, "ts": 1}), "'data' missing"),
    ],
)
def test_decode_rejects_malformed_records(raw, message):
    if isinstance(raw, str):
        raw = raw.encode()
    with pytest.raises(EnvelopeError, match=message):
        kafka.decode(raw)


def test_topics_carry_the_configured_prefix(settings):
    settings.KAFKA_TOPIC_PREFIX = "acme."
    assert kafka.topic(kafka.TICKS) == "acme.ticks"


def test_a_stop_flag_set_from_a_signal_handler_ends_a_wait():
    import os
    import signal
    import time

    from tredye.workers import StopFlag

    stop = StopFlag()
    previous = signal.signal(signal.SIGUSR1, stop.set)
    try:
        started = time.monotonic()
        signal.signal(signal.SIGALRM, lambda *_: os.kill(os.getpid(), signal.SIGUSR1))
        signal.setitimer(signal.ITIMER_REAL, 0.1)
        assert stop.wait(5.0) is True
        assert time.monotonic() - started < 2.0
        assert stop.wait(0.01) is True
    finally:
        signal.signal(signal.SIGUSR1, previous)
        signal.signal(signal.SIGALRM, signal.SIG_DFL)
