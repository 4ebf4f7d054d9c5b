"""The dev server's DeepCell-signature models over real gRPC: signatures, both request styles, and
synthetic heads that mean what the trained heads mean (checked against ground-truth images).

Kiosk-style calls are made the way kiosk-redis-consumer makes them (facts sheet §0): metadata with
`metadata_field=['signature_def']`, inputs in `float_val`, outputs read from `float_val` and
listed in sorted key order. Our client's calls send `tensor_content`.
"""

from __future__ import annotations

import subprocess
import sys

import grpc
import numpy as np
import pytest
from scipy import ndimage as ndi
from skimage import exposure, measure, morphology, segmentation
from skimage.feature import peak_local_max

from redis_consumer.errors import UserError
from redis_consumer.settings import Settings
from redis_consumer.tfserving.client import TFServingClient
from redis_consumer.tfserving.protos import rcserving_pb2 as pb
from tests.helpers.model_server import ModelServer

T, S = 256, 128  # segmentation and spot tiles
# The served signatures (facts sheet §2-6, §8): name:version -> (inputs, outputs), name -> shape.
EXPECTED = {
    ("NuclearSegmentation", 6): ({"input_0": (-1, T, T, 1)}, {"semantic_0": (-1, T, T, 1), "semantic_1": (-1, T, T, 1)}),
    ("CytoplasmSegmentation", 5): ({"input_0": (-1, T, T, 1)}, {"semantic_0": (-1, T, T, 1), "semantic_1": (-1, T, T, 1)}),
    ("PhaseCytoSegmentation", 0): ({"input_0": (-1, T, T, 1)}, {"semantic_0": (-1, T, T, 1), "semantic_1": (-1, T, T, 1)}),
    ("MultiplexSegmentation", 9): ({"input_0": (-1, T, T, 2)},
                                   {"semantic_0": (-1, T, T, 1), "semantic_1": (-1, T, T, 3),
                                    "semantic_2": (-1, T, T, 1), "semantic_3": (-1, T, T, 3)}),
    ("SpotDetection", 3): ({"input_1": (-1, S, S, 1)},
                           {"classification": (-1, S, S, 2), "offset_regression": (-1, S, S, 2)}),
    ("NuclearTrackingNE", 6): ({"encoder_app_input": (-1, -1, 32, 32, 1), "encoder_morph_input": (-1, -1, 3),
                                "encoder_centroid_input": (-1, -1, 2), "encoder_adj_input": (-1, -1, -1)},
                               {"encoder_centroid_input": (-1, -1, 2), "relu_nef": (-1, -1, 64)}),
    ("NuclearTrackingInf", 6): ({"current_embeddings": (-1, -1, -1, 64), "current_centroids": (-1, -1, -1, 2),
                                 "future_embeddings": (-1, 1, -1, 64), "future_centroids": (-1, 1, -1, 2)},
                                {"tracking_decoder": (-1, 1, -1, -1, 3)}),
    ("ScaleDetection", 1): ({"input_0": (-1, T, T, 1)}, {"scale": (-1, 1)}),
}
PREDICT = "/tensorflow.serving.PredictionService/Predict"
METADATA = "/tensorflow.serving.PredictionService/GetModelMetadata"


@pytest.fixture(scope="module")
def server():
    with ModelServer(max_batch_size=16) as s:
        yield s


@pytest.fixture(scope="module")
def channel(server):
    with grpc.insecure_channel(server.address) as ch:
        yield ch


@pytest.fixture(scope="module")
def client(server):
    c = TFServingClient(Settings.from_env({}, TF_HOST="127.0.0.1", TF_PORT=server.port, GRPC_BACKOFF=0.01))
    yield c
    c.close()


# ----- kiosk-style calls (generated message classes, float_val) -----

def kiosk_metadata(channel, name: str, version: int):
    req = pb.GetModelMetadataRequest(metadata_field=["signature_def"])
    req.model_spec.name = name
    req.model_spec.version.value = version
    resp = pb.GetModelMetadataResponse.FromString(channel.unary_unary(METADATA)(req.SerializeToString(), timeout=10))
    sig_map = pb.SignatureDefMap.FromString(resp.metadata["signature_def"].value)
    return resp, sig_map.signature_def["serving_default"]


