"""The chart's sharded verify Job (verify.enabled): an Indexed Job whose pod I runs `replicator verify --shard I/N`,
rendered with the Helm SDK as in test_helm.py, which also lints it and validates it against the Kubernetes schemas
(its VERIFY layout)."""

from __future__ import annotations

import contextlib
import io
import itertools

import pytest

from replicator.cli import build_parser
from tests.unit.test_helm import PRODUCTION, SEVERAL_REDIS, VERIFY, of_kind, render, rendered

ON = {"verify": {"enabled": True, "shards": 3}}
INDEX = "$(JOB_COMPLETION_INDEX)"


def verify_jobs(values: dict) -> list[dict]:
    return [d for d in of_kind(render(values), "Job")
            if d["metadata"]["labels"]["app.kubernetes.io/component"] == "verify"]


def container(job: dict) -> dict:
    (only,) = job["spec"]["template"]["spec"]["containers"]
    return only


def pod_args(job: dict, index: int) -> list[str]:
    """The args pod `index` runs: the Job controller sets JOB_COMPLETION_INDEX in its env, the kubelet expands it."""
    return [arg.replace(INDEX, str(index)) for arg in container(job)["args"]]


def flags(args: list[str]) -> dict[str, str]:
    return dict(itertools.pairwise(args))


def policy_action(job: dict, exit_code: int, conditions: frozenset[str] = frozenset()) -> str | None:
    """What the Job controller does with a failed pod: the action of the first podFailurePolicy rule that matches
    (the container's exit code, or a condition the pod has); None when no rule does, and the failure counts against
    backoffLimitPerIndex (the shard is retried)."""
    name = container(job)["name"]
    for rule in job["spec"]["podFailurePolicy"]["rules"]:
        codes = rule.get("onExitCodes")
        if codes and codes.get("containerName", name) == name and (
                (exit_code in codes["values"]) == (codes["operator"] == "In")):
            return rule["action"]
        if any(c["type"] in conditions and c["status"] == "True" for c in rule.get("onPodConditions", [])):
            return rule["action"]
    return None


