"""Loads the job protocol's Lua scripts (`queue/lua/*.lua`) and runs them with EVALSHA.

Each `.lua` file is one atomic step, with a header naming every KEYS/ARGV entry and the reply.
Every script that changes a claimed job first checks the job's `claim` fencing token, so a
worker presumed dead (a "zombie") can never overwrite the claim that replaced it. Liveness uses
the Redis server clock (`TIME`). Job hashes are touched by name from inside scripts (not always
declared in KEYS): fine on a single Redis or Sentinel; Redis Cluster would need hash tags.

A line `--#include other.lua` pulls in a shared helper (the zip fan-in count). Scripts run by
SHA; after a Redis restart or `SCRIPT FLUSH` (NOSCRIPT) the source is sent once with EVAL.

A script call sends EVALSHA directly on a pooled connection: redis-py's per-command wrappers
(retry closure, observability records) cost ~10 us a call, a tenth of a null job. A broker's
scripts share a `Lane`: one connection its calling thread keeps between calls (taking and
returning a pool connection costs another ~10 us: lock, records, a readiness poll). There is one
lane per connection pool (`lane_for`), shared by every broker on that client, so many brokers
on one client (a fleet simulation, a process serving several queues) keep one connection between
them, not one each: a pool with `max_connections` is never drained by idle lanes. Any
connection error, timeout or READONLY reply there drops that connection and sends the call again
through `execute_command`, whose retries with jittered backoff then apply as before.

A lane can also carry one call whose reply is read later (`Script.defer`): the worker sends a
job's final write (which starts the job it holds next) and runs that next job while Redis works;
the reply is read (`Lane.settle`) before anything else is sent on the lane, so replies never
cross.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import threading
import weakref
from collections.abc import Callable, Sequence
from importlib import resources
from typing import Any

from redis.client import NEVER_DECODE

try:  # what redis-py itself packs commands with when hiredis is installed (a dependency of ours)
    from hiredis import pack_command as _pack
except ImportError:  # pragma: no cover - then the connection's own packer
    _pack = None
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError, ReadOnlyError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

_INCLUDE = "--#include "
#: After these the direct call's connection is dropped and the call goes through redis-py's retries.
_RESEND = (RedisConnectionError, RedisTimeoutError, ReadOnlyError, OSError)
#: The direct call did not get a reply (the slow path sends it).
MISSED = object()


@functools.cache
def source(name: str) -> str:
    """The text of `lua/{name}.lua` with its includes expanded (each helper once per script)."""
    return _expand(name, set())


def _expand(name: str, seen: set[str]) -> str:
    seen.add(name)
    text = resources.files(__package__).joinpath("lua", f"{name}.lua").read_text(encoding="utf-8")
    lines = []
    for line in text.splitlines():
        if line.startswith(_INCLUDE):
            helper = line[len(_INCLUDE):].strip().removesuffix(".lua")
            if helper not in seen:
                lines.append(_expand(helper, seen).rstrip("\n"))
        else:
            lines.append(line)
    return "\n".join(lines) + "\n"


def _pool_of(client: Any) -> Any:
    """The client's connection pool, or None (a client pinned to one connection, a test double)."""
    pool = getattr(client, "connection_pool", None)
    return pool if pool is not None and getattr(client, "connection", None) is None else None


def send(conn: Any, command: tuple[Any, ...], raw: bool = False) -> Any:
    """`command` on `conn` and its reply; `MISSED` (after dropping a broken connection) when it must
    be sent again through `execute_command` (NOSCRIPT, or a connection error, timeout or READONLY)."""
    try:
        if _pack is not None:  # the same bytes as `send_command`, without its per-argument pass
            conn.send_packed_command([_pack(command)])
        else:
            conn.send_command(*command)
        return conn.read_response(disable_decoding=raw)
    except NoScriptError:
        return MISSED
    except _RESEND:
        conn.disconnect()
        return MISSED
    except ResponseError:
        raise  # the command's own error: its reply was read whole, the connection is fine
    except BaseException:
        # e.g. JobTimeout or SIGTERM landing between the send and the read: no later call may read this reply
        conn.disconnect()
        raise


