"""The `zip` consumer (queue `{QUEUE}-zip`): fan an archive out into image jobs, fan their results in.

First claim (fan-out): download the zip, plan it safely (`utils.safe_zip`), upload each image
under the parent's input folder, create one child job per image on `{QUEUE}` and park. Child
keys are deterministic (`{QUEUE}:{parent-id}:{index}:{name}`) and a Lua step creates and
LPUSHes each one only if it does not exist, so a worker killed half-way and retried makes no
duplicates. Children carry `parent`/`parent_queue`: their own finish step counts them into the
parent and requeues it after the last one, so nothing polls (every Redis step is a broker
method reached through the `Job`). Second claim (fan-in, previous
status `waiting`): stream every child's output zip into one result zip on disk, flat and
mirroring the archive's folders (`utils.zip_layout`), with `failures.json`, `results.json` and
`log.txt`, upload it, and let children expire with it.

The parent carries the fields the kiosk's page and kiosk-client read (kiosk-redis-consumer
0.17.2 redis_consumer/consumers/base_consumer.py:670-801): `children` (comma-joined keys),
`children_upload_time`, `total_jobs`, `progress` (counted by the children's own finish step);
at the end `children:done`, `children:failed`, `cleanup_time`, the done children's timings
comma-joined (`prediction_time`, `postprocess_time`, `upload_time`, `download_time`,
`total_time`, `predict_retries`) and `failures` = urlencode({child key: reason}), which the page
parses with query-string to print "Not all jobs completed!" (kiosk-frontend src/Predict/Predict.js:86-103).
"""

from __future__ import annotations

import hashlib
import json
import os
import posixpath
import time
import urllib.parse
import zipfile
from collections import deque
from collections.abc import Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from ..errors import UserError, quote
from ..queue.status import Status
from ..utils import safe_zip, tempdirs, zip_layout, zip_merge
from ..utils.timestamps import now_iso
from .base import Consumer, Job

#: Producer fields copied from the parent onto every child (kiosk names).
INHERITED = ("model_name", "model_version", "channels", "dimension_order", "scale", "label", "url", "identity_upload")
#: Children created per broker call (bounds the Lua step's run time and argument list).
BATCH = 200
#: Children's outputs downloaded in parallel ahead of the fan-in writer.
PREFETCH = 4
#: Most skipped-entry records stored on the parent (the count is always exact).
MAX_SKIPPED_STORED = 500
#: Done children's timings the kiosk joins with ',' on the parent (KRC base_consumer.py:673-701).
SUMMARY_FIELDS = ("prediction_time", "postprocess_time", "upload_time", "download_time", "total_time",
                  "predict_retries")
#: The parent's own files at the root of the result zip.
OWN_FILES = ("failures.json", "results.json", "log.txt")

def parent_id(job_key: str) -> str:
    """A short stable id of the parent, used in child keys and input keys."""
    return hashlib.sha1(job_key.encode("utf-8")).hexdigest()[:16]


def child_key(queue: str, pid: str, index: int, name: str) -> str:
    return f"{queue}:{pid}:{index}:{name}"


