"""Per-stage process CPU of the kiosk DeepCell jobs (segmentation, mesmer) beside same-run floors.

Used by bench_consumer_cpu.py (`deepcell` figures). A job runs the real consumer path: a private
redis-server, a `file://` bucket and the gRPC dev model server (`redis_consumer.testing.ModelServer`
with `--simulate-gpu`, 256x256 tiles), so this process's CPU is the worker's alone. The stages
are the consumer's own step timings (results.json `cpu_timings`) plus regions this module times
by wrapping the callables that do them (`CpuMeter`, exclusive of nested wrapped calls):

- `redis`: every redis-py command and pipeline of the job and every command the broker sends on
  its kept connection (`queue.scripts.send`: claim, stage HSETs, log, finish);
- `download`, `decode` (TIFF read, layout, limits), `count` (objects per compartment), `upload`;
- `pre` (resize, normalise, tile), `predict_client` (request encode, grpcio, reply decode: the
  gRPC byte movement, owned by redis_consumer/tfserving/), `untile`, `deep_watershed`, `tiff`,
  `png`, `zip` (the consumer's steps);
- `other`: the rest of the job (runner, claim, results.json and log members, scratch folder), the
  median over jobs of each job's CPU minus its stages. (The total's median minus the stages'
  medians, as this was, is not a figure of any job: with the watershed's ~10 % job-to-job spread
  it read 6-8 ms/MP where the jobs' own remainders were 1-2.)

Each stage is shown beside the cheapest way to move its bytes once in this run: a warm memcpy
of the same number of bytes, one ISA-L level-1 deflate of the same bytes, or one
`scipy.ndimage.label` of the image's mask (for the deep watershed). `predict_client` is also
shown beside one bare grpcio unary call that sends the tiles' bytes and gets the replies' bytes
back over loopback (`predict_client_vs_grpcio`): grpcio's own copies of a message (into its
buffers, then the reply's chunks joined into one bytes object) are a floor no client of grpcio
gets under, and for Mesmer's 52 MB of float32 replies per 1024x1024 image they are most of it.
"""

from __future__ import annotations

import functools
import json
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

#: Reported stage -> the consumer's cpu_timings keys that make it up.
CONSUMER_STAGES = {"pre": ("resize", "pre", "tile"), "predict_client": ("predict",), "untile": ("untile",),
                   "deep_watershed": ("postprocess",), "tiff": ("tiff",), "png": ("png",), "zip": ("zip",)}
#: Stages this module times itself (CpuMeter regions).
METERED = ("redis", "download", "decode", "count", "upload")
TARGET_OUTSIDE_WATERSHED_MS_PER_MP = 25.0


class CpuMeter:
    """Exclusive process-CPU seconds per stage of the callables it wraps.

    A wrapped call's time, minus the time of wrapped calls nested inside it, adds to its stage;
    `restore()` puts every original back.
    """

    def __init__(self) -> None:
        self.totals: dict[str, float] = {}
        self._stack: list[float] = []
        self._undo: list[tuple[Any, str, Any]] = []

    def wrap(self, owner: Any, attr: str, stage: str) -> None:
        own = vars(owner).get(attr, _MISSING)  # what owner itself holds (an instance: usually nothing)
        original = getattr(owner, attr)
        meter = self

        @functools.wraps(original)
        def timed(*args: Any, **kwargs: Any) -> Any:
            start = time.process_time()
            meter._stack.append(0.0)
            try:
                return original(*args, **kwargs)
            finally:
                nested = meter._stack.pop()
                spent = time.process_time() - start
                meter.totals[stage] = meter.totals.get(stage, 0.0) + spent - nested
                if meter._stack:
                    meter._stack[-1] += spent

        setattr(owner, attr, timed)  # on a class it binds as a method; on an instance it is called as is
        self._undo.append((owner, attr, own))

    def take(self) -> dict[str, float]:
        """Totals since the last take, and reset."""
        out, self.totals = self.totals, {}
        return out

    def restore(self) -> None:
        for owner, attr, own in reversed(self._undo):
            if own is _MISSING:
                delattr(owner, attr)
            else:
                setattr(owner, attr, own)
        self._undo.clear()


_MISSING = object()


