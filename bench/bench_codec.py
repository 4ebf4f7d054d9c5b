"""Encode+decode of a (1,2048,2048,1) float32 tensor in PredictRequest/PredictResponse.

Compares, in one run: our hand-framed codec (request as `tensor_content`; reply decoded in both
forms TF Serving uses), protobuf's generic serializer with `tensor_content`, the kiosk's
list-based `float_val` encoding, and one plain copy (`tobytes`) of the same 16 MB.
Prints one JSON object; targets: list/ours >= 100, ours/copy <= 4.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np

from redis_consumer.tfserving import messages
from redis_consumer.tfserving.protos import rcserving_pb2 as pb


def best(fn, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--size", type=int, default=2048)
    args = ap.parse_args()
    repeat, list_repeat = (5, 1) if args.quick else (20, 3)
    x = np.random.default_rng(0).random((1, args.size, args.size, 1), dtype=np.float32)

    # replies as TF Serving would send them (built once, outside the timings)
    reply_fields = messages.frame_predict_response("M", 1, {"out": x}, form="fields")
    reply_content = messages.frame_predict_response("M", 1, {"out": x}, form="content")
    assert pb.PredictResponse.FromString(reply_fields).outputs["out"].float_val[5] == x.reshape(-1)[5]

    def ours_encode():
        return messages.frame_predict_request("M", 1, {"image": x})

    def ours_decode(reply):
        out = messages.parse_predict_response(reply)[0]["out"]
        assert out.shape == x.shape
        return out

    def generic_encode():
        req = pb.PredictRequest()
        req.model_spec.name = "M"
        t = req.inputs["image"]
        t.dtype = 1
        for d in x.shape:
            t.tensor_shape.dim.add(size=d)
        t.tensor_content = x.tobytes()
        return req.SerializeToString()

    def generic_decode(reply):
        t = pb.PredictResponse.FromString(reply).outputs["out"]
        return np.frombuffer(t.tensor_content, np.float32).reshape([d.size for d in t.tensor_shape.dim])

    def list_encode():  # the kiosk's encoder: a Python list into float_val
        req = pb.PredictRequest()
        req.model_spec.name = "M"
        t = req.inputs["image"]
        t.dtype = 1
        for d in x.shape:
            t.tensor_shape.dim.add(size=d)
        t.float_val.extend(x.ravel().tolist())
        return req.SerializeToString()

    def list_decode(reply):
        t = pb.PredictResponse.FromString(reply).outputs["out"]
        return np.array(t.float_val, dtype=np.float32).reshape([d.size for d in t.tensor_shape.dim])

    # correctness of every path before timing
    for decoded in (ours_decode(reply_fields), ours_decode(reply_content), generic_decode(reply_content),
                    list_decode(reply_fields)):
        assert np.array_equal(decoded, x)
    assert pb.PredictRequest.FromString(ours_encode()).inputs["image"].tensor_content == x.tobytes()

    copy = best(lambda: x.tobytes(), repeat)
    enc = best(ours_encode, repeat)
    dec_fields = best(lambda: ours_decode(reply_fields), repeat)
    dec_content = best(lambda: ours_decode(reply_content), repeat)
    gen_enc = best(generic_encode, max(3, repeat // 4))
    gen_dec = best(lambda: generic_decode(reply_content), max(3, repeat // 4))
    lst_enc = best(list_encode, list_repeat)
    lst_dec = best(lambda: list_decode(reply_fields), list_repeat)

    # int32 labels as TF Serving sends them by default (varint `int_val`): ours vs protobuf + list
    labels = np.random.default_rng(1).integers(0, 5000, x.shape).astype(np.int32)
    reply_int = messages.frame_predict_response("M", 1, {"out": labels}, form="fields")
    assert np.array_equal(messages.parse_predict_response(reply_int)[0]["out"], labels)
    int_ours = best(lambda: messages.parse_predict_response(reply_int), max(3, repeat // 4))
    int_pb = best(lambda: np.array(pb.PredictResponse.FromString(reply_int).outputs["out"].int_val, np.int32),
                  max(3, repeat // 4))

    ours = enc + max(dec_fields, dec_content)
    lst = lst_enc + lst_dec
    result = {
        "bench": "codec",
        "shape": list(x.shape),
        "bytes": x.nbytes,
        "copy_ms": copy * 1e3,
        "ours_encode_ms": enc * 1e3,
        "ours_decode_fields_ms": dec_fields * 1e3,
        "ours_decode_content_ms": dec_content * 1e3,
        "ours_total_ms": ours * 1e3,
        "protobuf_content_total_ms": (gen_enc + gen_dec) * 1e3,
        "list_float_val_total_ms": lst * 1e3,
        "speedup_vs_list": lst / ours,
        "speedup_vs_protobuf_content": (gen_enc + gen_dec) / ours,
        "ours_vs_copy": ours / copy,
        "int32_fields_decode_ours_ms": int_ours * 1e3,
        "int32_fields_decode_protobuf_list_ms": int_pb * 1e3,
        "target_speedup_vs_list": 100,
        "target_ours_vs_copy": 4,
    }
    result["pass"] = result["speedup_vs_list"] >= 100 and result["ours_vs_copy"] <= 4
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
