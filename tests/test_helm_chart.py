"""The Helm chart, linted and rendered by the real Helm (a packaged v3 binary, see
deploy/tools/fetch-helm.sh) and every manifest validated against the Kubernetes schemas.

The official nats and bitnami postgresql charts cannot be fetched here (no chart repositories,
only package registries), so rendering uses a copy of the chart without its dependency list; the
services' own templates are what is checked."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
CHART = ROOT / "deploy" / "helm" / "almere-traffic"
OPTIMIZER = ["--set", "services.optimizer.enabled=true", "--set", "roadNetwork.configMap=almere-network"]
HELM = Path(os.environ.get("ALMERE_HELM", ROOT / ".tools" / "helm"))
KUBERNETES = "1.31"
REQUIRED = ["--set", "tokens.existingSecret=almere-tokens"]


@pytest.fixture(scope="module")
def chart_without_dependencies(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if not HELM.exists():
        pytest.fail(f"{HELM} is missing: `make test` fetches it (deploy/tools/fetch-helm.sh)")
    copy = tmp_path_factory.mktemp("chart") / "almere-traffic"
    shutil.copytree(CHART, copy)
    meta = yaml.safe_load((copy / "Chart.yaml").read_text())
    meta.pop("dependencies")
    (copy / "Chart.yaml").write_text(yaml.safe_dump(meta))
    return copy


def helm(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(HELM), *args], capture_output=True, text=True, timeout=120)


def render(chart: Path, *args: str) -> list[dict[str, Any]]:
    result = helm("template", "rel", str(chart), "--namespace", "traffic", *args)
    assert result.returncode == 0, result.stderr
    return [d for d in yaml.safe_load_all(result.stdout) if d]


def by_kind(docs: list[dict[str, Any]], kind: str) -> dict[str, dict[str, Any]]:
    return {d["metadata"]["name"]: d for d in docs if d["kind"] == kind}


def test_lint_passes_with_only_the_dependency_warning() -> None:
    if not HELM.exists():
        pytest.fail(f"{HELM} is missing")
    result = helm("lint", str(CHART), *REQUIRED)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "[ERROR]" not in result.stdout
    warnings = [line for line in result.stdout.splitlines() if "[WARNING]" in line]
    assert all("missing these dependencies: nats,postgresql" in w for w in warnings), warnings


@pytest.mark.parametrize(
    "values",
    [
        [],
        [
            "--set",
            "nats.enabled=false",
            "--set",
            "externalNats.url=nats://nats.messaging:4222",
            "--set",
            "externalNats.usersSecret=almere-bus-users",
            "--set",
            "postgresql.enabled=false",
            "--set",
            "database.existingSecret=almere-db",
            "--set",
            "services.parking.autoscaling.enabled=true",
            "--set",
            "roadNetwork.configMap=almere-network",
            "--set",
            "networkPolicy.enabled=false",
            "--set",
            "simulation.enabled=true",
            "--set",
            "simulation.credentialsSecret=almere-sim",
        ],
    ],
    ids=["defaults", "external-nats-db-hpa-simulation"],
)
def test_every_manifest_is_valid_kubernetes(chart_without_dependencies: Path, values: list[str]) -> None:
    docs = render(chart_without_dependencies, *REQUIRED, *values)
    for doc in docs:
        kubernetes_validate.validate(doc, KUBERNETES, strict=True)
    kinds = sorted({d["kind"] for d in docs})
    assert {"ConfigMap", "Deployment", "Service", "PodDisruptionBudget", "ServiceAccount"} <= set(kinds)


def test_deployments_are_locked_down_and_probed_over_grpc(chart_without_dependencies: Path) -> None:
    docs = render(chart_without_dependencies, *REQUIRED)
    deployments = by_kind(docs, "Deployment")
    assert sorted(deployments) == [
        "rel-almere-traffic-incidents",
        "rel-almere-traffic-parking",
        "rel-almere-traffic-signals",
    ]
    policies = by_kind(docs, "NetworkPolicy")
    for name, deployment in deployments.items():
        pod = deployment["spec"]["template"]["spec"]
        (container,) = pod["containers"]
        assert container["args"] == ["serve", name.rsplit("-", 1)[1]]
        port = container["ports"][0]["containerPort"]
        for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
            assert container[probe]["grpc"]["port"] == port
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert container["securityContext"]["readOnlyRootFilesystem"] is True
        assert container["securityContext"]["capabilities"]["drop"] == ["ALL"]
        assert {"name": "tokens", "secret": {"secretName": "almere-tokens"}} in pod["volumes"]
        env = {e["name"]: e for e in container["env"]}
        assert env["ALMERE_DATABASE_PASSWORD"]["valueFrom"]["secretKeyRef"]["name"] == "rel-postgresql"
        assert "$(ALMERE_DATABASE_PASSWORD)" in env["ALMERE_DATABASE_URL"]["value"]
        policy = policies[name]["spec"]
        assert policy["policyTypes"] == ["Ingress", "Egress"]
        egress_ports = sorted({p["port"] for rule in policy["egress"] for p in rule["ports"]})
        assert egress_ports == [53, 4222, 5432]  # DNS, NATS, PostgreSQL: nothing else
    config = by_kind(docs, "ConfigMap")["rel-almere-traffic"]["data"]
    assert config["ALMERE_NATS_URL"] == "nats://rel-nats:4222" and config["ALMERE_BIND_HOST"] == "0.0.0.0"  # noqa: S104 - pods listen on their own IP
    assert not any("token" in v.lower() and "/etc/almere" not in v for v in config.values())


def test_the_optimizer_runs_only_with_a_road_network(chart_without_dependencies: Path) -> None:
    docs = render(chart_without_dependencies, *REQUIRED, *OPTIMIZER)
    optimizer = by_kind(docs, "Deployment")["rel-almere-traffic-optimizer"]["spec"]["template"]["spec"]
    assert optimizer["containers"][0]["args"] == ["serve", "optimizer"]
    assert {"name": "network", "configMap": {"name": "almere-network"}} in optimizer["volumes"]
    # The parking service finds it, and may reach it (and only it besides DNS, NATS and PostgreSQL).
    config = by_kind(docs, "ConfigMap")["rel-almere-traffic"]["data"]
    assert config["ALMERE_OPTIMIZER_ADDRESS"] == "rel-almere-traffic-optimizer:50054"
    egress = by_kind(docs, "NetworkPolicy")["rel-almere-traffic-parking"]["spec"]["egress"]
    assert sorted({p["port"] for rule in egress for p in rule["ports"]}) == [53, 4222, 5432, 50054]
    deployment = by_kind(docs, "Deployment")["rel-almere-traffic-optimizer"]["spec"]
    assert deployment["replicas"] == 1 and deployment["strategy"] == {"type": "Recreate"}
    # It proposes adaptive signal steps: finds and may reach the signal service, with its own token.
    assert config["ALMERE_SIGNALS_ADDRESS"] == "rel-almere-traffic-signals:50053"
    egress = by_kind(docs, "NetworkPolicy")["rel-almere-traffic-optimizer"]["spec"]["egress"]
    assert sorted({p["port"] for rule in egress for p in rule["ports"]}) == [53, 4222, 5432, 50053]
    assert not any(e["name"] == "ALMERE_SERVICE_TOKEN" for e in deployment["template"]["spec"]["containers"][0]["env"])
    tokens = [
        "--set",
        "serviceTokens.optimizer.existingSecret=opt",
        "--set",
        "serviceTokens.parking.existingSecret=park",
    ]
    docs = render(chart_without_dependencies, *REQUIRED, *OPTIMIZER, *tokens)
    deployments = by_kind(docs, "Deployment")

    def env_of(name: str) -> list[dict[str, Any]]:
        env: list[dict[str, Any]] = deployments[f"rel-almere-traffic-{name}"]["spec"]["template"]["spec"]["containers"][
            0
        ]["env"]
        return env

    # Each calling service has its own token (the parking service's for its travel-time questions);
    # the others get none.
    for name, secret in (("optimizer", "opt"), ("parking", "park")):
        token = {"name": "ALMERE_SERVICE_TOKEN", "valueFrom": {"secretKeyRef": {"name": secret, "key": "token"}}}
        assert token in env_of(name), name
    for name in ("incidents", "signals"):
        assert not any(e["name"] == "ALMERE_SERVICE_TOKEN" for e in env_of(name)), name


def test_the_simulation_job_runs_the_twin_against_the_cluster(chart_without_dependencies: Path) -> None:
    docs = render(
        chart_without_dependencies,
        *REQUIRED,
        "--set",
        "simulation.enabled=true",
        "--set",
        "simulation.credentialsSecret=almere-sim",
    )
    (job,) = by_kind(docs, "Job").values()
    container = job["spec"]["template"]["spec"]["containers"][0]
    assert container["args"][:3] == ["sim", "run", "almere-centrum-incident"] and "--services-dir" in container["args"]
    endpoints = json.loads(by_kind(docs, "ConfigMap")["rel-almere-traffic-simulation"]["data"]["endpoints.json"])
    assert endpoints["parking"] == "rel-almere-traffic-parking:50051" and "optimizer" not in endpoints
    # With the optimizer, the twin finds it too (mode coordinated: it drives the lights).
    docs = render(
        chart_without_dependencies, *REQUIRED, *OPTIMIZER, "--set", "simulation.enabled=true",
        "--set", "simulation.credentialsSecret=almere-sim",
    )  # fmt: skip
    endpoints = json.loads(by_kind(docs, "ConfigMap")["rel-almere-traffic-simulation"]["data"]["endpoints.json"])
    assert endpoints["optimizer"] == "rel-almere-traffic-optimizer:50054"
    result = helm("template", "rel", str(chart_without_dependencies), *REQUIRED, "--set", "simulation.enabled=true")
    assert result.returncode != 0 and "simulation.credentialsSecret is required" in result.stderr


def test_autoscaling_replaces_fixed_replicas(chart_without_dependencies: Path) -> None:
    docs = render(chart_without_dependencies, *REQUIRED, "--set", "services.parking.autoscaling.enabled=true")
    hpa = by_kind(docs, "HorizontalPodAutoscaler")["rel-almere-traffic-parking"]
    assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (2, 6)
    assert "replicas" not in by_kind(docs, "Deployment")["rel-almere-traffic-parking"]["spec"]


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ([], "tokens.existingSecret is required"),
        ([*REQUIRED, "--set", "services.parking.replicas=two"], "replicas"),
        ([*REQUIRED, "--set", "services.parking.port=70000"], "port"),
        ([*REQUIRED, "--set", "config.logLevel=LOUD"], "logLevel"),
        ([*REQUIRED, "--set", "nats.enabled=false"], "externalNats.url is required"),
        ([*REQUIRED, "--set", "postgresql.enabled=false"], "set database.existingSecret"),
        ([*REQUIRED, "--set", "services.buses.enabled=true"], "buses"),
        ([*REQUIRED, "--set", "services.optimizer.enabled=true"], "roadNetwork.configMap"),
        ([*REQUIRED, "--set", "serviceTokens.signals.existingSecret=s"], "signals"),
        ([*REQUIRED, "--set", "serviceTokens.parking.key="], "key"),
        (
            [*REQUIRED, *OPTIMIZER, "--set", "services.optimizer.replicas=2"],
            "runs as one replica",
        ),
    ],
)
def test_bad_values_fail_at_install(chart_without_dependencies: Path, values: list[str], message: str) -> None:
    result = helm("template", "rel", str(chart_without_dependencies), *values)
    assert result.returncode != 0
    assert message in result.stderr, result.stderr


def test_the_bus_users_file_is_what_the_code_grants() -> None:
    """files/bus-users.json is generated from contract.bus_access; a stale copy would let the chart's
    NATS grant other permissions than the local stack's."""
    generated = subprocess.run(
        [sys.executable, "-m", "apps.cli", "bus", "permissions"], capture_output=True, text=True, check=True
    ).stdout
    assert json.loads((CHART / "files" / "bus-users.json").read_text()) == json.loads(generated), (
        "regenerate: almere bus permissions > deploy/helm/almere-traffic/files/bus-users.json"
    )


