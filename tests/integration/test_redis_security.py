"""Redis over TLS with an ACL user: jobs run, `status` works, and the password never shows.

A real redis-server listens on TLS only (no plain port, no unix socket), with certificates made at test
time by the `openssl` command (a CA and a server certificate for 127.0.0.1), the default user disabled
and one ACL user. The daemon and the CLI connect with
`rediss://asched:<password>@127.0.0.1:<port>/0?ssl_ca_certs=<ca.crt>`: redis-py verifies the server's
certificate against that CA and its address. The password must appear in no log line, no `status`
output, and no error printed for a wrong password.
"""

from __future__ import annotations

import json
import re
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import pytest
import redis
from adaptive_scheduler.exits import EXIT_UNAVAILABLE
from adaptive_scheduler.redis_server import find_binary, stop_process
from redis.backoff import NoBackoff
from redis.retry import Retry
from rq.job import Job, JobStatus
from rq.serializers import JSONSerializer

from tests.helpers import FIXTURES, cli, queue, running_daemon, wait_until

USER = "asched"
PASSWORD = "s3cret-PW"
WRONG_PASSWORD = "wr0ng-PW-zz"
INFO_LINE = re.compile(r"\d\d:\d\d:\d\d\.\d{3} (INFO|DEBUG) ")

pytestmark = pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl command")


@dataclass(frozen=True)
class TlsRedis:
    """A TLS-only redis-server: how to reach it, with whatever password."""

    port: int
    ca: Path
    process: subprocess.Popen[bytes]
    log: Path

    def url(self, password: str = PASSWORD, ca: Path | None = None) -> str:
        query = f"?ssl_ca_certs={quote(str(ca or self.ca))}"
        return f"rediss://{USER}:{quote(password)}@127.0.0.1:{self.port}/0{query}"


def openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=30)


def make_certificates(directory: Path) -> None:
    """A CA, and a server certificate it signed for 127.0.0.1 and localhost (EC keys: quick)."""
    key = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    openssl("req", "-x509", *key, "-keyout", "ca.key", "-out", "ca.crt", "-days", "2",
            "-subj", "/CN=adaptive-scheduler test CA",
            "-addext", "basicConstraints=critical,CA:TRUE",
            "-addext", "keyUsage=critical,keyCertSign,cRLSign", cwd=directory)  # fmt: skip
    openssl("req", "-new", *key, "-keyout", "server.key", "-out", "server.csr", "-subj", "/CN=127.0.0.1",
            cwd=directory)  # fmt: skip
    (directory / "server.ext").write_text(
        "subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\n"
        "keyUsage=critical,digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\n"
    )
    openssl("x509", "-req", "-in", "server.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial",
            "-out", "server.crt", "-days", "2", "-extfile", "server.ext", cwd=directory)  # fmt: skip


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def start_tls_redis(directory: Path) -> TlsRedis:
    make_certificates(directory)
    port = free_port()
    config = directory / "redis.conf"
    config.write_text(
        "\n".join(
            [
                "port 0",  # no plain TCP
                "bind 127.0.0.1",
                f"tls-port {port}",
                f"tls-cert-file {directory / 'server.crt'}",
                f"tls-key-file {directory / 'server.key'}",
                f"tls-ca-cert-file {directory / 'ca.crt'}",
                "tls-auth-clients no",  # clients prove themselves with the ACL password
                "user default off",
                f"user {USER} on >{PASSWORD} ~* &* +@all",
                f"dir {directory}",
                'save ""',
                "appendonly no",
                "loglevel warning",
            ]
        )
        + "\n"
    )
    log = directory / "redis.log"
    with log.open("ab") as out:
        process = subprocess.Popen(
            [find_binary(), str(config)], stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    server = TlsRedis(port, directory / "ca.crt", process, log)
    client = redis.Redis.from_url(server.url(), socket_timeout=1)
    deadline = time.monotonic() + 10
    try:
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"redis-server exited at start: {log.read_text()}")
            try:
                if client.ping():
                    return server
            except redis.ConnectionError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
    finally:
        client.close()


@pytest.fixture(scope="module")
def tls_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TlsRedis]:
    server = start_tls_redis(tmp_path_factory.mktemp("tls-redis"))
    try:
        yield server
    finally:
        stop_process(server.process)


@pytest.fixture()
def tls_client(tls_redis: TlsRedis) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(tls_redis.url())
    client.flushdb()
    yield client
    client.flushdb()
    client.close()


def error_lines(stderr: str) -> list[str]:
    """What stderr says besides the daemon's INFO/DEBUG log lines (start-up notes)."""
    return [line for line in stderr.strip().splitlines() if not INFO_LINE.match(line)]


def no_secret(text: str) -> None:
    for secret in (PASSWORD, WRONG_PASSWORD, quote(PASSWORD), quote(WRONG_PASSWORD)):
        assert secret not in text, f"the password {secret!r} leaked:\n{text[-3000:]}"


def test_the_plain_port_is_closed_and_the_default_user_is_off(tls_redis: TlsRedis) -> None:
    # TLS with the right password works; without TLS, or as the default user, nothing does
    with redis.Redis.from_url(tls_redis.url()) as client:
        assert client.acl_whoami() == USER
    plain = redis.Redis(host="127.0.0.1", port=tls_redis.port, socket_timeout=1, retry=Retry(NoBackoff(), 0))
    with pytest.raises(redis.ConnectionError):
        plain.ping()
    plain.close()
    anonymous = redis.Redis(
        host="127.0.0.1", port=tls_redis.port, ssl=True, ssl_ca_certs=str(tls_redis.ca), socket_timeout=2
    )
    with pytest.raises(redis.AuthenticationError):  # redis-py asks nothing; the server says NOAUTH
        anonymous.ping()
    anonymous.close()


