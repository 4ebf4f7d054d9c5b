"""Peers benchmark: our worker beside RQ, Celery (acks_late), Dramatiq, arq and taskiq on ONE redis-server.

For each system, one worker process on the same private redis-server, one after the other:
- idle pickup: one job pushed into an idle queue at a time; latency = the job's first line
  (it records `time.time()`) minus the push time; p50/p99.
- null throughput: N no-op jobs queued with the worker stopped, then the worker started;
  jobs/s from the first job's start to the last job's end (worker start-up excluded).
- Redis cost per job of that throughput phase (enqueue + processing): commands (INFO
  commandstats delta, minus the bench's own INFO calls and the one INCR each peer job makes to
  count itself) and server CPU (used_cpu_sys + used_cpu_user delta).
- SIGKILL recovery: a job that sleeps on its first run is started, its worker SIGKILLed and a
  fresh worker started; we time kill -> the job's second start, capped (`--cap`), every system
  at once, each with its documented redelivery setting turned down to ~10 s where it has one
  (RQ job_timeout + maintenance_interval + Retry, Celery visibility_timeout + acks_late +
  reject_on_worker_lost, Dramatiq heartbeat_timeout, arq job_timeout, taskiq idle_timeout);
  ours runs with its defaults.

The peers live in their own venv `.venv-peers` (created here from PyPI when missing) so the
product's venv stays lean; ours runs from this interpreter. Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
PEERS_VENV = ROOT / ".venv-peers"
PEERS_PY = PEERS_VENV / "bin" / "python"
#: pins that resolve together (arq needs redis<6; taskiq-redis 1.0.x, which needs taskiq<0.12,
#: and kombu 5.6 accept it)
PEER_PACKAGES = ["rq", "celery[redis]", "kombu<5.7", "dramatiq[redis]", "arq", "taskiq<0.12", "taskiq-redis<1.1",
                 "redis>=5.2,<6"]
PEERS = ("rq", "celery", "dramatiq", "arq", "taskiq")
REDELIVERY_S = 10  # what each peer's redelivery setting is turned down to for the SIGKILL test


# ----------------------------------------------------------------- peer side (runs in .venv-peers)

def qname() -> str:
    """Each system's own queue key (they all run at once in the SIGKILL test)."""
    return os.environ.get("BENCH_QUEUE", "benchq")


def _r():
    import redis

    return redis.Redis(port=int(os.environ["BENCH_REDIS_PORT"]))


_CONN = None


def _conn():
    global _CONN
    if _CONN is None:
        _CONN = _r()
    return _CONN


def job_null() -> None:
    """A no-op job; counts itself (one INCR) and marks the first start and the last end."""
    r = _conn()
    n = r.incr("bench:done")
    if n == 1:
        r.set("bench:first", time.time())
    if n == int(os.environ.get("BENCH_N", "0")):
        r.set("bench:last", time.time())


def job_stamp(i: int) -> None:
    _conn().set(f"bench:pk:{i}", time.time())


def job_sleeper(tag: str) -> None:
    """Sleeps on its first execution (gets SIGKILLed there); later executions return at once."""
    r = _conn()
    if r.incr(f"bench:exec:{tag}") == 1:
        time.sleep(300)


async def ajob_null(*_a) -> None:
    job_null()


async def ajob_stamp(*args) -> None:
    job_stamp(args[-1])


async def ajob_sleeper(*args) -> None:
    import asyncio

    r = _conn()
    if r.incr(f"bench:exec:{args[-1]}") == 1:
        await asyncio.sleep(300)


def _celery_app():
    from celery import Celery

    port = os.environ["BENCH_REDIS_PORT"]
    app = Celery("bench_peers", broker=f"redis://127.0.0.1:{port}/0")
    app.conf.update(task_acks_late=True, task_reject_on_worker_lost=True, worker_prefetch_multiplier=1,
                    task_ignore_result=True, task_default_queue=qname(), worker_hijack_root_logger=False,
                    broker_transport_options={"visibility_timeout": REDELIVERY_S},
                    broker_connection_retry_on_startup=True)
    app.task(name="null")(job_null)
    app.task(name="stamp")(job_stamp)
    app.task(name="sleeper")(job_sleeper)
    return app


