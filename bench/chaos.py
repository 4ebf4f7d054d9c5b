"""Chaos soak: push jobs through real workers while killing, draining and restarting everything.

Setup (all on 127.0.0.1, free ports): Redis primary + replica with append-only files and
`appendfsync always`, one Sentinel (workers find the primary through it, as in the kiosk), a moto
S3 server behind a TCP proxy (so "S3 down" is connection-refused while its objects survive), an
optional dev model server, and K `redis-consumer consume` worker processes.

While a producer submits jobs at a steady rate, a schedule of disruptions runs: SIGKILL a busy
worker (a replacement starts, as Kubernetes would), SIGTERM one (scale-down; its job must finish
or go back), SIGKILL + restart the Redis primary, a Sentinel failover, kill + restart the model
server, S3 refusing connections for a few seconds. At the end every job must be final, none lost
or stuck, each `done` job's output zip valid, and no job's result written twice.

Pipelines: `--pipeline segmentation` (default) runs the real segmentation consumer against the
dev model server (`Identity` model) with TIFF inputs in S3. `--pipeline chaos` runs
`ChaosConsumer` (bench/chaos_cluster.py) instead: S3 download, a timed "predict" (`--work` seconds), deterministic
S3 upload, with an exact per-job execution counter.

Usage: `python bench/chaos.py [--quick] [--jobs N] [--workers K]`; prints one JSON object.
"""

from __future__ import annotations

import argparse
import io
import json
import logging
import os
import random
import signal
import sys
import tempfile
import threading
import time
import zipfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
for path in (ROOT, ROOT / "bench"):
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))

from chaos_cluster import BUCKET, QUEUE, Cluster

from redis_consumer.queue import keys as rkeys

log = logging.getLogger("chaos")