def kiosk_predict(channel, name: str, version: int, inputs: dict[str, np.ndarray]) -> list[tuple[str, np.ndarray]]:
    """A Predict the kiosk's way; outputs decoded from float_val, in sorted key order."""
    req = pb.PredictRequest()
    req.model_spec.name = name
    req.model_spec.version.value = version
    for key, arr in inputs.items():
        t = req.inputs[key]
        t.dtype = pb.DataType.Value("DT_FLOAT")
        t.float_val.extend(np.asarray(arr, np.float32).reshape(-1).tolist())
        for d in arr.shape:
            t.tensor_shape.dim.add(size=d)
    resp = pb.PredictResponse.FromString(channel.unary_unary(PREDICT)(req.SerializeToString(), timeout=60))
    out = []
    for key in sorted(resp.outputs):
        t = resp.outputs[key]
        assert t.dtype == pb.DataType.Value("DT_FLOAT") and not t.tensor_content and len(t.float_val)
        out.append((key, np.asarray(t.float_val, np.float32).reshape([d.size for d in t.tensor_shape.dim])))
    return out


def kiosk_batch_size(signature, max_batch: int = 64, min_size: int = 128) -> int:
    """kiosk-redis-consumer grpc_clients.py:345-393: TF_MAX_BATCH_SIZE // ratio of the input shapes."""
    ratio = 1.0
    for info in signature.inputs.values():
        dims = [d.size for d in info.tensor_shape.dim]
        ratio *= np.prod([d / min_size for d in dims[1:-1] if d > 0]) * dims[-1]
    return int(max_batch // abs(ratio))


# ----- ground-truth images -----

def histogram_normalize(x: np.ndarray, kernel_size=None) -> np.ndarray:
    """The applications' preprocessing (deepcell-toolbox processing.py:65-101), per channel."""
    x = (x - x.min()) / (x.max() - x.min())
    return exposure.equalize_adapthist(x, kernel_size=kernel_size).astype(np.float32)


def nuclei_image(seed: int = 1, n: int = 24, shape: tuple[int, int] = (T, T)):
    """Discs with known centres and radii 7-11 (some touching), blurred, on a noisy background."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:shape[0], :shape[1]]
    truth, img, centres = np.zeros(shape, int), np.zeros(shape), []
    while len(centres) < n:
        c, r = rng.uniform(14, np.subtract(shape, 14)), rng.uniform(7, 11)
        if any(np.hypot(*(c - c2)) < r + r2 for c2, r2 in centres):
            continue
        centres.append((c, r))
        d = np.hypot(yy - c[0], xx - c[1])
        truth[(d < r) & (truth == 0)] = len(centres)
        img += 150 * np.clip(r + 0.5 - d, 0, 1)
    img = ndi.gaussian_filter(img, 1) + rng.normal(20, 4, img.shape)
    return histogram_normalize(img), truth, np.array([c for c, _ in centres])


def deep_watershed(maxima, interior, *, h=0.1, radius=10, threshold=0.01, smooth=1.0, small=0):
    """deepcell-toolbox deep_watershed.py:154-203 with its default (h_maxima) path."""
    markers = measure.label(morphology.h_maxima(maxima, h, footprint=morphology.disk(radius)))
    interior = ndi.gaussian_filter(interior, smooth)
    labels = segmentation.watershed(-interior, markers, mask=interior > threshold)
    if small:
        sizes = np.bincount(labels.ravel())
        labels[sizes[labels] < small] = 0
    return markers, labels


def match_iou(labels: np.ndarray, truth: np.ndarray) -> list[float]:
    out = []
    for i in range(1, truth.max() + 1):
        t = truth == i
        ids, counts = np.unique(labels[t], return_counts=True)
        j = ids[np.argmax(counts)]
        p = labels == j
        out.append(float((t & p).sum() / (t | p).sum()) if j else 0.0)
    return out


def marker_centres(markers: np.ndarray) -> np.ndarray:
    return np.array([p.centroid for p in measure.regionprops(markers)])


def assert_one_marker_per_centre(markers, centres, tol=2.0):
    found = marker_centres(markers)
    assert len(found) == len(centres)
    dist = np.linalg.norm(found[:, None] - centres[None], axis=-1)
    assert dist.min(axis=0).max() <= tol and sorted(dist.argmin(axis=1)) == list(range(len(centres)))


# ----- tests -----

@pytest.mark.parametrize("key", list(EXPECTED), ids=[f"{n}:{v}" for n, v in EXPECTED])
def test_metadata_kiosk_style_and_our_client(channel, client, key):
    name, version = key
    inputs, outputs = EXPECTED[key]
    resp, sig = kiosk_metadata(channel, name, version)
    assert (resp.model_spec.name, resp.model_spec.version.value) == (name, version)
    for got, want in ((sig.inputs, inputs), (sig.outputs, outputs)):
        assert {k: (pb.DataType.Name(v.dtype), tuple(d.size for d in v.tensor_shape.dim)) for k, v in got.items()} \
            == {k: ("DT_FLOAT", shape) for k, shape in want.items()}
    meta = client.get_metadata(name, version)
    assert {k: s.shape for k, s in meta.inputs.items()} == inputs
    assert {k: s.shape for k, s in meta.outputs.items()} == outputs
    assert all(s.dtype == np.float32 for s in (*meta.inputs.values(), *meta.outputs.values()))


def test_kiosk_batch_sizes_from_metadata(channel):
    """The kiosk's batch arithmetic on our metadata gives the facts sheet's numbers (§0, §8)."""
    assert kiosk_batch_size(kiosk_metadata(channel, "NuclearSegmentation", 6)[1]) == 16
    assert kiosk_batch_size(kiosk_metadata(channel, "MultiplexSegmentation", 9)[1]) == 8
    assert kiosk_batch_size(kiosk_metadata(channel, "SpotDetection", 3)[1]) == 64


def test_version_1_demo_model_unchanged(client):
    meta = client.get_metadata("NuclearSegmentation", 1)
    assert list(meta.inputs) == ["image"] and list(meta.outputs) == ["probability"]
    assert meta.inputs["image"].shape == (-1, -1, -1, 1)


def test_nuclear_heads_kiosk_request_find_every_nucleus(channel):
    image, truth, centres = nuclei_image()
    batch = np.stack([image, image[::-1]])[..., None]  # two tiles in one request
    heads = kiosk_predict(channel, "NuclearSegmentation", 6, {"input_0": batch})
    assert [k for k, _ in heads] == ["semantic_0", "semantic_1"]
    inner, outer = (h for _, h in heads)
    assert inner.shape == outer.shape == (2, T, T, 1) and inner.min() >= 0 and outer.min() >= 0
    markers, labels = deep_watershed(inner[0, ..., 0], outer[0, ..., 0])
    assert_one_marker_per_centre(markers, centres)
    assert outer[0, ..., 0][tuple(np.round(centres).astype(int).T)].min() > 0.5
    assert outer[0, ..., 0][ndi.distance_transform_edt(truth == 0) > 3].max() <= 0.01
    assert labels.max() == len(centres) and np.mean(match_iou(labels, truth)) >= 0.9
    np.testing.assert_allclose(inner[1], inner[0][::-1], atol=1e-6)  # each tile on its own


def test_nuclear_heads_our_client_batched_and_split(client, server):
    image, _, centres = nuclei_image(seed=2)
    tiles = np.repeat(image[None, ..., None], 20, axis=0)  # server limit 16: split in two
    heads = client.predict("NuclearSegmentation", 6, tiles)
    assert sorted(heads) == ["semantic_0", "semantic_1"] and heads["semantic_0"].shape == (20, T, T, 1)
    assert client.max_batch["NuclearSegmentation"] == 16
    np.testing.assert_array_equal(heads["semantic_0"][19], heads["semantic_0"][0])
    markers, _ = deep_watershed(heads["semantic_0"][0, ..., 0], heads["semantic_1"][0, ..., 0])
    assert_one_marker_per_centre(markers, centres)


def test_overlapping_tiles_agree(client):
    """Heads depend only on the neighbourhood, so two overlapping tiles give the same values for
    an object both contain whole: the applications' blended untiling then sees no seam."""
    image, _, _ = nuclei_image(seed=4, n=40, shape=(T, 448))
    left = client.predict("NuclearSegmentation", 6, image[None, :, :T, None])
    right = client.predict("NuclearSegmentation", 6, image[None, :, 192:, None])
    objects, _ = ndi.label(left["semantic_1"][0, ..., 0] > 0)
    inside = np.zeros_like(objects, bool)
    for i, sl in enumerate(ndi.find_objects(objects), 1):
        if sl[1].start >= 196 and sl[1].stop <= 252 and sl[0].start > 2 and sl[0].stop < T - 2:
            inside |= objects == i
    inside = ndi.binary_dilation(inside, iterations=2)[:, 192:]
    assert inside.sum() > 200  # a few whole nuclei sit in the overlap
    for key in ("semantic_0", "semantic_1"):
        np.testing.assert_allclose(left[key][0, :, 192:][inside], right[key][0, :, :64][inside], atol=1e-6)


def test_cytoplasm_and_phase_models(client):
    rng = np.random.default_rng(5)
    yy, xx = np.mgrid[:T, :T]
    centres = []
    while len(centres) < 16:
        c = rng.uniform(22, T - 22, 2)
        if all(np.hypot(*(c - d)) >= 36 for d in centres):
            centres.append(c)
    centres = np.array(centres)
    dist = np.min([np.hypot(yy - c[0], xx - c[1]) for c in centres], axis=0)
    truth = measure.label(dist < 15)
    cyto = histogram_normalize(ndi.gaussian_filter((dist < 15) * 1.0, 1) + rng.normal(0, 0.03, (T, T)))
    phase_raw = np.where(dist < 14, 0.25, np.where(dist < 16, 0.9, 0.5))  # dark cell, bright halo
    phase = histogram_normalize(ndi.gaussian_filter(phase_raw, 1) + rng.normal(0, 0.02, (T, T)))
    for model, version, img, iou in (("CytoplasmSegmentation", 5, cyto, 0.9), ("PhaseCytoSegmentation", 0, phase, 0.8)):
        heads = client.predict(model, version, img[None, ..., None])
        markers, labels = deep_watershed(heads["semantic_0"][0, ..., 0], heads["semantic_1"][0, ..., 0])
        assert_one_marker_per_centre(markers, centres)
        assert np.mean(match_iou(labels, truth)) >= iou, model


def mesmer_image(seed: int = 3):
    """Cells (Voronoi regions within 16 px of their centre) with a 6 px nucleus and a membrane ring."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:T, :T]
    centres = []
    while len(centres) < 25:
        c = rng.uniform(20, T - 20, 2)
        if all(np.hypot(*(c - d)) >= 30 for d in centres):
            centres.append(c)
    centres = np.array(centres)
    d = np.stack([np.hypot(yy - c[0], xx - c[1]) for c in centres])
    owner, near = d.argmin(0) + 1, d.min(0)
    cells, nuclei = np.where(near <= 16, owner, 0), np.where(near <= 6, owner, 0)
    ring = segmentation.find_boundaries(cells, mode="inner")
    nuc = ndi.gaussian_filter((nuclei > 0) * 1.0, 1) + rng.normal(0, 0.03, (T, T))
    mem = ndi.gaussian_filter(ring * 1.0, 1) + 0.3 * ndi.gaussian_filter((cells > 0) * 1.0, 2) + rng.normal(0, 0.03, (T, T))
    tile = np.stack([histogram_normalize(nuc, 128), histogram_normalize(mem, 128)], axis=-1)
    return tile, cells, nuclei, centres


def test_mesmer_whole_cell_and_nuclear_heads(channel, client):
    tile, cells, nuclei, centres = mesmer_image()
    kiosk = kiosk_predict(channel, "MultiplexSegmentation", 9, {"input_0": tile[None]})
    assert [(k, h.shape[-1]) for k, h in kiosk] == [("semantic_0", 1), ("semantic_1", 3), ("semantic_2", 1), ("semantic_3", 3)]
    ours = client.predict("MultiplexSegmentation", 9, tile[None])
    for key, head in kiosk:
        np.testing.assert_array_equal(ours[key], head)
    cell_inner, cell_px, nuc_inner, nuc_px = (h[0] for _, h in kiosk)
    for px in (cell_px, nuc_px):
        np.testing.assert_allclose(px.sum(-1), 1.0, rtol=1e-5)
    # Mesmer's postprocess (mesmer.py:74-96, 269-287): inner distance + the interior channel.
    kw = {"radius": 2, "threshold": 0.2, "smooth": 2, "small": 15}
    _, cell_labels = deep_watershed(cell_inner[..., 0], cell_px[..., 1], h=0.075, **kw)
    _, nuc_labels = deep_watershed(nuc_inner[..., 0], nuc_px[..., 1], h=0.1, **kw)
    assert cell_labels.max() == nuc_labels.max() == len(centres)
    assert np.mean(match_iou(nuc_labels, nuclei)) >= 0.9
    assert np.mean(match_iou(cell_labels, cells)) >= 0.85
    assert (cell_labels > 0).sum() > 3 * (nuc_labels > 0).sum()  # cells grew well past their nuclei
    between = (cells > 0) & (nuclei == 0) & ~segmentation.find_boundaries(cells)
    assert np.median(cell_px[..., 1][between]) > 0.9 and np.median(nuc_px[..., 2][between]) > 0.9


def spots_image(seed: int = 7, n: int = 30):
    rng = np.random.default_rng(seed)
    pts = []
    while len(pts) < n:
        p = rng.uniform(4, S - 4, 2)
        if all(np.hypot(*(p - q)) >= 6 for q in pts):
            pts.append(p)
    pts = np.array(pts)
    yy, xx = np.mgrid[:S, :S]
    img = sum(rng.uniform(0.6, 1.0) * np.exp(-((yy - p[0]) ** 2 + (xx - p[1]) ** 2) / (2 * 1.3 ** 2)) for p in pts)
    img = img + rng.normal(0, 0.02, img.shape)
    return ((img - img.min()) / (img.max() - img.min())).astype(np.float32), pts


def test_spot_heads_point_to_subpixel_centres(channel, client):
    image, truth = spots_image()
    kiosk = kiosk_predict(channel, "SpotDetection", 3, {"input_1": image[None, ..., None]})
    assert [k for k, _ in kiosk] == ["classification", "offset_regression"]
    ours = client.predict("SpotDetection", 3, image[None, ..., None])
    cls, off = ours["classification"][0], ours["offset_regression"][0]
    np.testing.assert_array_equal(cls, kiosk[0][1][0])
    np.testing.assert_allclose(cls.sum(-1), 1.0, rtol=1e-6)
    # deepcell-spots postprocessing_utils.py:111-147: peaks of P(spot) > 0.95, plus the offsets.
    peaks = peak_local_max(cls[..., 1], min_distance=1, threshold_abs=0.95)
    points = peaks + off[peaks[:, 0], peaks[:, 1]]
    dist = np.linalg.norm(points[:, None] - truth[None], axis=-1)
    assert len(points) == len(truth)
    assert dist.min(axis=1).max() <= 0.5 and sorted(dist.argmin(axis=1)) == list(range(len(truth)))
    assert cls[..., 1][np.linalg.norm(np.mgrid[:S, :S].T[..., ::-1][:, :, None] - truth, axis=-1).min(-1) > 4].max() < 0.01
    blank = client.predict("SpotDetection", 3, np.random.default_rng(0).normal(0.1, 0.01, (1, S, S, 1)).astype(np.float32))
    assert blank["classification"][0, ..., 1].max() < 0.95


def disc_features(centres, radii, shade):
    """Per-cell features the way deepcell-tracking builds them (centroid, [area, perimeter, ecc.],
    a 32x32 appearance crop, normalised adjacency)."""
    n = len(centres)
    app = np.zeros((1, n, 32, 32, 1), np.float32)
    yy, xx = np.mgrid[:32, :32]
    for i, s in enumerate(shade):
        app[0, i, ..., 0] = s * (np.hypot(yy - 15.5, xx - 15.5) < 14)
    morph = np.array([[np.pi * r * r, 2 * np.pi * r, 0.1] for r in radii], np.float32)[None]
    cent = np.asarray(centres, np.float32)[None]
    adj = (np.linalg.norm(cent[0][:, None] - cent[0][None], axis=-1) < 50).astype(np.float32)
    deg = adj.sum(1) + 1e-5
    adj = adj / np.sqrt(deg[:, None] * deg[None])
    return {"encoder_app_input": app, "encoder_morph_input": morph, "encoder_centroid_input": cent,
            "encoder_adj_input": adj[None]}


def test_tracking_models_score_nearest_cell_same_and_daughters(channel, client):
    tracks = [(40, 40), (40, 120), (150, 90)]
    radii, shade = [9, 8, 12], [0.8, 0.5, 0.3]
    before = disc_features(tracks, radii, shade)
    ne = kiosk_predict(channel, "NuclearTrackingNE", 6, before)
    assert [k for k, _ in ne] == ["encoder_centroid_input", "relu_nef"]
    emb_before = ne[1][1]  # the kiosk's embedding_axis=1
    assert emb_before.shape == (1, 3, 64) and emb_before.min() >= 0
    np.testing.assert_array_equal(ne[0][1], before["encoder_centroid_input"])
    # Next frame: every cell drifted by (3, 2) and the list is shuffled; track 2 divided in two
    # half-area daughters; one unrelated cell appeared.
    drift = np.array([3.0, 2.0])
    after_cent = [tuple(np.add(tracks[1], drift)), (150 + 3, 90 - 6), tuple(np.add(tracks[0], drift)),
                  (150 + 3, 90 + 8), (220, 30)]
    after_radii = [8, 12 / np.sqrt(2), 9, 12 / np.sqrt(2), 9]
    after = disc_features(after_cent, after_radii, [0.5, 0.3, 0.8, 0.3, 0.6])
    emb_after = client.predict("NuclearTrackingNE", 6, after)["relu_nef"]
    history = 8
    cur_e = np.repeat(emb_before[:, None], history, axis=1)  # (1, L, tracks, 64)
    cur_c = np.repeat(before["encoder_centroid_input"][:, None], history, axis=1)
    cur_c = cur_c - drift * np.arange(history - 1, -1, -1)[None, :, None, None]  # they have been drifting
    scores = client.predict("NuclearTrackingInf", 6, {
        "current_embeddings": cur_e, "current_centroids": cur_c.astype(np.float32),
        "future_embeddings": emb_after[:, None], "future_centroids": after["encoder_centroid_input"][:, None]})
    p = scores["tracking_decoder"]
    assert p.shape == (1, 1, 3, 5, 3)
    np.testing.assert_allclose(p.sum(-1), 1.0, rtol=1e-5)
    same = p[0, 0, ..., 0]
    assert list(same.argmax(axis=1)[:2]) == [2, 0] and same[0, 2] > 0.9 and same[1, 0] > 0.9
    assert p[0, 0, 2, 1, 2] > 0.9 and p[0, 0, 2, 3, 2] > 0.9  # daughters of track 2
    assert same[:, 4].max() < 0.01 and p[0, 0, :, 4, 1].min() > 0.9  # the newcomer is "different"
    kiosk = kiosk_predict(channel, "NuclearTrackingInf", 6, {
        "current_embeddings": cur_e, "current_centroids": cur_c,
        "future_embeddings": emb_after[:, None], "future_centroids": after["encoder_centroid_input"][:, None]})
    np.testing.assert_allclose(kiosk[0][1], p, rtol=1e-6)


def test_wrong_tile_size_is_a_user_error(client):
    with pytest.raises(UserError, match="input_0.*256, 256"):
        client.predict("NuclearSegmentation", 6, np.zeros((1, 200, 200, 1), np.float32))
    with pytest.raises(UserError, match="future_embeddings"):
        client.predict("NuclearTrackingInf", 6, {"current_embeddings": np.zeros((1, 2, 3, 64), np.float32),
                                                 "current_centroids": np.zeros((1, 2, 3, 2), np.float32)})


    with pytest.raises(UserError, match="encoder inputs disagree"):
        client.predict("NuclearTrackingNE", 6, {"encoder_app_input": np.zeros((2, 3, 32, 32, 1), np.float32),
                                                "encoder_morph_input": np.zeros((2, 4, 3), np.float32),
                                                "encoder_centroid_input": np.zeros((2, 3, 2), np.float32),
                                                "encoder_adj_input": np.zeros((2, 3, 3), np.float32)})


def test_scale_detection_answers_one(client):
    assert np.array_equal(client.predict("ScaleDetection", 1, np.zeros((3, T, T, 1), np.float32)), np.ones((3, 1)))


def test_serve_model_lists_every_model():
    out = subprocess.run([sys.executable, "-m", "redis_consumer.cli.main", "serve-model", "--list-models"],
                         capture_output=True, text=True, timeout=60, check=True).stdout
    lines = {line.split()[0]: line for line in out.splitlines()}
    for (name, version), (inputs, outputs) in EXPECTED.items():
        line = lines[f"{name}:{version}"]
        for key, shape in (*inputs.items(), *outputs.items()):
            assert f"{key}{list(shape)}" in line
    assert {"Identity:1", "NuclearSegmentation:1", "SimulatedGPU:1"} <= set(lines)


def test_simulated_gpu_time_and_content_replies():
    """--simulate-gpu: each DeepCell batch also holds the one SimulatedGPU (busy = time held);
    with --response-encoding content our client reads the same heads from tensor_content."""
    from redis_consumer.tfserving.deepcell_models import Mesmer

    image = np.zeros((3, T, T, 1), np.float32)
    tile = mesmer_image()[0][None]
    with ModelServer(simulate_gpu=True, gpu_base_ms=40, gpu_per_sample_ms=10, response_encoding="content") as s:
        c = TFServingClient(Settings.from_env({}, TF_HOST="127.0.0.1", TF_PORT=s.port))
        c.predict("NuclearSegmentation", 6, image)
        c.predict("SimulatedGPU", 1, image)
        stats = s.stats()["models"]
        heads = c.predict("MultiplexSegmentation", 9, tile)
        c.close()
    assert stats["NuclearSegmentation:6"]["batches"] == 1 and stats["NuclearSegmentation:6"]["busy_seconds"] >= 0.07
    assert stats["SimulatedGPU:1"]["busy_seconds"] >= 0.07
    expected = Mesmer().predict({"input_0": tile})
    assert sorted(heads) == sorted(expected)
    for key, head in expected.items():
        np.testing.assert_array_equal(heads[key], head)


def test_normalized_distance_shortcut_matches_find_boundaries():
    from redis_consumer.tfserving.synthetic_heads import normalized_distance

    rng = np.random.default_rng(0)
    labels, count = ndi.label(ndi.gaussian_filter(rng.random((96, 96)), 2) > 0.5)
    assert count > 5 and labels[0].any()  # objects touching the edge too
    for erode in (0, 1):
        np.testing.assert_array_equal(normalized_distance(labels, erode=erode, touching=False),
                                      normalized_distance(labels, erode=erode, touching=True))


def test_dev_server_serves_every_model_the_kiosk_profile_names():
    """helm/environments/kiosk.yaml (kiosk-console's versions) must work against the dev server."""
    from pathlib import Path

    import yaml

    from redis_consumer.tfserving.catalog import builtin_models

    profile = yaml.safe_load((Path(__file__).resolve().parents[1] / "helm/environments/kiosk.yaml").read_text())
    wanted = {value for release in profile["consumers"].values() for value in (release.get("models") or {}).values()}
    served = {f"{m.name}:{m.version}" for m in builtin_models()}
    assert wanted, "the kiosk profile names no models"
    assert wanted <= served, f"not served by the dev server: {sorted(wanted - served)}"