def _dramatiq_broker():
    import dramatiq
    from dramatiq.brokers.redis import RedisBroker

    broker = RedisBroker(host="127.0.0.1", port=int(os.environ["BENCH_REDIS_PORT"]),
                         heartbeat_timeout=REDELIVERY_S * 1000)
    dramatiq.set_broker(broker)
    actors = {name: dramatiq.actor(fn, actor_name=name, queue_name=qname(), max_retries=0)
              for name, fn in (("null", job_null), ("stamp", job_stamp), ("sleeper", job_sleeper))}
    return broker, actors


def _taskiq_broker():
    from taskiq_redis import RedisStreamBroker

    broker = RedisStreamBroker(f"redis://127.0.0.1:{os.environ['BENCH_REDIS_PORT']}/0", queue_name=qname(),
                               idle_timeout=REDELIVERY_S * 1000)
    tasks = {name: broker.task(task_name=name)(fn)
             for name, fn in (("null", tq_null), ("stamp", tq_stamp), ("sleeper", tq_sleeper))}
    return broker, tasks


def _arq_settings():
    from arq.connections import RedisSettings
    from arq.worker import func

    class WorkerSettings:
        functions = [func(ajob_null, name="null"), func(ajob_stamp, name="stamp"),  # noqa: RUF012
                     func(ajob_sleeper, name="sleeper")]
        redis_settings = RedisSettings(port=int(os.environ["BENCH_REDIS_PORT"]))
        queue_name = qname()
        job_timeout = REDELIVERY_S  # the in-progress key lives job_timeout + 10 s
        max_tries = 5
        handle_signals = True

    return WorkerSettings


def peer_worker(name: str) -> None:
    """Run one worker of `name` in the foreground (one process, one job at a time)."""
    if name == "rq":
        from rq import Queue, Worker

        conn = _r()
        Worker([Queue(qname(), connection=conn)], connection=conn,
               maintenance_interval=REDELIVERY_S).work(logging_level="WARNING")
    elif name == "celery":
        _celery_app().worker_main(["worker", "--pool=solo", "--concurrency=1", "-Q", qname(), "--without-gossip",
                                   "--without-mingle", "--loglevel=WARNING"])
    elif name == "dramatiq":
        import threading

        import dramatiq

        broker, _ = _dramatiq_broker()
        worker = dramatiq.Worker(broker, worker_threads=1)
        worker.start()
        stop = threading.Event()
        signal.signal(signal.SIGTERM, lambda *_: stop.set())
        stop.wait()
        worker.stop()
    elif name == "arq":
        from arq.worker import run_worker

        run_worker(_arq_settings())
    elif name == "taskiq":
        sys.argv = ["taskiq", "worker", "bench_peers:TASKIQ_BROKER", "--workers", "1", "--log-level", "WARNING"]
        from taskiq.__main__ import main as taskiq_main

        taskiq_main()
    else:
        raise SystemExit(f"unknown peer {name}")


class Enqueuer:
    """A peer's own client API, set up once: `send(what, args, count)` enqueues jobs."""

    def __init__(self, name: str) -> None:
        import asyncio

        self.name = name
        self.loop = asyncio.new_event_loop()
        if name == "rq":
            from rq import Queue

            self.q = Queue(qname(), connection=_r())
        elif name == "celery":
            self.app = _celery_app()
        elif name == "dramatiq":
            _, self.actors = _dramatiq_broker()
        elif name == "arq":
            from arq import create_pool
            from arq.connections import RedisSettings

            self.pool = self.loop.run_until_complete(
                create_pool(RedisSettings(port=int(os.environ["BENCH_REDIS_PORT"]))))
        elif name == "taskiq":
            self.broker, self.tasks = TASKIQ_BROKER, TASKIQ_TASKS
            self.loop.run_until_complete(self.broker.startup())

    def send(self, what: str, args: list, count: int) -> None:
        if what == "stamp":
            _conn().set("bench:push_t", time.time())  # the push time, taken right before the push
        if self.name == "rq":
            from rq import Retry

            fn = {"null": job_null, "stamp": job_stamp, "sleeper": job_sleeper}[what]
            extra = {"job_timeout": REDELIVERY_S, "retry": Retry(max=3)} if what == "sleeper" else {}
            for _ in range(count):
                self.q.enqueue(fn, *args, **extra)
        elif self.name == "celery":
            for _ in range(count):
                self.app.send_task(what, args=args, queue=qname())
        elif self.name == "dramatiq":
            for _ in range(count):
                self.actors[what].send(*args)
        elif self.name == "arq":
            async def go():
                for _ in range(count):
                    await self.pool.enqueue_job(what, *args, _queue_name=qname())
            self.loop.run_until_complete(go())
        elif self.name == "taskiq":
            async def go():
                for _ in range(count):
                    await self.tasks[what].kiq(*args)
            self.loop.run_until_complete(go())