def meter_consumer(meter: CpuMeter, consumer: Any) -> None:
    """Wrap the regions of METERED for `consumer` (and redis-py's command paths)."""
    import redis
    import redis.client

    from redis_consumer.consumers import mesmer, segmentation
    from redis_consumer.queue import scripts

    meter.wrap(redis.Redis, "execute_command", "redis")
    meter.wrap(redis.client.Pipeline, "execute", "redis")
    meter.wrap(scripts, "send", "redis")  # the broker's Lua steps and blocking claim go straight to a connection
    storage = consumer.storage
    meter.wrap(storage, "download", "download")
    meter.wrap(storage, "upload", "upload")
    meter.wrap(segmentation, "load_for_kiosk", "decode")
    meter.wrap(mesmer, "load_kiosk_image", "decode")
    meter.wrap(consumer, "object_counts", "count")


def median_cpu(job: Callable[[], Any], repeat: int) -> float:
    job()
    times = []
    for _ in range(repeat):
        c0 = time.process_time()
        job()
        times.append(time.process_time() - c0)
    return statistics.median(times)


def floor_memcpy(nbytes: int, repeat: int = 9) -> float:
    """CPU seconds of one copy of `nbytes` into a warm buffer."""
    src = np.frombuffer(np.random.default_rng(0).bytes(max(int(nbytes), 1)), dtype=np.uint8)
    dst = np.empty_like(src)
    return median_cpu(lambda: np.copyto(dst, src), repeat)


def floor_deflate(data: bytes | np.ndarray, repeat: int = 9) -> float:
    """CPU seconds of one ISA-L level-1 raw deflate of `data`."""
    from isal import isal_zlib

    view = memoryview(np.ascontiguousarray(data)).cast("B") if isinstance(data, np.ndarray) else data
    return median_cpu(lambda: isal_zlib.compress(view, 1, -15), repeat)


def floor_label(mask: np.ndarray, repeat: int = 9) -> float:
    """CPU seconds of one `scipy.ndimage.label` of `mask`."""
    from scipy import ndimage

    return median_cpu(lambda: ndimage.label(mask), repeat)


_ECHO_SERVER = """
import sys
from concurrent import futures
import grpc
payload = bytes(int(sys.argv[1]))
handler = grpc.method_handlers_generic_handler("floor.Echo", {"Call": grpc.unary_unary_rpc_method_handler(
    lambda request, context: payload)})
server = grpc.server(futures.ThreadPoolExecutor(2), options=[("grpc.max_send_message_length", -1),
                                                             ("grpc.max_receive_message_length", -1)])
server.add_generic_rpc_handlers((handler,))
print(server.add_insecure_port("127.0.0.1:0"), flush=True)
server.start()
sys.stdin.read()
"""


def floor_grpc(request_bytes: int, reply_bytes: int, repeat: int = 5) -> float:
    """CPU seconds of this process for one bare grpcio unary call that sends `request_bytes` and
    gets `reply_bytes` back from a server in its own process (a fixed payload, no tensors or
    protobuf): what grpcio itself costs to move a job's tiles and replies over loopback."""
    import subprocess
    import sys

    import grpc

    server = subprocess.Popen([sys.executable, "-c", _ECHO_SERVER, str(int(reply_bytes))], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True)
    try:
        port = int(server.stdout.readline())
        request = bytes(int(request_bytes))
        with grpc.insecure_channel(f"127.0.0.1:{port}", options=[("grpc.max_send_message_length", -1),
                                                                 ("grpc.max_receive_message_length", -1)]) as channel:
            call = channel.unary_unary("/floor.Echo/Call")
            return median_cpu(lambda: call(request, timeout=60), repeat)
    finally:
        server.stdin.close()
        server.wait(10)


