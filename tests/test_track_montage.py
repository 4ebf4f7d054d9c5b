"""The track montage: same colour per track across panels, a white line from parent to daughter."""

from __future__ import annotations

import numpy as np

from redis_consumer.utils.track_montage import GAP, montage, pick_frames, track_colour


def test_tracks_keep_their_colour_and_divisions_get_a_line():
    tracked = np.zeros((3, 40, 60), np.int32)
    tracked[:, 5:15, 5:15] = 1                      # track 1 in every frame
    tracked[:2, 20:30, 25:35] = 2                   # track 2 divides at frame 2 ...
    tracked[2, 20:30, 10:18] = 3                    # ... into 3 and 4
    tracked[2, 20:30, 42:50] = 4
    tracks = {1: {"frames": [0, 1, 2], "parent": None}, 2: {"frames": [0, 1], "parent": None},
              3: {"frames": [2], "parent": 2}, 4: {"frames": [2], "parent": 2}}
    sheet = montage(np.zeros((3, 40, 60), np.float32), tracked, tracks)
    assert sheet.shape == (40, 3 * 60 + 2 * GAP, 3)
    for t in range(3):
        panel = sheet[:, t * (60 + GAP):t * (60 + GAP) + 60]
        assert tuple(panel[5, 10]) == track_colour(1)  # the top edge of track 1, same colour each frame
        if t == 2:
            assert tuple(panel[25, 14]) == track_colour(3) or tuple(panel[20, 14]) == track_colour(3)
            assert (panel[24:27, 20:40] == 255).all(axis=-1).any()  # the line from 2's centre to 3's and 4's
        else:
            assert not (panel == 255).all(axis=-1).any()
    assert pick_frames(60, 6) == [0, 12, 24, 35, 47, 59] and pick_frames(3) == [0, 1, 2]
