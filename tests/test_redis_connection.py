"""``sync_core.redis_connection``: one broker target for kombu and every redis-py client."""

from __future__ import annotations

import ssl

import pytest
import redis
from redis.sentinel import SentinelConnectionPool

from bridge.messages import producer_app
from sync_core.redis_connection import RedisTarget, celery_broker_config, redis_client
from sync_core.settings import CommonSettings

SENTINELS = "sentinel://:masterpw@10.0.0.1:26379/2;sentinel://10.0.0.2:26380"


def test_a_sentinel_url_lists_every_sentinel_with_the_masters_db_and_password() -> None:
    target = RedisTarget(SENTINELS, sentinel_master="mymaster", sentinel_password="sentpw")
    assert target.is_sentinel
    assert not target.is_tls
    assert target.sentinels() == [("10.0.0.1", 26379), ("10.0.0.2", 26380)]
    assert target.database() == 2
    assert target.master_password() == "masterpw"
    options = target.transport_options()
    assert options["master_name"] == "mymaster"
    assert options["sentinel_kwargs"]["password"] == "sentpw"
    assert "sentpw" not in repr(target)


def test_the_sentinel_client_follows_the_named_master() -> None:
    client = redis_client(RedisTarget(SENTINELS, sentinel_master="mymaster"))
    pool = client.connection_pool
    assert isinstance(pool, SentinelConnectionPool)
    assert pool.service_name == "mymaster"
    assert pool.connection_kwargs["db"] == 2
    assert pool.connection_kwargs["password"] == "masterpw"
    assert pool.connection_kwargs["socket_timeout"] == 5.0


def test_a_sentinel_target_without_a_master_name_is_refused() -> None:
    with pytest.raises(ValueError, match="REDIS_SENTINEL_MASTER"):
        redis_client(RedisTarget(SENTINELS))


def test_settings_accept_a_sentinel_list_and_require_the_master_name(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("REDIS_URL", SENTINELS)
    with pytest.raises(ValueError, match="REDIS_SENTINEL_MASTER"):
        CommonSettings()
    monkeypatch.setenv("REDIS_SENTINEL_MASTER", "mymaster")
    monkeypatch.setenv("REDIS_SENTINEL_PASSWORD", "sentpw")
    settings = CommonSettings()
    assert settings.redis_target.sentinel_master == "mymaster"
    assert settings.redis_target.sentinel_password == "sentpw"
    assert "sentpw" not in repr(settings)


def test_tls_is_verified_by_default_for_redis_py_and_kombu() -> None:
    target = RedisTarget("rediss://:pw@redis.example:6380/0")
    client = redis_client(target)
    assert client.connection_pool.connection_class is redis.SSLConnection
    assert client.connection_pool.connection_kwargs["ssl_cert_reqs"] == ssl.CERT_REQUIRED
    config = celery_broker_config(target, {"visibility_timeout": 10})
    # kombu alone would fall back to CERT_NONE for a bare rediss:// URL.
    assert config["broker_use_ssl"] == {"ssl_cert_reqs": ssl.CERT_REQUIRED}
    assert config["broker_transport_options"] == {"visibility_timeout": 10}


def test_tls_options_in_the_url_are_kept() -> None:
    target = RedisTarget("rediss://redis.example:6380/0?ssl_cert_reqs=none&ssl_ca_certs=/ca.pem")
    assert target.ssl_options() == {"ssl_cert_reqs": ssl.CERT_NONE, "ssl_ca_certs": "/ca.pem"}


def test_the_producer_app_gets_the_sentinel_transport_options() -> None:
    app = producer_app(RedisTarget(SENTINELS, sentinel_master="mymaster"), "celery")
    try:
        assert app.conf.broker_transport_options["master_name"] == "mymaster"
        assert app.conf.broker_transport_options["socket_timeout"] == 5.0
        assert app.conf.broker_url == SENTINELS
    finally:
        app.close()


def test_a_plain_url_stays_a_plain_client() -> None:
    client = redis_client("redis://127.0.0.1:6379/3")
    assert client.connection_pool.connection_class is redis.Connection
    assert client.connection_pool.connection_kwargs["db"] == 3
    assert celery_broker_config("redis://127.0.0.1:6379/3", {}) == {
        "broker_url": "redis://127.0.0.1:6379/3",
        "broker_transport_options": {},
    }
