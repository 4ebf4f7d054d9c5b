"""DeepCell pipeline CPU per megapixel, per stage, and the deep watershed against skimage.

Runs NuclearSegmentation (1 channel) and Mesmer (2 channels, compartment 'both') through
`redis_consumer.deepcell.run_application` on synthetic dense nuclei with a fake model that
computes its heads from each tile (so 'predict' is the fake's cost, not a GPU's), timing every
stage with process CPU time. Then, on the same heads, the deep watershed beside the same-run
scikit-image reference path deepcell-toolbox takes (tests/deepcell_reference.py: skimage
h_maxima or peak_local_max markers, label, watershed, ...), checking the labels are identical.
Prints one JSON object; target: ours / reference <= 0.25 for the h_maxima path.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np
from scipy import ndimage as ndi
from skimage.morphology import disk
from skimage.morphology import h_maxima as skimage_h_maxima

from redis_consumer.deepcell import (
    Mesmer,
    NuclearSegmentation,
    deep_watershed,
    run_application,
)
from redis_consumer.deepcell.hmaxima import h_maxima
from tests.deepcell_reference import reference_deep_watershed
from tests.deepcell_synthetic import heads_from_truth

cpu = time.process_time


def dense_nuclei(n: int, seed: int = 0, rmin: float = 6, rmax: float = 12) -> np.ndarray:
    """Non-overlapping-ish discs at ~1 per 600 px^2 (about 1,300 per megapixel)."""
    rng = np.random.default_rng(seed)
    truth = np.zeros((n, n), np.int32)
    k = 0
    for _ in range(int(n * n / 600)):
        x, y, r = rng.uniform(0, n), rng.uniform(0, n), rng.uniform(rmin, rmax)
        x0, x1, y0, y1 = int(max(x - r - 1, 0)), int(min(x + r + 2, n)), int(max(y - r - 1, 0)), int(min(y + r + 2, n))
        xx, yy = np.mgrid[x0:x1, y0:y1]
        disc = (xx - x) ** 2 + (yy - y) ** 2 <= r * r
        region = truth[x0:x1, y0:y1]
        if disc.any() and (region[disc] != 0).mean() <= 0.3:
            k += 1
            region[disc & (region == 0)] = k
    return truth


def _edt_heads(mask):
    dist = ndi.distance_transform_edt(mask)
    return dist / max(dist.max(), 1.0), dist


def fake_nuclear(tiles):
    inner, outer = zip(*(_edt_heads(t[..., 0] > 0.5) for t in tiles))
    return [np.stack(inner)[..., None].astype(np.float32), np.stack(outer)[..., None].astype(np.float32)]


def fake_mesmer(tiles):
    outs = [[], [], [], []]
    for t in tiles:
        for k, channel in ((0, 1), (2, 0)):
            mask = t[..., channel] > 0.5
            inner, _ = _edt_heads(mask)
            interior = ndi.binary_erosion(mask, iterations=2)
            outs[k].append(inner[..., None])
            outs[k + 1].append(np.stack([mask & ~interior, interior, ~mask], -1))
    return {f"semantic_{i}": np.stack(o).astype(np.float32) for i, o in enumerate(outs)}


def best_cpu(fn, repeat):
    times, out = [], None
    for _ in range(repeat):
        t = cpu()
        out = fn()
        times.append(cpu() - t)
    return min(times), out


def per_stage(spec, image, model, repeat, **kw):
    runs = []
    for _ in range(repeat):
        timings = {}
        run_application(spec, image, model, timings=timings, timer=cpu, **kw)
        runs.append(timings)
    mp = image.shape[0] * image.shape[1] * image.shape[2] / 1e6
    stages = {k: min(r[k] for r in runs) * 1e3 / mp for k in runs[0]}
    stages["total_outside_predict"] = sum(v for k, v in stages.items() if k != "predict")
    return {k: round(v, 2) for k, v in stages.items()}


def watershed_pair(outputs, repeat, **kw):
    """CPU ms per megapixel of ours vs the reference on the same heads, and equality."""
    mp = outputs[0].shape[0] * outputs[0].shape[1] * outputs[0].shape[2] / 1e6
    ours_t, ours = best_cpu(lambda: deep_watershed(outputs, **kw), repeat)
    ref_t, ref = best_cpu(lambda: reference_deep_watershed(outputs, **kw), repeat)
    return {"ours_ms_per_mp": round(ours_t * 1e3 / mp, 1), "reference_ms_per_mp": round(ref_t * 1e3 / mp, 1),
            "ratio": round(ours_t / ref_t, 3), "identical": bool(np.array_equal(ours, ref)),
            "objects": int(ours.max())}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--size", type=int, default=1024)
    args = ap.parse_args()
    repeat = 1 if args.quick else 2
    n = 512 if args.quick else args.size
    rng = np.random.default_rng(0)
    truth = dense_nuclei(n)
    nuclear_image = (1000 * (truth > 0) + rng.normal(50, 10, truth.shape))[None, ..., None].astype(np.float32)
    cells = ndi.grey_dilation(truth, size=(7, 7))
    mesmer_image = np.stack([nuclear_image[0, ..., 0],
                             (400 * (cells > 0) + rng.normal(50, 10, truth.shape)).astype(np.float32)], -1)[None]

    result = {"bench": "deepcell", "image": [n, n], "objects": int(truth.max()), "repeat": repeat}
    result["nuclear_stages_cpu_ms_per_mp"] = per_stage(NuclearSegmentation, nuclear_image, fake_nuclear, repeat,
                                                       batch_size=16)
    result["mesmer_stages_cpu_ms_per_mp"] = per_stage(Mesmer, mesmer_image, fake_mesmer, repeat,
                                                      batch_size=8, compartment="both")

    # the deep watershed on heads a good model would give (truth-derived, with float noise)
    inner, outer = heads_from_truth(truth)
    inner = inner + rng.normal(0, 0.003, inner.shape).astype(np.float32)
    heads = [inner[None, ..., None], outer[None, ..., None]]
    result["deep_watershed_nuclear_h_maxima"] = watershed_pair(heads, repeat)
    result["deep_watershed_nuclear_peak_local_max"] = watershed_pair(heads, repeat, maxima_algorithm="peak_local_max")
    mesmer_heads = [inner[None, ..., None], (outer > 2)[None, ..., None].astype(np.float32)]
    result["deep_watershed_mesmer_whole_cell"] = watershed_pair(mesmer_heads, repeat, **Mesmer.postprocess["whole-cell"])

    mp = n * n / 1e6
    ours_t, ours = best_cpu(lambda: h_maxima(inner, 0.1, disk(10)), repeat)
    ref_t, ref = best_cpu(lambda: skimage_h_maxima(inner, 0.1, footprint=disk(10)), repeat)
    result["h_maxima_only"] = {"ours_ms_per_mp": round(ours_t * 1e3 / mp, 1),
                               "skimage_ms_per_mp": round(ref_t * 1e3 / mp, 1),
                               "ratio": round(ours_t / ref_t, 3), "identical": bool(np.array_equal(ours, ref))}
    result["target_ratio_h_maxima_path"] = 0.25
    dw = result["deep_watershed_nuclear_h_maxima"]
    result["pass"] = bool(dw["identical"] and dw["ratio"] <= 0.25
                          and result["deep_watershed_nuclear_peak_local_max"]["identical"]
                          and result["deep_watershed_mesmer_whole_cell"]["identical"])
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
