"""The k8s/ deployment, checked without a cluster.

Every manifest parses and validates (Kubernetes core schemas, KubeRay v1.7.0 CRDs); every pod is
locked down; credentials come only from Secrets; MLflow accepts the Host its clients send; and the
RayJob runs commands the real `vaesweep` CLI accepts. Rendering needs `kubectl` (kustomize built
in): tests of rendered output skip without it.
"""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
import sys
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
K8S = REPO / "k8s"
KUBERAY_SCHEMAS = REPO.parent / "shared" / "k8s-schemas" / "kuberay-v1.7.0"
TARGETS = ["base", "overlays/small", "overlays/paper"]
OVERLAYS = ["small", "paper"]
TRIALS = {"small": 24, "paper": 240}  # the small first try; the study's full grid
PACKS = {"small": 3, "paper": 15}  # one k per pack: 8 points x 3 k at one seed; 80 per k in packs of 16
GPU_WORKERS = {"base": (1, 16), "overlays/small": (1, 1), "overlays/paper": (8, 16)}  # maxReplicas bounds
CORE_KINDS = {"Namespace", "PersistentVolumeClaim", "StatefulSet", "Service", "Deployment", "NetworkPolicy"}
CREDENTIAL_ENV = re.compile(r"PASSWORD|USER|TOKEN|SECRET|KEY", re.IGNORECASE)

Doc = dict[str, Any]


@cache
def render(target: str) -> tuple[Doc, ...]:
    """`kubectl kustomize k8s/<target>` as documents; skips where kubectl is missing."""
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl not on PATH: it renders the kustomizations (CI installs it)")
    done = subprocess.run([kubectl, "kustomize", str(K8S / target)], capture_output=True, text=True, timeout=120,
                          check=False)
    assert done.returncode == 0, done.stderr
    return tuple(doc for doc in yaml.safe_load_all(done.stdout) if doc)


def of_kind(docs: tuple[Doc, ...], kind: str) -> list[Doc]:
    return [doc for doc in docs if doc["kind"] == kind]


def only(docs: tuple[Doc, ...], kind: str) -> Doc:
    (doc,) = of_kind(docs, kind)
    return doc


def pod_specs(doc: Doc) -> Iterator[tuple[str, Doc]]:
    """Every pod template in a resource, with a name for failure messages."""
    spec, name = doc.get("spec", {}), f"{doc['kind']}/{doc['metadata']['name']}"
    if "template" in spec:
        yield name, spec["template"]["spec"]
    if doc["kind"] == "RayCluster":
        yield f"{name} head", spec["headGroupSpec"]["template"]["spec"]
        for group in spec.get("workerGroupSpecs", []):
            yield f"{name} {group['groupName']}", group["template"]["spec"]
    if doc["kind"] == "RayJob":
        yield f"{name} submitter", spec["submitterPodTemplate"]["spec"]


def containers(pod: Doc) -> list[Doc]:
    return pod.get("initContainers", []) + pod["containers"]


def all_containers(docs: tuple[Doc, ...]) -> Iterator[tuple[str, Doc]]:
    for doc in docs:
        for name, pod in pod_specs(doc):
            for container in containers(pod):
                yield f"{name} {container['name']}", container


def shell_commands(line: str) -> list[list[str]]:
    """`line` split as a shell splits it: commands at operators (&&, ;, |, ...), each an argv."""
    lexer = shlex.shlex(line, posix=True, punctuation_chars=True)
    lexer.whitespace_split = True
    commands: list[list[str]] = [[]]
    for token in lexer:
        if set(token) <= set("();<>|&"):
            commands.append([])
        else:
            commands[-1].append(token)
    return [command for command in commands if command]


def vaesweep_commands(docs: tuple[Doc, ...]) -> list[list[str]]:
    """Every `vaesweep` invocation of the deployment: the RayJob entrypoint and container commands."""
    commands = shell_commands(only(docs, "RayJob")["spec"]["entrypoint"])
    return commands + [c["command"] + c.get("args", []) for _, c in all_containers(docs)
                       if c.get("command", [""])[0] == "vaesweep"]


def flag(argv: list[str], name: str) -> str:
    """The value of `name VALUE` or `name=VALUE` in argv."""
    for i, arg in enumerate(argv):
        if arg == name:
            return argv[i + 1]
        if arg.startswith(f"{name}="):
            return arg.split("=", 1)[1]
    raise AssertionError(f"{name} missing from {argv}")


def cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "sweeps.cli", *args], capture_output=True, text=True,
                          cwd=cwd, timeout=300, check=False)


def closed(schema: Any) -> Any:
    """A CRD schema that rejects unknown fields, like the API server's strict field validation."""
    if isinstance(schema, list):
        return [closed(item) for item in schema]
    if not isinstance(schema, dict):
        return schema
    schema = {key: closed(value) for key, value in schema.items()}
    if "properties" in schema and "additionalProperties" not in schema \
            and not schema.get("x-kubernetes-preserve-unknown-fields"):
        schema["additionalProperties"] = False
    return schema


@cache
def kuberay_schema(kind: str) -> Doc:
    """The v1 openAPIV3Schema of a KubeRay v1.7.0 CRD; skips where ../shared has no copy."""
    path = KUBERAY_SCHEMAS / f"ray.io_{kind.lower()}s.yaml"
    if not path.is_file():
        pytest.skip(f"KubeRay v1.7.0 CRDs not found at {KUBERAY_SCHEMAS}")
    crd = yaml.load(path.read_text(), Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
    (version,) = [v for v in crd["spec"]["versions"] if v["name"] == "v1"]
    return closed(version["schema"]["openAPIV3Schema"])


@pytest.mark.parametrize("path", sorted(K8S.rglob("*.yaml")), ids=lambda p: str(p.relative_to(K8S)))
def test_manifest_parses_and_commits_no_secret(path: Path) -> None:
    """A YAML slip breaks `kubectl apply` of the whole overlay; a committed Secret leaks into git."""
    docs = [doc for doc in yaml.safe_load_all(path.read_text()) if doc is not None]
    assert docs and all(isinstance(doc, dict) for doc in docs)
    assert not [doc for doc in docs if doc.get("kind") == "Secret"], "create Secrets by hand, never commit them"


@pytest.mark.parametrize("target", TARGETS)
def test_kustomize_builds_into_one_namespace(target: str) -> None:
    """Everything must land in the namespace that the Service DNS names in the manifests assume."""
    docs = render(target)
    assert CORE_KINDS | {"RayCluster", "RayJob"} <= {doc["kind"] for doc in docs}
    namespace = only(docs, "Namespace")["metadata"]["name"]
    assert {doc["metadata"].get("namespace") for doc in docs if doc["kind"] != "Namespace"} == {namespace}


@pytest.mark.parametrize("target", TARGETS)
def test_core_kinds_match_kubernetes_schemas(target: str) -> None:
    """Strict schemas catch misspelt or misplaced fields the API server would reject."""
    kv = pytest.importorskip("kubernetes_validate")
    validated = set()
    for doc in render(target):
        for version in ("1.32", kv.latest_version()):  # kubectl here is 1.32; the newest bundled
            try:
                kv.validate(doc, version, strict=True)
            except kv.SchemaNotFoundError:
                assert doc["apiVersion"] == "ray.io/v1", f"no schema for {doc['kind']}"
                continue
            except kv.ValidationError as err:
                pytest.fail(f"{doc['kind']}/{doc['metadata']['name']} (k8s {version}) "
                            f"{'.'.join(map(str, err.path))}: {err.message}")
            validated.add(doc["kind"])
    assert CORE_KINDS <= validated


@pytest.mark.parametrize("target", TARGETS)
def test_kuberay_resources_match_crds(target: str) -> None:
    """kubernetes-validate skips custom resources: check them against the operator's own schema."""
    from jsonschema import Draft4Validator

    for kind in ("RayCluster", "RayJob"):
        errors = list(Draft4Validator(kuberay_schema(kind)).iter_errors(only(render(target), kind)))
        assert not errors, "; ".join(f"{kind} {'.'.join(map(str, e.path))}: {e.message}" for e in errors[:5])


@pytest.mark.parametrize("target", TARGETS)
def test_raycluster_autoscales_gpu_workers_and_keeps_trials_off_the_head(target: str) -> None:
    """Trials need GPU nodes the autoscaler adds within a budget; the head only runs the driver."""
    spec = only(render(target), "RayCluster")["spec"]
    pinned = re.search(r"ray\[default\]==([\w.]+)", (K8S / "Dockerfile").read_text())
    assert pinned and spec["rayVersion"] == pinned.group(1)
    assert spec["enableInTreeAutoscaling"] is True and spec["autoscalerOptions"]
    head = spec["headGroupSpec"]
    assert head["rayStartParams"]["num-cpus"] == "0"
    assert "nvidia.com/gpu" not in head["template"]["spec"]["containers"][0]["resources"]["limits"]
    low, high = GPU_WORKERS[target]
    assert spec["workerGroupSpecs"]
    for group in spec["workerGroupSpecs"]:
        assert 0 <= group["minReplicas"] <= group.get("replicas", 0) <= group["maxReplicas"], group["groupName"]
        assert low <= group["maxReplicas"] <= high, group["groupName"]
        pod = group["template"]["spec"]
        resources = pod["containers"][0]["resources"]  # KubeRay: the Ray container comes first
        assert int(resources["limits"]["nvidia.com/gpu"]) >= 1, group["groupName"]
        assert resources.get("requests", {}).get("nvidia.com/gpu", resources["limits"]["nvidia.com/gpu"]) \
            == resources["limits"]["nvidia.com/gpu"], group["groupName"]
        assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in pod.get("tolerations", []), \
            f"{group['groupName']}: GPU nodes carry the nvidia.com/gpu taint, with any value"


@pytest.mark.parametrize("target", TARGETS)
def test_rayjob_submits_to_the_raycluster(target: str) -> None:
    """clusterSelector must name the RayCluster, and KubeRay refuses RayJob retries with it
    (kuberay#4516); without a command in the submitter, KubeRay supplies `ray job submit`."""
    docs = render(target)
    spec = only(docs, "RayJob")["spec"]
    assert spec["clusterSelector"] == {"ray.io/cluster": only(docs, "RayCluster")["metadata"]["name"]}
    assert "rayClusterSpec" not in spec and spec["submissionMode"] == "K8sJobMode"
    assert spec.get("backoffLimit", 0) == 0 and spec["activeDeadlineSeconds"] > 0
    submitter = spec["submitterPodTemplate"]["spec"]
    assert submitter["restartPolicy"] == "Never" and not submitter["containers"][0].get("command")


@pytest.mark.parametrize("target", TARGETS)
def test_runs_and_data_are_on_the_shared_volume(target: str) -> None:
    """Since Ray 2.7 nothing syncs results to the head: --storage must be one RWX volume mounted at
    the same path on every Ray pod, and `data fetch` must fill the cache `run` reads."""
    docs = render(target)
    (claim,) = [c["metadata"]["name"] for c in of_kind(docs, "PersistentVolumeClaim")
                if "ReadWriteMany" in c["spec"]["accessModes"]]
    mounts = set()
    for name, pod in pod_specs(only(docs, "RayCluster")):
        volumes = {v["name"] for v in pod["volumes"] if v.get("persistentVolumeClaim", {}).get("claimName") == claim}
        paths = {m["mountPath"] for m in pod["containers"][0]["volumeMounts"] if m["name"] in volumes}
        assert len(paths) == 1, f"{name} mounts {claim} at {paths}"
        mounts |= paths
    (mount,) = mounts
    commands = {argv[1]: argv for argv in vaesweep_commands(docs)}
    for path in (flag(commands["run"], "--storage"), flag(commands["run"], "--data-dir")):
        assert Path(path).is_relative_to(mount), path
    assert flag(commands["data"], "--data-dir") == flag(commands["run"], "--data-dir")


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_entrypoint_is_a_single_vaesweep_command(overlay: str) -> None:
    """KubeRay pastes the entrypoint into the submitter's shell after `ray job submit --`: whatever
    follows `&&` or `;` would run in the submitter pod, not on the cluster (kuberay#3802)."""
    commands = shell_commands(only(render(f"overlays/{overlay}"), "RayJob")["spec"]["entrypoint"])
    assert [argv[:2] for argv in commands] == [["vaesweep", "run"]]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_real_cli_accepts_every_vaesweep_command(overlay: str, tmp_path: Path, mnist_dir: Path) -> None:
    """A bad flag, preset or override would otherwise only show on the cluster: each command must
    parse, `run` must pass --dry-run (preset + overrides validated, the data read, trials listed; the
    cluster's volume path for MNIST replaced by this machine's cache)."""
    from sweeps.cli import build_parser

    commands = vaesweep_commands(render(f"overlays/{overlay}"))
    assert sorted(argv[1] for argv in commands) == ["data", "run"]
    for argv in commands:
        build_parser().parse_args(argv[1:])  # raises UsageError on an unknown flag
        if argv[1] == "run":
            here = [str(mnist_dir) if previous == "--data-dir" else arg for previous, arg in zip(["", *argv], argv)]
            done = cli(*here[1:], "--dry-run", cwd=tmp_path)
            assert done.returncode == 0, done.stderr
            summary = re.search(r"^(\d+) grid points in (\d+) packs", done.stdout, re.MULTILINE)
            assert summary is not None, done.stdout[-500:]
            assert (int(summary.group(1)), int(summary.group(2))) == (TRIALS[overlay], PACKS[overlay])
        else:
            done = cli(*argv[1:], "--help", cwd=tmp_path)
            assert done.returncode == 0, done.stderr


@pytest.mark.parametrize("target", TARGETS)
def test_every_pod_is_locked_down(target: str) -> None:
    """Pod Security "restricted" (the namespace enforces it) plus requests and limits on every
    container, so no pod runs as root, escalates, or starves its node."""
    docs = render(target)
    assert only(docs, "Namespace")["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"
    pods = [(name, pod) for doc in docs for name, pod in pod_specs(doc)]
    assert len(pods) >= 5  # postgres, mlflow, Ray head, GPU workers, submitter
    for name, pod in pods:
        context = pod.get("securityContext", {})
        assert context.get("runAsNonRoot") is True and context.get("runAsUser") != 0, name
        assert context.get("seccompProfile", {}).get("type") == "RuntimeDefault", name
        assert not any(pod.get(key) for key in ("hostNetwork", "hostPID", "hostIPC")), name
        assert not any("hostPath" in volume for volume in pod.get("volumes", [])), name
    autoscaler = only(docs, "RayCluster")["spec"]["autoscalerOptions"]  # a sidecar KubeRay adds to the head
    for name, container in [*all_containers(docs), ("autoscaler", autoscaler)]:
        context = container.get("securityContext", {})
        assert context.get("allowPrivilegeEscalation") is False, name
        assert "ALL" in context.get("capabilities", {}).get("drop", []), name
        assert not context.get("privileged") and context.get("runAsNonRoot") is not False, name
        assert not any(port.get("hostPort") for port in container.get("ports", [])), name
        for kind in ("requests", "limits"):
            assert {"cpu", "memory"} <= set(container.get("resources", {}).get(kind, {})), f"{name} {kind}"


@pytest.mark.parametrize("target", TARGETS)
def test_nothing_is_exposed_outside_the_cluster(target: str) -> None:
    """UIs are for `kubectl port-forward`: no node port, load balancer or ingress."""
    docs = render(target)
    assert all(service["spec"].get("type") == "ClusterIP" for service in of_kind(docs, "Service"))
    assert not {"Ingress", "Route", "Gateway", "HTTPRoute"} & {doc["kind"] for doc in docs}
    head = only(docs, "RayCluster")["spec"]["headGroupSpec"]
    assert head["serviceType"] == "ClusterIP" and not head.get("enableIngress")


@pytest.mark.parametrize("target", TARGETS)
def test_credentials_only_come_from_secrets(target: str) -> None:
    """A literal password would sit in git; an undefined $(VAR) in args reaches the process unexpanded."""
    docs = render(target)
    assert not of_kind(docs, "Secret")
    for name, container in all_containers(docs):
        env = container.get("env", [])
        for var in env:
            if CREDENTIAL_ENV.search(var["name"]):
                assert "value" not in var and "secretKeyRef" in var.get("valueFrom", {}), f"{name} {var['name']}"
        referenced = set(re.findall(r"\$\((\w+)\)", " ".join(container.get("command", []) + container.get("args", []))))
        assert referenced <= {var["name"] for var in env}, name


@pytest.mark.parametrize("target", TARGETS)
def test_mlflow_allows_the_hosts_its_clients_use(target: str) -> None:
    """MLflow (>= 3.5) answers 403 to a Host outside --allowed-hosts; in-cluster clients send the
    Service DNS name of MLFLOW_TRACKING_URI, port-forward sends localhost. Uses MLflow's own check."""
    from mlflow.server.security_utils import is_allowed_host_header

    docs = render(target)
    (server,) = [c for _, c in all_containers(docs) if c.get("command", [])[:2] == ["mlflow", "server"]]
    allowed = flag(server["args"], "--allowed-hosts").split(",")
    uris = {var["value"] for _, c in all_containers(docs) for var in c.get("env", [])
            if var["name"] == "MLFLOW_TRACKING_URI"}
    uris |= {flag(argv, "--tracking-uri") for argv in vaesweep_commands(docs) if argv[1] == "run"}
    namespace = only(docs, "Namespace")["metadata"]["name"]
    assert uris and is_allowed_host_header(allowed, "localhost:5000")
    for uri in uris:
        parts = urlsplit(uri)
        assert is_allowed_host_header(allowed, parts.netloc), uri
        service, _, domain = parts.hostname.partition(".")
        (ports,) = [[p["port"] for p in s["spec"]["ports"]] for s in of_kind(docs, "Service")
                    if s["metadata"]["name"] == service]
        assert parts.port in ports and domain in ("", namespace, f"{namespace}.svc", f"{namespace}.svc.cluster.local"), uri


@pytest.mark.parametrize("target", TARGETS)
def test_ray_and_mlflow_pods_run_one_pinned_image(target: str) -> None:
    """Ray needs the same ray and Python on head, workers and submitter; kustomize's `images:` must
    reach the KubeRay resources too, with a tag rather than an implicit :latest."""
    docs = render(target)
    images = {c["image"] for doc in docs if doc["kind"] in ("RayCluster", "RayJob", "Deployment")
              for _, pod in pod_specs(doc) for c in containers(pod)}
    assert len(images) == 1, images
    (image,) = images
    assert re.search(r":[\w.-]+$", image) and not image.endswith(":latest"), image


def admitting(policies: list[Doc], pod_labels: dict[str, str], port: int) -> list[Doc]:
    """The ingress rules of the policies selecting a pod with these labels that let clients reach ``port``."""
    rules = []
    for policy in policies:
        wanted = policy["spec"]["podSelector"].get("matchLabels", {})
        if not wanted.items() <= pod_labels.items():
            continue
        for rule in policy["spec"].get("ingress", []):
            ports = {p["port"] for p in rule.get("ports", [])}
            if not ports or port in ports:
                rules.append(rule)
    return rules


HEAD = {"ray.io/cluster": "vaesweep", "ray.io/node-type": "head"}
RAY_WORKER = {"ray.io/cluster": "vaesweep", "ray.io/node-type": "worker"}
SUBMITTER = {"app.kubernetes.io/component": "sweep-submitter"}


@pytest.mark.parametrize("target", TARGETS)
def test_network_policies_deny_by_default_and_name_the_clients_of_every_port(target: str) -> None:
    docs = render(target)
    policies = of_kind(docs, "NetworkPolicy")
    assert any(p["spec"]["podSelector"] == {} and p["spec"]["policyTypes"] == ["Ingress"] and not p["spec"].get("ingress")
               for p in policies), "default deny of ingress in the namespace"
    for rule in (r for p in policies for r in p["spec"].get("ingress", [])):
        assert rule.get("from"), "every rule names its clients"
    # every Service port: admitted only from named clients, and the right ones
    pods = {deployment["metadata"]["name"]: deployment["spec"]["template"]["metadata"]["labels"]
            for deployment in of_kind(docs, "Deployment") + of_kind(docs, "StatefulSet")}
    for service in of_kind(docs, "Service"):
        labels = next(labels for labels in pods.values() if service["spec"]["selector"].items() <= labels.items())
        for port in service["spec"]["ports"]:
            number = port["port"]
            clients = [peer.get("podSelector", {}).get("matchLabels", {})
                       for rule in admitting(policies, labels, number) for peer in rule["from"]]
            assert clients, f"{service['metadata']['name']}:{number} has no policy naming its clients"
            if service["metadata"]["name"] == "mlflow":
                assert {"ray.io/cluster": "vaesweep"} in clients and SUBMITTER in clients
            if service["metadata"]["name"] == "mlflow-postgres":
                assert clients == [pods["mlflow"]] or clients == [{"app.kubernetes.io/name": "mlflow"}], clients
    # the Ray head: its GCS and client ports from Ray's pods only; its job API from the submitter and the operator
    head_ports = [p["containerPort"] for p in only(docs, "RayCluster")["spec"]["headGroupSpec"]["template"]["spec"]
                  ["containers"][0]["ports"]]
    for port in head_ports:
        clients = [peer for rule in admitting(policies, HEAD, port) for peer in rule["from"]]
        assert {"podSelector": {"matchLabels": {"ray.io/cluster": "vaesweep"}}} in clients, port
        outside = [peer for peer in clients if peer != {"podSelector": {"matchLabels": {"ray.io/cluster": "vaesweep"}}}]
        assert not outside or port == 8265, f"head port {port} open to {outside}"
    assert admitting(policies, RAY_WORKER, 6379), "workers reach each other"
    submitter_labels = only(docs, "RayJob")["spec"]["submitterPodTemplate"]["metadata"]["labels"]
    assert SUBMITTER.items() <= submitter_labels.items()
