"""The TF-free CellTracker against ground truth: synthetic drifting nuclei with a division and a
cell leaving the field, tracked with the numpy reference models; plus its parts and .trk I/O."""

from __future__ import annotations

import io
import json
import tarfile

import numpy as np
import pytest
from skimage.measure import regionprops

from redis_consumer.deepcell.tracking import reference_models as rm
from redis_consumer.deepcell.tracking.assignment import (
    assignment_matrix,
    cost_matrix,
    find_parent,
    solve,
)
from redis_consumer.deepcell.tracking.features import (
    adjacency,
    clean_up_annotations,
    get_max_cells,
    image_features,
    movie_features,
    normalize_adjacency,
    resize_crop,
)
from redis_consumer.deepcell.tracking.tracker import (
    KIOSK_TRACKING_DEFAULTS,
    track_cells,
)
from redis_consumer.deepcell.tracking.trk import (
    lineage_json,
    load_trk,
    save_trk,
    save_trks,
)
from tests.helpers.synthetic_cells import nuclei_movie

KIOSK_CONSOLE = dict(KIOSK_TRACKING_DEFAULTS, distance_threshold=60, division=0.01)


def served_encoder(app, morph, centroid, adj):
    """The NE as the kiosk sees it over gRPC: outputs sorted by name, embedding second."""
    outputs = rm.neighborhood_encoder_outputs(app, morph, centroid, adj)
    return [outputs[name] for name in sorted(outputs)]


def check_against_truth(movie, result):
    """Every true nucleus is exactly one output track (and vice versa), tracks are continuous,
    and the lineage (parents, daughters, frame_div, capped) is the true one."""
    owner = {}  # nucleus ident -> set of track labels
    for t, frame_truth in enumerate(movie.truth):
        for label, ident in frame_truth.items():
            tracked = np.unique(result.y_tracked[t][movie.y[t] == label])
            assert len(tracked) == 1 and tracked[0] > 0
            owner.setdefault(ident, set()).add(int(tracked[0]))
    assert all(len(labels) == 1 for labels in owner.values()), owner
    track_of = {ident: labels.pop() for ident, labels in owner.items()}
    assert sorted(track_of.values()) == sorted(result.tracks)  # one track per nucleus, none extra
    for ident, label in track_of.items():
        nucleus, track = movie.nuclei[ident], result.tracks[label]
        visible = [t for t in nucleus.frames if ident in movie.truth[t].values()]
        assert track["frames"] == visible == list(range(visible[0], visible[-1] + 1))
        assert track["label"] == label
        assert track["parent"] == (None if nucleus.parent is None else track_of[nucleus.parent])
        assert sorted(track["daughters"]) == sorted(track_of[c] for c in nucleus.children)
        if nucleus.children:
            assert track["capped"] is True and track["frame_div"] == visible[-1] + 1
        else:
            assert track["capped"] is False and track["frame_div"] is None
    return track_of


@pytest.mark.parametrize("params", [KIOSK_TRACKING_DEFAULTS, KIOSK_CONSOLE], ids=["krc", "console"])
@pytest.mark.parametrize("seed", [0, 1])
def test_division_and_leaving_cell_tracked(params, seed):
    movie = nuclei_movie(n_frames=12, divide=[(5, 6)], leave=7, leave_frame=4, seed=seed)
    result = track_cells(movie.X, movie.y, served_encoder, rm.inference, **params)
    assert result.y_tracked.dtype == np.int32 and result.y_tracked.shape == movie.y.shape
    track_of = check_against_truth(movie, result)
    parent, daughters = track_of[5], {track_of[c] for c in movie.nuclei[5].children}
    assert set(result.tracks[parent]["daughters"]) == daughters
    assert result.tracks[parent]["frames"][-1] == 5 and result.tracks[parent]["frame_div"] == 6
    assert all(result.tracks[d]["frames"][0] == 6 for d in daughters)
    leaver = result.tracks[track_of[7]]
    assert leaver["frames"] == [0, 1, 2, 3, 4] and leaver["daughters"] == [] and not leaver["capped"]


