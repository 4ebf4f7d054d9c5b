"""Sentinel: the kiosk points REDIS_HOST/REDIS_PORT at Sentinel; workers follow a failover."""

from __future__ import annotations

import pytest
import redis

from redis_consumer.queue.connection import connect, master_moved
from redis_consumer.settings import Settings
from tests.helpers.net import wait_until
from tests.helpers.redis_server import RedisServer, Sentinel, env_for
from tests.helpers.workers import start_worker, stop_all


@pytest.fixture
def sentinel_setup():
    master = RedisServer(appendonly=True).start()
    replica = RedisServer(appendonly=True, extra=["--replicaof", "127.0.0.1", str(master.port)]).start()
    wait_until(lambda: replica.client().info("replication").get("master_link_status") == "up",
               message="replica to sync")
    sentinel = Sentinel(master.port).start()
    wait_until(lambda: _sentinel_knows_replica(sentinel), timeout=20, message="sentinel to discover the replica")
    yield master, replica, sentinel
    sentinel.cleanup()
    replica.cleanup()
    master.cleanup()


def _sentinel_knows_replica(sentinel) -> bool:
    c = redis.Redis(port=sentinel.port, decode_responses=True)
    try:
        return len(c.execute_command("SENTINEL", "REPLICAS", sentinel.name)) >= 1
    except redis.RedisError:
        return False


def test_sentinel_endpoint_is_detected_and_master_used(sentinel_setup):
    master, _, sentinel = sentinel_setup
    settings = Settings.from_env({}, REDIS_HOST="127.0.0.1", REDIS_PORT=sentinel.port)
    client = connect(settings)
    client.set("probe", "1")
    assert master.client().get("probe") == "1"
    assert client.info("server")["tcp_port"] == master.port


def test_workers_follow_a_failover_when_the_master_dies(sentinel_setup, tmp_path):
    master, replica, sentinel = sentinel_setup
    env = env_for(master, QUEUE="q", CONSUMER_TYPE="noop", HEARTBEAT_INTERVAL="0.5", HEARTBEAT_TTL="3",
                  EMPTY_QUEUE_TIMEOUT="0.5", RETRY_BACKOFF_CAP="0.5")
    env.pop("REDIS_URL")
    env.update(REDIS_HOST="127.0.0.1", REDIS_PORT=str(sentinel.port))
    worker = start_worker(env, str(tmp_path / "w.log"))
    try:
        writer = connect(Settings.from_env({}, REDIS_HOST="127.0.0.1", REDIS_PORT=sentinel.port))
        before = [f"q:before{i}" for i in range(5)]
        for k in before:
            writer.hset(k, mapping={"status": "new"})
            writer.lpush("q", k)
        wait_until(lambda: all(writer.hget(k, "status") == "done" for k in before), message="jobs before failover")
        master.kill()
        wait_until(lambda: sentinel.master_port_now() == replica.port, timeout=30, message="failover")
        wait_until(lambda: replica.client().info("replication")["role"] == "master", message="promotion")
        master_moved(writer)  # a producer using our connection code follows the new master too
        after = [f"q:after{i}" for i in range(5)]
        for k in after:
            writer.hset(k, mapping={"status": "new"})
            writer.lpush("q", k)
        wait_until(lambda: all(writer.hget(k, "status") == "done" for k in after), timeout=40,
                   message="jobs after failover")
        # the writes landed on the new master, and the worker is still the same process
        assert replica.client().hget("q:after0", "status") == "done"
        assert worker.poll() is None
    finally:
        stop_all([worker])
