"""`.trk` / `.trks` archives and the kiosk's `lineage.json`, in memory.

Layout (vanvalenlab/deepcell-tracking@0.6.4 deepcell_tracking/trk_io.py): a gzip tar (`w:gz`)
holding the lineage JSON (`json.dump(..., indent=4)`), then `raw.npy` and `tracked.npy`
(`np.save`), in that order (L173-213). A `.trk` holds one lineage dict as `lineage.json`
(L140-170); a `.trks` holds a list of them as `lineages.json` with a leading movie axis on both
arrays (L116-137). The loader accepts either name and turns the JSON's string keys back into
ints (L42-86). The kiosk's caliban job writes `lineage.json` with a plain `json.dump` of the
tracks (KRC redis_consumer/consumers/caliban_consumer.py:254-257) and reads only `raw.npy` and
`tracked.npy` of an uploaded .trk (KRC redis_consumer/utils.py:163-186).
"""

from __future__ import annotations

import io
import json
import tarfile
from dataclasses import dataclass
from typing import Any

import numpy as np

LINEAGE = "lineage.json"
LINEAGES = "lineages.json"


def lineage_json(tracks: dict[int, dict[str, Any]]) -> str:
    """The kiosk's lineage.json text: `json.dumps` with default separators; int keys become strings."""
    return json.dumps(tracks)


def _npy(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, np.asarray(array), allow_pickle=False)
    return buffer.getvalue()


def _archive(lineage_name: str, lineage: Any, raw: np.ndarray, tracked: np.ndarray) -> bytes:
    out = io.BytesIO()
    members = [
        (lineage_name, json.dumps(lineage, indent=4).encode()),
        ("raw.npy", _npy(raw)),
        ("tracked.npy", _npy(tracked)),
    ]
    with tarfile.open(fileobj=out, mode="w:gz") as tar:
        for name, payload in members:
            info = tarfile.TarInfo(name)
            info.size = len(payload)
            info.mode = 0o644
            tar.addfile(info, io.BytesIO(payload))
    return out.getvalue()


def save_trk(lineage: dict[int, dict[str, Any]], raw: np.ndarray, tracked: np.ndarray) -> bytes:
    """A `.trk` archive's bytes for one movie."""
    return _archive(LINEAGE, lineage, raw, tracked)


def save_trks(lineages: list[dict[int, dict[str, Any]]], raw: np.ndarray, tracked: np.ndarray) -> bytes:
    """A `.trks` archive's bytes: one lineage per movie, arrays with a leading movie axis."""
    if len(lineages) != np.shape(raw)[0] or np.shape(raw)[0] != np.shape(tracked)[0]:
        raise ValueError("a .trks needs one lineage and one raw and tracked movie per movie")
    return _archive(LINEAGES, list(lineages), raw, tracked)


@dataclass
class TrkData:
    lineages: list[dict[int, Any]]  # one per movie (a .trk gives one)
    raw: np.ndarray
    tracked: np.ndarray


def _member(tar: tarfile.TarFile, name: str, max_bytes: int) -> bytes | None:
    try:
        info = tar.getmember(name)
    except KeyError:
        return None
    if not info.isfile():
        raise ValueError(f"{name} in the track archive is not a regular file")
    if info.size > max_bytes:
        raise ValueError(f"{name} in the track archive is larger than the {max_bytes}-byte limit")
    handle = tar.extractfile(info)
    return handle.read() if handle is not None else None


def load_trk(data: bytes, max_bytes: int = 2**31, require_lineage: bool = True) -> TrkData:
    """Read a `.trk` or `.trks` archive's bytes. Arrays load without pickle; raises ValueError
    (one sentence a user can act on) for anything that is not such an archive.

    `require_lineage=False` reads an input movie the way the kiosk does (only raw.npy and
    tracked.npy, KRC utils.py:163-186): a missing lineage then gives `lineages == []`.
    No member may be larger than `max_bytes`."""
    try:
        with tarfile.open(fileobj=io.BytesIO(data), mode="r:*") as tar:
            raw_bytes = _member(tar, "raw.npy", max_bytes)
            tracked_bytes = _member(tar, "tracked.npy", max_bytes)
            text = _member(tar, LINEAGES, max_bytes)
            text = text if text is not None else _member(tar, LINEAGE, max_bytes)
    except (tarfile.TarError, EOFError, OSError) as exc:
        raise ValueError(f"the track file is not a readable .trk/.trks archive ({exc})") from None
    if raw_bytes is None or tracked_bytes is None:
        raise ValueError("the track archive has no raw.npy or no tracked.npy")
    if text is None and require_lineage:
        raise ValueError("the track archive has no lineage.json or lineages.json")
    try:
        raw = np.load(io.BytesIO(raw_bytes), allow_pickle=False)
        tracked = np.load(io.BytesIO(tracked_bytes), allow_pickle=False)
        lineages = json.loads(text.decode()) if text is not None else []
        lineages = lineages if isinstance(lineages, list) else [lineages]
        lineages = [{int(k): v for k, v in item.items()} for item in lineages]
    except (ValueError, AttributeError, UnicodeDecodeError) as exc:
        raise ValueError(f"the track archive's arrays or lineage cannot be read ({exc})") from None
    return TrkData(lineages, raw, tracked)