class Chaos:
    """Runs one soak: producer, disruption schedule, observer, final audit."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.rng = random.Random(args.seed)
        self.workdir = Path(tempfile.mkdtemp(prefix="rc-chaos-"))
        self.cluster = Cluster(self.workdir, args.workers, args.pipeline)
        self.keys: list[str] = []
        self.events: list[dict[str, Any]] = []
        self.counts = {"kills": 0, "sigterms": 0, "redis_restarts": 0, "failovers": 0,
                       "model_server_restarts": 0, "s3_outages": 0}
        self.sigterm_exit_codes: list[int | None] = []
        self.resubmits = 0
        self.trace: dict[str, list] = {}  # key -> [(primary port written, replicas that acked)]
        self._threads: list[threading.Thread] = []

    # inputs
    def upload_inputs(self) -> list[str]:
        import boto3

        s3 = boto3.client("s3", endpoint_url=self.cluster.s3.endpoint, region_name="us-east-1",
                          aws_access_key_id="testing-key-id", aws_secret_access_key="testing-secret-key")
        names = []
        for i in range(min(self.args.jobs, 20)):
            name = f"uploads/input-{i}.tif"
            s3.put_object(Bucket=BUCKET, Key=name, Body=_input_bytes(self.args.pipeline, i))
            names.append(name)
        self.s3_client = s3
        return names

    def submit(self, key: str, fields: dict[str, str], next_up: bool = False, confirm: bool = True) -> None:
        """HSET + LPUSH in one transaction, confirmed by one replica.

        Under Sentinel, a write acknowledged by a primary that is being demoted is lost
        (asynchronous replication). A careful producer waits for one replica; if none confirmed,
        it asks the (possibly new) primary and resubmits only when the job is missing there, so
        a surviving job is never reset.
        """

        first = [True]

        def push(r) -> None:
            # `call` re-runs this after a connection error, so it must never re-create a job that
            # exists (that would reset a finished job to `new` and run it twice)
            for _ in range(30):
                if not r.exists(key):
                    p = r.pipeline(transaction=True)
                    p.hset(key, mapping=fields)
                    if next_up:
                        p.rpush(QUEUE, key)  # workers claim from the right: the next job claimed
                    else:
                        p.lpush(QUEUE, key)
                    p.execute()
                    self.resubmits += 0 if first[0] else 1
                first[0] = False
                acked = r.execute_command("WAIT", 1, 1000) if confirm else -1
                self.trace.setdefault(key, []).append((r.connection_pool.get_master_address()[1], acked))
                if acked != 0:
                    return
                self.cluster._master_client = None
                r = self.cluster.master()

        self.cluster.call(push)

    def job_fields(self, input_file_name: str, original_name: str) -> dict[str, str]:
        """The hash of a new job (a produced one or a probe)."""
        from redis_consumer.utils.timestamps import now_iso

        fields = {"status": "new", "input_file_name": input_file_name, "original_name": original_name,
                  "created_at": now_iso(), "updated_at": now_iso(), "work_seconds": str(self.args.work)}
        if self.args.pipeline == "segmentation":
            fields.update(model_name="Identity", model_version="1")
        return fields

    def produce(self, inputs: list[str], spread: float) -> None:
        gap = spread / max(1, self.args.jobs)
        start = time.monotonic()
        for i in range(self.args.jobs):
            key = f"{QUEUE}:input-{i}.tif:{os.urandom(8).hex()}"
            self.submit(key, self.job_fields(inputs[i % len(inputs)], f"input-{i}.tif"))
            self.keys.append(key)
            delay = start + (i + 1) * gap - time.monotonic()
            if delay > 0:
                time.sleep(delay)

    # disruptions
    def schedule(self, spread: float) -> list[tuple[float, str]]:
        once = ["redis_restart", "failover", "s3_outage"]
        if self.cluster.model is not None:
            once.append("model_restart")
        n_events = max(len(once) + 4, int(spread / self.args.event_gap))
        kinds = list(once)
        while len(kinds) < n_events:
            kinds.append("kill" if len(kinds) % 3 else "sigterm")
        self.rng.shuffle(kinds)
        # always open with a kill so even tiny runs exercise the reaper
        kinds.remove("kill")
        kinds.insert(0, "kill")
        step = spread / (len(kinds) + 1)
        return [((i + 1) * step, kind) for i, kind in enumerate(kinds)]

    def run_event(self, kind: str) -> None:
        t0 = time.monotonic()
        event: dict[str, Any] = {"kind": kind, "at": round(t0 - self.t_start, 2)}
        handler = getattr(self, f"_do_{kind}")
        handler(event)
        self.events.append(event)

    def _busy_worker(self):
        """A worker holding a job (tried for ~2 s: a kill should hit work in flight), else any."""
        alive = [w for w in self.cluster.workers if w.alive()]
        if not alive:
            return None, []
        for _ in range(40):
            busy = [(w, held) for w in alive if (held := self._held_by(w))]
            if busy:
                return self.rng.choice(busy)
            time.sleep(0.05)
        return self.rng.choice(alive), []

    def _held_by(self, w) -> list[str]:
        def find(r):
            ids = [m for m in r.zrange(rkeys.consumers(QUEUE), 0, -1) if m.startswith(w.name + "-")]
            return [k for cid in ids for k in r.lrange(rkeys.processing(QUEUE, cid), 0, -1)]

        try:
            return self.cluster.call(find, timeout=5)
        except Exception:  # noqa: BLE001 - Redis mid-restart: treat as idle
            return []

    def _do_kill(self, event: dict[str, Any]) -> None:
        w, held = self._busy_worker()
        if w is None:
            return
        claims = {k: self.cluster.call(lambda r, k=k: r.hget(k, "claim")) for k in held}
        w.kill()
        self.cluster.workers.remove(w)
        self.cluster.retired.append(w)
        self.counts["kills"] += 1
        t_kill = time.monotonic()
        time.sleep(0.5)  # Kubernetes restarts the pod
        self.cluster.spawn_worker()
        event["held_jobs"] = len(held)
        if held:
            self._watch(event, t_kill, lambda r: all(_reclaimed(r, k, c) for k, c in claims.items()))

    def _do_sigterm(self, event: dict[str, Any]) -> None:
        w, held = self._busy_worker()
        if w is None:
            return
        t0 = time.monotonic()
        code = w.terminate(60)
        self.cluster.workers.remove(w)
        self.cluster.retired.append(w)
        self.counts["sigterms"] += 1
        self.sigterm_exit_codes.append(code)
        event.update(exit_code=code, held_jobs=len(held), recovery_s=round(time.monotonic() - t0, 3))
        self.cluster.spawn_worker()  # scale back up

    def _do_redis_restart(self, event: dict[str, Any]) -> None:
        port = self.cluster.sentinel.master_port_now()
        server = self.cluster.server_on(port)
        server.kill()
        t0 = time.monotonic()
        server.start()
        self.counts["redis_restarts"] += 1
        event["down_s"] = round(time.monotonic() - t0, 3)
        self._watch_progress(event, t0)

    def _do_failover(self, event: dict[str, Any]) -> None:
        import redis

        before = self.cluster.sentinel.master_port_now()
        t0 = time.monotonic()
        s = redis.Redis(port=self.cluster.sentinel.port, decode_responses=True)
        deadline = t0 + 30
        while True:
            try:
                s.execute_command("SENTINEL", "FAILOVER", self.cluster.sentinel.name)
                break
            except redis.ResponseError:  # e.g. no good replica yet right after a restart
                if time.monotonic() > deadline:
                    event["error"] = "failover refused"
                    return
                time.sleep(0.5)
        while self.cluster.sentinel.master_port_now() == before and time.monotonic() < deadline:
            time.sleep(0.05)
        self.counts["failovers"] += 1
        event["switch_s"] = round(time.monotonic() - t0, 3)
        self._watch_progress(event, t0)

    def _do_s3_outage(self, event: dict[str, Any]) -> None:
        self.cluster.proxy.down()
        time.sleep(self.args.outage)
        self.cluster.proxy.up()
        t0 = time.monotonic()
        self.counts["s3_outages"] += 1
        event["down_s"] = self.args.outage
        self._watch_progress(event, t0)

    def _do_model_restart(self, event: dict[str, Any]) -> None:
        model = self.cluster.model
        model.stop()
        time.sleep(1.0)
        t0 = time.monotonic()
        model.start()
        self.counts["model_server_restarts"] += 1
        self._watch_progress(event, t0)

    def finished(self) -> int:
        return int(self.cluster.call(lambda r: r.get(rkeys.completed_counter(QUEUE)) or 0))

    def _watch_progress(self, event: dict[str, Any], t0: float) -> None:
        """Recovery = from the end of the disruption until a probe job submitted then finished.

        The probe goes to the claim end of the queue (the next job any worker takes), so the
        figure is the time to serve again, not the backlog's queueing delay. It is read from the
        probe's own `finished_at` (wall clock), so the producer's wait for replica confirmation
        (`probe_confirm_s`, replica resync after a restart or failover) is not counted in it.
        """
        from redis_consumer.utils.timestamps import parse_iso

        key = f"{QUEUE}:probe.tif:{os.urandom(8).hex()}"
        fields = self.job_fields(self.inputs[0], "probe.tif")

        self.keys.append(key)
        t0_wall = time.time()

        def finished(r) -> bool:
            status, finished_at = r.hmget(key, "status", "finished_at")
            if status not in ("done", "failed"):
                return False
            event["recovery_s"] = round(max(0.0, parse_iso(finished_at).timestamp() - t0_wall), 3)
            return True

        self._watch(event, t0, finished, before=lambda: self._submit_probe(key, fields, event), measure=False)

    def _submit_probe(self, key: str, fields: dict[str, str], event: dict[str, Any]) -> float:
        """Push the probe, confirmed by a replica like every job (an unconfirmed write to a primary
        that Sentinel is about to replace can vanish: the soak lost such probes). The time spent
        waiting for that confirmation is reported as `probe_confirm_s`."""
        self.cluster._master_client = None
        t = time.monotonic()
        self.submit(key, fields, next_up=True)
        event["probe_confirm_s"] = round(time.monotonic() - t, 3)
        return time.monotonic()

    def _watch(self, event: dict[str, Any], t0: float, done, before=None, measure: bool = True) -> None:
        """In a thread: call `before`, then poll `done(redis)`; with `measure`, recovery_s = time to done."""
        def loop() -> None:
            start = before() if before is not None else t0
            while time.monotonic() - start < self.args.timeout:
                try:
                    if self.cluster.call(done, timeout=10):
                        if measure:
                            event["recovery_s"] = round(time.monotonic() - start, 3)
                        return
                except Exception as exc:  # noqa: BLE001 - keep watching through outages
                    log.debug("watch: %s", exc)
                time.sleep(0.05)
            event["recovery_s"] = None

        t = threading.Thread(target=loop, daemon=True)
        t.start()
        self._threads.append(t)

    # the run
    def run(self) -> dict[str, Any]:
        t_setup = time.monotonic()
        self.cluster.start()
        inputs = self.inputs = self.upload_inputs()
        spread = self.args.duration
        plan = self.schedule(spread)
        self.t_start = time.monotonic()
        producer = threading.Thread(target=self.produce, args=(inputs, spread), daemon=True)
        producer.start()
        for at, kind in plan:
            delay = self.t_start + at - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            log.info("event %s at %.1fs", kind, time.monotonic() - self.t_start)
            try:
                self.run_event(kind)
            except Exception as exc:  # noqa: BLE001 - a failed disruption is reported, not fatal
                self.events.append({"kind": kind, "error": f"{type(exc).__name__}: {exc}"})
        producer.join()
        self._wait_all_final()
        for t in self._threads:
            t.join(timeout=5)
        wall = time.monotonic() - self.t_start
        report = self.audit()
        report["wall_seconds"] = round(wall, 1)
        report["setup_seconds"] = round(self.t_start - t_setup, 1)
        return report

    def _wait_all_final(self) -> None:
        deadline = time.monotonic() + self.args.timeout
        while time.monotonic() < deadline:
            statuses = self.cluster.call(lambda r: _statuses(r, self.keys))
            if all(s in ("done", "failed") for s in statuses):
                return
            for w in list(self.cluster.workers):  # a worker that exited on its own is replaced too
                if not w.alive():
                    self.cluster.workers.remove(w)
                    self.cluster.retired.append(w)
                    self.cluster.spawn_worker()
            time.sleep(0.2)

    def audit(self) -> dict[str, Any]:
        data = self.cluster.call(lambda r: _hashes(r, self.keys))
        in_lists = self.cluster.call(_listed_keys)
        done = [k for k, h in data.items() if h.get("status") == "done"]
        failed = {k: h for k, h in data.items() if h.get("status") == "failed"}
        lost = [k for k, h in data.items() if not h]
        stuck = [k for k, h in data.items() if h and h.get("status") not in ("done", "failed")]
        if self.args.pipeline == "segmentation":  # the real consumer keeps no counter: use attempts
            executions = [int(h.get("attempts") or 0) for h in data.values()]
        else:
            executions = self.cluster.call(lambda r: _counters(r, [f"chaos:executions:{k}" for k in self.keys]))
        dead = set(self.cluster.call(lambda r: r.lrange(rkeys.dead(QUEUE), 0, -1)))
        finished_by_workers = len(done) + sum(1 for k in failed if k not in dead)
        duplicate_results = self.finished() - finished_by_workers
        bad_outputs = self.check_outputs(done, data)
        recoveries = [e["recovery_s"] for e in self.events if e.get("recovery_s") is not None]
        worker_logs = "".join(w.output() for w in self.cluster.workers + self.cluster.retired)
        return {
            "pipeline": self.args.pipeline,
            "jobs": len(self.keys),
            "probe_jobs": sum(1 for k in self.keys if ":probe.tif:" in k),
            "workers": self.args.workers,
            "done": len(done),
            "failed": len(failed),
            "failed_reasons": sorted({h.get("reason", "")[:160] for h in failed.values()})[:5],
            **self.counts,
            "recoveries": len(recoveries),
            "max_recovery_seconds": max(recoveries) if recoveries else None,
            "unrecovered_events": sum(1 for e in self.events if "recovery_s" in e and e["recovery_s"] is None),
            "sigterm_exit_codes": self.sigterm_exit_codes,
            "duplicates_executed": sum(max(0, n - 1) for n in executions),
            "duplicate_results": duplicate_results,
            "producer_resubmits": self.resubmits,
            "lost": len(lost),
            "stuck": len(stuck),
            "lost_sample": [{"key": k, "writes": self.trace.get(k)} for k in lost[:5]],
            "stuck_sample": [{"key": k, "status": data[k].get("status"), "attempts": data[k].get("attempts"),
                              "listed": k in in_lists} for k in stuck[:5]],
            "left_in_queues": len(in_lists),
            "bad_outputs": bad_outputs,
            "tracebacks_in_logs": worker_logs.count("Traceback"),
            "events": self.events,
        }

    def check_outputs(self, done: list[str], data: dict[str, dict[str, str]]) -> int:
        """Each done job's zip exists at its deterministic key and opens; one object per job."""
        bad = 0
        seen = set()
        for k in done:
            key = data[k].get("output_file_name", "")
            if not key or key in seen:
                bad += 1
                continue
            seen.add(key)
            try:
                body = self.s3_client.get_object(Bucket=BUCKET, Key=key)["Body"].read()
                with zipfile.ZipFile(io.BytesIO(body)) as zf:
                    broken = zf.testzip() is not None or not zf.namelist()
                    if broken or (self.args.pipeline == "chaos" and json.loads(zf.read("result.json"))["job"] != k):
                        bad += 1
            except Exception:  # noqa: BLE001 - any failure to read the zip counts as bad
                bad += 1
        return bad


