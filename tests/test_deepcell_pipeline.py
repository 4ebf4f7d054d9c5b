"""run_application end to end with a fake model that computes heads from its tiles."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage as ndi

from redis_consumer.deepcell import Mesmer, NuclearSegmentation, run_application
from redis_consumer.deepcell.apps import APPLICATIONS
from redis_consumer.deepcell.watershed import deep_watershed
from tests.deepcell_synthetic import matched_ious


def cells_image(shape=(260, 300), seed=0, batch=1):
    """Separate cells: a nucleus disc (channel 0) inside a larger cytoplasm disc (channel 1)."""
    rng = np.random.default_rng(seed)
    xx, yy = np.mgrid[:shape[0], :shape[1]]
    image = np.zeros((batch,) + shape + (2,), np.float32)
    cells = np.zeros((batch,) + shape, np.int32)
    nuclei = np.zeros((batch,) + shape, np.int32)
    for b in range(batch):
        k = 0
        for gx in range(25, shape[0] - 20, 45):
            for gy in range(25, shape[1] - 20, 45):
                cx, cy = gx + rng.uniform(-4, 4), gy + rng.uniform(-4, 4)
                rc, rn = rng.uniform(12, 15), rng.uniform(5, 7)
                d2 = (xx - cx) ** 2 + (yy - cy) ** 2
                k += 1
                cells[b][d2 <= rc * rc] = k
                nuclei[b][d2 <= rn * rn] = k
        image[b, ..., 0] = 1000 * (nuclei[b] > 0) + rng.normal(50, 10, shape)
        image[b, ..., 1] = 400 * (cells[b] > 0) + rng.normal(50, 10, shape)
    return image, cells, nuclei


def _heads_from_mask(mask):
    """Inner distance and a pixelwise [edge, interior, background] head, as Mesmer trains them
    (the interior class stops two pixels inside the object's edge)."""
    dist = ndi.distance_transform_edt(mask)
    inner = dist / max(dist.max(), 1.0)
    interior = ndi.binary_erosion(mask, iterations=2)
    pixelwise = np.stack([mask & ~interior, interior, ~mask], axis=-1).astype(float)
    return inner[..., None], pixelwise


class FakeMesmer:
    """Served-signature-like outputs semantic_0..3 computed from each (normalised) tile."""

    def __init__(self, as_dict=False):
        self.calls, self.as_dict = [], as_dict

    def __call__(self, tiles):
        assert tiles.dtype == np.float32 and tiles.ndim == 4 and tiles.shape[-1] == 2
        self.calls.append(tiles.shape)
        outs = [[], [], [], []]
        for tile in tiles:
            wc_inner, wc_pix = _heads_from_mask(tile[..., 1] > 0.5)
            nu_inner, nu_pix = _heads_from_mask(tile[..., 0] > 0.5)
            for store, head in zip(outs, (wc_inner, wc_pix, nu_inner, nu_pix)):
                store.append(head)
        heads = [np.stack(o).astype(np.float32) for o in outs]
        if self.as_dict:  # insertion order scrambled: sorting by name must restore it
            return {f"semantic_{i}": heads[i] for i in (3, 1, 0, 2)}
        return heads


def fake_nuclear(tiles):
    inner, outer = [], []
    for tile in tiles:
        mask = tile[..., 0] > 0.5
        dist = ndi.distance_transform_edt(mask)
        inner.append(dist / max(dist.max(), 1.0))
        outer.append(dist)
    return [np.stack(inner)[..., None].astype(np.float32), np.stack(outer)[..., None].astype(np.float32)]


@pytest.fixture(scope="module")
def cells():
    return cells_image(batch=2)


def test_mesmer_three_compartments(cells):
    image, truth_cells, truth_nuclei = cells
    model = FakeMesmer()
    timings = {}
    whole = run_application(Mesmer, image, model, tile_shape=(128, 128), batch_size=8, timings=timings)
    nuclear = run_application(Mesmer, image, FakeMesmer(), tile_shape=(128, 128), compartment="nuclear")
    both = run_application(Mesmer, image, FakeMesmer(as_dict=True), tile_shape=(128, 128), compartment="both")
    assert whole.shape == nuclear.shape == image.shape[:3] + (1,)
    assert both.shape == image.shape[:3] + (2,) and both.dtype == np.int32
    np.testing.assert_array_equal(both[..., :1], whole)     # whole-cell first
    np.testing.assert_array_equal(both[..., 1:], nuclear)
    for b in range(image.shape[0]):
        assert whole[b].max() == truth_cells[b].max() == nuclear[b].max()
        assert matched_ious(truth_cells[b], whole[b, ..., 0]).mean() >= 0.85
        assert matched_ious(truth_nuclei[b], nuclear[b, ..., 0]).mean() >= 0.7
        # each nucleus lies inside its own cell
        overlap = (nuclear[b, ..., 0] > 0) & (whole[b, ..., 0] > 0)
        assert overlap.sum() >= 0.95 * (nuclear[b, ..., 0] > 0).sum()
    # batches of at most 8 tiles of the model's size; every stage timed
    assert all(s[0] <= 8 and s[1:] == (128, 128, 2) for s in model.calls) and len(model.calls) > 1
    assert set(timings) == {"resize", "pre", "tile", "predict", "untile", "postprocess"}
    assert all(v >= 0 for v in timings.values())


class FilteringMesmer(FakeMesmer):
    """FakeMesmer that, like our gRPC model, can be asked for some heads only (output_filter)
    and then returns just those, by name."""

    def __init__(self):
        super().__init__(as_dict=True)
        self.asked: list = []

    def select_heads(self, indices):
        self.asked.append(tuple(indices))
        return 4 if indices else None

    def __call__(self, tiles):
        heads = super().__call__(tiles)
        wanted = self.asked[-1] if self.asked and self.asked[-1] else range(4)
        return {f"semantic_{i}": heads[f"semantic_{i}"] for i in wanted}


@pytest.mark.parametrize("compartment, heads", [("whole-cell", (0, 1)), ("nuclear", (2, 3)), ("both", ())])
def test_a_one_compartment_mesmer_asks_only_for_its_heads_and_labels_the_same(cells, compartment, heads):
    image = cells[0]
    model = FilteringMesmer()
    got = run_application(Mesmer, image, model, tile_shape=(128, 128), compartment=compartment)
    assert model.asked == [heads]
    want = run_application(Mesmer, image, FakeMesmer(), tile_shape=(128, 128), compartment=compartment)
    np.testing.assert_array_equal(got, want)


def test_mesmer_matches_calling_the_steps_by_hand(cells):
    image = cells[0][:1]
    from redis_consumer.deepcell.preprocess import mesmer_preprocess
    from redis_consumer.deepcell.tiling import tile_input, untile
    tiles, info = tile_input(mesmer_preprocess(image), (128, 128), pad_mode="constant")
    heads = [untile(h, info) for h in FakeMesmer()(tiles)]
    expected = deep_watershed([heads[2], heads[3][..., 1:2]], radius=2, maxima_threshold=0.1,
                              interior_threshold=0.2, interior_smooth=2,
                              small_objects_threshold=15, fill_holes_threshold=15)
    got = run_application(Mesmer, image, FakeMesmer(), tile_shape=(128, 128), compartment="nuclear")
    np.testing.assert_array_equal(got, expected)


def test_overrides_are_per_compartment_or_global(cells):
    image = cells[0][:1]
    huge = {"whole-cell": {"small_objects_threshold": 10**6}}
    both = run_application(Mesmer, image, FakeMesmer(), tile_shape=(128, 128), compartment="both",
                           overrides=huge)
    assert both[..., 0].max() == 0 and both[..., 1].max() > 0
    none = run_application(Mesmer, image, FakeMesmer(), tile_shape=(128, 128), compartment="both",
                           overrides={"interior_threshold": 2.0})
    assert none.max() == 0
    assert Mesmer.postprocess_kwargs("nuclear", huge)["small_objects_threshold"] == 15
    with pytest.raises(ValueError, match="unknown postprocess parameter"):
        Mesmer.postprocess_kwargs("nuclear", {"radious": 3})


def test_mpp_rescale_inside_the_pipeline(cells):
    image, truth_cells, _ = cells
    # an image at 0.25 um/px is twice the model's 0.5: the model sees it at half size
    labels = run_application(Mesmer, image[:1], FakeMesmer(), tile_shape=(64, 64), image_mpp=0.25)
    assert labels.shape == image[:1].shape[:3] + (1,)
    assert labels[0].max() == truth_cells[0].max()
    assert matched_ious(truth_cells[0], labels[0, ..., 0]).mean() >= 0.8


def test_nuclear_segmentation_batches_and_small_images():
    image, _, truth_nuclei = cells_image((200, 230), seed=3, batch=3)
    nuc = image[..., :1]
    calls = []

    def model(tiles):
        calls.append(tiles.shape[0])
        return fake_nuclear(tiles)

    labels = run_application(NuclearSegmentation, nuc, model, tile_shape=(64, 64), batch_size=5)
    assert labels.shape == nuc.shape and max(calls) <= 5
    # the app's interior threshold (0.01 after smoothing) grows ideal heads by ~2 px; at the
    # heads' edge value the geometry is the truth's
    edge = run_application(NuclearSegmentation, nuc, model, tile_shape=(64, 64), batch_size=5,
                           overrides={"interior_threshold": 0.5})
    for b in range(3):
        assert labels[b].max() == truth_nuclei[b].max() == edge[b].max()
        assert matched_ious(truth_nuclei[b], edge[b, ..., 0]).mean() >= 0.85
        assert ((labels[b, ..., 0] > 0) >= (edge[b, ..., 0] > 0)).all()
    # an image smaller than the tile is padded, not tiled
    small = run_application(NuclearSegmentation, nuc[:, :150, :150], model, tile_shape=(256, 256))
    assert small.shape == (3, 150, 150, 1) and small[0].max() > 0


def test_bad_inputs_are_one_sentence_errors():
    image = np.zeros((1, 64, 64, 2), np.float32)
    with pytest.raises(ValueError, match="channel"):
        run_application(NuclearSegmentation, image, fake_nuclear)
    with pytest.raises(ValueError, match="dimensions"):
        run_application(Mesmer, image[0], FakeMesmer())
    with pytest.raises(ValueError, match="compartment"):
        run_application(Mesmer, image, FakeMesmer(), compartment="cytoplasm")
    with pytest.raises(ValueError, match="does not match"):
        run_application(Mesmer, image, lambda t: [x[:, :10] for x in FakeMesmer()(t)], tile_shape=(32, 32))
    with pytest.raises(ValueError, match="less than one pixel"):
        run_application(NuclearSegmentation, image[..., :1][:, :1], fake_nuclear, image_mpp=0.1)
    assert set(APPLICATIONS) == {"NuclearSegmentation", "CytoplasmSegmentation", "Mesmer"}


def test_tiny_images_still_label(cells):
    # 1-pixel and few-pixel images go through the small-image padding without errors
    for shape in [(1, 1, 1, 1), (2, 3, 5, 1), (1, 300, 1, 1)]:
        out = run_application(NuclearSegmentation, np.ones(shape, np.float32), fake_nuclear,
                              tile_shape=(64, 64))
        assert out.shape == shape and out.dtype == np.int32


def test_count_objects_is_the_unique_count():
    from redis_consumer.consumers.deepcell_base import count_objects

    rng = np.random.default_rng(0)
    cases = [rng.integers(0, 50, (100, 100)), np.zeros((3, 3), int), rng.integers(-3, 5, (10, 10)),
             rng.integers(0, 2**40, (10, 10)), rng.integers(0, 9, (5, 5)).astype(np.uint8),
             np.array([[0, 7, 7, 2**20]], np.int32), np.zeros((0, 4), int), rng.random((4, 4))]
    for labels in cases:
        assert count_objects(labels) == len(np.unique(labels[labels > 0]))


def test_counts_are_the_objects_of_the_returned_labels(cells):
    from redis_consumer.consumers.deepcell_base import count_objects

    image = cells[0]
    counts = []
    both = run_application(Mesmer, image, FakeMesmer(), tile_shape=(128, 128), compartment="both", counts=counts,
                           overrides={"whole-cell": {"small_objects_threshold": 300}})  # drops some cells
    assert len(counts) == 1 and counts[0].shape == (image.shape[0], 2)
    assert counts[0].tolist() == [[count_objects(both[b, ..., k]) for k in range(2)] for b in range(image.shape[0])]
    empty = []
    none = run_application(Mesmer, image, FakeMesmer(), tile_shape=(128, 128), counts=empty,
                           overrides={"interior_threshold": 2.0})
    assert none.max() == 0 and empty[0].tolist() == [[0], [0]]
    resized = []  # labels resized back to the input's size are not the watershed's own: no counts
    run_application(Mesmer, image[:1], FakeMesmer(), tile_shape=(64, 64), image_mpp=0.25, counts=resized)
    assert resized == []
