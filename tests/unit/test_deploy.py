"""deploy/: the Compose file against the Compose Specification's schema, the Kubernetes
manifests against the Kubernetes schemas, and both against what pushcascade offers."""

from __future__ import annotations

import importlib.metadata
import json
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml

from connectors.settings import ConnectorSettings
from streams.cli import commands
from streams.settings import Connections, Tuning

DEPLOY = Path(__file__).parents[2] / "deploy"
SUBCOMMANDS = set(commands().commands)
K8S_VERSION = "1.33.0"


def compose_schema() -> dict[str, Any]:
    """The Compose Specification's JSON schema, as check-jsonschema vendors it."""
    (path,) = [f for f in importlib.metadata.files("check-jsonschema") or []
               if str(f).endswith("vendor/compose-spec.json")]
    return dict(json.loads(path.read_text()))


def manifests() -> list[dict[str, Any]]:
    """Every document of deploy/k8s/*.yaml."""
    return [doc for f in sorted((DEPLOY / "k8s").glob("*.yaml"))
            for doc in yaml.safe_load_all(f.read_text()) if doc]


def example_secrets() -> list[dict[str, Any]]:
    """The example Secrets (deploy/secrets.example.yaml), kept out of the applied folder."""
    return [d for d in yaml.safe_load_all((DEPLOY / "secrets.example.yaml").read_text()) if d]


def known_variable(name: str) -> bool:
    """Whether an environment variable is a pushcascade setting."""
    if name.upper() in {f.upper() for f in Connections.model_fields}:
        return True
    fields = {*Tuning.model_fields, *ConnectorSettings.model_fields}
    return name.startswith("PUSHCASCADE_") and (
        name.removeprefix("PUSHCASCADE_").lower() in fields
        or name.startswith("PUSHCASCADE_PROVIDER_"))


def subcommand(args: list[str]) -> str:
    """The pushcascade subcommand a container runs."""
    first = args[0] if args[0] != "pushcascade" else args[1]
    return first


def test_the_compose_file_follows_the_compose_specification():
    compose = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    jsonschema.validate(compose, compose_schema())
    services = compose["services"]
    assert {"kafka", "schema-registry", "clickhouse", "worker", "dispatcher", "acks-gateway",
            "sink"} <= set(services)
    for name, service in services.items():
        assert "limits" in service.get("deploy", {}).get("resources", {}), name
        if service.get("image", "").startswith("pushcascade"):
            for variable in service.get("environment", {}):
                assert known_variable(variable), (name, variable)
            command = service["command"]
            if command[0] != "sh":
                assert subcommand(command) in SUBCOMMANDS, (name, command)
    for name in ("kafka", "schema-registry", "clickhouse", "worker", "dispatcher", "sink"):
        assert "healthcheck" in services[name], name


def test_a_broken_compose_file_is_refused():
    compose = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    compose["services"]["worker"]["restart"] = ["always"]  # must be a string
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(compose, compose_schema())


@pytest.mark.parametrize("doc", [d for d in manifests() if not d["apiVersion"].startswith(
    "keda.sh/")], ids=lambda d: f"{d['kind']}/{d['metadata']['name']}")
def test_each_manifest_follows_the_kubernetes_schema(doc):
    """Built-in kinds (KEDA's ScaledObjects are checked against the workloads below)."""
    kubernetes_validate.validate(doc, K8S_VERSION, strict=True)