def stage_floors(kind: str, image: np.ndarray, result_zip: Any, wire_bytes: int, heads_bytes: int) -> dict:
    """Per stage: (floor name, CPU seconds) of moving that stage's bytes once, in this run.

    `image` is the job's (H, W, C) input, `result_zip` the job's result zipfile.ZipFile,
    `wire_bytes` the tiles plus the model's replies, `heads_bytes` what the untiling writes.
    """
    channels = image.shape[-1] if kind == "mesmer" else 1
    h, w = image.shape[:2]
    image_bytes = h * w * channels * 4  # float32 as the model is fed
    infos = result_zip.infolist()
    tiffs = [i for i in infos if i.filename.endswith(".tif")]
    pngs = [i for i in infos if i.filename.endswith(".png")]
    deflated = b"".join(result_zip.read(i) for i in infos if i.compress_type == 8)
    tiff_bytes = sum(i.file_size for i in tiffs)
    overlay_rows = b"".join(_png_rows(result_zip.read(i)) for i in pngs)
    mask = _labels_mask(result_zip, tiffs)
    zip_bytes = sum(i.compress_size for i in infos)
    label = floor_label(mask)
    compartments = 2 if kind == "mesmer" else 1
    return {
        "pre": ("memcpy of the float32 input", floor_memcpy(image_bytes)),
        "predict_client": ("memcpy of tiles + replies", floor_memcpy(wire_bytes)),
        "untile": ("memcpy of the untiled heads", floor_memcpy(heads_bytes)),
        "deep_watershed": ("ndimage.label per compartment", label * compartments),
        "tiff": ("memcpy of the TIFF bytes", floor_memcpy(tiff_bytes)),
        "png": ("ISA-L deflate of the overlay rows", floor_deflate(overlay_rows)),
        "zip": ("ISA-L deflate of the deflated members", floor_deflate(deflated)),
        "download": ("memcpy of the input file", floor_memcpy(h * w * image.shape[-1] * image.itemsize)),
        "decode": ("memcpy of the decoded pixels", floor_memcpy(image.nbytes)),
        "count": ("ndimage.label per compartment", label * compartments),
        "upload": ("memcpy of the result zip", floor_memcpy(zip_bytes)),
    }


def _png_rows(png: bytes) -> bytes:
    """The filtered rows a PNG's IDAT chunks deflate (what the overlay step compresses)."""
    import struct
    import zlib

    pos, idat = 8, []
    while pos < len(png):
        (length,), kind = struct.unpack(">L", png[pos:pos + 4]), png[pos + 4:pos + 8]
        if kind == b"IDAT":
            idat.append(png[pos + 8:pos + 8 + length])
        pos += 12 + length
    return zlib.decompress(b"".join(idat))


def _labels_mask(result_zip: Any, tiffs: list) -> np.ndarray:
    """Foreground of the job's first label TIFF (what ndimage.label would be asked to label)."""
    import io

    import tifffile

    labels = tifffile.imread(io.BytesIO(result_zip.read(tiffs[0])))
    return np.squeeze(labels) > 0


def wire_sizes(kind: str, size: int, tiles: int) -> tuple[int, int, int]:
    """(tile bytes sent, reply bytes received, untiled head bytes) for a square `size` image in
    256 px float32 tiles."""
    px = tiles * 256 * 256
    if kind == "mesmer":  # 2 input channels; replies 1 + 3 + 1 + 3 channels; 4 channels untiled
        return px * 4 * 2, px * 4 * 8, size * size * 4 * 4
    return px * 4, px * 4 * 2, size * size * 4 * 2  # 1 channel; inner + outer distance heads


