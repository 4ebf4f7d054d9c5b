"""`polaris` / `spot` jobs through the real gRPC wire into the dev model server.

Ground truth: Gaussian spots at known sub-pixel positions (>= 95 % found within 1 px, <= 2 %
false positives), synthetic cells whose spots must land on the right cell for `cell culture`
(nuclear + cytoplasm, slot order) and `tissue` (Mesmer), the kiosk's CSV byte for byte, and
one-sentence reasons for bad channels / segmentation types.
"""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
import tifffile
from scipy.spatial import cKDTree

from redis_consumer.consumers.polaris import PolarisConsumer, SpotConsumer
from redis_consumer.deepcell.spots import spots_csv
from redis_consumer.testing import ModelServer, run_job
from tests.helpers.synthetic_cells import spot_image, spot_positions

pytestmark = pytest.mark.timeout(240)


@pytest.fixture(scope="module")
def server():
    with ModelServer() as running:
        yield running.address


def tif(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    tifffile.imwrite(buf, array)
    return buf.getvalue()


def read_csv(data: bytes) -> tuple[list[str], np.ndarray]:
    text = data.decode()
    assert text.endswith("\r\n") and "\n" not in text.replace("\r\n", "")  # csv.writer's CRLF, as the kiosk
    lines = text.split("\r\n")[:-1]
    rows = np.array([[float(v) for v in line.split(",")] for line in lines[1:]]).reshape(len(lines) - 1, -1)
    return lines[0].split(","), rows


def recovered(found_rc: np.ndarray, truth_rc: np.ndarray) -> tuple[float, float]:
    """(fraction of true spots with a found spot within 1 px, fraction of found spots with none)."""
    near_truth, _ = cKDTree(found_rc).query(truth_rc)
    near_found, _ = cKDTree(truth_rc).query(found_rc)
    return float((near_truth <= 1).mean()), float((near_found > 1).mean())


@pytest.mark.parametrize("shape", [(256, 256), (300, 190)], ids=["square", "odd-size"])
def test_spots_found_at_their_subpixel_positions(server, shape):
    rng = np.random.default_rng(sum(shape))
    truth = spot_positions(150, min(shape), rng)
    image, _, _ = spot_image(truth, max(shape), rng)
    image = image[: shape[0], : shape[1]]
    run = run_job(PolarisConsumer, {"channels": "0", "segmentation_type": "none"},
                  inputs={"spots.tif": tif(image)}, model_server=server)
    assert run.status == "done", run.hash.get("reason")
    assert sorted(run.files) == ["log.txt", "results.json", "spots_0.csv", "spots_0_spots.png"]
    header, rows = read_csv(run.files["spots_0.csv"])
    assert header == ["x", "y"]
    found = rows[:, ::-1]  # x = col, y = row
    hit, false = recovered(found, truth)
    assert hit >= 0.95 and false <= 0.02, (hit, false)
    # the CSV is exactly what the kiosk's writer makes of these points
    assert run.files["spots_0.csv"].decode() == spots_csv(found)
    summary = json.loads(run.files["results.json"])
    assert summary["spot_count"] == len(found) == int(run.hash["spot_count"])
    assert summary["spot_model"] == "SpotDetection:3" and summary["threshold"] == 0.95
    assert summary["segmentation_type"] == "none" and summary["timings"]
    assert run.files["spots_0_spots.png"].startswith(b"\x89PNG")


def cells_image(rng: np.random.Generator, size: int = 320, n_inside: int = 90, n_outside: int = 30):
    """(image (H, W, 3) = spots, nuclei, cytoplasm; true nucleus map; true whole-cell map; spot
    positions; the true cell of each spot (0 = background)). 3x3 cells: nucleus r=22, cytoplasm r=34;
    spots lie <= 14 px from a centre (well inside a nucleus) or >= 46 px from every centre."""
    rows, cols = np.mgrid[:size, :size]
    grid = (size / 2 - size * 5 / 16, size / 2, size / 2 + size * 5 / 16)
    centres = np.array([(r, c) for r in grid for c in grid])
    nuclear = np.zeros((size, size), np.int32)
    whole = np.zeros((size, size), np.int32)
    for k, (r, c) in enumerate(centres, 1):
        d2 = (rows - r) ** 2 + (cols - c) ** 2
        whole[d2 <= 34**2] = k
        nuclear[d2 <= 22**2] = k
    points: list[np.ndarray] = []
    counts = {"inside": 0, "outside": 0}
    wanted = {"inside": n_inside, "outside": n_outside}
    while counts != wanted:
        p = rng.uniform(4, size - 5, 2)
        d = np.hypot(*(centres - p).T).min()
        kind = "inside" if d <= 14 else "outside" if d >= 46 else None
        spaced = not points or np.hypot(*(np.array(points) - p).T).min() >= 4
        if kind is not None and spaced and counts[kind] < wanted[kind]:
            points.append(p)
            counts[kind] += 1
    truth = np.array(points)
    spots, _, _ = spot_image(truth, size, rng)
    nuc = 100 + 900 * (nuclear > 0) + rng.normal(0, 10, (size, size))
    cyto = 100 + 700 * (whole > 0) + rng.normal(0, 10, (size, size))
    owner = np.array([nuclear[int(r), int(c)] for r, c in truth])
    return np.stack([spots, nuc, cyto], axis=-1).astype(np.float32), nuclear, whole, truth, owner


def label_to_truth(labels: np.ndarray, truth_map: np.ndarray) -> dict[int, int]:
    """Each output label -> the true cell it mostly covers."""
    out = {}
    for value in np.unique(labels[labels > 0]):
        under = truth_map[labels == value]
        out[int(value)] = int(np.bincount(under).argmax())
    return out


def check_assignment(run, image, truth_maps, truth, owner):
    n_features = len(truth_maps)
    assert run.status == "done", run.hash.get("reason")
    names = sorted(run.files)
    assert [n for n in names if n.endswith(".tif")] == [f"cells_batch_0_feature_{c}.tif" for c in range(n_features)]
    header, rows = read_csv(run.files["cells_0.csv"])
    assert header == ["x", "y", "cellID0", "cellID1"][: 2 + n_features]
    hit, false = recovered(rows[:, 1::-1], truth)
    assert hit >= 0.95 and false <= 0.02, (hit, false)
    labels = [tifffile.imread(io.BytesIO(run.files[f"cells_batch_0_feature_{c}.tif"])) for c in range(n_features)]
    assert all(lab.dtype == np.float32 and lab.shape == image.shape[:2] for lab in labels)
    _, nearest = cKDTree(truth).query(rows[:, 1::-1])
    for c in range(n_features):
        mapping = label_to_truth(labels[c].astype(np.int64), truth_maps[c])
        got = np.array([mapping.get(int(v), 0) for v in rows[:, 2 + c]])
        assert (got == owner[nearest]).mean() >= 0.98, (c, got, owner[nearest])
        # the cell id in the CSV is the label image's value under the spot, as the kiosk looks it up
        assert all(labels[c][int(y), int(x)] == cell for x, y, cell in rows[:, [0, 1, 2 + c]])
    return labels


def test_cell_culture_assigns_spots_to_nuclei_then_cytoplasm(server):
    rng = np.random.default_rng(3)
    image, nuclear, whole, truth, owner = cells_image(rng)
    run = run_job(PolarisConsumer, {"channels": "0,1,2", "segmentation_type": "cell culture"},
                  inputs={"cells.tif": tif(image)}, model_server=server)
    nuc_labels, cyto_labels = check_assignment(run, image, [nuclear, whole], truth, owner)
    # slot order, not finish order (kiosk quirk Q12): feature 0 = nuclei, feature 1 = cytoplasm
    areas = [np.count_nonzero(lab) for lab in (nuc_labels, cyto_labels)]
    assert areas[1] > 1.5 * areas[0]
    summary = json.loads(run.files["results.json"])
    assert summary["segmentation_models"] == {"nuclear": "NuclearSegmentation:6", "cytoplasm": "CytoplasmSegmentation:5"}
    assert summary["cells_per_image"] == [[9, 9]] and summary["spots_in_cells"] == [int((owner > 0).sum())]
    assert summary["segmentation_scale"] == 0.38


def test_tissue_assigns_spots_with_mesmer(server):
    rng = np.random.default_rng(4)
    image, _, whole, truth, owner = cells_image(rng)
    run = run_job(PolarisConsumer, {"channels": "0,1,2", "segmentation_type": "tissue"},
                  inputs={"cells.tif": tif(image)}, model_server=server)
    check_assignment(run, image, [whole], truth, owner)  # MESMER_COMPARTMENT whole-cell
    assert json.loads(run.files["results.json"])["segmentation_models"] == {"tissue": "MultiplexSegmentation:9"}


def test_empty_segmentation_type_is_automatic(server):
    rng = np.random.default_rng(5)
    image = cells_image(rng, size=240, n_inside=30, n_outside=10)[0]
    run = run_job(PolarisConsumer, {"channels": "0,1"}, inputs={"cells.tif": tif(image)}, model_server=server)
    assert run.status == "done", run.hash.get("reason")
    assert json.loads(run.files["results.json"])["segmentation_type"] == "cell culture"
    assert read_csv(run.files["cells_0.csv"])[0] == ["x", "y", "cellID0"]
    run = run_job(PolarisConsumer, {}, inputs={"cells.tif": tif(image)}, model_server=server)  # kiosk-client
    assert run.status == "done", run.hash.get("reason")
    assert read_csv(run.files["cells_0.csv"])[0] == ["x", "y"]


def test_spot_queue_writes_coordinates(server):
    rng = np.random.default_rng(6)
    truth = spot_positions(60, 200, rng)
    image, _, _ = spot_image(truth, 200, rng)
    run = run_job(SpotConsumer, {"segmentation_type": "tissue"}, inputs={"dots.tif": tif(image)},
                  model_server=server)
    assert run.status == "done", run.hash.get("reason")
    assert sorted(run.files) == ["dots_0.npy", "dots_0.tif", "log.txt", "results.json"]
    coords = np.load(io.BytesIO(run.files["dots_0.npy"]))
    assert coords.shape[1] == 2 and recovered(coords, truth)[0] >= 0.95
    assert tifffile.imread(io.BytesIO(run.files["dots_0.tif"])).shape == (200, 200, 3)


@pytest.mark.parametrize("fields, words", [
    ({"channels": "0,5,1", "segmentation_type": "cell culture"}, "channel '5' as the nuclear channel"),
    ({"channels": ",1,2", "segmentation_type": "cell culture"}, "spots channel"),
    ({"channels": "0,1", "segmentation_type": "tissue"}, "both a nuclear and a cytoplasm channel"),
    ({"channels": "0", "segmentation_type": "cell culture"}, "needs a nuclear or cytoplasm channel"),
    ({"channels": "0,1,2,0", "segmentation_type": "none"}, "at most 3"),
    ({"channels": "0,x", "segmentation_type": "none"}, "channel 'x'"),
    ({"channels": "0,1,2", "segmentation_type": "organoid"}, "none, cell culture or tissue"),
])
def test_bad_channels_fail_with_one_sentence(fields, words):
    from redis_consumer.testing import LocalTF

    image = np.random.default_rng(0).normal(10, 1, (64, 64, 3)).astype(np.float32)
    run = run_job(PolarisConsumer, fields, inputs={"bad.tif": tif(image)}, tf=LocalTF())
    reason = run.hash["reason"]
    assert run.status == "failed" and run.hash["failure_type"] == "user"
    assert words in reason and "\n" not in reason and reason.endswith("."), reason


def test_segmentation_postprocess_setting_reaches_polaris():
    from redis_consumer.testing import LocalTF

    image = cells_image(np.random.default_rng(8), size=240, n_inside=20, n_outside=5)[0]
    run = run_job(PolarisConsumer, {"channels": "0,1", "segmentation_type": "cell culture"},
                  inputs={"cells.tif": tif(image)}, tf=LocalTF(),
                  settings={"SEGMENTATION_POSTPROCESS": '{"small_objects_threshold": 77}'})
    assert run.status == "done", run.hash.get("reason")
    (app,) = json.loads(run.files["results.json"])["applications"]
    assert app["postprocess"]["cell"]["small_objects_threshold"] == 77 and app["scale"] == 0.38