def _input_bytes(pipeline: str, i: int) -> bytes:
    if pipeline == "segmentation":
        import numpy as np
        import tifffile

        buf = io.BytesIO()
        rng = np.random.default_rng(i)
        tifffile.imwrite(buf, (rng.random((64, 64)) * 255).astype("uint8"))
        return buf.getvalue()
    return os.urandom(2048)


def _reclaimed(r, key: str, old_claim: str | None) -> bool:
    h = r.hmget(key, "status", "claim")
    return h[0] in ("done", "failed") or (h[1] is not None and h[1] != old_claim)


def _statuses(r, keys: list[str]) -> list[str | None]:
    p = r.pipeline(transaction=False)
    for k in keys:
        p.hget(k, "status")
    return p.execute()


def _hashes(r, keys: list[str]) -> dict[str, dict[str, str]]:
    p = r.pipeline(transaction=False)
    for k in keys:
        p.hgetall(k)
    return dict(zip(keys, p.execute()))


def _counters(r, names: list[str]) -> list[int]:
    p = r.pipeline(transaction=False)
    for n in names:
        p.get(n)
    return [int(v or 0) for v in p.execute()]


def _listed_keys(r) -> list[str]:
    items = r.lrange(QUEUE, 0, -1)
    for cid in r.zrange(rkeys.consumers(QUEUE), 0, -1):
        items += r.lrange(rkeys.processing(QUEUE, cid), 0, -1)
    return items


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="CI variant: ~60 s")
    p.add_argument("--jobs", type=int, help="jobs to submit (default 2000, quick 150)")
    p.add_argument("--workers", type=int, default=3)
    p.add_argument("--duration", type=float, help="seconds over which jobs arrive and disruptions happen")
    p.add_argument("--work", type=float, default=0.1, help="seconds of simulated model time per job")
    p.add_argument("--event-gap", type=float, default=8.0, help="seconds between disruptions")
    p.add_argument("--outage", type=float, default=3.0, help="seconds S3 refuses connections")
    p.add_argument("--timeout", type=float, default=None, help="seconds to wait for the last jobs")
    p.add_argument("--pipeline", choices=("segmentation", "chaos"), default="segmentation",
                   help="segmentation: the real consumer + dev model server (default); chaos: ChaosConsumer")
    p.add_argument("--seed", type=int, default=8)
    args = p.parse_args(argv)
    if args.jobs is None:
        args.jobs = 150 if args.quick else 2000
    if args.duration is None:
        args.duration = 30.0 if args.quick else max(60.0, args.jobs * args.work / args.workers * 1.2)
    if args.timeout is None:
        args.timeout = 90.0 if args.quick else 300.0
    if args.quick:
        args.event_gap = min(args.event_gap, 4.0)
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(asctime)s chaos %(message)s")
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    chaos = Chaos(args)
    try:
        report = chaos.run()
    finally:
        chaos.cluster.stop()
    report["workdir"] = str(chaos.workdir)
    print(json.dumps(report))
    ok = report["lost"] == 0 and report["stuck"] == 0 and report["duplicate_results"] == 0 and report["bad_outputs"] == 0
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
