"""Fleet simulator: arrival traces through the autoscaling rules, latency and cost out.

Why: whether the GPUs should follow the queue (and what it costs in latency) depends on node
start-up times and the HPA's windows, which a cluster run cannot vary cheaply. This replays a trace
through the same rules the charts deploy (bench/fleet_sim_hpa.py: the HPA formula, tolerance,
stabilisation windows, policies) and prints p50/p95 job latency, GPU-hours (GPU node time, what is
billed) and consumer core-hours, for three rule sets:

* ``ours``: consumers on the capped items (min(items, max(ready TF x workersPerGpu, 1) x target));
  TF Serving via KEDA on queue items per replica and GPU utilisation, 0 <-> N with an idle
  cooldown (helm/tf-serving templates/scaledobject.yaml, redis-consumer templates/prometheusrule.yaml).
* ``kiosk``: kiosk-console's rules: TF Serving 0 <-> 1 by kiosk-autoscaler (desired = items // 1
  clipped to [0, 1], never below the current count unless 0: kiosk-autoscaler autoscaler.py:197-268;
  KCON 0210.autoscaler.yaml:41-54), then an HPA on GPU utilisation, target 70 (KCON
  0310.tf-serving.yaml:69-84); consumers on Value 0.15 of
  tf_up x min(1 - gpu/100, items/consumers/100), 0.75 x 0.15 above 150 consumers per GPU
  (KCON 0600-kube-prometheus-stack.yaml:232-277; 0230.segmentation-consumer.yaml:50-65), Kubernetes'
  default HPA behaviour.
* ``fixed``: a constant fleet (``--fixed-gpus``, ``--fixed-consumers``).

Model: a job is one image; a consumer holds it for ``consumer_s / 2`` CPU, then one GPU request of
``gpu_s`` (FIFO over ready TF Serving replicas, one GPU each), then ``consumer_s / 2`` CPU. A new
consumer is ready ``consumer_start_s`` after creation; a TF Serving replica needs a GPU node
(cluster-autoscaler adds one in ``node_start_s``, removes an empty one after ``node_idle_s``) and
is ready ``tf_start_s`` after its node. Deterministic: arrivals come from a seeded RNG.

    python bench/fleet_sim.py --trace burst --policy all --json
"""

from __future__ import annotations

import argparse
import heapq
import json
import math
import random
import sys
from collections import deque
from dataclasses import asdict, dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from fleet_sim_hpa import Behavior, Hpa, Policy, average_value_desired, ratio_desired


@dataclass
class Params:
    gpu_s: float = 0.05  # GPU seconds per image (a 50 ms model, docs/capacity.md's middle row)
    consumer_s: float = 0.30  # consumer core-seconds per image (pre/post-processing, I/O)
    consumer_start_s: float = 20.0
    tf_start_s: float = 60.0  # TF Serving start + model load
    node_start_s: float = 240.0  # a GPU node from the cloud
    node_idle_s: float = 600.0  # cluster-autoscaler scale-down-unneeded-time
    sync_s: float = 15.0  # HPA sync period and KEDA polling interval
    workers_per_gpu: int = 8
    items_per_consumer: float = 4.0
    items_per_tf: float = 600.0  # acceptable backlog per GPU: 30 s of work at gpu_s = 0.05
    gpu_target: float = 70.0
    idle_s: float = 600.0  # KEDA cooldown before TF Serving goes to zero (environments: idleSeconds)
    min_consumers: int = 1
    max_consumers: int = 60
    max_gpus: int = 8
    fixed_gpus: int = 2
    fixed_consumers: int = 16
    warm_gpus: int = 0  # ours / kiosk: GPUs already up at t = 0 (the steady trace uses 1)


# -- traces -------------------------------------------------------------------------------------
def trace(name: str, seed: int = 0, rate: float = 5.0) -> tuple[list[float], float]:
    """(arrival times, horizon) in seconds. steady: Poisson at `rate`/s for an hour; burst: 10^4
    images uploaded within one minute, then two quiet hours; day: 24 h whose rate follows a
    half-sine from 06:00 to 24:00 peaking at 2 x `rate`, and a quiet night (none 00:00-06:00)."""
    rng = random.Random(seed)
    if name == "steady":
        out, t = [], 0.0
        while True:
            t += rng.expovariate(rate)
            if t >= 3600:
                return out, 3600.0
            out.append(t)
    if name == "burst":
        return sorted(rng.uniform(0, 60) for _ in range(10_000)), 7200.0
    if name == "day":
        out, t, peak = [], 0.0, 2 * rate
        while True:  # thinning of a Poisson process with rate(t) <= peak
            t += rng.expovariate(peak)
            if t >= 86400:
                return out, 86400.0
            hour = t / 3600
            r = 0.0 if hour < 6 else peak * math.sin(math.pi * (hour - 6) / 18)
            if rng.random() < r / peak:
                out.append(t)
    raise ValueError(f"unknown trace {name!r}")


