"""Defer modules that scipy imports on its way in but a worker never calls into.

Importing `scipy.ndimage` (the labelling of every segmentation job) costs ~170 ms of CPU and
~30 MB here, and a good part of it is modules the worker never uses:
- numpy's `f2py` (the Fortran wrapper generator, whose regexes compile at import), `testing`
  (unittest, difflib, pprint...), `ma` (masked arrays) and `polynomial`: scipy's array-API
  layer clones numpy's namespace (`from numpy import *` in `scipy/_lib/array_api_compat/numpy`),
  and numpy's lazy `__getattr__` then imports every submodule named in `numpy.__all__`;
  ~60 ms, ~10 MB;
- `scipy.special` (its ufunc tables and an OpenBLAS copy), which `scipy.ndimage` imports for
  `rotate` alone; ~25 ms, ~8 MB;
- `importlib.metadata` (with zipfile, email, csv...), which redis-py imports to look its own
  version up for CLIENT SETINFO: the worker gives that version up front (queue/connection.py),
  so nothing on the way to the first job calls it; ~13 ms of `import redis`.

Besides, scipy's `xp_capabilities` decorator re-renders the docstring of every `scipy.ndimage`
function at import (a numpydoc parse and print per function, to append an array-API support
note): ~25 ms of CPU here, for text a worker never shows. Before `scipy.ndimage` is imported,
the parser it uses is swapped for one that hands each docstring back as it was (`_KeptDoc`):
the functions, their capability table and their own docstrings stay; only the note is left out.

Each deferred module is registered as a small module object that imports the real one on its first attribute
lookup (PEP 562 `__getattr__`) and forwards to it; scipy only stores the object. The real
import then goes through the normal machinery (its locks, `sys.modules`, the parent's
attribute), so `import scipy.special`, `from numpy.testing import assert_equal` and
`np.testing.assert_equal` behave as before, just later. `install()` arms this for the worker
process with a `sys.meta_path` entry that acts just before the first `import scipy` (and
`scipy.ndimage`, `redis`), so a worker that never imports scipy imports nothing for it either.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
import threading
import types
from typing import Any

#: Before the first import of a key, its modules are deferred (their parent imported first).
DEFER_BEFORE: dict[str, tuple[str, ...]] = {
    "scipy": ("numpy.f2py", "numpy.testing", "numpy.ma", "numpy.polynomial"),
    "scipy.ndimage": ("scipy.special",),
    "redis": ("importlib.metadata",),
}

_LOCK = threading.RLock()
#: The placeholders made, by name (a placeholder is replaced in sys.modules once loaded).
_PLACEHOLDERS: dict[str, types.ModuleType] = {}


def defer(name: str) -> bool:
    """Register submodule `name` (its package imported) to load on first use; True if done."""
    parent_name, _, child = name.rpartition(".")
    parent = sys.modules.get(parent_name)
    if parent is None or name in sys.modules or child in vars(parent):
        return False
    try:
        spec = importlib.util.find_spec(name)  # the parent is imported: this runs nothing of `name`
    except (ImportError, ValueError):
        return False
    if spec is None or spec.loader is None:
        return False
    module = types.ModuleType(name, f"Deferred {name}: imported on first attribute lookup.")
    module.__spec__ = spec
    module.__package__ = name if spec.submodule_search_locations is not None else parent_name
    if spec.origin:
        module.__file__ = spec.origin
    if spec.submodule_search_locations is not None:
        module.__path__ = list(spec.submodule_search_locations)

    def __getattr__(attr: str) -> Any:
        return getattr(_load(name, module), attr)

    module.__getattr__ = __getattr__  # type: ignore[method-assign]
    _PLACEHOLDERS[name] = module
    sys.modules[name] = module
    setattr(parent, child, module)  # else the parent's own lazy __getattr__ would import it
    return True


class _KeptDoc:
    """Stands in for scipy's `FunctionDoc` in `xp_capabilities`: `str()` gives back the docstring
    as it was (behind the signature line the decorator cuts off), whatever notes were appended."""

    def __init__(self, func: Any) -> None:
        self._doc = getattr(func, "__doc__", None) or ""
        self._sections: dict[str, list[str]] = {}

    def __getitem__(self, section: str) -> list[str]:
        return self._sections.setdefault(section, [])

    def __str__(self) -> str:
        return "\n" + self._doc


def keep_scipy_docs() -> bool:
    """Make scipy's array-API decorator keep docstrings instead of re-rendering them; True if done."""
    try:
        api = importlib.import_module("scipy._lib._array_api")
    except ImportError:
        return False
    current = getattr(api, "FunctionDoc", None)
    if current is _KeptDoc:
        return True
    if not isinstance(current, type) or not callable(getattr(api, "xp_capabilities", None)):
        return False  # another scipy layout: leave it alone
    api.FunctionDoc = _KeptDoc
    return True


def deferred(name: str) -> bool:
    """Whether `name` is still a placeholder (not imported for real yet)."""
    placeholder = _PLACEHOLDERS.get(name)
    return placeholder is not None and sys.modules.get(name) is placeholder


def _load(name: str, placeholder: types.ModuleType) -> types.ModuleType:
    """The real module for `name`, imported the normal way the first time."""
    with _LOCK:
        if sys.modules.get(name) is placeholder:
            del sys.modules[name]
            parent_name, _, child = name.rpartition(".")
            parent = sys.modules.get(parent_name)
            if parent is not None and vars(parent).get(child) is placeholder:
                delattr(parent, child)
        return importlib.import_module(name)


class _Before:
    """A `sys.meta_path` entry: on the first import of a DEFER_BEFORE key, defer its modules."""

    def __init__(self) -> None:
        self.pending = dict(DEFER_BEFORE)

    def find_spec(self, fullname: str, path: Any = None, target: Any = None) -> None:
        """Always None: the normal finders import `fullname` itself."""
        names = self.pending.get(fullname)
        if names is not None:
            with _LOCK:
                if self.pending.pop(fullname, None) is not None:
                    for name in names:
                        parent = name.rpartition(".")[0]
                        if parent not in sys.modules:
                            importlib.import_module(parent)  # numpy: scipy imports it first anyway
                        defer(name)
                    if fullname == "scipy.ndimage":
                        keep_scipy_docs()
                    if not self.pending:
                        uninstall()


_HOOK = _Before()


def install() -> bool:
    """Arm the deferral for this process (idempotent); False when scipy is imported already."""
    with _LOCK:
        if "scipy" in sys.modules:
            return False
        if _HOOK not in sys.meta_path:
            sys.meta_path.insert(0, _HOOK)
        return True


def uninstall() -> None:
    with _LOCK:
        while _HOOK in sys.meta_path:
            sys.meta_path.remove(_HOOK)