def test_a_sharded_verify_is_an_indexed_job_whose_index_is_the_shard():
    (job,) = verify_jobs(ON)
    spec = job["spec"]
    assert (spec["completionMode"], spec["completions"], spec["parallelism"]) == ("Indexed", 3, 3)
    assert job["metadata"]["name"] == "rep-redis-dynamodb-replicator-verify"
    assert "annotations" not in job["metadata"]  # a plain Job, not a hook
    args = container(job)["args"]
    assert args[args.index("--shard") + 1] == f"{INDEX}/3"
    assert [flags(pod_args(job, i))["--shard"] for i in range(3)] == ["0/3", "1/3", "2/3"]
    assert {"verify", "--resume", "--json"} <= set(args)
    assert flags(args)["--config"] == "/etc/replicator/config.yaml"
    # The run is the Job's uid: its shards resume and merge together; a new Job verifies again.
    assert flags(args)["--run"] == "$(VERIFY_RUN)"
    (run,) = [e for e in container(job)["env"] if e["name"] == "VERIFY_RUN"]
    assert run["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.labels['batch.kubernetes.io/controller-uid']"
    # One shard: still Indexed (backoffLimitPerIndex needs it), the whole keyspace as shard 0/1.
    (single,) = verify_jobs({"verify": {"enabled": True}})
    assert (single["spec"]["completionMode"], single["spec"]["completions"]) == ("Indexed", 1)
    assert flags(pod_args(single, 0))["--shard"] == "0/1"


def test_drift_fails_its_index_without_a_retry_while_a_killed_shard_is_retried():
    """Exit 1 (drift) and 2 (config error) are a shard's answer: retrying finds the same, and failing the whole Job
    would stop the other shards. Any other failure is retried, and the shard resumes from its checkpoint."""
    (job,) = verify_jobs(ON)
    spec = job["spec"]
    assert spec["template"]["spec"]["restartPolicy"] == "Never"  # podFailurePolicy and backoffLimitPerIndex need it
    assert spec["backoffLimitPerIndex"] == 6
    assert "maxFailedIndexes" not in spec  # every shard runs, however many found drift
    assert policy_action(job, 1) == policy_action(job, 2) == "FailIndex"
    assert policy_action(job, 137) is None and policy_action(job, 3) is None  # counted, then retried
    # Evicted or preempted: retried without counting, whatever it exited with (it was cut short).
    assert policy_action(job, 143, frozenset({"DisruptionTarget"})) == "Ignore"
    assert policy_action(job, 1, frozenset({"DisruptionTarget"})) == "Ignore"
    assert "FailJob" not in {r["action"] for r in spec["podFailurePolicy"]["rules"]}


def test_verify_values_become_the_commands_flags():
    (job,) = verify_jobs(VERIFY)
    assert (job["spec"]["completions"], job["spec"]["parallelism"]) == (3, 2)
    args = container(job)["args"]
    given = flags(args)
    # Helm reads numbers as floats: an integer must not reach the command as 1e+06.
    assert (given["--workers"], given["--max-keys-per-second"], given["--max-rcu"]) == ("8", "1000000", "2.5")
    assert "--repair" in args
    default = container(verify_jobs({"verify": {"enabled": True}})[0])["args"]
    assert flags(default)["--workers"] == "4"
    assert not {"--max-keys-per-second", "--max-rcu", "--repair"} & set(default)


def test_verify_runs_like_the_other_pods_on_the_top_level_redis():
    """The same image, config, secrets, account and security as the snapshot Job; one Job, on redis.*, under the
    node name of the listener entry that captures it (REPAIR events name the node as its listener's do)."""
    docs = render({**PRODUCTION, **ON})
    (job,) = [d for d in of_kind(docs, "Job") if d["metadata"]["name"].endswith("-verify")]
    (snapshot,) = [d for d in of_kind(docs, "Job") if d["metadata"]["name"].endswith("-snapshot")]
    pod, snapshot_pod = job["spec"]["template"]["spec"], snapshot["spec"]["template"]["spec"]
    for key in ("serviceAccountName", "securityContext", "volumes", "terminationGracePeriodSeconds"):
        assert pod[key] == snapshot_pod[key], key
    mine, theirs = container(job), container(snapshot)
    for key in ("image", "securityContext", "volumeMounts", "resources"):
        assert mine[key] == theirs[key], key
    assert "livenessProbe" not in mine
    env, their_env = ({e["name"]: e for e in c["env"]} for c in (mine, theirs))
    assert env["REPLICATOR_REDIS_URL"]["valueFrom"]["secretKeyRef"] == {"name": "messaging-redis", "key": "url"}
    assert env["REPLICATOR_REDIS_NODE_NAME"]["value"] == "cluster"
    assert env["REPLICATOR_KAFKA_SASL_PASSWORD"] == their_env["REPLICATOR_KAFKA_SASL_PASSWORD"]
    assert job["spec"]["template"]["metadata"]["labels"]["app.kubernetes.io/component"] == "verify"

    # Listeners on several Redis: still one verify Job, of the top-level one (the entries' own are not verified).
    (job,) = verify_jobs({**SEVERAL_REDIS, **ON})
    env = {e["name"]: e for e in container(job)["env"]}
    assert env["REPLICATOR_REDIS_URL"]["valueFrom"]["secretKeyRef"] == {"name": "shared-redis", "key": "url"}
    assert env["REPLICATOR_REDIS_NODE_NAME"]["value"] == "main"


@pytest.mark.parametrize("values", [{}, PRODUCTION, SEVERAL_REDIS], ids=["default", "production", "several-redis"])
def test_verify_is_off_by_default(values):
    assert verify_jobs(values) == []
    notes = next(text for path, text in rendered(values).items() if path.endswith("NOTES.txt"))
    assert "replicator verify" not in notes


def test_notes_follow_the_shards_and_merge_their_records():
    notes = next(text for path, text in rendered(ON).items() if path.endswith("NOTES.txt"))
    job = "job/rep-redis-dynamodb-replicator-verify"
    assert f"kubectl -n cdc logs {job} --all-pods --follow" in notes
    assert f"kubectl -n cdc get {job} -o jsonpath='{{.status.failedIndexes}}'" in notes
    assert ("kubectl -n cdc exec statefulset/rep-redis-dynamodb-replicator-applier -- replicator verify --config "
            "/etc/replicator/config.yaml --report --shards 3") in notes
    # No pod of the chart to run it in: the command alone.
    alone = {**ON, "applier": {"enabled": False}, "listener": {"enabled": False}}
    notes = next(text for path, text in rendered(alone).items() if path.endswith("NOTES.txt"))
    assert "\n  replicator verify --config " in notes and notes.rstrip().endswith("--report --shards 3")


def _cli_has_sharded_verify() -> bool:
    with contextlib.redirect_stderr(io.StringIO()):
        try:
            build_parser().parse_args(["verify", "--config", "c", "--shard", "0/1", "--resume"])
        except SystemExit:
            return False
    return True


@pytest.mark.skipif(not _cli_has_sharded_verify(), reason="replicator verify has no --shard/--resume yet")
def test_the_cli_accepts_what_each_shard_runs():
    (job,) = verify_jobs(VERIFY)
    for index in range(3):
        args = build_parser().parse_args(pod_args(job, index))
        assert (args.command, args.json, args.repair, args.workers) == ("verify", True, True, 8)
