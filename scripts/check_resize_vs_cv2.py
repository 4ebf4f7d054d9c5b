"""One-off check: redis_consumer.deepcell.resize against OpenCV (what deepcell-toolbox calls).

OpenCV is not a dependency; run this in a scratch venv that has it, with the project first on
the path:  python -m venv /tmp/cv && /tmp/cv/bin/pip install opencv-python-headless numpy
scipy scikit-image && PYTHONPATH=. /tmp/cv/bin/python scripts/check_resize_vs_cv2.py
Prints the largest |ours - cv2| relative to the value range (INTER_LINEAR, float32) and the
number of differing pixels (INTER_NEAREST, labels) over a set of up- and down-scalings.
"""

from __future__ import annotations

import cv2
import numpy as np

from redis_consumer.deepcell.resize import resize

SIZES = [(100, 100, 50, 50), (101, 77, 63, 120), (256, 256, 394, 394), (1000, 1000, 769, 769),
         (33, 40, 40, 33), (64, 64, 32, 32), (10, 13, 97, 5), (500, 300, 1000, 600)]


def main() -> None:
    rng = np.random.default_rng(0)
    worst_linear, worst_nearest = 0.0, 0
    for sx, sy, dx, dy in SIZES:
        image = (rng.random((1, sx, sy, 1), dtype=np.float32) * 1000).astype(np.float32)
        ref = cv2.resize(image[0, ..., 0], (dy, dx), interpolation=cv2.INTER_LINEAR)
        linear = float(np.abs(ref - resize(image, (dx, dy))[0, ..., 0]).max()) / 1000
        labels = rng.integers(0, 50, (1, sx, sy, 1)).astype(np.int32)
        ref_n = cv2.resize(labels[0, ..., 0], (dy, dx), interpolation=cv2.INTER_NEAREST)
        nearest = int((ref_n != resize(labels, (dx, dy), labeled_image=True)[0, ..., 0]).sum())
        worst_linear, worst_nearest = max(worst_linear, linear), max(worst_nearest, nearest)
        print(f"{sx}x{sy} -> {dx}x{dy}: linear max|diff|/range {linear:.2e}, nearest mismatches {nearest}")
    print(f"cv2 {cv2.__version__}: worst linear {worst_linear:.2e}, worst nearest {worst_nearest}")


if __name__ == "__main__":
    main()
