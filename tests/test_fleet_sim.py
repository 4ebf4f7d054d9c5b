"""bench/fleet_sim.py: known answers for the simulator and for its HPA arithmetic."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import asdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))

import fleet_sim
from fleet_sim_hpa import Behavior, Hpa, Policy, average_value_desired, ratio_desired

# binary-exact costs, so latencies add up exactly
PARAMS = fleet_sim.Params(gpu_s=0.0625, consumer_s=0.25, fixed_gpus=1, fixed_consumers=4)


def test_constant_load_below_capacity_latency_is_the_service_time_exactly():
    # 2 jobs/s, each holds a consumer 0.3125 s and the GPU 0.0625 s: far below 4 consumers / 1 GPU
    arrivals = fleet_sim.constant(rate=2.0, seconds=600)
    result = fleet_sim.simulate(arrivals, "fixed", PARAMS, horizon=600.0)
    assert result.jobs == len(arrivals) == 1200 and result.unfinished == 0
    assert result.p50_s == result.p95_s == result.max_s == 0.3125  # consumer_s + gpu_s, no wait
    assert (result.peak_gpus, result.peak_consumers) == (1, 4)  # no scaling
    # cost = fleet x time: 1 GPU and 4 cores for the 600 s horizon (the last job ends within it)
    assert result.gpu_hours == round(600 / 3600, 3)
    assert result.consumer_core_hours == round(4 * 600 / 3600, 3)


def test_over_capacity_the_queue_grows_by_the_known_amount():
    # 1 consumer, 0.3125 s per job: 4 jobs/s arrive, 3.2/s are served; the last of 400 arrivals
    # (t = 99.75 s) waits for the 399 before it: it ends at 400 x 0.3125 = 125 s
    params = fleet_sim.Params(**{**asdict(PARAMS), "fixed_consumers": 1})
    result = fleet_sim.simulate(fleet_sim.constant(rate=4.0, seconds=100), "fixed", params, horizon=100.0)
    assert result.max_s == 125.0 - 99.75


def test_seeded_traces_are_deterministic():
    assert fleet_sim.trace("steady", seed=3) == fleet_sim.trace("steady", seed=3)
    assert fleet_sim.trace("steady", seed=3) != fleet_sim.trace("steady", seed=4)
    burst, horizon = fleet_sim.trace("burst")
    assert len(burst) == 10_000 and max(burst) <= 60 and horizon == 7200
    day, _ = fleet_sim.trace("day", rate=0.2)
    assert day and min(day) >= 6 * 3600  # the quiet night


def test_autoscalers_follow_a_burst_and_return_to_zero_gpus():
    arrivals = fleet_sim.constant(rate=20.0, seconds=60)  # 1,200 images in a minute, then nothing
    params = fleet_sim.Params(gpu_s=0.05, consumer_s=0.3, max_gpus=4, node_start_s=120, tf_start_s=30)
    ours = fleet_sim.simulate(arrivals, "ours", params, horizon=4 * 3600)
    kiosk = fleet_sim.simulate(arrivals, "kiosk", params, horizon=4 * 3600)
    for result in (ours, kiosk):
        assert result.unfinished == 0 and result.jobs == 1200
        assert 1 <= result.peak_gpus <= 4
        # nothing runs before the first GPU node and TF Serving are up
        assert result.p50_s > params.node_start_s + params.tf_start_s
        # GPU nodes went away again: far less than max_gpus for the whole horizon
        assert result.gpu_hours < 4 * 4 / 2
    # consumers were capped by the GPUs: at most workersPerGpu per ready GPU (plus pods draining)
    assert ours.peak_consumers <= params.workers_per_gpu * params.max_gpus


def test_cli_prints_json():
    proc = subprocess.run([sys.executable, str(ROOT / "bench" / "fleet_sim.py"), "--trace", "burst", "--json",
                           "--max-gpus", "2"], capture_output=True, text=True, check=True, timeout=120)
    out = json.loads(proc.stdout)
    assert set(out["results"]["burst"]) == {"ours", "kiosk", "fixed"}
    assert {"p50_s", "p95_s", "gpu_hours", "consumer_core_hours"} <= set(out["results"]["burst"]["ours"])


# -- the HPA arithmetic (Kubernetes autoscaling/v2 algorithm) -------------------------------------
def test_hpa_formula_and_tolerance():
    assert ratio_desired(4, 1.05) == 4  # within the 0.1 tolerance
    assert ratio_desired(4, 1.2) == 5  # ceil(4.8)
    assert ratio_desired(4, 0.5) == 2
    assert average_value_desired(3, 20, 4) == 5  # ceil(20 / 4)
    assert average_value_desired(5, 21, 4) == 5  # 21 / 20 = 1.05: tolerance
    assert average_value_desired(0, 1, 4) == 1  # from zero: any item needs a replica


def test_hpa_stabilisation_window_and_policies():
    hpa = Hpa(1, 100, Behavior(down_window_s=300, up=(Policy("Pods", 4, 60),), down=(Policy("Percent", 50, 60),)))
    assert hpa.step(0, 2, 50) == 6  # +4 pods per minute
    assert hpa.step(15, 6, 50) == 6  # the minute's budget is spent
    assert hpa.step(61, 6, 50) == 10
    assert hpa.step(100, 10, 1) == 10  # the window still holds the recommendation of 50
    assert hpa.step(400, 10, 1) == 5  # window passed: at most -50 % per minute
    assert hpa.step(430, 5, 1) == 5  # the -50 % budget of this minute is spent
    assert hpa.step(470, 5, 1) == 2  # a new minute: int(5 x 0.5), as the controller truncates
    assert hpa.step(600, 2, 0) == 1  # never below minReplicas
