"""What the real kiosk-frontend (v0.11.3) and kiosk-client (0.8.4) write to and read from Redis.

A replay, field for field, of the frontend's Express controllers, so the tests can drive our
workers exactly as a kiosk deployment does, without Node. Every behaviour is cited from the
kiosk's own code (vanvalenlab/kiosk-frontend @ cd5c8c3 = tag 0.11.3):

- `predict()` in server/controllers/predict.controller.js:82-147: queue = jobType, or
  `{jobType}-zip` when the lower-cased imageName ends `.zip`; key `{queue}:{imageName}:{uuid4}`;
  one HMSET of the 19 fields below (each `x || ''` fallback reproduced), then LPUSH.
- uploads in server/controllers/upload.controller.js: GCS objects are `{prefix}/{md5}{ext}` made
  public (`uploadedName` = the key, `imageURL` = https://storage.googleapis.com/...); S3 (multer-s3)
  objects are `{prefix}/{originalname}` and BOTH names are the object's full https location.
- the page's job forms (src/Predict/JobForm/*.js) and its poll in src/Predict/Predict.js:57-116:
  HMGET status, progress, output_url, reason, failures, dim_order every 3 s; expire 3600 at the end.
- kiosk-client (kiosk_client/job.py:255-282) sends no jobForm, so the form fields are all ''.
"""

from __future__ import annotations

import hashlib
import os
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qsl

#: What each form sends when the user changes nothing (kiosk-protocol.md §1.4; FE SegmentationForm.js:20-38,
#: MesmerForm.js:16-34, PolarisForm.js:62-94). JS numbers become strings the way ioredis sends them.
DEFAULT_FORMS: dict[str, dict[str, Any]] = {
    "segmentation": {"scale": 1, "selectedChannels": "0,", "dimensionOrder": "XYB"},
    "mesmer": {"scale": 1, "selectedChannels": "0,1"},
    "polaris": {"selectedChannels": "0,1,2", "segmentationType": "cell culture"},
    "caliban": {},  # CalibanForm.js never calls setJobForm (an empty form when caliban is shown first)
}

#: The fields the page reads on every poll (FE Predict.js:64-71), in its order.
PAGE_FIELDS = ("status", "progress", "output_url", "reason", "failures", "dim_order")


def js_string(value: Any) -> str:
    """A JS value as ioredis sends it: numbers without a trailing `.0`, '' for falsy values."""
    if value is None or value == "" or value == 0 or value is False:
        return ""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def js_iso_now() -> str:
    """`new Date().toISOString()`: millisecond precision and a `Z` suffix."""
    now = datetime.now(UTC)
    return now.strftime("%Y-%m-%dT%H:%M:%S.") + f"{now.microsecond // 1000:03d}Z"


@dataclass
class Upload:
    """The reply of POST /api/upload: what the page then sends as uploadedName and imageUrl."""

    uploaded_name: str
    image_url: str