def test_fixed_crop_mode_tracks_the_same():
    movie = nuclei_movie(n_frames=10, divide=[(9, 5)], leave=3, leave_frame=6, seed=3)
    params = dict(KIOSK_TRACKING_DEFAULTS, crop_mode="fixed", norm_epsilon=1e-4)
    check_against_truth(movie, track_cells(movie.X, movie.y, served_encoder, rm.inference, **params))


def test_sixty_frames_of_twenty_cells():
    movie = nuclei_movie(n_frames=60, size=200, grid=5, divide=[(12, 25)], leave=4, leave_frame=30, seed=7)
    assert max(len(f) for f in movie.truth) >= 20
    result = track_cells(movie.X, movie.y, served_encoder, rm.inference, **KIOSK_TRACKING_DEFAULTS)
    check_against_truth(movie, result)
    assert len(result.tracks) == 25 + 2


def test_encoder_batches_give_the_same_result():
    movie = nuclei_movie(n_frames=9, divide=[(2, 4)], seed=2)
    whole = track_cells(movie.X, movie.y, served_encoder, rm.inference, **KIOSK_TRACKING_DEFAULTS)
    batched = track_cells(
        movie.X, movie.y, served_encoder, lambda *a: [rm.inference(*a)], encoder_batch_frames=4, **KIOSK_TRACKING_DEFAULTS
    )  # frames in batches of 4, and the inference output as a served model's one-item list
    assert whole.tracks == batched.tracks
    np.testing.assert_array_equal(whole.y_tracked, batched.y_tracked)


def test_empty_frame_and_wrong_model_shapes():
    movie = nuclei_movie(n_frames=6, grid=2, seed=1)
    y = movie.y.copy()
    y[3] = 0
    result = track_cells(movie.X, y, served_encoder, rm.inference, **KIOSK_TRACKING_DEFAULTS)
    assert not result.y_tracked[3].any()
    assert len(result.tracks) == 4 and all(t["frames"] == [0, 1, 2, 4, 5] for t in result.tracks.values())
    empty = track_cells(movie.X, np.zeros_like(y), served_encoder, rm.inference)
    assert empty.tracks == {} and not empty.y_tracked.any()
    with pytest.raises(ValueError, match="neighbourhood encoder"):
        track_cells(movie.X, movie.y, lambda a, m, c, adj: np.zeros((1, 2, 64)), rm.inference)
    with pytest.raises(ValueError, match="tracking model"):
        track_cells(movie.X, movie.y, rm.neighborhood_encoder, lambda *a: np.zeros((1, 1, 2, 2, 3)))
    with pytest.raises(ValueError):
        track_cells(movie.X[:, :10], movie.y, rm.neighborhood_encoder, rm.inference)


def test_clean_up_annotations_numbers_from_total_plus_one():
    y = np.array([[[0, 5], [5, 9]], [[3, 0], [0, 0]], [[0, 0], [0, 0]], [[2, 2], [7, 1]]], dtype=np.uint16)
    out = clean_up_annotations(y[..., None])
    assert out.dtype == np.int32 and out.shape == (4, 2, 2, 1)
    # 6 cells in all -> ids 7.. in frame order, ascending original label within a frame
    expected = np.array([[[0, 7], [7, 8]], [[9, 0], [0, 0]], [[0, 0], [0, 0]], [[11, 11], [12, 10]]])
    np.testing.assert_array_equal(out[..., 0], expected)
    assert get_max_cells(out) == 3