async def tq_null() -> None:
    job_null()


async def tq_stamp(i: int) -> None:
    job_stamp(i)


async def tq_sleeper(tag: str) -> None:
    import asyncio

    if _conn().incr(f"bench:exec:{tag}") == 1:
        await asyncio.sleep(300)


def _taskiq_lazy():
    if "BENCH_REDIS_PORT" not in os.environ:
        return None, None
    try:
        return _taskiq_broker()
    except ImportError:
        return None, None


def peer_main(argv: list[str]) -> None:
    """Entry in .venv-peers: `worker NAME`, or `enqueue NAME` reading `what count json-args`
    lines from stdin and answering `ok` after each."""
    if argv[0] == "worker":
        peer_worker(argv[1])
        return
    enq = Enqueuer(argv[1])
    print("ready", flush=True)
    for line in sys.stdin:
        what, count, rest = line.rstrip("\n").split(" ", 2)
        enq.send(what, json.loads(rest), int(count))
        print("ok", flush=True)


# ----------------------------------------------------------------- bench side (product venv)

def ensure_peers_venv() -> None:
    """Create .venv-peers with the peers from PyPI when it is missing (once, ~1 minute)."""
    probe = "import rq, celery, dramatiq, arq, taskiq, taskiq_redis"
    if PEERS_PY.exists() and subprocess.run([str(PEERS_PY), "-c", probe], capture_output=True,
                                            check=False).returncode == 0:
        return
    subprocess.run([sys.executable, "-m", "venv", str(PEERS_VENV)], check=True)
    subprocess.run([str(PEERS_PY), "-m", "pip", "install", "-q", "--disable-pip-version-check", *PEER_PACKAGES],
                   check=True, stdout=subprocess.DEVNULL)


ALL_PROCS: list[subprocess.Popen] = []  # every worker this run started: all killed on exit


def kill_all() -> None:
    for proc in ALL_PROCS:
        if proc.poll() is None:
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            proc.wait(5)


