"""infra/: the images, the compose stack and the Kubernetes manifests, checked without Docker or
a cluster (no base image can be pulled here). The compose file is read as Debian's
docker-compose resolves it, the manifests are validated against Kubernetes' schemas, and the
two one-shot jobs of the stack (the bucket, the deployments) run here against moto and the
session's Prefect API."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import boto3
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
INFRA = ROOT / "infra"
COMPOSE = INFRA / "compose.yaml"
K8S = INFRA / "k8s"
DOCKERFILES = {kind: INFRA / "docker" / f"Dockerfile.{kind}" for kind in ("cpu", "gpu")}
# The Kubernetes release the manifests are checked against (kubernetes-validate ships its schemas).
KUBERNETES_VERSION = "1.34.0"
SCHEDULER = "tcp://dask-scheduler:8786"  # the scheduler's name in compose and in Kubernetes alike


def docker_compose(*args: str) -> subprocess.CompletedProcess[str]:
    """Debian's docker-compose (1.29) on infra/compose.yaml: a hard requirement, as in CI."""
    binary = shutil.which("docker-compose")
    if binary is None:
        pytest.fail("docker-compose is missing: apt-get install docker-compose (.ci/run installs it)")
    return subprocess.run(
        [binary, "-f", str(COMPOSE), *args], capture_output=True, text=True, timeout=120, check=False
    )


@pytest.fixture(scope="module")
def services() -> dict[str, Any]:
    """The services of the compose file as docker-compose resolves it (defaults filled in), the
    GPU profile's included."""
    done = docker_compose("--profile", "gpu", "config")
    assert done.returncode == 0, done.stderr
    return yaml.safe_load(done.stdout)["services"]


def dockerfile(kind: str) -> list[tuple[str, str]]:
    """The instructions of a Dockerfile as (INSTRUCTION, arguments), continuation lines joined."""
    text = re.sub(r"\\\n", " ", DOCKERFILES[kind].read_text())
    lines = [line.strip() for line in text.splitlines()]
    return [
        (word.upper(), rest.strip())
        for word, _, rest in (line.partition(" ") for line in lines if line and not line.startswith("#"))
    ]


def manifests() -> list[Path]:
    return sorted(p for p in K8S.glob("*.yaml") if p.name != "kustomization.yaml")


def resources() -> list[dict[str, Any]]:
    return [doc for path in manifests() for doc in yaml.safe_load_all(path.read_text()) if doc]


def pod_spec(name: str) -> dict[str, Any]:
    (deployment,) = [r for r in resources() if r["kind"] == "Deployment" and r["metadata"]["name"] == name]
    return deployment["spec"]["template"]["spec"]


# -- compose ---------------------------------------------------------------------------------


def test_compose_file_passes_docker_compose_config() -> None:
    for args in ((), ("--profile", "gpu")):
        done = docker_compose(*args, "config", "-q")
        assert done.returncode == 0, done.stderr


def test_compose_stack_has_every_part(services: dict[str, Any]) -> None:
    assert {
        "postgres",
        "prefect-server",
        "minio",
        "dask-scheduler",
        "dask-worker-cpu",
        "dask-worker-gpu",
        "prefect-worker",
    } <= services.keys()
    server = services["prefect-server"]
    assert server["environment"]["PREFECT_SERVER_ANALYTICS_ENABLED"] == "false"
    assert server["command"][:3] == ["prefect", "server", "start"]
    assert server["environment"]["PREFECT_API_DATABASE_CONNECTION_URL"].startswith(
        "postgresql+asyncpg://prefect:"
    )
    assert server["environment"]["PREFECT_API_DATABASE_CONNECTION_URL"].endswith("@postgres:5432/prefect")
    assert services["dask-scheduler"]["command"][:2] == ["dask", "scheduler"]
    worker = services["prefect-worker"]["command"]
    assert worker[:3] == ["prefect", "worker", "start"]
    assert worker[worker.index("--pool") + 1] == "footprints"
    assert worker[worker.index("--type") + 1] == "process"
    for name, service in services.items():
        # Every Prefect process talks to the stack's own server, and none phones home (the images
        # turn analytics off too; the server says so itself as well).
        assert service.get("environment", {}).get("PREFECT_SERVER_ANALYTICS_ENABLED", "false") == "false"
        if name in ("prefect-worker", "prefect-deploy", "dask-worker-cpu", "dask-worker-gpu"):
            assert service["environment"]["PREFECT_API_URL"] == "http://prefect-server:4200/api", name