def test_the_manifests_fit_together():
    docs = manifests()
    config = next(d for d in docs if d["kind"] == "ConfigMap")["data"]
    secret = {k: v for d in example_secrets() for k, v in d["stringData"].items()}
    assert all(known_variable(v) for v in [*config, *secret])
    partitions = int(config["PUSHCASCADE_PARTITIONS"])
    workloads = {d["metadata"]["name"]: d for d in docs
                 if d["kind"] in ("StatefulSet", "Deployment", "Job")}
    for w in workloads.values():
        spec = w["spec"]["template"]["spec"]
        for container in spec["containers"]:
            args = container.get("args") or container["command"]
            if args[0] != "sh":
                assert subcommand(args) in SUBCOMMANDS, w["metadata"]["name"]
    assert workloads["pushcascade-workers"]["spec"]["replicas"] <= partitions
    groups = {"pushcascade-workers": "pushcascade", "pushcascade-dispatcher":
              "pushcascade-dispatch"}
    for scaled in (d for d in docs if d["kind"] == "ScaledObject"):
        target = scaled["spec"]["scaleTargetRef"]["name"]
        assert target in workloads
        assert scaled["spec"]["maxReplicaCount"] <= partitions  # no idle consumers
        (trigger,) = scaled["spec"]["triggers"]
        assert trigger["metadata"]["consumerGroup"] == groups[target]
        assert trigger["metadata"]["bootstrapServers"] == config["KAFKA_BOOTSTRAP_SERVERS"]
        assert trigger["metadata"]["sasl"] == config["KAFKA_SASL_MECHANISM"].lower().replace(
            "-", "_").replace("sha_", "sha")  # SCRAM-SHA-512 -> scram_sha512
        auth = next(d for d in docs if d["kind"] == "TriggerAuthentication"
                    and d["metadata"]["name"] == trigger["authenticationRef"]["name"])
        for ref in auth["spec"]["secretTargetRef"]:
            assert ref["name"] == "pushcascade-keda" and ref["key"] in secret
    claims = workloads["pushcascade-workers"]["spec"]["volumeClaimTemplates"]
    assert claims and config["PUSHCASCADE_STORE"] == "rocksdb://"


def test_no_secret_value_is_in_the_folder_that_is_applied():
    """`kubectl apply -f deploy/k8s/` must never overwrite the real Secrets with placeholders."""
    for doc in manifests():
        assert doc["kind"] != "Secret", doc["metadata"]["name"]
        assert "CHANGE-ME" not in yaml.safe_dump(doc), doc["metadata"]["name"]
    for doc in example_secrets():
        kubernetes_validate.validate(doc, K8S_VERSION, strict=True)


def workloads() -> dict[str, dict[str, Any]]:
    """Every Deployment, StatefulSet and Job by name."""
    return {d["metadata"]["name"]: d for d in manifests()
            if d["kind"] in ("StatefulSet", "Deployment", "Job")}


def test_every_pod_and_container_runs_locked_down():
    """Non-root, no privilege escalation, read-only root filesystem (a /tmp emptyDir), all
    capabilities dropped, seccomp RuntimeDefault, no service-account token."""
    assert set(workloads()) == {"pushcascade-workers", "pushcascade-dispatcher",
                                "pushcascade-gateway", "pushcascade-sink", "pushcascade-setup"}
    for name, w in workloads().items():
        pod = w["spec"]["template"]["spec"]
        context = pod["securityContext"]
        assert context["runAsNonRoot"] is True and context["runAsUser"] != 0, name
        assert context["seccompProfile"] == {"type": "RuntimeDefault"}, name
        assert pod["automountServiceAccountToken"] is False, name
        assert {"name": "tmp", "emptyDir": {}} in pod["volumes"], name
        for container in pod["containers"]:
            own = container["securityContext"]
            assert own["allowPrivilegeEscalation"] is False, name
            assert own["readOnlyRootFilesystem"] is True, name
            assert own["capabilities"] == {"drop": ["ALL"]}, name
            assert {"name": "tmp", "mountPath": "/tmp"} in container["volumeMounts"], name


def test_each_component_reads_only_its_own_secret():
    needs = {"pushcascade-workers": set(), "pushcascade-gateway": {"PUSHCASCADE_ACK_KEYS"},
             "pushcascade-dispatcher": {"PUSHCASCADE_ACK_KEYS"},
             "pushcascade-sink": {"CLICKHOUSE_DSN"}, "pushcascade-setup": {"CLICKHOUSE_DSN"}}
    secrets = {d["metadata"]["name"]: set(d["stringData"]) for d in example_secrets()}
    used = []
    for name, w in workloads().items():
        (container,) = w["spec"]["template"]["spec"]["containers"]
        refs = [e["secretRef"]["name"] for e in container["envFrom"] if "secretRef" in e]
        assert len(refs) == 1, name
        keys = secrets[refs[0]]
        assert needs[name] <= keys, name
        for key in {"PUSHCASCADE_ACK_KEYS", "CLICKHOUSE_DSN"} - needs[name]:
            assert key not in keys, (name, key)
        providers = {k for k in keys if k.startswith("PUSHCASCADE_PROVIDER_")}
        assert name == "pushcascade-dispatcher" or providers <= {
            "PUSHCASCADE_PROVIDER_WECHAT_CALLBACK_TOKEN",
            "PUSHCASCADE_PROVIDER_EMAIL_WEBHOOK_PUBLIC_KEY"}, name
        used.append(refs[0])
    assert len(set(used)) == len(used)  # one Secret per component