class System:
    """Start/stop a worker and enqueue jobs for one system (a peer, or ours)."""

    def __init__(self, name: str, port: int, r) -> None:
        self.name, self.port, self.r = name, port, r
        self.queue = f"benchq-{name}"
        self.procs: list[subprocess.Popen] = []
        self.enqueuer: subprocess.Popen | None = None
        self.seq = 0

    def env(self, **extra) -> dict:
        env = dict(os.environ, BENCH_REDIS_PORT=str(self.port), BENCH_QUEUE=self.queue, PYTHONUNBUFFERED="1",
                   **extra)
        env["PYTHONPATH"] = str(BENCH) if self.name != "ours" else str(ROOT)
        return env

    def start(self, **extra) -> subprocess.Popen:
        if self.name == "ours":
            env = self.env(REDIS_HOST="127.0.0.1", REDIS_PORT=str(self.port), QUEUE=self.queue, LOG_LEVEL="WARNING",
                           METRICS_PORT="0",
                           ALLOW_ROOT="true", CONSUMER_TYPE=extra.pop("consumer", "noop"), **extra)
            cmd = [sys.executable, str(ROOT / "consume_redis_events.py")]
        else:
            env = self.env(**extra)
            cmd = [str(PEERS_PY), "-c", "import sys, bench_peers; bench_peers.peer_main(sys.argv[1:])",
                   "worker", self.name]
        proc = subprocess.Popen(cmd, env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                start_new_session=True)
        self.procs.append(proc)
        ALL_PROCS.append(proc)
        return proc

    def stop(self, proc: subprocess.Popen, sig: int = signal.SIGTERM) -> None:
        if proc.poll() is None:
            try:
                os.killpg(proc.pid, sig)
            except ProcessLookupError:
                pass
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(5)

    def enqueue(self, what: str, count: int = 1, args: list | None = None) -> None:
        if self.name == "ours":
            from redis_consumer.utils.timestamps import now_iso

            pipe = self.r.pipeline(transaction=False)
            for _ in range(count):
                self.seq += 1
                key = f"{self.queue}:{what}:{self.seq}"
                fields = {"status": "new", "created_at": now_iso()}
                if what == "sleeper":
                    fields.update(sleep="300", sleep_attempts="1")
                pipe.hset(key, mapping=fields)
                pipe.lpush(self.queue, key)
                self.last_key = key
            pipe.execute()
            return
        if self.enqueuer is None:
            cmd = [str(PEERS_PY), "-c", "import sys, bench_peers; bench_peers.peer_main(sys.argv[1:])", "enqueue",
                   self.name]
            self.enqueuer = subprocess.Popen(cmd, env=self.env(), cwd=ROOT, stdin=subprocess.PIPE,
                                             stdout=subprocess.PIPE, text=True)
            if self.enqueuer.stdout.readline().strip() != "ready":
                raise RuntimeError(f"{self.name} enqueuer did not start")
        self.enqueuer.stdin.write(f"{what} {count} {json.dumps(args or [])}\n")
        self.enqueuer.stdin.flush()
        if self.enqueuer.stdout.readline().strip() != "ok":
            raise RuntimeError(f"{self.name} enqueue failed")

    def close(self) -> None:
        if self.enqueuer is not None:
            self.enqueuer.stdin.close()
            try:
                self.enqueuer.wait(15)
            except subprocess.TimeoutExpired:
                self.enqueuer.kill()
                self.enqueuer.wait(5)
            self.enqueuer = None


def log(msg: str) -> None:
    print(f"[bench_peers {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def redis_cost(r) -> tuple[int, float, dict]:
    stats = r.info("commandstats")
    cpu = r.info("cpu")
    calls = {k.removeprefix("cmdstat_"): v["calls"] for k, v in stats.items()}
    return sum(calls.values()), cpu["used_cpu_sys"] + cpu["used_cpu_user"], calls


def wait_for(pred, timeout: float, interval: float = 0.002, proc: subprocess.Popen | None = None):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"worker exited with code {proc.returncode}")
        value = pred()
        if value:
            return value
        time.sleep(interval)
    return None


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))]


def pickup(system: System, samples: int) -> dict:
    r = system.r
    if system.name == "ours":
        proc = system.start()
        if not wait_for(lambda: r.zcard(f"consumers:{system.queue}") >= 1, 30, 0.02, proc):
            raise RuntimeError("our worker did not register in 30 s")
    else:
        proc = system.start()
        system.enqueue("stamp", 1, [-1])  # wait until the worker takes jobs
        if not wait_for(lambda: r.exists("bench:pk:-1"), 60, 0.01, proc):
            raise RuntimeError("the worker ran no job in 60 s")
    time.sleep(0.3)
    lat = []
    from redis_consumer.utils.timestamps import parse_iso

    for i in range(samples):
        if system.name == "ours":
            key = f"{system.queue}:pk:{i}"
            r.hset(key, mapping={"status": "new"})
            t0 = time.time()
            r.lpush(system.queue, key)
            started = wait_for(lambda key=key: r.hget(key, "started_at"), 10, proc=proc)
            lat.append((parse_iso(started.decode()).timestamp() - t0) * 1e3 if started else float("nan"))
        else:
            # the enqueue runs in a peers-venv process: the push time is taken there, just before
            # the push, so interpreter start-up is not counted
            before = time.time()
            system.enqueue("stamp", 1, [i])
            started = wait_for(lambda i=i: r.get(f"bench:pk:{i}"), 10, proc=proc)
            pushed = float(r.get("bench:push_t") or before)
            lat.append((float(started) - pushed) * 1e3 if started else float("nan"))
        time.sleep(0.02)
    system.stop(proc)
    ok = [v for v in lat if not math.isnan(v)]
    return {"pickup_p50_ms": statistics.median(ok) if ok else None, "pickup_p99_ms": percentile(ok, 99) if ok else None,
            "pickup_samples": len(ok)}


