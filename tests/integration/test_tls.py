"""Redis over TLS with an ACL user that has only the permissions the README documents: replication works."""

from __future__ import annotations

import shutil
import subprocess

import pytest
import redis

from replicator.core.mapping import compile_rules
from replicator.local.stack import free_port
from replicator.tools.preflight import minimal_acl
from tests.support import Running, assert_converged, ddb, eventually, messaging_config

pytestmark = pytest.mark.skipif(not (shutil.which("redis-server") and shutil.which("openssl")),
                                reason="needs redis-server and openssl")



def _certificates(directory):
    """A throwaway CA and a server certificate for 127.0.0.1, made with openssl."""
    def run(*args):
        subprocess.run(["openssl", *args], cwd=directory, check=True, capture_output=True)

    run("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.crt", "-days", "2",
        "-subj", "/CN=replicator test CA")
    run("req", "-newkey", "rsa:2048", "-nodes", "-keyout", "server.key", "-out", "server.csr", "-subj", "/CN=127.0.0.1")
    (directory / "san.ext").write_text("subjectAltName=IP:127.0.0.1\n")
    run("x509", "-req", "-in", "server.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial",
        "-out", "server.crt", "-days", "2", "-extfile", "san.ext")
    return directory / "ca.crt"


@pytest.fixture
def tls_redis(stack, uid, tmp_path):
    ca = _certificates(tmp_path)
    port = free_port()
    # The user has exactly what `replicator preflight --acl` prints for these rules.
    acl = minimal_acl(_rules(stack, uid))
    (tmp_path / "redis.conf").write_text("\n".join([
        f"tls-port {port}", "port 0", "bind 127.0.0.1", 'save ""', "appendonly no", f"dir {tmp_path}",
        f"tls-cert-file {tmp_path / 'server.crt'}", f"tls-key-file {tmp_path / 'server.key'}",
        f"tls-ca-cert-file {ca}", "tls-auth-clients no", "notify-keyspace-events KEA",
        f"user replicator on >s3cret-pass {acl}", ""]))
    server = subprocess.Popen(["redis-server", str(tmp_path / "redis.conf")], stdout=subprocess.DEVNULL)
    admin = redis.Redis(host="127.0.0.1", port=port, ssl=True, ssl_ca_certs=str(ca))
    try:
        eventually(lambda: _pings(admin), 20, message="TLS redis-server up")
        yield admin, f"rediss://127.0.0.1:{port}/0", ca
    finally:
        server.kill()
        server.wait(10)


def _rules(stack, uid):
    return compile_rules(messaging_config(stack, uid))


def _pings(client):
    try:
        return client.ping()
    except redis.ConnectionError:
        return False


def test_replication_over_tls_as_a_least_privilege_acl_user(stack, uid, tls_redis):
    admin, url, ca = tls_redis
    config = messaging_config(stack, uid, redis={"url": url, "username": "replicator", "password": "s3cret-pass",
                                                 "tls_ca_file": str(ca), "configure_notifications": False})
    with pytest.raises(redis.ConnectionError):  # plain TCP is refused: the port speaks TLS only
        redis.Redis(port=int(url.rsplit(":", 1)[1].split("/")[0]), socket_timeout=2).ping()
    admin.zadd("opponents:before", {"a": 1, "b": 2})  # for the start re-snapshot
    with Running(config) as run:
        run.start_applier().start_listener()
        admin.zadd("opponents:alice", {"bob": 10, "carol": 20})
        admin.set("meta:alice:bob", "over TLS")
        admin.set("plain", "mirrored", px=600_000)
        assert_converged(admin, ddb(stack), config)
    # The ACL user cannot write: the replicator needs none of that.
    user = redis.Redis.from_url(url, username="replicator", password="s3cret-pass", ssl_ca_certs=str(ca))
    with pytest.raises(redis.exceptions.NoPermissionError):
        user.set("x", "y")