def test_a_job_runs_over_tls_and_status_works_without_showing_the_password(
    tls_redis: TlsRedis, tls_client: redis.Redis
) -> None:
    url = tls_redis.url()
    # Given a daemon serving the TLS Redis as the ACL user (DEBUG logging: the most it ever says)
    with running_daemon(url) as daemon:
        # When a job is enqueued over TLS, with plain RQ
        job = queue(tls_client, 1).enqueue("tests.fixtures.jobs.add", 40, 2)
        # Then it runs to completion
        wait_until(lambda: job.get_status(refresh=True) == JobStatus.FINISHED)
        assert Job.fetch(job.id, connection=tls_client, serializer=JSONSerializer).return_value() == 42
        # and `status` (table and JSON) reads the same Redis over TLS
        status = wait_until(
            lambda: (
                (r := cli("status", "--json", env={"ASCHED_REDIS_URL": url})).returncode == 0
                and json.loads(r.stdout)["totals"].get("finished")
                and r
            ),
            timeout_s=15,
        )
        table = cli("status", env={"ASCHED_REDIS_URL": url})
        enqueued = cli(
            "enqueue", "add", "[1, 2]", "--priority", "P0", env={"ASCHED_REDIS_URL": url, **FIXTURES}
        )
        assert enqueued.returncode == 0, enqueued.stderr
        wait_until(
            lambda: (
                Job.fetch(enqueued.stdout.strip(), connection=tls_client).get_status() == JobStatus.FINISHED
            )
        )
        assert table.returncode == 0, table.stderr
        assert "live daemons: 1" in table.stdout
        assert json.loads(status.stdout)["queues"]["P1"]["finished"] == 1
        assert daemon.stop() == 0
        log = daemon.output()
    # and the password is in none of what the daemon and the CLI printed
    assert "daemon ready" in log
    no_secret("\n".join([log, status.stdout, status.stderr, table.stdout, table.stderr, enqueued.stderr]))


@pytest.mark.parametrize("command", [("run",), ("status",), ("status", "--json"), ("enqueue", "noop")])
def test_a_wrong_password_stops_with_one_line_that_does_not_show_it(
    tls_redis: TlsRedis, command: tuple[str, ...]
) -> None:
    result = cli(*command, env={"ASCHED_REDIS_URL": tls_redis.url(password=WRONG_PASSWORD), **FIXTURES})
    assert result.returncode == EXIT_UNAVAILABLE, (result.stdout, result.stderr)
    lines = error_lines(result.stderr)
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stderr
    assert "invalid username-password pair" in lines[0], lines[0]
    no_secret(result.stdout + result.stderr)


def test_an_untrusted_certificate_stops_with_one_line(tls_redis: TlsRedis, tmp_path: Path) -> None:
    # Given a CA the server's certificate was not signed by
    make_certificates(tmp_path)
    result = cli("run", env={"ASCHED_REDIS_URL": tls_redis.url(ca=tmp_path / "ca.crt")})
    assert result.returncode == EXIT_UNAVAILABLE, (result.stdout, result.stderr)
    lines = error_lines(result.stderr)
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    assert "certificate verify failed" in lines[0], lines[0]
    no_secret(result.stdout + result.stderr)


def test_a_password_changed_under_a_running_daemon_is_waited_out_without_showing_it(
    tls_redis: TlsRedis, tls_client: redis.Redis
) -> None:
    # Given an idle daemon serving the TLS Redis
    with running_daemon(tls_redis.url()) as daemon:
        # When the operator rotates the password and drops its connections
        tls_client.acl_setuser(USER, enabled=True, passwords=[f"-{PASSWORD}", f"+{WRONG_PASSWORD}"])
        tls_client.client_kill_filter(_type="normal", skipme=True)
        # (the first refusal may be the killed connection or the new password: either is logged)
        wait_until(
            lambda: any(w in daemon.output() for w in ("Redis unreachable", "refused the credentials")), 15
        )
        # and puts it back
        tls_client.acl_setuser(USER, enabled=True, passwords=[f"+{PASSWORD}", f"-{WRONG_PASSWORD}"])
        job = queue(tls_client, 2).enqueue("tests.fixtures.jobs.add", 1, 1)
        # Then the daemon kept running, serves again (its queue watches, which could not reconnect
        # meanwhile, are set again), and never printed either password
        try:
            wait_until(lambda: job.get_status(refresh=True) == JobStatus.FINISHED, timeout_s=20)
        except AssertionError:
            raise AssertionError(daemon.output()[-6000:]) from None
        assert daemon.process.poll() is None
        assert daemon.stop() == 0
        no_secret(daemon.output())


def test_a_refused_command_degrades_the_daemon_whose_log_never_shows_the_password(
    tls_redis: TlsRedis, tls_client: redis.Redis
) -> None:
    # Given a daemon serving the TLS Redis
    with running_daemon(tls_redis.url()) as daemon:
        # When Redis starts refusing the daemon's script (a permission taken away: not an outage)
        tls_client.acl_setuser(USER, enabled=True, commands=["-evalsha"])
        try:
            job = queue(tls_client, 1).enqueue("tests.fixtures.jobs.noop")
            # Then the daemon stays up and says what is wrong (no Redis error stops it)
            wait_until(lambda: "lacks a permission" in daemon.output(), timeout_s=10)
            assert daemon.process.poll() is None
        finally:
            tls_client.acl_setuser(USER, enabled=True, commands=["+@all"])
        # and once the permission is back it serves again
        wait_until(lambda: tls_client.hget(f"rq:job:{job.id}", "status") == b"finished", timeout_s=15)
        log = daemon.output()
    no_secret(log)