class KioskFrontend:
    """The kiosk-frontend's Redis writes and reads, against a real Redis client (decoded)."""

    def __init__(self, redis_client: Any, job_types: str = "mesmer,segmentation,caliban,polaris",
                 hostname: str = "kiosk-frontend-5d9f7c-abcde") -> None:
        self.redis = redis_client
        self.job_types = job_types.split(",")
        self.hostname = hostname

    # -- uploads (upload.controller.js) -------------------------------------------------------
    @staticmethod
    def upload_gcs(gcs_bucket: Any, original_name: str, data: bytes, prefix: str = "uploads/") -> Upload:
        """gcpUpload: md5 name under the prefix, public-read, public URL (upload.controller.js:13-58)."""
        prefix = prefix.strip("/")
        hashed = hashlib.md5(f"{original_name}_{int(time.time() * 1000)}".encode()).hexdigest()
        key = f"{prefix}/{hashed}{os.path.splitext(original_name)[1]}"
        blob = gcs_bucket.blob(key)
        blob.upload_from_string(data)
        return Upload(uploaded_name=key, image_url=f"https://storage.googleapis.com/{gcs_bucket.name}/{key}")

    @staticmethod
    def upload_s3(s3_client: Any, bucket: str, original_name: str, data: bytes, prefix: str = "uploads/") -> Upload:
        """awsUpload via multer-s3: key `{prefix}/{originalname}`; both names are the object's location.

        On AWS the location is the virtual-hosted URL (multer.js:14-35; upload.controller.js:60-71).
        """
        key = f"{prefix.rstrip('/')}/{original_name}"
        s3_client.put_object(Bucket=bucket, Key=key, Body=data)
        location = f"https://{bucket}.s3.amazonaws.com/{key}"
        return Upload(uploaded_name=location, image_url=location)

    # -- POST /api/predict (predict.controller.js:82-147) ---------------------------------------
    def predict(self, job_type: str, image_name: str, upload: Upload | None = None,
                job_form: Mapping[str, Any] | None = None, body: Mapping[str, Any] | None = None) -> str:
        """Write the job hash and LPUSH its key, exactly as the controller does; return the key."""
        if job_type not in self.job_types:
            raise ValueError(f"Invalid Job Type: {job_type}.")
        body = dict(body or {})
        form = dict(job_form or {})
        queue = f"{job_type}-zip" if image_name.lower().endswith(".zip") else job_type
        key = f"{queue}:{image_name}:{uuid.uuid4()}"
        now = js_iso_now()
        uploaded = upload.uploaded_name if upload else body.get("uploadedName")
        fields = [
            ("original_name", image_name),
            ("input_file_name", uploaded or image_name),
            ("model_name", js_string(body.get("modelName"))),
            ("model_version", js_string(body.get("modelVersion"))),
            ("postprocess_function", js_string(body.get("postprocessFunction"))),
            ("preprocess_function", js_string(body.get("preprocessFunction"))),
            ("cuts", js_string(body.get("cuts")) or "0"),
            ("url", upload.image_url if upload else js_string(body.get("imageUrl"))),
            ("label", js_string(body.get("dataLabel"))),
            ("status", "new"),
            ("created_at", now),
            ("updated_at", now),
            ("identity_upload", self.hostname),
            ("dimension_order", js_string(form.get("dimensionOrder"))),
            ("channels", js_string(form.get("selectedChannels"))),
            ("scale", js_string(form.get("scale"))),
            ("segmentation_type", js_string(form.get("segmentationType"))),
        ]
        self.redis.hset(key, mapping=dict(fields))
        self.redis.lpush(queue, key)
        return key

    def predict_default_form(self, job_type: str, image_name: str, upload: Upload) -> str:
        """What the page submits for a user who changes nothing in the form."""
        return self.predict(job_type, image_name, upload, DEFAULT_FORMS[job_type])

    def predict_as_kiosk_client(self, job_type: str, image_name: str, uploaded_name: str,
                                model: str = "", label: str = "") -> str:
        """kiosk-client's create(): model and label fields, no jobForm (KC job.py:255-282)."""
        name, _, version = model.partition(":")
        body = {"modelName": name, "modelVersion": version, "dataLabel": label, "uploadedName": uploaded_name,
                "preprocessFunction": "", "postprocessFunction": ""}
        return self.predict(job_type, image_name, None, None, body)

    def predict_as_kiosk_client_upload(self, job_type: str, upload: Upload, model: str = "",
                                       upload_prefix: str = "uploads") -> str:
        """kiosk-client after its own POST /api/upload: `filepath = relpath(uploadedName, prefix)`
        becomes imageName and `join(prefix, filepath)` uploadedName (KC job.py:394-402, 255-282),
        so a GCS md5 key round-trips and an S3 location URL turns into `uploads/../https:/...`."""
        filepath = os.path.relpath(upload.uploaded_name, upload_prefix)
        return self.predict_as_kiosk_client(job_type, filepath, os.path.join(upload_prefix, filepath), model)

    # -- what the page and kiosk-client read back -----------------------------------------------
    def poll(self, key: str) -> dict[str, str | None]:
        """POST /api/redis with the page's field list (HMGET; None for a missing field)."""
        return dict(zip(PAGE_FIELDS, self.redis.hmget(key, list(PAGE_FIELDS))))

    def wait_final(self, key: str, timeout: float = 120.0, interval: float = 0.2) -> dict[str, str | None]:
        """Poll like the page until `done` or `failed` (the only final statuses it knows)."""
        deadline = time.monotonic() + timeout
        while True:
            seen = self.poll(key)
            if seen["status"] in ("done", "failed"):
                return seen
            if time.monotonic() > deadline:
                raise AssertionError(f"{key} not final after {timeout}s: {seen}")
            time.sleep(interval)

    def expire(self, key: str, expire_in: int = 3600) -> int:
        """POST /api/redis/expire: the page and kiosk-client expect 1 (else 'Hash not expired')."""
        return int(self.redis.expire(key, expire_in or 3600))

    @staticmethod
    def page_failures(failures: str | None) -> dict[str, str]:
        """The page's `queryString.parse(failures)` (FE Predict.js:92-101)."""
        return dict(parse_qsl(failures or "", keep_blank_values=True))

    def client_summary(self, key: str) -> dict[str, Any]:
        """kiosk-client's summarize() (KC job.py:299-331): strings, then numbers split on ','."""
        strings = ("created_at", "finished_at", "reason", "output_url")
        numbers = ("prediction_time", "predict_retries", "postprocess_time", "upload_time", "download_time",
                   "children_upload_time", "cleanup_time", "total_jobs", "total_time")
        out: dict[str, Any] = {name: self.redis.hget(key, name) for name in strings}
        for name in numbers:
            parts = str(self.redis.hget(key, name)).split(",")
            out[name] = parts[0] if len(parts) == 1 else parts
        return out