def test_image_features_match_regionprops():
    X = np.zeros((40, 50, 1), dtype=np.float32)
    y = np.zeros((40, 50), dtype=np.int32)
    y[5:15, 10:30] = 4
    y[25:36, 30:36] = 2
    X[..., 0] = np.arange(50, dtype=np.float32)[None, :]
    f = image_features(X, y, appearance_dim=8)
    assert f.labels.tolist() == [2, 4]
    for i, prop in enumerate(regionprops(y)):
        np.testing.assert_allclose(f.centroids[i], prop.centroid, rtol=1e-6)
        np.testing.assert_allclose(f.morphologies[i], [prop.area, prop.perimeter, prop.eccentricity], rtol=1e-6)
    # resize mode: the bbox crop of a horizontal ramp (cols 10..29) resized to 8x8 stays a ramp
    ramp = f.appearances[1, 0, :, 0]
    assert f.appearances.shape == (2, 8, 8, 1) and np.all(np.diff(ramp) > 0)
    assert 10 <= ramp[0] < ramp[-1] <= 29

    fixed = image_features(X, y, appearance_dim=8, crop_mode="fixed")
    np.testing.assert_allclose(fixed.centroids, f.centroids + 8, rtol=1e-6)  # padded coordinates
    cell = fixed.appearances[1, ..., 0]
    inside = cell != 0
    assert inside.sum() > 0.8 * 64
    assert abs(cell[inside].mean()) < 1e-4 and cell[inside].std() == pytest.approx(1, rel=1e-3)
    raw = image_features(X, y, appearance_dim=8, crop_mode="fixed", norm=False)
    assert raw.appearances[1, 0, 0, 0] == X[int(9.5) + 8 - 4 - 8, int(19.5) + 8 - 4 - 8, 0]  # crop corner, unpadded
    with pytest.raises(ValueError):
        image_features(X, y, crop_mode="other")


def test_resize_crop_uses_half_pixel_bilinear():
    # what cv2.resize(INTER_LINEAR) gives: centres at (d + 0.5) * in / out - 0.5, edges clamped
    out = resize_crop(np.array([[[0.0], [1.0]]]), 4)
    np.testing.assert_allclose(out[0, :, 0], [0, 0.25, 0.75, 1])
    down = resize_crop(np.arange(8, dtype=np.float32).reshape(1, 8, 1).repeat(2, 0), 4)
    np.testing.assert_allclose(down[0, :, 0], [0.5, 2.5, 4.5, 6.5])
    multi = resize_crop(np.ones((5, 7, 2)), 3)
    assert multi.shape == (3, 3, 2) and np.allclose(multi, 1)


def test_adjacency_counts_padded_rows_at_the_origin():
    cent = np.array([[[100.0, 100.0], [110.0, 100.0], [0.0, 0.0], [0.0, 0.0]]], dtype=np.float32)
    adj = adjacency(cent, 50)
    np.testing.assert_array_equal(adj[0], [[1, 1, 0, 0], [1, 1, 0, 0], [0, 0, 1, 1], [0, 0, 1, 1]])
    norm = normalize_adjacency(adj)
    np.testing.assert_allclose(norm[0, 2, 3], 1 / (2 + 1e-5), rtol=1e-6)
    near_origin = adjacency(np.array([[[10.0, 10.0], [0.0, 0.0]]]), 50)
    assert near_origin[0, 0, 1] == 1  # a real cell near (0, 0) neighbours the padding
    X = np.zeros((2, 30, 30, 1), dtype=np.float32)
    y = np.zeros((2, 30, 30), dtype=np.int32)
    y[0, 2:6, 2:6], y[0, 20:25, 20:25], y[1, 2:6, 2:6] = 1, 2, 3
    feats = movie_features(X, y, appearance_dim=4, distance_threshold=10)
    assert feats.centroids.shape == (2, 2, 2) and feats.appearances.shape == (2, 2, 4, 4, 1)
    assert feats.adjacency[1, 0, 1] > 0  # the padded row of frame 1 at (0, 0) is near (3.5, 3.5)