def test_the_rendered_nats_users_work_on_a_real_nats_server(chart_without_dependencies: Path, tmp_path: Path) -> None:
    """What the chart renders for NATS, run by the real nats-server: each process gets in with its
    generated password and only within its permissions; anonymous clients stay out."""
    import asyncio
    import base64

    import nats

    from apps.natsd import start_nats
    from contract.bus import DEFAULT_LIMITS, PARKING, ensure_stream
    from contract.bus_access import USERS

    docs = render(chart_without_dependencies, *REQUIRED)
    secrets = by_kind(docs, "Secret")
    auth = secrets["almere-traffic-nats-auth"]["stringData"]["auth.conf"]
    passwords = {k: base64.b64decode(v).decode() for k, v in secrets["rel-almere-traffic-nats-users"]["data"].items()}
    assert set(passwords) == set(USERS) and all(len(p) >= 40 for p in passwords.values())
    assert not any(p in auth for p in passwords.values()), "the NATS configuration must hold only hashes"
    server = start_nats(tmp_path / "nats", config=auth)

    async def probe() -> None:
        with pytest.raises(nats.errors.Error, match="Authorization Violation"):
            await nats.connect(server.url, allow_reconnect=False, max_reconnect_attempts=0)
        nc = await nats.connect(
            server.url, user="parking", password=passwords["parking"], inbox_prefix=USERS["parking"].inbox_prefix
        )
        try:
            js = nc.jetstream(timeout=2)
            await ensure_stream(js, PARKING.config(DEFAULT_LIMITS))
            assert (await js.publish(PARKING.subject("occupancy_changed", "garage-a"), b"")).seq == 1
            with pytest.raises(nats.errors.TimeoutError):  # not its stream: refused, so never answered
                await js.publish("almere.incidents.v1.incident_reported.forged", b"")
        finally:
            await nc.close()

    try:
        asyncio.run(probe())
    finally:
        server.stop()
