"""One bad key cannot break the process's NATS connection (issue 13, item 1).

A KV key over nats-server's control-line limit makes the server answer
``-ERR`` and drop the connection, and nats-py then closes the client for good.
``SyncNats`` refuses such keys before they leave the process, and replaces a
connection the server closed anyway.
"""

from __future__ import annotations

import logging
import time

import pytest

from sync_core.keys import KV_KEY_MAX_CHARS, InvalidKVKey, check_kv_key, is_valid_kv_key
from sync_core.nats_client import SyncNats
from tests.conftest import MAPPINGS_BUCKET

WAIT_SECONDS = 10.0


@pytest.mark.parametrize(
    ("key", "valid"),
    [
        ("project.sfid.a0941000002wBz9AAE", True),
        ("v1_user.0032M00002XyZabQAB", True),
        ("a/b=c-d_e", True),
        ("x" * KV_KEY_MAX_CHARS, True),
        ("x" * (KV_KEY_MAX_CHARS + 1), False),
        ("", False),
        ("a b", False),
        ("a*", False),
        ("a>", False),
        ("é", False),
        (".a", False),
        ("a.", False),
        ("a..b", False),
        ("a\r\nb", False),
    ],
)
def test_the_kv_key_alphabet_and_length(key: str, valid: bool) -> None:
    assert is_valid_kv_key(key) is valid
    if not valid:
        with pytest.raises(InvalidKVKey):
            check_kv_key(key)


def test_a_huge_key_is_refused_before_it_reaches_the_server(sync_nats: SyncNats) -> None:
    key = "project.sfid." + "a" * 5000
    with pytest.raises(InvalidKVKey):
        sync_nats.kv_put(MAPPINGS_BUCKET, key, b"uid")
    with pytest.raises(InvalidKVKey):
        sync_nats.kv_get(MAPPINGS_BUCKET, key)
    assert not sync_nats.nc.is_closed
    sync_nats.kv_put(MAPPINGS_BUCKET, "project.sfid.ok", b"uid")
    assert sync_nats.kv_get(MAPPINGS_BUCKET, "project.sfid.ok") is not None


def test_a_key_outside_the_alphabet_is_an_invalid_kv_key(sync_nats: SyncNats) -> None:
    with pytest.raises(InvalidKVKey):
        sync_nats.kv_get(MAPPINGS_BUCKET, "project.sfid.a b")


def test_a_connection_closed_by_the_server_is_replaced_and_logged_once(
    sync_nats: SyncNats, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="sync_core.nats_client")
    sync_nats.kv_put(MAPPINGS_BUCKET, "project.sfid.before", b"1")
    first = sync_nats.nc
    # What a huge key used to do: a control line over the server's limit.
    sync_nats.run(first.publish("x" * 8000, b""))
    deadline = time.monotonic() + WAIT_SECONDS
    while not first.is_closed:
        assert time.monotonic() < deadline, "the server did not close the connection"
        time.sleep(0.01)

    for number in range(5):
        sync_nats.kv_put(MAPPINGS_BUCKET, f"project.sfid.after{number}", b"2")
    assert sync_nats.kv_get(MAPPINGS_BUCKET, "project.sfid.before") is not None
    assert sync_nats.nc is not first
    assert not sync_nats.nc.is_closed
    replaced = [r for r in caplog.records if r.getMessage() == "nats connection replaced"]
    assert len(replaced) == 1
    assert "control line" in replaced[0].__dict__["error"].lower()
