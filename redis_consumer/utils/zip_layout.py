"""Where each child's result files go in a zip parent's result zip: flat, mirroring the archive.

The kiosk's zip result is the union of its children's result entries, each child's files under
the archive-relative folder of its input (`{dir}` = dirname of the child's `original_name`, the
path inside the archive), named as the child named them: `a/cells_batch_0_feature_0.tif`
(kiosk-redis-consumer 0.17.2 redis_consumer/consumers/base_consumer.py:606-651 and
utils.py:111-160). Scripts written against kiosk results glob those names, so we keep them.

The rule only knows "entries of the child's zip" (never a consumer's exact file names):

1. a child entry already under `{dir}/` keeps its path; any other goes under `{dir}/`;
2. an entry at the child zip's root whose name does not start with the child's `{name}` (the
   input's basename without extension), e.g. `results.json`, `log.txt`, gets `{name}_` in front,
   so per-job files of different children never collide (`a/cells_results.json`);
3. a path an earlier child (or the parent's own `failures.json`, `results.json`, `log.txt`)
   already took moves under `{dir}/{input file name}/` (`a/cells.png/cells_batch_0_feature_0.tif`
   when `a/cells.tif` came first), then `{dir}/{input file name}~2/`, ...
"""

from __future__ import annotations

import posixpath
import re
from collections.abc import Iterable

_NON_WORD = re.compile(r"[^0-9a-z]+")


def archive_dir(original_name: str) -> str:
    """The child's folder inside the archive (`''` at the top), as a clean relative path."""
    parts = [p for p in original_name.replace("\\", "/").split("/")[:-1] if p not in ("", ".")]
    return "/".join(parts)


def input_stem(original_name: str) -> str:
    """The kiosk's `{name}`: the input's basename without its extension."""
    base = posixpath.basename(original_name.replace("\\", "/"))
    return base.rsplit(".", 1)[0] if "." in base else base


def _norm(text: str) -> str:
    return _NON_WORD.sub("_", text.lower()).strip("_")


class FlatLayout:
    """Hands out result-zip paths for child entries, never the same path twice."""

    def __init__(self, reserved: Iterable[str] = ()) -> None:
        self.taken: set[str] = set(reserved)

    def place(self, original_name: str, entry: str) -> str:
        """The result-zip path of `entry` (a path inside the child's result zip)."""
        folder = archive_dir(original_name)
        rel = entry.replace("\\", "/").lstrip("/")
        if folder and rel.startswith(folder + "/"):
            rel = rel[len(folder) + 1:]
        stem = input_stem(original_name)
        if "/" not in rel and stem and not _norm(rel).startswith(_norm(stem) or "\x00"):
            rel = f"{stem}_{rel}"
        path = posixpath.join(folder, rel) if folder else rel
        if path in self.taken:
            base = posixpath.basename(original_name.replace("\\", "/")) or "input"
            n = 1
            while path in self.taken:
                sub = base if n == 1 else f"{base}~{n}"
                path = posixpath.join(folder, sub, rel) if folder else posixpath.join(sub, rel)
                n += 1
        self.taken.add(path)
        return path