def test_cost_matrix_blocks_and_capped_rows():
    predictions = np.zeros((2, 3, 3), dtype=np.float32)
    predictions[..., 0] = [[0.9, 0.1, 0.0], [0.2, 0.8, 0.3]]
    a = assignment_matrix(predictions, [False, True])
    np.testing.assert_allclose(a, [[0.1, 0.9, 1.0], [1, 1, 1]], rtol=1e-6)
    cost = cost_matrix(a, birth=0.95, death=0.97)
    assert cost.shape == (5, 5) and cost.dtype == np.float32
    np.testing.assert_allclose(cost[:2, 3:], [[0.97, 1], [1, 0.97]], rtol=1e-6)
    np.testing.assert_allclose(cost[2:, :3], [[0.95, 1, 1], [1, 0.95, 1], [1, 1, 0.95]], rtol=1e-6)
    np.testing.assert_allclose(cost[2:, 3:], a.T)
    pairs = solve(cost)
    assert pairs.tolist()[0] == [0, 0]  # track 0 continues as cell 0; the capped track dies
    assert [1, 4] in pairs.tolist()
    births = [c for r, c in pairs if r >= 2 and c < 3]
    assert sorted(births) == [1, 2]


def test_parent_search_rules():
    p = np.array([[0.95, 0.2], [0.97, 0.99], [0.99, 0.99]])
    assert find_parent(0, p, [False, False, True], [False] * 3, 0.9) == 1  # capped track 2 skipped
    assert find_parent(1, p, [False, False, False], [False, True, False], 0.9) == 2  # born-now skipped
    assert find_parent(1, p, [False] * 3, [False] * 3, 0.995) is None  # must be strictly above
    assert find_parent(0, np.array([[0.95], [0.95]]), [False, False], [False, False], 0.9) == 0  # ties: first


def test_reference_models_signatures_and_meaning():
    movie = nuclei_movie(n_frames=2, grid=2, seed=0)
    feats = movie_features(movie.X[..., None], clean_up_annotations(movie.y), 32, "resize", True, 50)
    emb = rm.neighborhood_encoder(feats.appearances, feats.morphologies, feats.centroids, feats.adjacency)
    assert emb.shape == (2, 4, 64) and emb.dtype == np.float32
    outputs = rm.neighborhood_encoder_outputs(feats.appearances, feats.morphologies, feats.centroids, feats.adjacency)
    assert sorted(outputs)[1] == "relu_nef" and outputs["encoder_centroid_input"].shape == (2, 4, 2)
    cur_e, cur_c = emb[0][None, None].repeat(3, axis=1), feats.centroids[0][None, None].repeat(3, axis=1)
    probs = rm.inference(cur_e, cur_c, emb[1][None, None], feats.centroids[1][None, None])
    assert probs.shape == (1, 1, 4, 4, 3)
    np.testing.assert_allclose(probs.sum(axis=-1), 1, rtol=1e-5)
    same = probs[0, 0, ..., 0]
    # the highest p_same of every track is one cell, each cell once: the true continuation
    best = same.argmax(axis=1)
    assert sorted(best.tolist()) == [0, 1, 2, 3] and np.all(same.max(axis=1) > 0.9)
    assert np.sort(same, axis=1)[:, -2].max() < 0.01
    assert rm.inference(cur_e[:, :, :0], cur_c[:, :, :0], emb[1][None, None], feats.centroids[1][None, None]).shape == (
        1,
        1,
        0,
        4,
        3,
    )