def throughput(system: System, jobs: int) -> dict:
    r = system.r
    r.delete("bench:done", "bench:first", "bench:last")
    c0, cpu0, calls0 = redis_cost(r)
    system.enqueue("null", jobs)
    proc = system.start(BENCH_N=str(jobs))
    if system.name == "ours":
        last = system.last_key
        first = f"{system.queue}:null:{int(last.rsplit(':', 1)[1]) - jobs + 1}"
        done = wait_for(lambda: r.hget(last, "status") == b"done", 60, 0.02, proc)
        from redis_consumer.utils.timestamps import parse_iso

        t_first = parse_iso(r.hget(first, "started_at").decode()).timestamp() if done else None
        t_last = parse_iso(r.hget(last, "finished_at").decode()).timestamp() if done else None
    else:
        done = wait_for(lambda: r.get("bench:last"), 60, 0.02, proc)
        t_first, t_last = float(r.get("bench:first") or 0), float(done or 0)
    c1, cpu1, calls1 = redis_cost(r)
    system.stop(proc)
    if not done:
        return {"null_jobs_per_s": None, "note": "did not finish in 60 s"}
    bench_calls = (calls1.get("info", 0) - calls0.get("info", 0)) + (jobs if system.name != "ours" else 0)
    return {"null_jobs_per_s": jobs / max(1e-9, t_last - t_first),
            "redis_commands_per_job": (c1 - c0 - bench_calls) / jobs,
            "redis_cpu_us_per_job": (cpu1 - cpu0) * 1e6 / jobs,
            "top_commands": dict(sorted(((k, (v - calls0.get(k, 0)) / jobs) for k, v in calls1.items()
                                         if v - calls0.get(k, 0) > jobs * 0.05), key=lambda kv: -kv[1])[:8])}


def ours_liveness_settings() -> dict[str, float]:
    """The heartbeat settings our workers run with here: the defaults, unless this environment sets them."""
    from redis_consumer.settings import Settings

    s = Settings.from_env({k: v for k, v in os.environ.items() if k.startswith("HEARTBEAT_")})
    return {"HEARTBEAT_INTERVAL": s.HEARTBEAT_INTERVAL, "HEARTBEAT_TTL": s.HEARTBEAT_TTL}


