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

from services.common.config import Settings
from services.common.oidc import verifier_from

ROOT = Path(__file__).resolve().parents[1]
CHART = ROOT / "deploy" / "helm" / "almere-traffic"
OPTIMIZER = ["--set", "services.optimizer.enabled=true", "--set", "roadNetwork.configMap=almere-network"]
HELM = Path(os.environ.get("ALMERE_HELM", ROOT / ".tools" / "helm"))
KUBERNETES = "1.31"
REQUIRED = ["--set", "tokens.existingSecret=almere-tokens"]
GATEWAY = ["--set", "gateway.enabled=true", "--set", "serviceTokens.gateway.existingSecret=almere-gateway-token"]
# Two polled feeds (one on a port of its own) and one push-only, as an operator would list them.
FEEDS = [
    {
        "name": "stadhuisplein",
        "url": "https://opendata.example.nl/spdp/dynamic/7b4c1c3e.json",
        "format": "spdp",
        "intervalSeconds": 30,
        "facilities": {"7b4c1c3e-2f4a-4d1e-9a52-0c7e5f1d2a61": "garage-stadhuisplein"},
    },
    {
        "name": "forum",
        "url": "http://feeds.example.nl:8081/datex2/parking-status",
        "format": "datex2",
        "facilities": {"ALM-P01-FORUM": "facilities/garage-forum"},
    },
    {"name": "pushed", "format": "spdp", "facilities": {"p1": "garage-p1"}},
]
WITH_FEEDS = [
    "--set-json",
    f"gateway.feeds={json.dumps(FEEDS)}",
    "--set",
    "gateway.feedTokens.existingSecret=almere-feed-tokens",
]
INGRESS = [
    "--set",
    "gateway.ingress.enabled=true",
    "--set",
    "gateway.ingress.className=nginx",
    "--set",
    "gateway.ingress.host=data.almere.example",
    "--set",
    "gateway.ingress.tls.secretName=data-almere-tls",
]


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


@pytest.mark.parametrize("values", [[], [*GATEWAY, *WITH_FEEDS, *INGRESS]], ids=["defaults", "gateway"])
def test_lint_passes_with_only_the_dependency_warning(values: list[str]) -> None:
    if not HELM.exists():
        pytest.fail(f"{HELM} is missing")
    result = helm("lint", str(CHART), *REQUIRED, *values)
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
        [*GATEWAY, *WITH_FEEDS, *INGRESS, "--set", "gateway.autoscaling.enabled=true", *OPTIMIZER],
    ],
    ids=["defaults", "external-nats-db-hpa-simulation", "gateway-feeds-ingress-hpa"],
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
        "rel-almere-traffic-counters",
        "rel-almere-traffic-incidents",
        "rel-almere-traffic-parking",
        "rel-almere-traffic-partners",
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
    # Replicas of their own picture each (durables named after the pod): rolled like the others.
    assert deployment["replicas"] == 2 and "strategy" not in deployment
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


def test_every_service_runs_replicas_and_keeps_one_up_through_disruptions(chart_without_dependencies: Path) -> None:
    """Leader election (services/common/leader.py) lets every service run several replicas: none is
    down for a node drain or a rollout."""
    docs = render(chart_without_dependencies, *REQUIRED, *OPTIMIZER, "--set", "services.whatif.enabled=true")
    deployments, budgets = by_kind(docs, "Deployment"), by_kind(docs, "PodDisruptionBudget")
    names = ["parking", "incidents", "signals", "optimizer", "whatif", "partners", "counters"]
    for name in names:
        assert deployments[f"rel-almere-traffic-{name}"]["spec"]["replicas"] >= 2, name
        assert budgets[f"rel-almere-traffic-{name}"]["spec"]["minAvailable"] == 1, name
    config = by_kind(docs, "ConfigMap")["rel-almere-traffic"]["data"]
    assert (config["ALMERE_LEADER_POLL_SECONDS"], config["ALMERE_LEADER_LEASE_SECONDS"]) == ("1", "5")