def published_host_ip(port: str | dict[str, Any]) -> str | None:
    """The host address a port is published on; None for all of them (no address given)."""
    if isinstance(port, dict):  # the long syntax
        return port.get("host_ip")
    parts = str(port).split("/")[0].split(":")
    return parts[0] if len(parts) == 3 else None


def test_every_published_port_is_bound_to_loopback(services: dict[str, Any]) -> None:
    published = {name: s.get("ports", []) for name, s in services.items() if s.get("ports")}
    assert {"prefect-server", "minio", "dask-scheduler"} <= published.keys()
    for name, ports in published.items():
        for port in ports:
            assert published_host_ip(port) == "127.0.0.1", f"{name} publishes {port} beyond loopback"
    assert not [name for name, s in services.items() if s.get("network_mode") == "host"]


def test_gpu_worker_asks_for_a_gpu_and_offers_it_to_dask(services: dict[str, Any]) -> None:
    gpu = services["dask-worker-gpu"]
    assert gpu["image"].startswith("footprints-gpu:")
    assert gpu["command"][:3] == ["dask", "worker", SCHEDULER]
    assert gpu["command"][gpu["command"].index("--resources") + 1] == "GPU=1"
    devices = gpu["deploy"]["resources"]["reservations"]["devices"]
    assert [(d["driver"], d["capabilities"]) for d in devices] == [("nvidia", ["gpu"])]
    # Off by default, so that `up` works on a machine without a GPU.
    assert gpu["profiles"] == ["gpu"]
    cpu = services["dask-worker-cpu"]
    assert cpu["image"].startswith("footprints-cpu:")
    assert cpu["command"][:3] == ["dask", "worker", SCHEDULER]
    assert cpu["command"][cpu["command"].index("--nthreads") + 1] == "1"
    assert "--resources" not in cpu["command"]
    assert "deploy" not in cpu


def test_services_wait_for_what_they_need(services: dict[str, Any]) -> None:
    """A condition on a service that cannot meet it would hang `up`: service_healthy needs a
    healthcheck, service_completed_successfully a one-shot that does not restart."""
    for name, service in services.items():
        for needed, how in service.get("depends_on", {}).items():
            if how["condition"] == "service_healthy":
                assert "healthcheck" in services[needed], f"{name} waits for {needed}'s health"
            elif how["condition"] == "service_completed_successfully":
                assert services[needed]["restart"] == "no", f"{name} waits for {needed} to end"
    assert services["prefect-server"]["depends_on"]["postgres"]["condition"] == "service_healthy"
    assert services["prefect-worker"]["depends_on"]["prefect-server"]["condition"] == "service_healthy"


