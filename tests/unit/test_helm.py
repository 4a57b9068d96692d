"""The Helm chart, rendered and linted with the real Helm SDK and validated against the Kubernetes schemas.

No cluster is needed: rendering is offline. The kinds Kubernetes does not define (ServiceMonitor, PrometheusRule)
are checked for what matters here: that their alert expressions use metrics the code exports.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import helm_python
import kubernetes_validate
import pytest
import yaml
from prometheus_client import REGISTRY

from replicator import metrics  # noqa: F401  (registers the metrics the chart must reference)
from replicator.adapters.kafka.producer import DELIVERY_TIMEOUT_MS
from replicator.cli import build_parser
from replicator.core.config import Config, parse_config

CHART = Path(__file__).resolve().parents[2] / "helm" / "redis-dynamodb-replicator"
PRODUCTION = yaml.safe_load((CHART / "ci" / "production-values.yaml").read_text())
KUBERNETES = "1.30.0"
CUSTOM_KINDS = {"ServiceMonitor", "PrometheusRule"}
VALUES = pytest.mark.parametrize("values", [{}, PRODUCTION], ids=["default", "production"])
# Listeners on three Redis: two entries name their own (one of them in capture shards), one uses redis.*.
SEVERAL_REDIS = {
    "redis": {"urlSecret": {"name": "shared-redis", "key": "url"}},
    "listener": {"instances": [{"name": "big", "shards": 3, "url": "redis://big:6379/0"},
                               {"name": "other", "urlSecret": {"name": "redis-other", "key": "url"}},
                               {"name": "main"}]},
    "snapshot": {"enabled": True, "shards": 2},
}
# The sharded verify Job with every option set (tests/unit/test_helm_verify.py).
VERIFY = {"verify": {"enabled": True, "shards": 3, "parallelism": 2, "maxKeysPerSecond": 1000000, "maxRcu": 2.5,
                     "workers": 8, "repair": True}}
LAYOUTS = pytest.mark.parametrize("values", [{}, PRODUCTION, SEVERAL_REDIS, VERIFY],
                                  ids=["default", "production", "several-redis", "verify"])


def rendered(values: dict) -> dict[str, str]:
    return helm_python.Chart.load(CHART).render(values, name="rep", namespace="cdc", is_install=True)


def render(values: dict) -> list[dict]:
    docs = []
    for path, text in sorted(rendered(values).items()):
        if path.endswith(".yaml"):
            docs.extend(doc for doc in yaml.safe_load_all(text) if doc)
    return docs


def of_kind(docs: list[dict], kind: str) -> list[dict]:
    return [d for d in docs if d["kind"] == kind]


def exported_metric_names() -> set[str]:
    names = set()
    for family in REGISTRY.collect():
        if not family.name.startswith("replicator_"):
            continue
        suffixes = {"counter": ["_total"], "histogram": ["_bucket", "_count", "_sum"]}.get(family.type, [""])
        names.update(family.name + suffix for suffix in suffixes)
    return names


@LAYOUTS
def test_lint_is_clean_in_strict_mode(values):
    report = helm_python.lint(CHART, values, strict=True, kube_version=f"v{KUBERNETES}")
    assert report["errors"] == [] and report["messages"] == [], report


@LAYOUTS
def test_every_manifest_is_valid_for_kubernetes(values):
    docs = render(values)
    for doc in docs:
        if doc["kind"] in CUSTOM_KINDS:
            assert doc["apiVersion"] == "monitoring.coreos.com/v1"
            continue
        kubernetes_validate.validate(doc, KUBERNETES, strict=True)
    assert {d["kind"] for d in docs} >= {"ConfigMap", "Deployment", "StatefulSet", "Service", "ServiceAccount"}


@VALUES
def test_the_config_map_holds_a_config_the_replicator_accepts(values):
    (config_map,) = [d for d in of_kind(render(values), "ConfigMap") if "config.yaml" in d["data"]]
    config = parse_config(yaml.safe_load(config_map["data"]["config.yaml"]))
    assert config.kafka.partitions == (values or yaml.safe_load((CHART / "values.yaml").read_text()))["config"][
        "kafka"]["partitions"]


@VALUES
def test_env_vars_given_to_containers_are_config_overrides_the_replicator_knows(values):
    known = {f"REPLICATOR_{section}_{name}".upper() for section, field in Config.model_fields.items()
             if hasattr(field.annotation, "model_fields") for name in field.annotation.model_fields}
    known.add("VERIFY_RUN")  # not config: the verify Job's uid, expanded into its args as --run $(VERIFY_RUN)
    docs = render(values)
    for doc in of_kind(docs, "Deployment") + of_kind(docs, "StatefulSet") + of_kind(docs, "Job"):
        for container in doc["spec"]["template"]["spec"]["containers"]:
            assert {e["name"] for e in container["env"]} <= known


@LAYOUTS
def test_the_cli_accepts_what_every_container_runs(values):
    """The args are the image's entrypoint's (`replicator`): what its parser refuses, the pod exits 2 on at start."""
    parser = build_parser()
    for doc in render({**values, "snapshot": {**values.get("snapshot", {}), "enabled": True}}):
        if doc["kind"] not in ("Deployment", "StatefulSet", "Job") or doc["metadata"]["name"].endswith("-verify"):
            continue  # verify's --shard is checked by tests/unit/test_helm_verify.py
        for container in doc["spec"]["template"]["spec"]["containers"]:
            args = parser.parse_args(container["args"])
            assert args.command in ("listen", "apply", "snapshot") and args.log_level == "INFO", container["args"]


def test_production_layout_listeners_appliers_snapshot_and_safety():
    docs = render(PRODUCTION)
    deployments = {d["metadata"]["name"]: d for d in of_kind(docs, "Deployment")}
    listeners = [d for name, d in deployments.items() if "-listener-" in name]
    assert [d["metadata"]["labels"]["replicator/redis-node"] for d in listeners] == ["cluster"]
    assert all(d["spec"]["replicas"] == 1 for d in listeners)
    (applier,) = of_kind(docs, "StatefulSet")
    assert applier["metadata"]["name"] == "rep-redis-dynamodb-replicator-applier"
    assert applier["spec"]["replicas"] == 12 and applier["spec"]["podManagementPolicy"] == "Parallel"
    # Static group membership: each applier pod's stable name is its group.instance.id.
    applier_env = {e["name"]: e for e in applier["spec"]["template"]["spec"]["containers"][0]["env"]}
    instance_id = applier_env["REPLICATOR_KAFKA_GROUP_INSTANCE_ID"]
    assert instance_id["valueFrom"] == {"fieldRef": {"fieldPath": "metadata.name"}}
    assert "REPLICATOR_KAFKA_GROUP_INSTANCE_ID" not in {
        e["name"] for e in listeners[0]["spec"]["template"]["spec"]["containers"][0]["env"]}
    dynamic = of_kind(render({"applier": {"staticMembership": False}}), "StatefulSet")[0]
    assert "REPLICATOR_KAFKA_GROUP_INSTANCE_ID" not in {
        e["name"] for e in dynamic["spec"]["template"]["spec"]["containers"][0]["env"]}

    for doc in [*listeners, applier]:
        pod = doc["spec"]["template"]["spec"]
        (container,) = pod["containers"]
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert container["securityContext"]["readOnlyRootFilesystem"] is True
        assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
        assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
        assert pod["serviceAccountName"] == "rep-redis-dynamodb-replicator"
    env = {e["name"]: e for e in listeners[0]["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["REPLICATOR_REDIS_URL"]["valueFrom"]["secretKeyRef"] == {"name": "messaging-redis", "key": "url"}
    assert env["REPLICATOR_KAFKA_SASL_PASSWORD"]["valueFrom"]["secretKeyRef"]["name"] == "messaging-msk"
    assert "REPLICATOR_DYNAMODB_ACCESS_KEY_ID" not in env  # IRSA instead of keys

    (account,) = of_kind(docs, "ServiceAccount")
    assert account["metadata"]["annotations"]["eks.amazonaws.com/role-arn"].endswith(":role/messaging-replicator")
    (job,) = of_kind(docs, "Job")
    assert job["metadata"]["annotations"]["helm.sh/hook"] == "post-install"
    assert job["spec"]["template"]["spec"]["containers"][0]["args"][:3] == ["--log-level", "INFO", "snapshot"]
    (budget,) = of_kind(docs, "PodDisruptionBudget")
    assert budget["spec"]["maxUnavailable"] == 2
    assert budget["spec"]["selector"]["matchLabels"]["app.kubernetes.io/component"] == "applier"
    (monitor,) = of_kind(docs, "ServiceMonitor")
    (service,) = of_kind(docs, "Service")
    assert monitor["spec"]["endpoints"][0]["port"] == service["spec"]["ports"][0]["name"] == "metrics"


def test_one_listener_deployment_per_instance():
    values = {"listener": {"instances": [{"name": "a", "url": "redis://a:6379/0"},
                                         {"name": "b", "urlSecret": {"name": "redis-b", "key": "url"}}]}}
    listeners = [d for d in of_kind(render(values), "Deployment") if "-listener-" in d["metadata"]["name"]]
    envs = [{e["name"]: e for e in d["spec"]["template"]["spec"]["containers"][0]["env"]} for d in listeners]
    assert [e["REPLICATOR_REDIS_NODE_NAME"]["value"] for e in envs] == ["a", "b"]
    assert envs[0]["REPLICATOR_REDIS_URL"]["value"] == "redis://a:6379/0"
    assert envs[1]["REPLICATOR_REDIS_URL"]["valueFrom"]["secretKeyRef"]["name"] == "redis-b"


def test_a_sharded_instance_gets_one_listener_per_capture_shard():
    values = {"listener": {"instances": [{"name": "big", "shards": 3}, {"name": "small"}]}}
    listeners = [d for d in of_kind(render(values), "Deployment") if "-listener-" in d["metadata"]["name"]]
    assert [d["metadata"]["name"].split("-listener-")[1] for d in listeners] == [
        "big-shard-0", "big-shard-1", "big-shard-2", "small"]
    envs = [{e["name"]: e.get("value") for e in d["spec"]["template"]["spec"]["containers"][0]["env"]}
            for d in listeners]
    assert [(e["REPLICATOR_CAPTURE_SHARD"], e["REPLICATOR_CAPTURE_SHARDS"]) for e in envs] == [
        ("0", "3"), ("1", "3"), ("2", "3"), ("0", "1")]
    assert len({tuple(sorted(d["spec"]["selector"]["matchLabels"].items())) for d in listeners}) == 4


def test_a_sharded_snapshot_is_an_indexed_job_whose_index_is_the_shard():
    (job,) = of_kind(render({"snapshot": {"enabled": True, "shards": 4}}), "Job")
    assert (job["spec"]["completionMode"], job["spec"]["completions"], job["spec"]["parallelism"]) == (
        "Indexed", 4, 4)
    env = {e["name"]: e for e in job["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["REPLICATOR_CAPTURE_SHARDS"]["value"] == "4"
    assert env["REPLICATOR_CAPTURE_SHARD"]["valueFrom"]["fieldRef"]["fieldPath"] == (
        "metadata.annotations['batch.kubernetes.io/job-completion-index']")
    (plain,) = of_kind(render({"snapshot": {"enabled": True}}), "Job")
    assert "completionMode" not in plain["spec"]
    plain_env = {e["name"] for e in plain["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert "REPLICATOR_CAPTURE_SHARD" not in plain_env


# The objects a NOTES command may name, by the kind/name prefixes kubectl accepts.
KUBECTL_KINDS = {"deployment": "Deployment", "deploy": "Deployment", "statefulset": "StatefulSet",
                 "sts": "StatefulSet", "job": "Job"}


@pytest.mark.parametrize("values", [{}, PRODUCTION, SEVERAL_REDIS, {**SEVERAL_REDIS, "applier": {
    "enabled": False}}, {**VERIFY, "snapshot": {"enabled": True}}],
    ids=["default", "production", "several-redis", "no-applier", "verify"])
def test_notes_commands_name_objects_the_chart_renders_and_count_every_listener_shard(values):
    """What NOTES tells the user to run must work after the install: a `kubectl exec deploy/…` on what is a
    StatefulSet, or a count that forgets capture shards, sends them looking for pods that do not exist."""
    notes = next(text for path, text in rendered(values).items() if path.endswith("NOTES.txt"))
    docs = render(values)
    objects = {(d["kind"], d["metadata"]["name"]) for d in docs}
    commands = [line.strip() for line in notes.splitlines() if line.strip().startswith("kubectl ")]
    assert commands, notes
    named = set()
    for command in commands:
        words = command.split()
        if "-n" in words:
            assert words[words.index("-n") + 1] == "cdc", command
        targets = [w.split("/", 1) for w in words if re.fullmatch(r"[a-z]+/[a-z0-9][a-z0-9.-]*", w)]
        assert targets, f"{command!r} names no kind/name"
        for kind, name in targets:
            assert (KUBECTL_KINDS.get(kind), name) in objects, f"{command!r}: no {kind} {name} is rendered"
            named.add((KUBECTL_KINDS[kind], name))
    # Every backfill Job is there to follow, and the status command runs in a pod that exists.
    assert {o for o in objects if o[0] == "Job"} <= named
    assert any(kind in ("StatefulSet", "Deployment") for kind, _ in named)

    listeners = [d for d in of_kind(docs, "Deployment")
                 if d["metadata"]["labels"]["app.kubernetes.io/component"] == "listener"]
    assert int(re.search(r"Listeners: (\d+)", notes).group(1)) == len(listeners)


@VALUES
def test_pods_outlive_the_producers_delivery_timeout_after_sigterm(values):
    """After SIGTERM a listener or snapshot pod waits for Kafka to acknowledge what it published, for at most the
    producer's delivery timeout. A grace period shorter than that SIGKILLs the pod while events Kafka would still take
    are in its queue; the number is read from the producer, so raising the timeout without the chart fails here."""
    docs = render({**values, "snapshot": {**values.get("snapshot", {}), "enabled": True}})
    pods = [d["spec"]["template"]["spec"] for kind in ("Deployment", "StatefulSet", "Job") for d in of_kind(docs, kind)]
    assert {"Deployment", "StatefulSet", "Job"} <= {d["kind"] for d in docs}
    for pod in pods:
        assert pod["terminationGracePeriodSeconds"] > DELIVERY_TIMEOUT_MS / 1000


def test_every_redis_of_the_listener_entries_gets_a_snapshot_job_of_its_own():
    """A listener entry with its own Redis was never backfilled: the one Job read only the top-level redis.*."""
    values = {**SEVERAL_REDIS, "listener": {"instances": SEVERAL_REDIS["listener"]["instances"][:2]}}
    jobs = {d["metadata"]["name"].removeprefix("rep-redis-dynamodb-replicator-"): d
            for d in of_kind(render(values), "Job")}
    envs = {name: {e["name"]: e for e in job["spec"]["template"]["spec"]["containers"][0]["env"]}
            for name, job in jobs.items()}
    # One Job per Redis, however many capture shards listen to it; none for a top-level Redis no entry uses.
    assert sorted(envs) == ["snapshot-big", "snapshot-other"]
    big, other = envs["snapshot-big"], envs["snapshot-other"]
    assert big["REPLICATOR_REDIS_URL"] == {"name": "REPLICATOR_REDIS_URL", "value": "redis://big:6379/0"}
    assert other["REPLICATOR_REDIS_URL"]["valueFrom"]["secretKeyRef"] == {"name": "redis-other", "key": "url"}
    # Under the node name its listeners publish under.
    assert [e["REPLICATOR_REDIS_NODE_NAME"]["value"] for e in (big, other)] == ["big", "other"]
    for name, job in jobs.items():  # each Job split like the single one was: snapshot.shards indexed pods
        assert (job["spec"]["completionMode"], job["spec"]["completions"]) == ("Indexed", 2), name
        assert envs[name]["REPLICATOR_CAPTURE_SHARDS"]["value"] == "2"

    # The listeners read the same Redis as their Job: an entry's own url is not overridden by the top-level Secret.
    listeners = [d for d in of_kind(render(values), "Deployment") if "-listener-big" in d["metadata"]["name"]]
    assert len(listeners) == 3
    for listener in listeners:
        env = {e["name"]: e for e in listener["spec"]["template"]["spec"]["containers"][0]["env"]}
        assert env["REPLICATOR_REDIS_URL"] == big["REPLICATOR_REDIS_URL"]

    # An entry without its own Redis brings back the Job of the top-level one, under its old name.
    (shared,) = [d for d in of_kind(render(SEVERAL_REDIS), "Job")
                 if d["metadata"]["name"] == "rep-redis-dynamodb-replicator-snapshot"]
    env = {e["name"]: e for e in shared["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["REPLICATOR_REDIS_URL"]["valueFrom"]["secretKeyRef"] == {"name": "shared-redis", "key": "url"}


def test_defaults_stay_minimal():
    kinds = sorted(d["kind"] for d in render({}))
    assert kinds == ["ConfigMap", "Deployment", "PodDisruptionBudget", "Service", "ServiceAccount", "StatefulSet"]


def test_alerts_and_the_dashboard_use_metrics_the_code_exports():
    docs = render(PRODUCTION)
    (rule,) = of_kind(docs, "PrometheusRule")
    alerts = {r["alert"]: r["expr"] for group in rule["spec"]["groups"] for r in group["rules"]}
    assert set(alerts) >= {"ReplicatorConsumerLagHigh", "ReplicatorEndToEndLatencyHigh", "ReplicatorDeadLetters",
                           "ReplicatorNotificationGap", "ReplicatorCapturedButNotApplied"}
    (dashboard_map,) = [d for d in of_kind(docs, "ConfigMap") if d["metadata"]["labels"].get("grafana_dashboard")]
    dashboard = json.loads(dashboard_map["data"]["redis-dynamodb-replicator.json"])
    # Rows have no targets of their own; a collapsed row holds its panels.
    panels = [t["expr"] for p in dashboard["panels"] for q in [p, *p.get("panels", [])] for t in q.get("targets", [])]
    exported = exported_metric_names()
    for expr in [*alerts.values(), *panels]:
        used = set(re.findall(r"\breplicator_[a-z_]+", expr))
        assert used and used <= exported, f"{expr!r} uses {sorted(used - exported)}, not exported"


def test_more_appliers_than_partitions_is_refused_with_the_fix():
    with pytest.raises(helm_python.HelmError, match=r"applier.replicas \(13\) is more than config.kafka.partitions "
                                                   r"\(12\).*lower applier.replicas or add partitions"):
        render({"applier": {"replicas": 13}})


def test_the_image_runs_as_the_user_the_chart_expects():
    dockerfile = (CHART.parents[1] / "Dockerfile").read_text()
    pod = yaml.safe_load((CHART / "values.yaml").read_text())["podSecurityContext"]
    assert f"USER {pod['runAsUser']}:{pod['runAsGroup']}" in dockerfile
    assert 'ENTRYPOINT ["replicator"]' in dockerfile
    assert f"EXPOSE {yaml.safe_load((CHART / 'values.yaml').read_text())['metrics']['port']}" in dockerfile
