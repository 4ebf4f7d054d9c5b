"""The result files of a DeepCell job as the kiosk names and zips them, and the object counts.

Kiosk names: KRC redis_consumer/utils.py:111-160 (TIFFs, one per channel), base_consumer.py:478-504
and segmentation_consumer.py:110-133 (file names), utils.py:191-227 (the zip's entry names);
kiosk-protocol.md §3.8. Beside them: our overlay PNGs and `results.json`. A mixin of
`DeepCellConsumer` (its own module to keep the consumer's model and application code apart).
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from .tfserving_consumer import _jsonable, write_members


def kiosk_name(fields: Mapping[str, str]) -> tuple[str, str]:
    """(`{dir}`, `{name}`) of the kiosk's result files (kiosk-protocol.md §3.8).

    `{name}` is the basename of `original_name` (else `input_file_name`) without its extension;
    `{dir}` the dirname of `original_name`, non-empty for zip children. Both are made safe as
    zip entry names (no `..`, no absolute path, no control characters).
    """
    original = fields.get("original_name") or ""
    source = original or fields.get("input_file_name") or "image"
    source = source.replace("\\", "/")
    base = source.rsplit("/", 1)[-1]
    name = base.rsplit(".", 1)[0] if "." in base.lstrip(".") else base
    folder = original.replace("\\", "/").rsplit("/", 1)[0] if "/" in original.replace("\\", "/") else ""
    parts = [_safe_part(p) for p in folder.split("/") if p not in ("", ".", "..")]
    return "/".join(p for p in parts if p), (_safe_part(name) or "image")


def _safe_part(text: str) -> str:
    cleaned = "".join(ch if ch.isprintable() and ch not in '/\\:*?"<>|' else "_" for ch in text).strip()
    cleaned = cleaned.lstrip(".") or ("_" if cleaned else "")
    return cleaned[:120]


def kiosk_tiff_names(name: str, kind: str, batches: int, features: int) -> list[str]:
    """Kiosk file names: `segmentation` -> `{name}_batch_{i}_feature_{c}.tif` (i over batches,
    then c over features; segmentation_consumer.py:110-133), `mesmer` -> `{name}_feature_{k}.tif`
    (base_consumer.py:478-504)."""
    if kind == "segmentation":
        return [f"{name}_batch_{i}_feature_{c}.tif" for i in range(batches) for c in range(features)]
    if kind == "mesmer":
        return [f"{name}_feature_{k}.tif" for k in range(features)]
    raise ValueError(f"kind must be 'segmentation' or 'mesmer', got {kind!r}")


class KioskResultFiles:
    """Result-file methods of `DeepCellConsumer`: they use its `_step` timer, `memory_files`,
    `timings`, `apps_run`, `predict_retries`, `job_log` and `zip_compresslevel`."""

    def save_kiosk_tiffs(self, labels_bxyk: np.ndarray, outdir: str, name: str, kind: str) -> list[str]:
        """Write labels as the kiosk does: float32 TIFFs, one per channel (KRC utils.py:111-160).

        `kind="segmentation"`: `{name}_batch_{i}_feature_{c}.tif`, each (X, Y); `kind="mesmer"`:
        `{name}_feature_{k}.tif`, each (B, X, Y) ((1, H, W) for one image). `name` may hold a
        `{dir}/` prefix (zip children); the folder is created. Returns the paths written.
        """
        labels = np.asarray(labels_bxyk)
        if labels.ndim != 4:
            raise ValueError(f"expected (B, X, Y, K) labels, got shape {labels.shape}")
        b, _, _, k = labels.shape
        names = kiosk_tiff_names(name, kind, b, k)
        paths = [os.path.join(outdir, n) for n in names]
        if kind == "segmentation":
            planes = (labels[i, ..., c] for i in range(b) for c in range(k))
        else:
            planes = (labels[..., c] for c in range(k))
        with self._step("tiff"):
            for path, plane in zip(paths, planes):
                self.tiff_member(path, plane, np.float32)
        return paths

    def tiff_member(self, path: str, array: np.ndarray, dtype: Any = None) -> str:
        """`tifffile.imwrite(path, array.astype(dtype))`'s bytes (dtype None: array's own), kept in
        `memory_files` for the result zip (`utils.tiff_bytes`: one cast, no copies)."""
        from ..utils.tiff_bytes import tiff_bytes

        self.memory_files[path] = tiff_bytes(array, dtype)
        return path

    def save_overlay(self, plane: np.ndarray, labels_xy: np.ndarray, outdir: str, name: str,
                     compartment: str) -> str:
        """`{name}_{compartment}_overlay.png`: outlines of `labels_xy` over `plane` (any range,
        normalised as `utils.labels.normalize` does), kept in `memory_files` for the result zip."""
        from ..utils import overlay

        with self._step("png"):
            # a channel of (X, Y, C) is strided: grey_levels reads a uint16 one in place (its sample
            # and one gather), anything else it copies first; the labels' passes want them contiguous
            levels = overlay.grey_levels(plane)
            index = overlay.indexed_levels(levels, np.ascontiguousarray(labels_xy))
            path = os.path.join(outdir, f"{name}_{_safe_part(compartment)}_overlay.png")
            self.memory_files[path] = overlay.png_bytes(index, overlay.PALETTE)
        return path

    def object_counts(self, labels_by_compartment: Mapping[str, np.ndarray]) -> dict[str, list[int]]:
        """Objects per batch item of each compartment's (B, X, Y) labels, counted once per job
        (and not at all for labels `run_app` returned as the watershed numbered them)."""
        memo = self.__dict__.setdefault("_count_memo", {})
        out = {}
        for c, lab in labels_by_compartment.items():
            arr = np.asarray(lab)
            key = _memo_key(arr)
            if key not in memo:
                memo[key] = (arr, _count(arr))  # the array is held so its address stays its own
            out[c] = memo[key][1]
        return out

    def _remember_counts(self, labels: np.ndarray, counts: list[int]) -> None:
        """`object_counts` of the (B, X, Y) `labels` (a view is one by its address, shape, strides)."""
        self.__dict__.setdefault("_count_memo", {})[_memo_key(labels)] = (labels, counts)

    def join_labels(self, outputs: Sequence[np.ndarray]) -> np.ndarray:
        """`np.concatenate(outputs, axis=-1)` of `run_app` results, their known object counts kept
        (one output is returned as it is: no copy)."""
        if len(outputs) == 1:
            return outputs[0]
        labels = np.concatenate(outputs, axis=-1)
        memo = self.__dict__.get("_count_memo", {})
        k = 0
        for out in outputs:
            for j in range(out.shape[-1]):
                known = memo.get(_memo_key(out[..., j]))
                if known is not None:
                    self._remember_counts(labels[..., k], known[1])
                k += 1
        return labels

    def results_summary(self, job_key: str, fields: Mapping[str, str], labels_by_compartment: Mapping[str, np.ndarray],
                        **extra: Any) -> dict[str, Any]:
        """results.json body: counts per compartment (total and per batch), apps run, timings.

        Object counts are remembered per labels array (`object_counts`), so a consumer that
        logged them already does not count again."""
        counts = self.object_counts(labels_by_compartment)
        return {
            "job": job_key,
            "original_name": fields.get("original_name") or fields.get("input_file_name"),
            "object_count": {c: sum(v) for c, v in counts.items()},
            "objects_per_batch": counts,
            "applications": list(self.apps_run),
            "predict_retries": self.predict_retries,
            **extra,
            "timings": dict(self.timings),
            "cpu_timings": dict(self.cpu_timings),
        }

    def write_result_zip(self, zip_path: str, outdir: str, files: Iterable[str], summary: dict[str, Any]) -> str:
        """The result zip: `files` (entry names relative to `outdir`, as the kiosk zips them,
        KRC utils.py:191-227), then results.json and log.txt LAST. A path in `memory_files` is
        zipped from there, any other is read from disk.

        The zip step is timed by measuring the writing of `files` (the bulk); that time goes in
        `self.timings["zip"]` / `cpu_timings["zip"]` and in the results.json written after it.
        """
        wall, cpu = time.perf_counter(), time.process_time()
        before = self.timings.get("zip", 0.0), self.cpu_timings.get("zip", 0.0)

        def timed() -> None:  # idempotent: the ZIP64 fallback calls it again
            self.timings["zip"] = round(before[0] + time.perf_counter() - wall, 6)
            self.cpu_timings["zip"] = round(before[1] + time.process_time() - cpu, 6)
            summary["timings"], summary["cpu_timings"] = dict(self.timings), dict(self.cpu_timings)

        memory = self.__dict__.get("memory_files", {})
        members = [(os.path.relpath(p, outdir).replace(os.sep, "/"), memory.get(p, p)) for p in files]
        try:
            return write_members(zip_path, members, lambda: [
                ("results.json", json.dumps(summary, indent=2, default=_jsonable)),
                ("log.txt", "\n".join(self.job_log) + "\n")], level=self.zip_compresslevel, after_files=timed)
        finally:
            memory.clear()


def _memo_key(arr: np.ndarray) -> tuple:
    return arr.__array_interface__["data"][0], arr.shape, arr.strides, arr.dtype.str


def _count(labels: np.ndarray) -> list[int]:
    """Objects per batch item of (B, X, Y) labels."""
    return [count_objects(item) for item in np.asarray(labels)]


def count_objects(labels: np.ndarray) -> int:
    """Distinct positive labels: `len(np.unique(labels[labels > 0]))` by marking each label seen
    in a boolean table (no sort of the foreground, and no intp copy of the image as a bincount
    makes: ~1.5x less CPU than that) when the labels are non-negative integers of modest size."""
    labels = np.asarray(labels)
    if labels.size == 0:
        return 0
    if labels.dtype.kind in "iu" and labels.dtype.itemsize <= 8:
        top = int(labels.max())
        if top <= 4 * labels.size + 65536 and int(labels.min()) >= 0:
            seen = np.zeros(top + 1, dtype=bool)
            seen[np.ascontiguousarray(labels)] = True  # a compartment of (B, X, Y, K) is strided: copy once
            return int(np.count_nonzero(seen[1:]))
    return len(np.unique(labels[labels > 0]))