def test_bucket_job_makes_the_bucket_once(services: dict[str, Any], s3_endpoint: str) -> None:
    job = services["s3-bucket"]
    env = {**os.environ, **job["environment"], "S3_ENDPOINT_URL": s3_endpoint}
    env |= {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"}
    assert job["command"][:2] == ["python", "-c"]
    for _ in range(2):  # a second `up` finds the bucket there
        done = subprocess.run(
            [sys.executable, *job["command"][1:]], env=env, capture_output=True, text=True, timeout=60
        )
        assert done.returncode == 0, done.stderr
    client = boto3.client("s3", endpoint_url=s3_endpoint, region_name="us-east-1")
    assert job["environment"]["S3_BUCKET"] in [b["Name"] for b in client.list_buckets()["Buckets"]]


@pytest.mark.slow
def test_deploy_job_deploys_the_nightly_run_onto_the_stacks_dask_cluster(
    services: dict[str, Any], prefect_api: str
) -> None:
    """The stack's one-shot `prefect-deploy`, run twice (a second `up` finds the pool there)."""
    job = services["prefect-deploy"]
    home = dict(env_settings("cpu"))["FOOTPRINTS_HOME"]
    env = {**os.environ, **job["environment"], "PREFECT_API_URL": prefect_api, "FOOTPRINTS_HOME": home}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}"
    for _ in range(2):
        done = subprocess.run(job["command"], env=env, cwd=ROOT, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stdout + done.stderr

    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        pool = client.read_work_pool("footprints")
        deployment = client.read_deployment_by_name("aoi-footprints/nightly-aoi")
    assert pool.type == "process"
    assert deployment.work_pool_name == "footprints"
    assert deployment.parameters["dask_address"] == SCHEDULER
    shipped = yaml.safe_load((ROOT / "prefect.yaml").read_text())["deployments"][0]["parameters"]
    assert shipped.items() <= deployment.parameters.items()
    assert deployment.pull_steps == [{"prefect.deployments.steps.set_working_directory": {"directory": home}}]


# -- images ----------------------------------------------------------------------------------


def env_settings(kind: str) -> list[tuple[str, str]]:
    return [
        tuple(pair.split("=", 1))  # type: ignore[misc]
        for word, args in dockerfile(kind)
        if word == "ENV"
        for pair in args.split()
    ]


def pinned(requirement: str) -> str:
    (line,) = [
        line
        for line in (ROOT / "constraints.txt").read_text().splitlines()
        if line.lower().startswith(requirement + "==")
    ]
    return line


@pytest.mark.parametrize("kind", ["cpu", "gpu"])
def test_image_installs_the_pinned_torch_then_the_project_as_ci_tests_it(kind: str) -> None:
    runs = [args for word, args in dockerfile(kind) if word == "RUN"]
    torch_pin = pinned("torch")
    assert torch_pin == "torch==2.13.0"
    (torch_run,) = [i for i, r in enumerate(runs) if re.search(rf"pip install .*{re.escape(torch_pin)}\b", r)]
    (project_run,) = [i for i, r in enumerate(runs) if "pip install -c constraints.txt ." in r]
    assert torch_run < project_run
    cpu_index = "--index-url https://download.pytorch.org/whl/cpu"
    assert (cpu_index in runs[torch_run]) == (kind == "cpu")


def test_gpu_image_is_built_on_nvidia_cuda() -> None:
    (base,) = [args for word, args in dockerfile("gpu") if word == "ARG" and args.startswith("CUDA_IMAGE=")]
    assert base.removeprefix("CUDA_IMAGE=").startswith("nvidia/cuda:13.")
    assert ("FROM", "${CUDA_IMAGE}") in dockerfile("gpu")


@pytest.mark.parametrize("kind", ["cpu", "gpu"])
def test_image_holds_the_whole_project_and_runs_as_its_own_user(kind: str) -> None:
    instructions = dockerfile(kind)
    copied = [src.rstrip("/") for word, args in instructions if word == "COPY" for src in args.split()[:-1]]
    for source in copied:
        assert (ROOT / source).exists(), f"Dockerfile.{kind} copies {source}, which is not in the repository"
    pyproject = (ROOT / "pyproject.toml").read_text()
    package_dirs = set(re.findall(r'^"footprints[.\w]*" = "(\w+)"$', pyproject, re.MULTILINE))
    needed = package_dirs | {"pyproject.toml", "constraints.txt", "README.md", "prefect.yaml", "aoi"}
    assert needed <= set(copied), f"Dockerfile.{kind} leaves out {needed - set(copied)}"
    # BuildKit reads Dockerfile.KIND.dockerignore beside the Dockerfile; it lets in only these.
    ignore = (DOCKERFILES[kind].parent / f"Dockerfile.{kind}.dockerignore").read_text().splitlines()
    assert {f"!{source}" for source in copied} <= set(ignore)
    settings = dict(env_settings(kind))
    assert ("WORKDIR", settings["FOOTPRINTS_HOME"]) in instructions
    assert settings["PREFECT_SERVER_ANALYTICS_ENABLED"] == "false"
    (user,) = [args for word, args in instructions if word == "USER"]
    assert user.split(":")[0] not in ("root", "0")


# -- Kubernetes ------------------------------------------------------------------------------


def test_manifests_pass_kubernetes_validate_strict() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "kubernetes_validate", "--strict", "-k", KUBERNETES_VERSION]
        + [str(p) for p in manifests()],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert "No module named kubernetes_validate" not in done.stderr, "pip install kubernetes-validate"
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.count(" passed for resource ") == len(resources())