def test_network_policies_admit_the_public_only_to_the_gateway():
    policies = [d for d in manifests() if d["kind"] == "NetworkPolicy"]
    deny = [p for p in policies if p["spec"]["podSelector"] == {}]
    assert deny and all(not p["spec"].get("ingress") for p in deny)  # default: nothing in
    for policy in policies:
        for rule in policy["spec"].get("ingress", []):
            if not rule.get("from"):  # from anywhere
                assert policy["spec"]["podSelector"] == {
                    "matchLabels": {"app.kubernetes.io/name": "pushcascade-gateway"}}
                assert rule["ports"] == [{"protocol": "TCP", "port": 8791}]
    by_target = {p["spec"]["podSelector"].get("matchLabels", {}).get(
        "app.kubernetes.io/name"): p for p in policies}
    clickhouse = by_target["clickhouse"]["spec"]["ingress"][0]["from"]
    assert {tuple(f["podSelector"]["matchLabels"].values())[0] for f in clickhouse} == {
        "pushcascade-sink", "pushcascade-setup", "true"}  # and analysts' pods
    kafka = by_target["kafka"]["spec"]["ingress"][0]["from"]
    assert all("ipBlock" not in f for f in kafka)
    labels = {k: v for w in workloads().values()
              for k, v in w["spec"]["template"]["metadata"]["labels"].items()
              if k == "app.kubernetes.io/part-of"}
    assert labels == {"app.kubernetes.io/part-of": "pushcascade"}  # what the Kafka rule admits


def test_the_simulator_is_never_deployed_and_images_are_pinned():
    import re

    config = next(d for d in manifests() if d["kind"] == "ConfigMap")["data"]
    assert not any(k.startswith("PUSHCASCADE_PROVIDER_SIMULATOR") for k in config)
    for w in workloads().values():
        for container in w["spec"]["template"]["spec"]["containers"]:
            assert "simulate-providers" not in [*container.get("args", []),
                                                *container.get("command", [])]
            assert re.fullmatch(r"[\w./-]+:\d+\.\d+\.\d+", container["image"]), container
    compose = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    for name, service in compose["services"].items():
        image = service.get("image", "")
        assert ":" in image and not image.endswith(":latest"), (name, image)
    assert config["SCHEMA_REGISTRY_URL"].startswith("https://")  # TLS, with basic auth:
    assert all("SCHEMA_REGISTRY_BASIC_AUTH" in d["stringData"] for d in example_secrets()
               if d["metadata"]["name"] in ("pushcascade-gateway", "pushcascade-sink"))


def test_a_broken_manifest_is_refused():
    doc = next(d for d in manifests() if d["kind"] == "StatefulSet")
    doc["spec"]["replicas"] = "two"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(doc, K8S_VERSION, strict=True)


def test_the_grafana_dashboard_shows_metrics_and_views_that_exist():
    import re

    import prometheus_client

    import connectors.metrics  # noqa: F401  (registers)
    import streams.metrics  # noqa: F401
    from connectors.clickhouse.tables import VIEWS

    dashboard = json.loads((DEPLOY / "grafana-dashboard.json").read_text())
    registered = {m.name for m in prometheus_client.REGISTRY.collect()}
    exprs = [t["expr"] for p in dashboard["panels"] for t in p["targets"] if "expr" in t]
    sqls = [t["rawSql"] for p in dashboard["panels"] for t in p["targets"] if "rawSql" in t]
    assert exprs and sqls
    for expr in exprs:
        for name in re.findall(r"pushcascade_[a-z_]+", expr):
            base = re.sub(r"_(total|bucket|count|sum)$", "", name)
            assert base in registered, (name, expr)
    for sql in sqls:
        assert any(f"pushcascade.{view} " in sql for view in VIEWS), sql
    assert len({p["id"] for p in dashboard["panels"]}) == len(dashboard["panels"])