def test_lineage_json_and_trk_round_trip():
    movie = nuclei_movie(n_frames=8, divide=[(6, 3)], seed=4)
    result = track_cells(movie.X, movie.y, served_encoder, rm.inference, **KIOSK_TRACKING_DEFAULTS)
    text = lineage_json(result.tracks)
    assert text == json.dumps(result.tracks)
    loaded = json.loads(text)
    assert all(isinstance(k, str) for k in loaded)
    assert {int(k): v for k, v in loaded.items()} == result.tracks
    daughter = next(v for v in loaded.values() if v["parent"] is not None)
    assert set(daughter) == {"label", "frames", "daughters", "capped", "frame_div", "parent"}

    raw = movie.X[..., None]
    tracked = result.y_tracked[..., None]
    data = save_trk(result.tracks, raw, tracked)
    assert data[:2] == b"\x1f\x8b"  # gzip
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:
        assert tar.getnames() == ["lineage.json", "raw.npy", "tracked.npy"]
        assert json.loads(tar.extractfile("lineage.json").read()) == loaded
    back = load_trk(data)
    assert back.lineages == [result.tracks]
    np.testing.assert_array_equal(back.raw, raw)
    np.testing.assert_array_equal(back.tracked, tracked)
    assert back.raw.dtype == raw.dtype and back.tracked.dtype == np.int32

    many = save_trks([result.tracks, {}], np.stack([raw, raw]), np.stack([tracked, tracked * 0]))
    with tarfile.open(fileobj=io.BytesIO(many), mode="r:gz") as tar:
        assert tar.getnames()[0] == "lineages.json"
    both = load_trk(many)
    assert both.lineages == [result.tracks, {}] and both.raw.shape == (2,) + raw.shape
    with pytest.raises(ValueError):
        save_trks([result.tracks], np.stack([raw, raw]), np.stack([tracked, tracked]))


def test_bad_track_archives_fail_with_a_reason():
    with pytest.raises(ValueError, match="not a readable"):
        load_trk(b"not a tar at all")
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        info = tarfile.TarInfo("raw.npy")
        info.size = 3
        tar.addfile(info, io.BytesIO(b"abc"))
    with pytest.raises(ValueError, match="no raw.npy or no tracked.npy"):
        load_trk(buffer.getvalue())
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for name, array in (("raw.npy", np.ones((2, 3, 3))), ("tracked.npy", np.zeros((2, 3, 3), dtype=np.int32))):
            payload = io.BytesIO()
            np.save(payload, array)
            info = tarfile.TarInfo(name)
            info.size = len(payload.getvalue())
            tar.addfile(info, io.BytesIO(payload.getvalue()))
    with pytest.raises(ValueError, match="no lineage"):
        load_trk(buffer.getvalue())
    movie_only = load_trk(buffer.getvalue(), require_lineage=False)  # what the kiosk reads of an input
    assert movie_only.lineages == [] and movie_only.raw.shape == (2, 3, 3) and movie_only.tracked.dtype == np.int32
    arrays = save_trk({}, np.zeros((1, 2, 2, 1)), np.zeros((1, 2, 2, 1), dtype=np.int32))
    with pytest.raises(ValueError, match="limit"):
        load_trk(arrays, max_bytes=10)


def test_clean_up_annotations_properties():
    from hypothesis import given, settings
    from hypothesis import strategies as st
    from hypothesis.extra.numpy import arrays

    @settings(max_examples=60, deadline=None)
    @given(arrays(np.uint16, st.tuples(st.integers(1, 4), st.integers(1, 6), st.integers(1, 6)), elements=st.integers(0, 5)))
    def check(y):
        out = clean_up_annotations(y)
        counts = [len(np.unique(f[f > 0])) for f in y]
        total = sum(counts)
        ids = [np.unique(f[f > 0]) for f in out]
        assert [len(i) for i in ids] == counts
        flat = np.concatenate(ids) if ids else np.zeros(0)
        np.testing.assert_array_equal(flat, np.arange(total + 1, 2 * total + 1))  # unique, in frame order
        for before, after in zip(y, out):
            assert np.array_equal(before > 0, after > 0)
            # same partition of pixels, ascending labels map to ascending ids
            pairs = np.unique(np.stack([before[before > 0], after[after > 0]]), axis=1)
            assert pairs.shape[1] == len(np.unique(before[before > 0]))
            assert np.all(np.diff(pairs[1]) > 0)

    check()
