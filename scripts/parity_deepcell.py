"""Check redis_consumer.deepcell's spots and tracking against the DeepCell libraries' own code.

Not a test (it needs checkouts the suite does not have): a developer runs it against
vanvalenlab/deepcell-spots @ 0.3.2 and vanvalenlab/deepcell-tracking @ 0.6.4 checkouts, e.g.
  git -C deepcell-tracking archive 0.6.4 | tar -x -C /tmp/dct
  python scripts/parity_deepcell.py --spots /tmp/dcs --tracking /tmp/dct
The library modules are loaded from those directories (nothing is copied). Their heavy imports
are stubbed: pandas/networkx (unused on these paths) and deepcell_toolbox, whose `resize` is
replaced by ours (OpenCV is not installed), so the comparison covers everything but the
single-channel resize arithmetic. Movies are tracked by both CellTrackers with the same model
callables (the reference models, and seeded random probabilities with low birth/death/division
costs to force many births, divisions and capped tracks); tracks and tracked labels must be equal.
Prints one JSON object; exit status 1 on any mismatch.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
import tempfile
import types
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np

from redis_consumer.deepcell import spots
from redis_consumer.deepcell.tracking import reference_models as rm
from redis_consumer.deepcell.tracking.features import (
    clean_up_annotations,
    movie_features,
    resize_crop,
)
from redis_consumer.deepcell.tracking.tracker import (
    KIOSK_TRACKING_DEFAULTS,
    track_cells,
)
from tests.helpers.synthetic_cells import nuclei_movie, spot_image, spot_positions


def load_file(name: str, path: Path) -> types.ModuleType:
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def check_spots(root: Path) -> dict:
    post = load_file("dcs_post", root / "deepcell_spots" / "postprocessing_utils.py")
    pre = load_file("dcs_pre", root / "deepcell_spots" / "preprocessing_utils.py")
    rng = np.random.default_rng(0)
    _, cls, off = spot_image(spot_positions(300, 256, rng), 256, rng)
    theirs = post.y_annotations_to_point_list_max(
        {"classification": cls[None], "offset_regression": off[None]}, threshold=0.95, min_distance=1
    )[0]
    ours = spots.spot_points(cls, off)
    batch = rng.uniform(0, 900, (2, 64, 64, 2)).astype(np.float32)
    same_pre = all(
        np.array_equal(pre.min_max_normalize(batch.copy(), clip=c), spots.spot_preprocess(batch, clip=c))
        for c in (False, True)
    )
    return {"points_equal": bool(np.array_equal(np.asarray(theirs), ours)), "n": len(ours), "preprocess_equal": same_pre}


def stub_tracking_imports() -> None:
    for name in ("pandas", "networkx"):
        sys.modules.setdefault(name, types.ModuleType(name))
    toolbox = types.ModuleType("deepcell_toolbox")
    toolbox.compute_overlap = None
    utils = types.ModuleType("deepcell_toolbox.utils")
    utils.resize = lambda data, shape, **_: resize_crop(data, shape[0]).astype(data.dtype)
    toolbox.utils = utils
    sys.modules["deepcell_toolbox"], sys.modules["deepcell_toolbox.utils"] = toolbox, utils


class _Encoder:
    def predict(self, d):
        out = rm.neighborhood_encoder_outputs(
            d["encoder_app_input"], d["encoder_morph_input"], d["encoder_centroid_input"], d["encoder_adj_input"]
        )
        return [out[k] for k in sorted(out)]


class _Model:
    def __init__(self, fn):
        self.fn = fn

    def predict(self, d):
        return self.fn(d["current_embeddings"], d["current_centroids"], d["future_embeddings"], d["future_centroids"])


def _served_encoder(*args):
    out = rm.neighborhood_encoder_outputs(*args)
    return [out[k] for k in sorted(out)]


def _random_model(seed: int, alpha: list[float]):
    rng = np.random.default_rng(seed)
    return lambda ce, cc, fe, fc: rng.dirichlet(alpha, size=(ce.shape[2], fe.shape[2])).astype(np.float32)[None, None]


def check_tracking(root: Path) -> dict:
    stub_tracking_imports()
    with tempfile.TemporaryDirectory() as scratch:  # a package dir without the library's __init__
        package = Path(scratch) / "deepcell_tracking"
        package.mkdir()
        (package / "__init__.py").write_text("")
        for name in ("tracking.py", "utils.py", "trk_io.py"):
            (package / name).symlink_to((root / "deepcell_tracking" / name).resolve())
        sys.path.insert(0, scratch)
        from deepcell_tracking.tracking import CellTracker
        from deepcell_tracking.utils import clean_up_annotations as lib_clean

        results = []
        cases = [
            ("reference", KIOSK_TRACKING_DEFAULTS, lambda s: rm.inference),
            ("reference fixed", dict(KIOSK_TRACKING_DEFAULTS, crop_mode="fixed", division=0.01), lambda s: rm.inference),
            (
                "random",
                dict(KIOSK_TRACKING_DEFAULTS, division=0.3, birth=0.4, death=0.45, track_length=4),
                lambda s: _random_model(s, [0.7, 1, 1.5]),
            ),
        ]
        for name, params, make in cases:
            for seed in range(3):
                movie = nuclei_movie(n_frames=20, grid=4, divide=[(4, 5), (9, 12)], leave=7, leave_frame=8, seed=seed)
                X, y = movie.X[..., None], movie.y[..., None]
                lib = CellTracker(X, y, _Model(make(seed)), neighborhood_encoder=_Encoder(), **params)
                adj, app, morph, cent = lib._est_feats()  # before tracking relabels lib.y in place
                lib.track_cells()
                review = lib._track_review_dict()
                ours = track_cells(X, y, _served_encoder, make(seed), **params)
                feats = movie_features(X, clean_up_annotations(y), 32, params["crop_mode"], True, params["distance_threshold"])
                results.append(
                    {
                        "case": name,
                        "seed": seed,
                        "tracks": len(ours.tracks),
                        "divisions": sum(1 for v in ours.tracks.values() if v["daughters"]),
                        "clean_up_equal": bool(np.array_equal(lib_clean(y), clean_up_annotations(y))),
                        "features_equal": all(
                            np.array_equal(a, b)
                            for a, b in [
                                (adj, feats.adjacency),
                                (app, feats.appearances),
                                (morph, feats.morphologies),
                                (cent, feats.centroids),
                            ]
                        ),
                        "tracks_equal": review["tracks"] == ours.tracks,
                        "y_tracked_equal": bool(np.array_equal(review["y_tracked"][..., 0], ours.y_tracked)),
                    }
                )
        return {"runs": results}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--spots", type=Path, help="deepcell-spots 0.3.2 checkout")
    parser.add_argument("--tracking", type=Path, help="deepcell-tracking 0.6.4 checkout")
    args = parser.parse_args()
    report: dict = {}
    if args.spots:
        report["spots"] = check_spots(args.spots)
    if args.tracking:
        report["tracking"] = check_tracking(args.tracking)
    flags = [v for k, v in report.get("spots", {}).items() if k.endswith("equal")]
    flags += [v for run in report.get("tracking", {}).get("runs", []) for k, v in run.items() if k.endswith("equal")]
    report["all_equal"] = bool(flags) and all(flags)
    print(json.dumps(report))
    return 0 if report["all_equal"] else 1


if __name__ == "__main__":
    sys.exit(main())
