"""Redis over TLS with an ACL user that has only the permissions the README documents: replication works."""

from __future__ import annotations

import shutil
import subprocess

import pytest
import redis

from replicator.core.cutover import MARK_PREFIX
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


#: What `replicator preflight --acl` printed before the cutover: no marker channel, no selector for the markers.
def _acl_before_the_cutover(acl: str) -> str:
    marks = MARK_PREFIX.decode() + "*"
    return acl.replace(f" &__keyspace@0__:{marks}", "").replace(f" (~{marks} +set +pexpire +del)", "")


@pytest.fixture
def tls_redis(stack, uid, tmp_path, request):
    ca = _certificates(tmp_path)
    port = free_port()
    # The user has exactly what `replicator preflight --acl` prints for these rules (or printed before the cutover).
    acl = minimal_acl(_rules(stack, uid))
    if getattr(request, "param", None) == "before-cutover":
        acl = _acl_before_the_cutover(acl)
        assert "mark" not in acl
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
    return messaging_config(stack, uid).rule_set


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
        # A cutover switch's marker, written as this user as `cutover switch` does: the listener takes it (deletes
        # it once all announced before it is published), which the user may do for markers only.
        user = redis.Redis.from_url(url, username="replicator", password="s3cret-pass", ssl_ca_certs=str(ca))
        marker = MARK_PREFIX + b"tls"
        user.set(marker, b"1", px=600_000)
        eventually(lambda: not admin.exists(marker), 30, message="the listener took the marker")
    # Apart from the markers the ACL user cannot write: the replicator needs none of that.
    for write in (lambda: user.set("x", "y"), lambda: user.delete("opponents:alice")):
        with pytest.raises(redis.exceptions.NoPermissionError):
            write()
    assert admin.zcard("opponents:alice") == 2


@pytest.mark.parametrize("tls_redis", ["before-cutover"], indirect=True)
def test_a_user_whose_acl_predates_the_cutover_still_replicates_and_is_told_what_a_switch_needs(
        stack, uid, tls_redis, caplog):
    admin, url, ca = tls_redis
    config = messaging_config(stack, uid, redis={"url": url, "username": "replicator", "password": "s3cret-pass",
                                                 "tls_ca_file": str(ca), "configure_notifications": False})
    with Running(config) as run:
        run.start_applier().start_listener()
        admin.zadd("opponents:alice", {"bob": 10})
        admin.hset("profile:alice", mapping={"name": "Alice"})
        assert_converged(admin, ddb(stack), config)
    refused = [r for r in caplog.records if "marker channel is refused" in r.getMessage()]
    assert len(refused) == 1, "warned once, with the way to grant it"
    assert "preflight --acl" in refused[0].getMessage()