def summarise(kind: str, size: int, runs: list[dict[str, float]], cpu: list[float], wall: list[float],
              elapsed: float, objects: list[int], floors: dict) -> dict:
    """The per-kind figures: medians per stage (ms/MP) beside floors, totals, target."""
    mp = size * size / 1e6
    names = [*CONSUMER_STAGES, *METERED]
    per_stage = {k: round(statistics.median(r.get(k, 0.0) for r in runs) * 1000 / mp, 2) for k in names}
    total = statistics.median(cpu) * 1000 / mp
    per_stage["other"] = round(statistics.median(c - sum(r.get(k, 0.0) for k in names) for c, r in zip(cpu, runs))
                               * 1000 / mp, 2)
    outside = total - per_stage["deep_watershed"]
    vs_floor = {}
    for k, v in per_stage.items():
        if k in floors:
            name, seconds = floors[k]
            floor_ms = seconds * 1000 / mp
            vs_floor[k] = {"cpu_ms_per_mp": v, "floor": name, "floor_ms_per_mp": round(floor_ms, 3),
                           "x_floor": round(v / max(floor_ms, 1e-6), 1)}
        else:
            vs_floor[k] = {"cpu_ms_per_mp": v, "floor": None}
        if k == "predict_client" and "predict_client_vs_grpcio" in floors:  # the same CPU, beside grpcio alone
            name, seconds = floors["predict_client_vs_grpcio"]
            grpc_floor = seconds * 1000 / mp
            vs_floor["predict_client_vs_grpcio"] = {"cpu_ms_per_mp": v, "floor": name,
                                                    "floor_ms_per_mp": round(grpc_floor, 3),
                                                    "x_floor": round(v / max(grpc_floor, 1e-6), 2)}
    return {
        "cpu_ms_per_mp_median": round(total, 1),
        "stage_cpu_ms_per_mp_median": per_stage,
        "stage_vs_floor": vs_floor,
        "cpu_ms_per_mp_outside_watershed": round(outside, 1),
        "cpu_ms_per_mp_outside_watershed_and_grpc": round(outside - per_stage["predict_client"], 1),
        **({"cpu_ms_per_mp_outside_watershed_less_bare_grpcio": round(
            outside - vs_floor["predict_client_vs_grpcio"]["floor_ms_per_mp"], 1)}
           if "predict_client_vs_grpcio" in vs_floor else {}),
        "target_outside_watershed_ms_per_mp": TARGET_OUTSIDE_WATERSHED_MS_PER_MP,
        "meets_outside_watershed_target": outside <= TARGET_OUTSIDE_WATERSHED_MS_PER_MP,
        "wall_ms_per_image_median": round(statistics.median(wall) * 1000, 1),
        "images_per_second_per_worker": round(len(cpu) / elapsed, 3),
        "objects_per_image_median": statistics.median(objects),
    }


def run_kind(kind: str, rds: Any, harness: Any, settings: Any, path: Path, image: np.ndarray, fields: dict,
             n: int, size: int) -> dict:
    """Warm up, then `n` timed jobs of one kind; the summary beside this run's floors."""
    from tests.consumer_harness import open_result, submit

    submit(rds, settings, str(path), name=f"warm-{kind}.tif", **fields)
    assert harness.run_one() == "done"
    meter = CpuMeter()
    meter_consumer(meter, harness.consumer)
    runs, cpu, wall, objects, zf, tiles = [], [], [], [], None, 0
    try:
        started = time.perf_counter()
        for i in range(n):
            key = submit(rds, settings, str(path), name=f"{kind}{i}.tif", **fields)
            meter.take()
            c0, w0 = time.process_time(), time.perf_counter()
            outcome = harness.run_one()
            cpu.append(time.process_time() - c0)
            wall.append(time.perf_counter() - w0)
            metered = meter.take()
            job = rds.hgetall(key)
            if outcome != "done":
                raise SystemExit(f"{kind} job ended {outcome}: {job.get('reason')}")
            zf = open_result(settings, job)
            summary = json.loads(zf.read("results.json"))
            objects.append(sum(summary["object_count"].values()))
            tiles = _tiles(summary)
            stages = {name: sum(summary["cpu_timings"].get(k, 0.0) for k in keys)
                      for name, keys in CONSUMER_STAGES.items()}
            runs.append({**stages, **{k: metered.get(k, 0.0) for k in METERED}})
        elapsed = time.perf_counter() - started
    finally:
        meter.restore()
    sent, received, heads = wire_sizes(kind, size, tiles)
    wire = sent + received
    floors = stage_floors(kind, image, zf, wire, heads)
    floors["predict_client_vs_grpcio"] = ("one bare grpcio call moving the same bytes", floor_grpc(sent, received))
    out = summarise(kind, size, runs, cpu, wall, elapsed, objects, floors)
    out["wire_mb_per_image"] = round(wire / 1e6, 1)
    return out


def _tiles(summary: dict) -> int:
    """Tiles per image from the applications' tile shape (1024 px at 256, stride 192: 25)."""
    import math

    shape = summary.get("input_shape") or []
    tile = (summary.get("applications") or [{}])[0].get("tile_shape", [256, 256])[0]
    side = max(shape[:2] if len(shape) >= 2 else [tile])
    stride = min(math.ceil(0.75 * tile / 2.0) * 2, tile)
    count = max(math.ceil((side - tile) / stride + 1), 1)
    return count * count