def kill_recovery(systems: list[System], cap: float) -> dict:
    """All systems at once: start a sleeper job, SIGKILL its worker, start a fresh one, time the re-run."""
    r = systems[0].r
    state = {}
    for s in systems:
        tag = f"{s.name}-kill"
        if s.name == "ours":
            proc = s.start(consumer="tests.consumers_for_tests:RecordingConsumer")
            s.enqueue("sleeper")
            state[s.name] = {"proc": proc, "count": lambda s=s: int(r.get(f"test:executions:{s.last_key}") or 0)}
        else:
            proc = s.start()
            s.enqueue("sleeper", 1, [tag])
            state[s.name] = {"proc": proc, "count": lambda tag=tag: int(r.get(f"bench:exec:{tag}") or 0)}
    for name, st in state.items():
        st["started"] = wait_for(lambda st=st: st["count"]() >= 1, 20, 0.02) is not None
    for s in systems:
        st = state[s.name]
        s.stop(st["proc"], signal.SIGKILL)
        st["killed_at"] = time.monotonic()
        st["fresh"] = s.start(consumer="tests.consumers_for_tests:RecordingConsumer") if s.name == "ours" \
            else s.start()
    deadline = time.monotonic() + cap
    out = {}
    while time.monotonic() < deadline and len(out) < len(state):
        for name, st in state.items():
            if name not in out and st["started"] and st["count"]() >= 2:
                out[name] = time.monotonic() - st["killed_at"]
        time.sleep(0.05)
    for s in systems:
        s.stop(state[s.name]["fresh"])
    return {name: (round(out[name], 2) if name in out else None) for name in state}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--quick", action="store_true", help="fewer samples and a 40 s cap (whole run < ~2 min)")
    ap.add_argument("--cap", type=float, default=None, help="seconds to wait for a SIGKILLed job's re-run")
    ap.add_argument("--only", nargs="*", default=None, help="systems to run (default: ours and every peer)")
    args = ap.parse_args()
    sys.path.insert(0, str(ROOT))
    from tests.helpers.redis_server import RedisServer

    t_start = time.monotonic()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))  # a timeout still cleans up (finally below)
    ensure_peers_venv()
    samples, jobs = (10, 600) if args.quick else (40, 2000)
    cap = args.cap or (40.0 if args.quick else 120.0)
    names = args.only or ["ours", *PEERS]
    server = RedisServer(appendonly=False).start()
    r = server.client(decode_responses=False)
    result: dict = {"bench": "peers", "quick": args.quick, "jobs": jobs, "pickup_samples": samples,
                    "redelivery_setting_s": REDELIVERY_S, "kill_cap_s": cap, "systems": {},
                    "ours_settings": ours_liveness_settings()}
    try:
        for name in names:
            system = System(name, server.port, r)
            t0 = time.monotonic()
            row: dict = {}
            try:
                log(f"{name}: pickup")
                row.update(pickup(system, samples))
                log(f"{name}: throughput")
                row.update(throughput(system, jobs))
                log(f"{name}: done {row}")
            except Exception as exc:  # noqa: BLE001 - one peer failing must not hide the others' figures
                row["error"] = f"{type(exc).__name__}: {exc}"[:300]
            finally:
                for proc in system.procs:
                    system.stop(proc, signal.SIGKILL)
                system.close()
            row["bench_wall_s"] = round(time.monotonic() - t0, 1)
            result["systems"][name] = row
            r.flushall()
        log("sigkill recovery")
        killers = [System(n, server.port, r) for n in names]
        try:
            kills = kill_recovery(killers, cap)
        finally:
            for s in killers:
                s.close()
        for name, seconds in kills.items():
            result["systems"][name]["sigkill_rerun_s"] = seconds
    finally:
        kill_all()
        server.cleanup()
    peers = {k: v for k, v in result["systems"].items() if k != "ours"}
    ours = result["systems"].get("ours", {})
    if peers and ours.get("null_jobs_per_s"):
        best = max(peers, key=lambda k: peers[k].get("null_jobs_per_s") or 0)
        result["best_peer_throughput"] = best
        result["best_peer_null_jobs_per_s"] = peers[best]["null_jobs_per_s"]
        result["ours_null_jobs_per_s"] = ours["null_jobs_per_s"]
        result["throughput_vs_best_peer"] = ours["null_jobs_per_s"] / (peers[best]["null_jobs_per_s"] or 1e-9)
        fastest = min(peers, key=lambda k: peers[k].get("pickup_p50_ms") or 1e9)
        result["best_peer_pickup"] = fastest
        result["best_peer_pickup_p50_ms"] = peers[fastest]["pickup_p50_ms"]
        result["ours_pickup_p50_ms"] = ours["pickup_p50_ms"]
        cheapest = min(peers, key=lambda k: peers[k].get("redis_cpu_us_per_job") or 1e9)
        result["cheapest_peer_redis_cpu"] = cheapest
        result["cheapest_peer_redis_cpu_us_per_job"] = peers[cheapest]["redis_cpu_us_per_job"]
        result["ours_redis_cpu_us_per_job"] = ours["redis_cpu_us_per_job"]
    reruns = {k: v.get("sigkill_rerun_s") for k, v in peers.items() if v.get("sigkill_rerun_s") is not None}
    if reruns:
        result["fastest_peer_rerun"] = min(reruns, key=reruns.get)
        result["fastest_peer_rerun_s"] = reruns[result["fastest_peer_rerun"]]
    result["wall_s"] = round(time.monotonic() - t_start, 1)
    print(json.dumps(result))
    return 0


if __name__ == "__main__" and not os.environ.get("BENCH_REDIS_PORT"):
    sys.exit(main())

TASKIQ_BROKER, TASKIQ_TASKS = _taskiq_lazy()