def constant(rate: float, seconds: float) -> list[float]:
    """Evenly spaced arrivals: the known-answer trace."""
    return [i / rate for i in range(int(rate * seconds))]


# -- the fleet ------------------------------------------------------------------------------------
@dataclass
class Pod:
    created: float
    ready_at: float
    job: int | None = None  # consumer: the job it holds; node: the TF replica it runs
    draining: bool = False
    ended: float | None = None
    idle_since: float | None = None  # GPU nodes only


@dataclass
class Result:
    policy: str
    jobs: int
    p50_s: float
    p95_s: float
    max_s: float
    gpu_hours: float
    consumer_core_hours: float
    peak_gpus: int
    peak_consumers: int
    unfinished: int


@dataclass
class Fleet:
    p: Params
    policy: str
    now: float = 0.0
    events: list = field(default_factory=list)
    seq: int = 0
    waiting: deque = field(default_factory=deque)
    gpu_queue: deque = field(default_factory=deque)
    consumers: list[Pod] = field(default_factory=list)
    tf: list[Pod] = field(default_factory=list)  # replicas; ready_at = inf until a node is ready
    nodes: list[Pod] = field(default_factory=list)  # GPU nodes; job = replica index or None
    gpu_busy: list[int] = field(default_factory=list)  # replica index per running GPU request
    arrival: dict[int, float] = field(default_factory=dict)
    latency: list[float] = field(default_factory=list)
    busy_gpu_s: float = 0.0
    last_active: float = 0.0
    peak_gpus: int = 0
    peak_consumers: int = 0

    # event plumbing
    def at(self, t: float, kind: str, arg=None) -> None:
        self.seq += 1
        heapq.heappush(self.events, (t, self.seq, kind, arg))

    def live(self, pods: list[Pod]) -> list[Pod]:
        return [x for x in pods if x.ended is None]

    def count(self, pods: list[Pod]) -> int:
        return sum(1 for x in pods if x.ended is None and not x.draining)

    def ready_tf(self) -> list[int]:
        return [i for i, r in enumerate(self.tf) if r.ended is None and not r.draining and r.ready_at <= self.now]

    # consumers
    def set_consumers(self, n: int, warm: bool = False) -> None:
        cur = self.count(self.consumers)
        for _ in range(n - cur):
            pod = Pod(self.now, self.now + (0.0 if warm else self.p.consumer_start_s))
            self.consumers.append(pod)
            self.at(pod.ready_at, "dispatch")
        if n < cur:  # Kubernetes deletes not-ready, then idle pods first; busy ones drain their job
            order = sorted(self.live(self.consumers), key=lambda x: (x.ready_at <= self.now, x.job is not None))
            for pod in [x for x in order if not x.draining][: cur - n]:
                pod.draining = True
                if pod.job is None:
                    pod.ended = self.now
        self.peak_consumers = max(self.peak_consumers, self.count(self.consumers))

    def dispatch(self) -> None:
        for pod in self.consumers:
            if not self.waiting:
                return
            if pod.ended is None and not pod.draining and pod.job is None and pod.ready_at <= self.now:
                pod.job = self.waiting.popleft()
                self.at(self.now + self.p.consumer_s / 2, "pre_done", pod)

    # TF Serving and its GPU nodes
    def set_tf(self, n: int) -> None:
        cur = self.count(self.tf)
        for _ in range(n - cur):
            self.tf.append(Pod(self.now, math.inf))
        if n < cur:
            order = sorted([r for r in self.live(self.tf) if not r.draining], key=lambda r: r.ready_at <= self.now)
            for r in order[: cur - n]:
                r.draining = True
                idx = self.tf.index(r)
                if idx not in self.gpu_busy:
                    self.end_replica(idx)
        self.place_replicas()

    def end_replica(self, idx: int) -> None:
        self.tf[idx].ended = self.now
        for node in self.live(self.nodes):
            if node.job == idx:
                node.job = None
        self.place_replicas()

    def warm_gpus(self, n: int) -> None:
        """A fixed fleet: n nodes and TF Serving replicas, ready at t = 0."""
        for _ in range(n):
            self.nodes.append(Pod(self.now, self.now, job=len(self.tf)))
            self.tf.append(Pod(self.now, self.now))
        self.peak_gpus = n

    def place_replicas(self) -> None:
        placed = {n.job for n in self.live(self.nodes) if n.job is not None}
        pending = [i for i, r in enumerate(self.tf) if r.ended is None and not r.draining and i not in placed]
        starting = sum(1 for n in self.live(self.nodes) if n.ready_at > self.now)
        for idx in pending:
            free = next((n for n in self.live(self.nodes) if n.job is None and n.ready_at <= self.now), None)
            if free is not None:
                free.job, free.idle_since = idx, None
                self.tf[idx].ready_at = self.now + self.p.tf_start_s
                self.at(self.tf[idx].ready_at, "gpu")
            elif starting == 0:
                node = Pod(self.now, self.now + self.p.node_start_s)  # cluster-autoscaler scale-up
                self.nodes.append(node)
                self.at(node.ready_at, "place")
            else:
                starting -= 1  # this replica waits for a node already coming up
        for node in self.live(self.nodes):  # an empty ready node goes after node_idle_s
            if node.job is None and node.ready_at <= self.now and node.idle_since is None:
                node.idle_since = self.now
                self.at(self.now + self.p.node_idle_s, "node_idle", (node, self.now))
        self.peak_gpus = max(self.peak_gpus, len(self.live(self.nodes)))

    def run_gpu(self) -> None:
        for idx in self.ready_tf():
            if not self.gpu_queue:
                return
            if idx not in self.gpu_busy:
                self.gpu_busy.append(idx)
                pod = self.gpu_queue.popleft()
                self.busy_gpu_s += self.p.gpu_s
                self.at(self.now + self.p.gpu_s, "gpu_done", (idx, pod))

    # autoscaling
    def items(self) -> int:
        return len(self.waiting) + sum(1 for c in self.live(self.consumers) if c.job is not None)

    def autoscale(self, hpas: dict, gpu_util: float) -> None:
        items, p = self.items(), self.p
        if items:
            self.last_active = self.now
        cur_c, cur_t, ready = self.count(self.consumers), self.count(self.tf), len(self.ready_tf())
        if self.policy == "ours":
            ceiling = max(ready * p.workers_per_gpu, 1)
            capped = min(items, ceiling * p.items_per_consumer)
            self.set_consumers(hpas["c"].step(self.now, cur_c, average_value_desired(
                cur_c, capped, p.items_per_consumer)))
            if cur_t == 0:  # KEDA activation: the first waiting job wakes TF Serving
                self.set_tf(1 if items > 0 else 0)
            elif items == 0 and self.now - self.last_active >= p.idle_s:
                self.set_tf(0)  # KEDA: every queue empty for the cooldown
            else:
                want = max(ratio_desired(cur_t, gpu_util / p.gpu_target),
                           average_value_desired(cur_t, items, p.items_per_tf))
                self.set_tf(hpas["t"].step(self.now, cur_t, want))
        elif self.policy == "kiosk":
            tf_up = 1 if ready > 0 else 0
            key_ratio = items / max(cur_c, 1) / 100
            per_gpu = cur_c / max(ready, 1)
            metric = (min(1 - gpu_util / 100, key_ratio) * (per_gpu <= 150) + (per_gpu > 150) * 0.75 * 0.15) * tf_up
            self.set_consumers(hpas["c"].step(self.now, cur_c, ratio_desired(cur_c, metric / 0.15)))
            if items == 0:
                self.set_tf(0)  # kiosk-autoscaler: no keys -> 0 replicas
            elif cur_t == 0:
                self.set_tf(1)
            else:
                self.set_tf(hpas["t"].step(self.now, cur_t, ratio_desired(cur_t, gpu_util / 70)))

    # the loop
    def run(self, arrivals: list[float], horizon: float) -> Result:
        p = self.p
        if self.policy == "ours":
            hpas = {"c": Hpa(p.min_consumers, p.max_consumers, Behavior(
                        up=(Policy("Percent", 100, 30), Policy("Pods", 4, 30)),
                        down=(Policy("Percent", 50, 60),))),
                    "t": Hpa(1, p.max_gpus, Behavior(up_window_s=0, down_window_s=600,
                                                     up=(Policy("Pods", 2, 60),), down=(Policy("Pods", 1, 300),)))}
        else:
            hpas = {"c": Hpa(1, 150 * p.max_gpus), "t": Hpa(1, p.max_gpus)}
        if self.policy == "fixed":
            self.set_consumers(p.fixed_consumers, warm=True)
            self.warm_gpus(p.fixed_gpus)
        else:
            self.set_consumers(max(p.min_consumers, p.warm_gpus * p.workers_per_gpu // 2), warm=True)
            self.warm_gpus(p.warm_gpus)
        for i, t in enumerate(arrivals):
            self.at(t, "arrive", i)
        end = horizon + 6 * 3600  # jobs still unfinished by then are reported as such
        if self.policy != "fixed":
            self.at(0.0, "tick")
        last_busy, last_t = 0.0, 0.0
        while self.events:
            t, _, kind, arg = heapq.heappop(self.events)
            if t > end:
                break
            self.now = t
            if kind == "arrive":
                self.arrival[arg] = t
                self.waiting.append(arg)
                self.dispatch()
            elif kind == "pre_done":
                self.gpu_queue.append(arg)
                self.run_gpu()
            elif kind == "gpu_done":
                idx, pod = arg
                self.gpu_busy.remove(idx)
                if self.tf[idx].draining:
                    self.end_replica(idx)
                self.at(t + p.consumer_s / 2, "post_done", pod)
                self.run_gpu()
            elif kind == "post_done":
                self.latency.append(t - self.arrival.pop(arg.job))
                arg.job = None
                if arg.draining:
                    arg.ended = t
                self.dispatch()
            elif kind in ("dispatch", "gpu"):
                self.dispatch() if kind == "dispatch" else self.run_gpu()
            elif kind == "place":
                self.place_replicas()
            elif kind == "node_idle":
                node, since = arg
                if node.ended is None and node.job is None and node.idle_since == since:
                    node.ended = t  # cluster-autoscaler removes the empty node
            elif kind == "tick":
                ready = len(self.ready_tf())
                util = 100 * (self.busy_gpu_s - last_busy) / (ready * (t - last_t)) if ready and t > last_t else 0.0
                last_busy, last_t = self.busy_gpu_s, t
                self.autoscale(hpas, min(util, 100.0))
                if self.arrival or t < horizon:
                    self.at(t + p.sync_s, "tick")
        return self.result(arrivals, max(horizon, self.now))

    def result(self, arrivals: list[float], stop: float) -> Result:
        gpu_s = sum(((n.ended if n.ended is not None else stop) - n.created) for n in self.nodes)
        core_s = sum(((c.ended if c.ended is not None else stop) - c.created) for c in self.consumers)
        lat = sorted(self.latency)

        def q(f: float) -> float:
            return lat[min(len(lat) - 1, max(0, math.ceil(f * len(lat)) - 1))] if lat else math.nan

        return Result(self.policy, len(lat), round(q(0.5), 4), round(q(0.95), 4), round(lat[-1] if lat else 0, 4),
                      round(gpu_s / 3600, 3), round(core_s / 3600, 3), self.peak_gpus, self.peak_consumers,
                      len(arrivals) - len(lat))


def simulate(arrivals: list[float], policy: str, params: Params | None = None,
             horizon: float | None = None) -> Result:
    """Run one rule set over one trace; costs are integrated up to `horizon` (default: last arrival)."""
    return Fleet(params or Params(), policy).run(arrivals, horizon if horizon is not None else
                                                 (arrivals[-1] if arrivals else 0.0))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--trace", default="all", choices=["steady", "burst", "day", "all"])
    ap.add_argument("--policy", default="all", choices=["ours", "kiosk", "fixed", "all"])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--rate", type=float, default=5.0, help="mean arrivals/s for steady and day")
    ap.add_argument("--json", action="store_true", help="print JSON only")
    for name, default in asdict(Params()).items():
        ap.add_argument("--" + name.replace("_", "-"), type=type(default), default=default)
    args = ap.parse_args(argv)
    params = Params(**{k: getattr(args, k) for k in asdict(Params())})
    traces = ["steady", "burst", "day"] if args.trace == "all" else [args.trace]
    policies = ["ours", "kiosk", "fixed"] if args.policy == "all" else [args.policy]
    out = {"params": asdict(params), "seed": args.seed, "rate": args.rate, "results": {}}
    for name in traces:
        arrivals, horizon = trace(name, args.seed, args.rate)
        run_params = params
        if name == "steady" and args.warm_gpus == Params.warm_gpus:
            run_params = Params(**{**asdict(params), "warm_gpus": 1})  # steady state, not a cold start
        out["results"][name] = {pol: asdict(simulate(arrivals, pol, run_params, horizon)) for pol in policies}
    if args.json:
        print(json.dumps(out, indent=2))
        return 0
    print(f"{'trace':7} {'policy':6} {'jobs':>6} {'p50 s':>8} {'p95 s':>8} {'GPU-h':>7} {'core-h':>7} "
          f"{'GPUs':>4} {'cons':>4}")
    for name, by_policy in out["results"].items():
        for pol, r in by_policy.items():
            print(f"{name:7} {pol:6} {r['jobs']:6d} {r['p50_s']:8.2f} {r['p95_s']:8.2f} {r['gpu_hours']:7.2f} "
                  f"{r['consumer_core_hours']:7.2f} {r['peak_gpus']:4d} {r['peak_consumers']:4d}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