class ZipConsumer(Consumer):
    """Zip archives of images: one child job per image, one result zip for the archive."""

    name = "zip"
    queue_suffix = "-zip"
    required_fields = ("input_file_name",)

    @property
    def child_queue(self) -> str:
        return self.settings.QUEUE

    def consume(self, job: Job) -> Mapping[str, Any] | None:
        redis_hash = job.key
        total = int(job.fields.get("children_total") or 0)
        if job.previous_status == Status.WAITING:
            return self.fan_in(redis_hash, job.fields)
        if total and job.child_count() == total:
            self.log_job(f"children already created ({total}); waiting for them again")
            self.park(total, {"children": ",".join(job.child_keys()), "total_jobs": total})
            return None
        return self.fan_out(redis_hash, job.fields)

    # -- fan-out ----------------------------------------------------------------------------
    def fan_out(self, redis_hash: str, fields: Mapping[str, str]) -> None:
        """Plan the archive, upload its images, create the children idempotently, park."""
        started = time.perf_counter()
        workdir = tempdirs.make("rc-zip-")
        try:
            display = fields.get("original_name") or posixpath.basename(fields["input_file_name"])
            with self.stage("download"):
                path = self.storage.download(fields["input_file_name"], workdir, deadline=self.check_deadline())
                s = self.settings
                plan = safe_zip.plan(path, max_entries=s.MAX_ZIP_ENTRIES, max_bytes=s.MAX_ZIP_BYTES,
                                     max_ratio=s.MAX_ZIP_RATIO, display_name=display)
            for item in plan.skipped:
                self.log_job(f"skipped {quote(item['name'])}: {item['reason']}")
            pid = parent_id(redis_hash)
            folder = posixpath.join(posixpath.dirname(fields["input_file_name"]), f"zip-{pid}")
            children: list[tuple[str, str, str]] = []
            with self.stage("upload"), zipfile.ZipFile(path) as zf:
                for entry in plan.entries:
                    self.check_deadline()
                    local = os.path.join(workdir, "entry")
                    try:
                        safe_zip.extract(zf, entry, local)
                    except UserError as exc:
                        plan.skipped.append({"name": entry.name, "reason": str(exc)})
                        continue
                    key = f"{folder}/{entry.index:04d}-{entry.basename}"
                    stored_key, _ = self.storage.upload(local, key)  # the next entry overwrites `local`
                    children.append((child_key(self.child_queue, pid, entry.index, entry.basename), stored_key, entry.name))
            if not children:
                reasons = "; ".join(f"{i['name']}: {i['reason']}" for i in plan.skipped[:3])
                raise UserError(
                    f"The zip {quote(display)} contains no images to process"
                    + (f" ({len(plan.skipped)} file(s) skipped, e.g. {reasons})." if plan.skipped else " (it is empty).")
                )
            created = self.create_children(redis_hash, fields, children)
            self.log_job(f"fan-out: {len(children)} child job(s) on {self.child_queue!r} ({created} new)")
            skipped_json = json.dumps(plan.skipped[:MAX_SKIPPED_STORED])
            self.park(len(children), {"skipped": skipped_json, "skipped_count": len(plan.skipped),
                                      "children": ",".join(c[0] for c in children), "total_jobs": len(children),
                                      "children_upload_time": round(time.perf_counter() - started, 6)})
            return
        finally:
            tempdirs.remove_later(workdir)

    def create_children(self, redis_hash: str, fields: Mapping[str, str], children: list[tuple[str, str, str]]) -> int:
        """Record the child list, then create and push each child unless it already exists."""
        stamp = now_iso()
        common: dict[str, str] = {k: fields[k] for k in INHERITED if fields.get(k)}
        common.update({"status": Status.NEW.value, "parent": redis_hash, "parent_queue": self.queue,
                       "created_at": stamp, "updated_at": stamp})
        return self.job.create_children(self.child_queue, common, children, BATCH)

    # -- fan-in -----------------------------------------------------------------------------
    def fan_in(self, redis_hash: str, fields: Mapping[str, str]) -> dict[str, Any]:
        """Every child ended: build the archive's result zip and finish the parent."""
        started = time.perf_counter()
        child_keys = self.job.child_keys()
        records = self._child_records(child_keys)
        done = [r for r in records if r["status"] == "done"]
        failed = [r for r in records if r["status"] != "done"]
        skipped = json.loads(fields.get("skipped") or "[]")
        self.log_job(f"fan-in: {len(done)} done, {len(failed)} failed, {int(fields.get('skipped_count') or 0)} skipped")
        if records and not done:
            first = failed[0]
            # the page shows only `reason` for a failed job; `failures` still names every child's
            self.job.update(self._kiosk_fields(records, [], failed, started))
            raise UserError(
                f"All {len(records)} image(s) in the zip failed; the first, {quote(first['name'])}, failed because: "
                f"{first['reason'].rstrip('.')}."
            )
        workdir = tempdirs.make("rc-zipin-")
        os.makedirs(os.path.join(workdir, "children"))
        try:
            result = os.path.join(workdir, "result.zip")
            layout = zip_layout.FlatLayout(OWN_FILES)
            with self.stage("postprocess"), zipfile.ZipFile(result, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as out:
                for record, local, error in self._prefetch(done, os.path.join(workdir, "children")):
                    self._copy_child(out, record, local, error, failed, layout)
                done = [r for r in done if not r.get("copy_failed")]
                failures = {
                    "failed": [{k: r[k] for k in ("name", "job", "reason", "failure_type")} for r in failed],
                    "skipped": skipped,
                    "skipped_count": int(fields.get("skipped_count") or len(skipped)),
                }
                out.writestr("failures.json", json.dumps(failures, indent=2))
                summary = {
                    "job": redis_hash,
                    "original_name": fields.get("original_name") or fields.get("input_file_name"),
                    "children_total": len(records),
                    "children_done": len(done),
                    "children_failed": len(failed),
                    "skipped_count": failures["skipped_count"],
                    "children": [{"name": r["name"], "job": r["job"], "status": "failed" if r.get("copy_failed")
                                  else r["status"], "files": r.get("files", [])} for r in records],
                }
                out.writestr("results.json", json.dumps(summary, indent=2))
                lines = self.job.stored_log()
                out.writestr("log.txt", "\n".join(lines) + "\n")
            with self.stage("upload"):
                from ..storage import output_key

                key, url = self.storage.upload(result, output_key(redis_hash), deadline=self.check_deadline())
        finally:
            tempdirs.remove_later(workdir)  # thousands of files: not on the parent's critical path
        self.job.expire_children()
        return {"output_url": url, "output_file_name": key, "children_done": len(done),
                "children_failed": len(failed), **self._kiosk_fields(records, done, failed, started)}

    @staticmethod
    def _kiosk_fields(records: list[dict[str, Any]], done: list[dict[str, Any]], failed: list[dict[str, Any]],
                      started: float) -> dict[str, Any]:
        """The parent's fields under the kiosk's names (KRC base_consumer.py:653-721).

        `total_time`, `upload_time` and `download_time` become the done children's, comma-joined,
        as in the kiosk (kiosk-client splits them into lists); the parent's own are in
        `cleanup_time` (this fan-in) and `children_upload_time` (the fan-out).
        """
        out: dict[str, Any] = {
            "children:done": ",".join(r["job"] for r in done),
            "children:failed": ",".join(r["job"] for r in failed),
            "failures": urllib.parse.urlencode({r["job"]: r["reason"] or "failed" for r in failed}),
            "total_jobs": len(records),
        }
        for name in SUMMARY_FIELDS:
            values = [_number(r.get(name)) for r in done]
            joined = ",".join(str(v) for v in values if v is not None)
            if joined:
                out[name] = joined
        out["cleanup_time"] = round(time.perf_counter() - started, 6)
        return out

    def _child_records(self, child_keys: list[str]) -> list[dict[str, Any]]:
        """Status, output and reason of every child (read by the broker, 500 per round trip)."""
        wanted = ("status", "output_file_name", "reason", "original_name", "failure_type", *SUMMARY_FIELDS)
        records: list[dict[str, Any]] = []
        for key, data in zip(child_keys, self.job.child_fields(child_keys, wanted)):
            name = key.rsplit(":", 1)[-1]
            record = {
                "job": key,
                "name": data["original_name"] or name,
                "status": data["status"] or "expired",
                "output_file_name": data["output_file_name"] or "",
                "reason": data["reason"] or "",
                "failure_type": data["failure_type"] or "",
                **{f: data[f] for f in SUMMARY_FIELDS},
            }
            if data["status"] is None:
                # the child's hash expired before the parent came back: its output key is deterministic
                from ..storage import output_key

                record["output_file_name"] = output_key(key)
                record["status"] = "done" if self.storage.exists(record["output_file_name"]) else "expired"
                record["reason"] = "" if record["status"] == "done" else "Its result expired before the zip finished."
            records.append(record)
        return records

    def _prefetch(self, records: list[dict[str, Any]], dest: str) -> Iterator[tuple[dict, str | None, Exception | None]]:
        """Download children's outputs a few at a time ahead of the writer, in order.

        A missing output (UserError) is handed over as the error; anything else is raised.
        A local bucket is read in order without threads: a copy takes microseconds, and handing
        each one between threads costs more than it (GIL hand-offs tripled the fan-in time).
        """
        if getattr(self.storage, "scheme", "") == "file":
            for record in records:
                try:
                    yield record, self.storage.download(record["output_file_name"], dest, check_prefixes=False), None
                except UserError as exc:
                    yield record, None, exc
            return
        todo = iter(records)
        with ThreadPoolExecutor(max_workers=PREFETCH, thread_name_prefix="fan-in") as pool:
            window: deque = deque()

            def submit_next() -> None:
                record = next(todo, None)
                if record is not None:
                    window.append((record, pool.submit(self.storage.download, record["output_file_name"], dest,
                                                       check_prefixes=False)))

            for _ in range(2 * PREFETCH):
                submit_next()
            while window:
                record, future = window.popleft()
                submit_next()
                try:
                    yield record, future.result(), None
                except UserError as exc:
                    yield record, None, exc

    def _copy_child(self, out: zipfile.ZipFile, record: dict[str, Any], local: str | None, error: Exception | None,
                    failed: list[dict[str, Any]], layout: zip_layout.FlatLayout) -> None:
        """Stream one child's output zip into the result, flat under the archive's folders."""
        try:
            if error is not None:
                raise error
            with zipfile.ZipFile(local) as zin:
                infos = [i for i in zin.infolist() if not i.is_dir() and not safe_zip._unsafe_reason(i.filename)]
                placed = [layout.place(record["name"], info.filename) for info in infos]
                for info, arcname in zip(infos, placed):
                    zip_merge.copy_raw(zin, info, out, arcname)
                record["files"] = placed
        except (UserError, zipfile.BadZipFile) as exc:
            record["copy_failed"] = True
            failed.append({**record, "status": "failed", "reason": f"its result could not be collected ({exc})"})


def _number(value: str | None) -> float | None:
    """A child's timing as the kiosk keeps it: only values that parse as numbers."""
    try:
        return float(value) if value not in (None, "") else None
    except ValueError:
        return None