def test_kustomization_applies_every_manifest_in_one_namespace() -> None:
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    assert sorted(kustomization["resources"]) == [p.name for p in manifests()]
    (namespace,) = [r["metadata"]["name"] for r in resources() if r["kind"] == "Namespace"]
    assert kustomization["namespace"] == namespace
    assert {r["metadata"].get("namespace") for r in resources() if r["kind"] != "Namespace"} == {namespace}


def test_k8s_topology() -> None:
    by_kind: dict[str, list[str]] = {}
    for r in resources():
        by_kind.setdefault(r["kind"], []).append(r["metadata"]["name"])
    assert sorted(by_kind["Deployment"]) == [
        "dask-scheduler",
        "dask-worker-cpu",
        "dask-worker-gpu",
        "prefect-worker",
    ]
    # The scheduler's Service, inside the cluster only, selects the scheduler's pods and no other.
    (service,) = [r for r in resources() if r["kind"] == "Service"]
    assert service["metadata"]["name"] == SCHEDULER.removeprefix("tcp://").split(":")[0]
    assert service["spec"]["type"] == "ClusterIP"
    assert 8786 in [p["port"] for p in service["spec"]["ports"]]
    labels = {
        r["metadata"]["name"]: r["spec"]["template"]["metadata"]["labels"]
        for r in resources()
        if r["kind"] == "Deployment"
    }
    selected = [n for n, pod in labels.items() if service["spec"]["selector"].items() <= pod.items()]
    assert selected == ["dask-scheduler"]
    for name in ("dask-worker-cpu", "dask-worker-gpu"):
        (container,) = pod_spec(name)["containers"]
        assert container["args"][:3] == ["dask", "worker", SCHEDULER]
    (worker,) = pod_spec("prefect-worker")["containers"]
    assert worker["args"][:3] == ["prefect", "worker", "start"]
    assert worker["args"][worker["args"].index("--pool") + 1] == "footprints"


def test_k8s_gpu_workers_ask_for_a_gpu_and_offer_it_to_dask() -> None:
    (gpu,) = pod_spec("dask-worker-gpu")["containers"]
    assert gpu["image"].startswith("footprints-gpu:")
    assert gpu["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert gpu["args"][gpu["args"].index("--resources") + 1] == "GPU=1"
    (cpu,) = pod_spec("dask-worker-cpu")["containers"]
    assert "--resources" not in cpu["args"]
    assert "nvidia.com/gpu" not in cpu["resources"].get("limits", {})


def test_k8s_pods_read_the_prefect_api_from_the_config_and_run_as_the_images_user() -> None:
    (config,) = [r for r in resources() if r["kind"] == "ConfigMap"]
    assert config["data"]["PREFECT_API_URL"].endswith("/api")
    for name in ("dask-scheduler", "dask-worker-cpu", "dask-worker-gpu", "prefect-worker"):
        spec = pod_spec(name)
        # Service links would put DASK_SCHEDULER_* variables in the pods, which Dask reads as config.
        assert spec["enableServiceLinks"] is False, name
        (container,) = spec["containers"]
        kind = container["image"].removeprefix("footprints-").split(":")[0]
        (user,) = [args for word, args in dockerfile(kind) if word == "USER"]
        assert str(spec["securityContext"]["runAsUser"]) == user.split(":")[0], name
        assert spec["securityContext"]["runAsNonRoot"] is True, name
    for name in ("dask-worker-cpu", "dask-worker-gpu", "prefect-worker"):
        (container,) = pod_spec(name)["containers"]
        sources = [s.get("configMapRef", s.get("secretRef")) for s in container["envFrom"]]
        assert {"name": config["metadata"]["name"]} in sources, name