def env_of(deployment: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {e["name"]: e for e in deployment["spec"]["template"]["spec"]["containers"][0]["env"]}


def settings_of(docs: list[dict[str, Any]], name: str, monkeypatch: pytest.MonkeyPatch) -> Settings:
    """What the process of Deployment `name` would read: the shared ConfigMap, then its own env
    (a Secret's value stands in as "from-secret")."""
    deployment = by_kind(docs, "Deployment")[name]
    env = dict(by_kind(docs, "ConfigMap")["rel-almere-traffic"]["data"])
    env |= {k: e.get("value", "from-secret") for k, e in env_of(deployment).items()}
    for key in os.environ:
        if key.startswith("ALMERE_"):
            monkeypatch.delenv(key)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    return Settings()


def test_every_process_accepts_its_rendered_settings(
    chart_without_dependencies: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Values are float64 in Helm: a large integer rendered as 1.073741824e+09 stops a pod at start."""
    docs = render(chart_without_dependencies, *REQUIRED, *GATEWAY, *OPTIMIZER)
    for name in by_kind(docs, "Deployment"):
        settings = settings_of(docs, name, monkeypatch)
        assert settings.stream_max_bytes == 1024**3 and settings.max_message_bytes == 1024**2, name


def test_the_identity_provider_reaches_every_service(
    chart_without_dependencies: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    issuer = "https://login.almere.example/realms/city"
    docs = render(chart_without_dependencies, *REQUIRED, *OPTIMIZER, "--set", f"oidc.issuer={issuer}")
    for name in by_kind(docs, "Deployment"):
        verifier = verifier_from(settings_of(docs, name, monkeypatch))
        assert verifier is not None, name
        assert (verifier.config.issuer, verifier.config.audience, verifier.config.jwks_url) == (
            issuer,
            "almere-traffic",
            None,
        ), name
    plain = render(chart_without_dependencies, *REQUIRED)
    assert all(verifier_from(settings_of(plain, n, monkeypatch)) is None for n in by_kind(plain, "Deployment"))


def test_the_gateway_serves_http_with_its_own_token_and_no_bus_or_database(
    chart_without_dependencies: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from limits import parse

    docs = render(chart_without_dependencies, *REQUIRED, *GATEWAY)
    gateway = by_kind(docs, "Deployment")["rel-almere-traffic-gateway"]
    assert gateway["spec"]["replicas"] == 2
    template = gateway["spec"]["template"]
    pod = template["spec"]
    (container,) = pod["containers"]
    assert container["args"] == ["serve", "gateway"]
    assert container["ports"] == [{"name": "http", "containerPort": 8080, "protocol": "TCP"}]
    assert container["startupProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    assert container["securityContext"]["readOnlyRootFilesystem"] is True and pod["securityContext"]["runAsNonRoot"]
    # The shared configuration and tokens file like every service; neither NATS nor database access.
    assert container["envFrom"] == [{"configMapRef": {"name": "rel-almere-traffic"}}]
    assert {"name": "tokens", "secret": {"secretName": "almere-tokens"}} in pod["volumes"]
    env = env_of(gateway)
    assert not [k for k in env if k.startswith(("ALMERE_NATS", "ALMERE_DATABASE"))]
    assert not [k for k in template["metadata"]["labels"] if k.startswith("almere-traffic/client-of")]
    assert env["ALMERE_SERVICE_TOKEN"]["valueFrom"]["secretKeyRef"] == {"name": "almere-gateway-token", "key": "token"}
    assert template["metadata"]["annotations"]["prometheus.io/port"] == "8080"
    # What the process reads: the Services' addresses and ports, and limits it can parse.
    settings = settings_of(docs, "rel-almere-traffic-gateway", monkeypatch)
    services = by_kind(docs, "Service")
    for name, address in (("parking", settings.parking_address), ("incidents", settings.incidents_address)):
        host, port = address.split(":")
        assert host in services and services[host]["metadata"]["labels"]["app.kubernetes.io/component"] == name
        assert int(port) == services[host]["spec"]["ports"][0]["port"]
    assert settings.port_for("gateway") == 8080 and settings.bind_host == "0.0.0.0"  # noqa: S104 - the pod's own IP
    assert parse(settings.gateway_rate_limit) and settings.gateway_max_body_bytes == 5 * 1024 * 1024
    assert settings.gateway_feed_max_age_seconds == 15 and settings.gateway_feeds_file is None
    service = services["rel-almere-traffic-gateway"]["spec"]
    assert service["type"] == "ClusterIP"
    assert service["ports"] == [
        {"name": "http", "port": 8080, "targetPort": "http", "protocol": "TCP", "appProtocol": "http"}
    ]
    assert by_kind(docs, "PodDisruptionBudget")["rel-almere-traffic-gateway"]["spec"]["minAvailable"] == 1
    # Opt-in pieces stay out until asked for.
    assert not by_kind(docs, "Ingress") and "rel-almere-traffic-gateway-feeds" not in by_kind(docs, "ConfigMap")
    assert "rel-almere-traffic-gateway" not in by_kind(docs, "HorizontalPodAutoscaler")
    # Off by default: nothing of the gateway without gateway.enabled.
    defaults = render(chart_without_dependencies, *REQUIRED)
    assert not [d for d in defaults if "gateway" in d["metadata"]["name"]]


def test_the_gateway_polls_the_feeds_it_is_given(chart_without_dependencies: Path) -> None:
    from services.gateway.ingest.poller import FeedConfig

    docs = render(chart_without_dependencies, *REQUIRED, *GATEWAY, *WITH_FEEDS)
    rendered = json.loads(by_kind(docs, "ConfigMap")["rel-almere-traffic-gateway-feeds"]["data"]["feeds.json"])["feeds"]
    assert [f["name"] for f in rendered] == ["stadhuisplein", "forum", "pushed"]
    first = rendered[0]
    assert first == {
        "name": "stadhuisplein",
        "url": FEEDS[0]["url"],
        "format": "spdp",
        "interval_seconds": 30,
        "facilities": FEEDS[0]["facilities"],
        "token_file": "/etc/almere/feed-tokens/stadhuisplein",
    }
    assert "url" not in rendered[2] and "interval_seconds" not in rendered[1]  # push-only; the default interval
    for feed in rendered:  # what the gateway's own feed checks accept
        FeedConfig(
            name=feed["name"],
            format=feed["format"],
            operator_token="from-the-secret",
            facilities=feed["facilities"],
            url=feed.get("url"),
            interval_s=feed.get("interval_seconds", 60),
        )
    gateway = by_kind(docs, "Deployment")["rel-almere-traffic-gateway"]
    pod = gateway["spec"]["template"]["spec"]
    mounts = {m["name"]: m for m in pod["containers"][0]["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    path = env_of(gateway)["ALMERE_GATEWAY_FEEDS_FILE"]["value"]
    assert path == f"{mounts['feeds']['mountPath']}/feeds.json"
    assert volumes["feeds"]["configMap"]["name"] == "rel-almere-traffic-gateway-feeds"
    assert mounts["feed-tokens"] == {"name": "feed-tokens", "mountPath": "/etc/almere/feed-tokens", "readOnly": True}
    assert volumes["feed-tokens"]["secret"]["secretName"] == "almere-feed-tokens"
    assert "checksum/feeds" in gateway["spec"]["template"]["metadata"]["annotations"]  # new feeds roll the pods
    # Egress to the feeds' URLs' ports: 443 (https) and the one named in the http URL.
    egress = by_kind(docs, "NetworkPolicy")["rel-almere-traffic-gateway"]["spec"]["egress"]
    assert sorted({p["port"] for rule in egress for p in rule["ports"]}) == [53, 443, 8081, 50051, 50052]


def test_the_gateway_ingress_renders_only_when_enabled(chart_without_dependencies: Path) -> None:
    assert not by_kind(render(chart_without_dependencies, *REQUIRED, *GATEWAY), "Ingress")
    assert not by_kind(
        render(chart_without_dependencies, *REQUIRED, "--set", "gateway.ingress.enabled=true"), "Ingress"
    )
    docs = render(chart_without_dependencies, *REQUIRED, *GATEWAY, *INGRESS)
    spec = by_kind(docs, "Ingress")["rel-almere-traffic-gateway"]["spec"]
    assert spec["ingressClassName"] == "nginx"
    assert spec["tls"] == [{"hosts": ["data.almere.example"], "secretName": "data-almere-tls"}]
    (rule,) = spec["rules"]
    assert rule["host"] == "data.almere.example"
    paths = {p["path"] for p in rule["http"]["paths"]}
    assert {"/feeds", "/api"} <= paths and not paths & {"/", "/metrics", "/healthz", "/readyz"}
    for path in rule["http"]["paths"]:
        assert path["backend"]["service"] == {"name": "rel-almere-traffic-gateway", "port": {"name": "http"}}


def test_network_policy_lets_the_gateway_reach_parking_and_incidents_only(chart_without_dependencies: Path) -> None:
    docs = render(chart_without_dependencies, *REQUIRED, *GATEWAY)
    policies = by_kind(docs, "NetworkPolicy")
    gateway_pods = by_kind(docs, "Deployment")["rel-almere-traffic-gateway"]["spec"]["selector"]["matchLabels"]
    policy = policies["rel-almere-traffic-gateway"]["spec"]
    assert policy["podSelector"]["matchLabels"] == gateway_pods
    # In: HTTP from anywhere (the public edge). Out: DNS and the two services' gRPC, nothing else.
    assert policy["ingress"] == [{"ports": [{"port": "http", "protocol": "TCP"}]}]
    reached = {
        rule["to"][0]["podSelector"]["matchLabels"]["app.kubernetes.io/component"]: rule["ports"][0]["port"]
        for rule in policy["egress"]
        if "to" in rule
    }
    assert reached == {"parking": 50051, "incidents": 50052}
    assert sorted({p["port"] for rule in policy["egress"] for p in rule["ports"]}) == [53, 50051, 50052]
    # The two services admit the gateway's pods on their gRPC port; the signal service has no need to.
    for name, admits in (("parking", True), ("incidents", True), ("signals", False)):
        ingress = policies[f"rel-almere-traffic-{name}"]["spec"]["ingress"]
        from_gateway = [
            rule
            for rule in ingress
            if any(peer.get("podSelector", {}).get("matchLabels") == gateway_pods for peer in rule.get("from", []))
        ]
        assert bool(from_gateway) == admits, name
        assert all(rule["ports"] == [{"port": "grpc", "protocol": "TCP"}] for rule in from_gateway)
    # Callers narrowed to the Ingress controller's namespace.
    controller = {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "ingress-nginx"}}}
    docs = render(
        chart_without_dependencies,
        *REQUIRED,
        *GATEWAY,
        "--set-json",
        f"gateway.networkPolicy.from=[{json.dumps(controller)}]",
    )
    assert by_kind(docs, "NetworkPolicy")["rel-almere-traffic-gateway"]["spec"]["ingress"][0]["from"] == [controller]


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
        ([*REQUIRED, *OPTIMIZER, "--set", "services.optimizer.serveProcesses=2"], "serveProcesses must be 1"),
        ([*REQUIRED, "--set", "serviceTokens.parking.key="], "key"),
        ([*REQUIRED, "--set", "gateway.enabled=true"], "serviceTokens.gateway.existingSecret is required"),
        ([*REQUIRED, *GATEWAY, "--set", "services.incidents.enabled=false"], "needs services.incidents.enabled"),
        ([*REQUIRED, *GATEWAY, *WITH_FEEDS[:2]], "gateway.feedTokens.existingSecret is required"),
        ([*REQUIRED, *GATEWAY, *WITH_FEEDS, "--set", "gateway.feeds[0].format=csv"], "format"),
        ([*REQUIRED, *GATEWAY, *WITH_FEEDS, "--set", "gateway.feeds[1].name=stadhuisplein"], "appears twice"),
        ([*REQUIRED, *GATEWAY, *WITH_FEEDS, "--set", "gateway.feeds[0].token=abc"], "token"),
        ([*REQUIRED, *GATEWAY, "--set", "gateway.rateLimit=lots"], "rateLimit"),
        ([*REQUIRED, *GATEWAY, *INGRESS, "--set", "gateway.ingress.host="], "gateway.ingress.host is required"),
        ([*REQUIRED, "--set", "oidc.issuer=http://idp.example"], "issuer"),
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


TLS = ["--set", "tls.existingSecret=almere-tls", "--set", "tls.nats=true"]
NATS_TLS = [
    "--set",
    "nats.config.nats.tls.enabled=true",
    "--set",
    "nats.config.nats.tls.secretName=almere-tls",
    "--set",
    "nats.tlsCA.enabled=true",
    "--set",
    "nats.tlsCA.secretName=almere-tls",
]


def test_tls_mounts_the_certificates_into_every_pod_for_grpc_and_nats(
    chart_without_dependencies: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """tls.existingSecret goes into every pod (the twin's too); the services serve and call over mutual
    TLS and connect to NATS with their certificate; probes that cannot speak TLS check the port."""
    twin = ["--set", "simulation.enabled=true", "--set", "simulation.credentialsSecret=almere-sim"]
    whatif = ["--set", "services.whatif.enabled=true", "--set", "serviceTokens.whatif.existingSecret=w"]
    docs = render(chart_without_dependencies, *REQUIRED, *GATEWAY, *OPTIMIZER, *whatif, *twin, *TLS, *NATS_TLS)
    for doc in docs:
        kubernetes_validate.validate(doc, KUBERNETES, strict=True)
    pods = {name: d["spec"]["template"]["spec"] for name, d in by_kind(docs, "Deployment").items()}
    pods |= {name: d["spec"]["template"]["spec"] for name, d in by_kind(docs, "Job").items()}
    assert "rel-almere-traffic-whatif-workers" in pods and "rel-almere-traffic-gateway" in pods
    for name, pod in pods.items():
        assert {"name": "tls", "secret": {"secretName": "almere-tls"}} in pod["volumes"], name
        mount = {"name": "tls", "mountPath": "/etc/almere/tls", "readOnly": True}
        assert mount in pod["containers"][0]["volumeMounts"], name
    tls_dir = Path("/etc/almere/tls")
    for name in by_kind(docs, "Deployment"):
        s = settings_of(docs, name, monkeypatch)
        assert (s.tls_cert_file, s.tls_key_file) == (tls_dir / "tls.crt", tls_dir / "tls.key"), name
        assert s.tls_ca_file == s.tls_client_ca_file == tls_dir / "ca.crt", name
        assert s.nats_tls and s.stream_replicas == 3, name
    for name, pod in pods.items():
        container = pod["containers"][0]
        if "gateway" in name:
            assert container["readinessProbe"]["httpGet"]["scheme"] == "HTTPS"
        elif "readinessProbe" in container:
            port = container["ports"][0]["containerPort"]
            for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
                assert container[probe]["tcpSocket"] == {"port": port} and "grpc" not in container[probe], name
    endpoints = json.loads(by_kind(docs, "ConfigMap")["rel-almere-traffic-simulation"]["data"]["endpoints.json"])
    assert endpoints["tls"] == {
        "ca_file": "/etc/almere/tls/ca.crt",
        "cert_file": "/etc/almere/tls/tls.crt",
        "key_file": "/etc/almere/tls/tls.key",
        "server_name": "",
        "nats": True,
    }
    # Without the Secret: nothing mounted, plain gRPC probed over gRPC, no TLS settings.
    plain = render(chart_without_dependencies, *REQUIRED)
    config = by_kind(plain, "ConfigMap")["rel-almere-traffic"]["data"]
    assert not any(key.startswith(("ALMERE_TLS_", "ALMERE_NATS_TLS")) for key in config)
    assert config["ALMERE_STREAM_REPLICAS"] == "3"


@pytest.mark.parametrize(
    ("values", "message"),
    [
        (["--set", "tls.nats=true"], "tls.nats needs tls.existingSecret"),
        (TLS, "set nats.config.nats.tls.enabled"),
    ],
    ids=["no-certificate", "bundled-nats-without-tls"],
)
def test_nats_tls_needs_a_certificate_and_a_nats_that_takes_tls(
    chart_without_dependencies: Path, values: list[str], message: str
) -> None:
    result = helm("template", "rel", str(chart_without_dependencies), *REQUIRED, *values)
    assert result.returncode != 0 and message in result.stderr