class Lane:
    """One connection of a client's pool, kept between calls by the first thread that makes one
    (the worker's main thread: its supervisor has a broker of its own); other threads take pool
    connections as usual. A connection found closed (an outage, a Sentinel failover reset, an
    error in `send`) is handed back and a fresh one taken the pool's way (which also asks
    Sentinel for the master)."""

    def __init__(self, client: Any) -> None:
        pool = _pool_of(client)
        # weakly: the pool holds the lane (`lane_for`), not the other way round, so both go together
        self._pool_ref = weakref.ref(pool) if pool is not None else None
        self._owner: int | None = None
        self._conn: Any = None
        #: a call sent on `_conn` whose reply is not read yet: (raw, handler, resend)
        self._pending: tuple[bool, Callable[[Any], None], Callable[[], Any]] | None = None

    @property
    def _pool(self) -> Any:
        return self._pool_ref() if self._pool_ref is not None else None

    def take(self) -> Any:
        """This thread's kept connection, or None when it is not the owner (or there is no pool)."""
        if self._owner != threading.get_ident():
            if self._owner is not None or self._pool is None:
                return None
            self._owner = threading.get_ident()
        if self._pending is not None:
            self.settle()
        conn = self._conn
        if conn is None or getattr(conn, "_sock", None) is None:
            self._give_back()
            conn = self._conn = self._pool.get_connection()
        return conn

    def call(self, command: tuple[Any, ...], raw: bool = False) -> Any:
        """`send` on the kept connection; `MISSED` when this thread has none or it must be resent."""
        conn = self.take()
        return MISSED if conn is None else send(conn, command, raw)

    def defer(self, command: tuple[Any, ...], raw: bool, handler: Callable[[Any], None],
              resend: Callable[[], Any]) -> bool:
        """Send `command` now and hand its reply to `handler` at the next `settle` (the lane's next
        call, or an explicit settle); False when it was not sent (not the owner, or the send
        failed: the caller then makes the call the ordinary way). `resend` gets the reply another
        way when the script did not run (NOSCRIPT, or READONLY from a replica after a failover)."""
        conn = self.take()
        if conn is None:
            return False
        try:
            if _pack is not None:
                conn.send_packed_command([_pack(command)])
            else:
                conn.send_command(*command)
        except _RESEND:
            conn.disconnect()
            return False
        except BaseException:
            conn.disconnect()
            raise
        self._pending = (raw, handler, resend)
        return True

    def settle(self) -> None:
        """Read the deferred call's reply and hand it to its handler (a no-op when none waits).

        A broken connection raises (the call may or may not have run, so it is never sent again:
        the worker's recovery returns what its processing list holds) and drops the reply."""
        pending, self._pending = self._pending, None
        if pending is None or self._owner != threading.get_ident():
            self._pending = pending
            return
        raw, handler, resend = pending
        conn = self._conn
        try:
            reply = conn.read_response(disable_decoding=raw)
        except NoScriptError:
            reply = resend()
        except ReadOnlyError:  # a replica (after a failover) refused it before any write: send again
            conn.disconnect()
            reply = resend()
        except BaseException:
            conn.disconnect()
            raise
        handler(reply)

    def _give_back(self) -> None:
        conn, self._conn = self._conn, None
        pool = self._pool
        if conn is not None and pool is not None:
            pool.release(conn)

    def __del__(self) -> None:
        with contextlib.suppress(Exception):  # at interpreter exit the pool may be half torn down
            self._give_back()


#: The pool attribute that holds its lane: a reference cycle (pool -> lane -> kept connection ->
#: redis-py's handlers -> pool) that the garbage collector frees with the pool. A dictionary keyed
#: weakly by pool could not: its values would keep their keys alive through that chain.
_LANE_ATTR = "_redis_consumer_lane"
_LANES_LOCK = threading.Lock()


def lane_for(client: Any) -> Lane:
    """The lane of `client`'s connection pool, made on first use (a client without a pool of its
    own gets a lane of its own, which then always answers None)."""
    pool = _pool_of(client)
    if pool is None:
        return Lane(client)
    with _LANES_LOCK:
        lane = getattr(pool, _LANE_ATTR, None)
        if lane is None:
            lane = Lane(client)
            setattr(pool, _LANE_ATTR, lane)
        return lane


class Script:
    """One Lua step bound to a client: `script(keys=[...], args=[...], raw=False)`.

    `raw=True` returns bytes instead of text (the claim reads fields a producer may have
    written in any encoding without redis-py failing to decode them). With a `lane` the call
    uses the connection the lane keeps for this thread.
    """

    def __init__(self, client: Any, name: str, lane: Lane | None = None) -> None:
        self.client = client
        self.name = name
        self.lane = lane
        self.text = source(name)
        self.sha = hashlib.sha1(self.text.encode("utf-8")).hexdigest()

    def __call__(self, keys: Sequence[Any] = (), args: Sequence[Any] = (), raw: bool = False) -> Any:
        command = ("EVALSHA", self.sha, len(keys), *keys, *args)
        conn = self.lane.take() if self.lane is not None else None
        if conn is not None:
            reply = send(conn, command, raw)
        else:  # no lane, or not its thread: a pool connection for this call
            pool = _pool_of(self.client)
            reply = MISSED if pool is None else self._direct(pool, command, raw)
        if reply is not MISSED:
            return reply
        options = {NEVER_DECODE: True} if raw else {}
        try:
            return self.client.execute_command(*command, **options)
        except NoScriptError:
            return self.client.execute_command("EVAL", self.text, len(keys), *keys, *args, **options)

    def defer(self, keys: Sequence[Any], args: Sequence[Any], handler: Callable[[Any], None]) -> None:
        """Run the step with `raw=True`, its reply handed to `handler` once read: later (at the
        lane's next call, `Lane.settle`) when the lane could send it now, else right away."""
        command = ("EVALSHA", self.sha, len(keys), *keys, *args)

        def resend() -> Any:
            return self.client.execute_command("EVAL", self.text, len(keys), *keys, *args, **{NEVER_DECODE: True})

        if self.lane is None or not self.lane.defer(command, True, handler, resend):
            handler(self(keys, args, raw=True))

    @staticmethod
    def _direct(pool: Any, command: tuple[Any, ...], raw: bool) -> Any:
        """`send` on a connection from the client's pool (checked and health-checked by redis-py
        as for any command), given back after the reply."""
        conn = pool.get_connection()
        try:
            return send(conn, command, raw)
        finally:
            pool.release(conn)
