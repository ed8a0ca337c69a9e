"""A shared secret and TLS (README, "One of each"), and servers that stay on loopback unless told otherwise."""
import errno
import shutil
import subprocess
import sys

import grpc
import pytest

import pfs
from clusters import Cluster
from pfs.protocol import wire
from pfs.protocol.transport import Credentials

SECRET = "correct horse battery staple"


def round_trip(client: pfs.Client, name: str) -> None:
    assert client.pfs_create(name, 4) == 0, pfs.pfs_last_error()
    fd = client.pfs_open(name, pfs.PFS_READ_WRITE)
    assert client.pfs_write(fd, b"secret data", 11, 0) == 11
    buf = bytearray(11)
    assert client.pfs_read(fd, buf, 11, 0) == 11 and buf == b"secret data"
    assert client.pfs_close(fd) == 0


def test_every_rpc_without_the_secret_is_refused(tmp_path):
    secret_file = tmp_path / "secret"
    secret_file.write_text(SECRET + "\n")
    cluster = Cluster(tmp_path / "data", extra_args=("--secret-file", str(secret_file))).start()
    try:
        stranger = pfs.Client(metaserver=cluster.address, credentials=Credentials())
        assert stranger.pfs_initialize() == -1
        assert pfs.pfs_last_error().errno == errno.EACCES
        wrong = pfs.Client(metaserver=cluster.address, credentials=Credentials(secret="guess"))
        assert wrong.pfs_initialize() == -1

        member = pfs.Client(metaserver=cluster.address, credentials=Credentials(secret=SECRET))
        assert member.pfs_initialize() > 0
        round_trip(member, "f")
        # A client may read the secret from the servers' own file (PFS_SECRET_FILE), as the
        # `pfs` command does: it reads and writes like one given the secret.
        done = subprocess.run([sys.executable, "-m", "pfs", "ls", "-l"], cwd=tmp_path,
                              capture_output=True, text=True, timeout=60,
                              env={**cluster.env(PFS_SECRET_FILE=str(secret_file)),
                                   "PFS_SECRET": "not this one"})
        assert done.returncode == 0 and "f" in done.stdout, done.stderr
        # The fileservers refuse too: a direct read without the secret.
        for address in member.fileservers().values():
            with grpc.insecure_channel(address) as channel:
                with pytest.raises(grpc.RpcError) as refused:
                    channel.unary_unary(wire.READ_METHOD)(wire.read_request(1, 0, 11))
                assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
        member.pfs_finish(member.pfs_initialize())
    finally:
        cluster.stop()


@pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl command")
def test_tls_on_every_port(tmp_path):
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                    "-keyout", str(key), "-out", str(cert), "-subj", "/CN=localhost",
                    "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost"],
                   check=True, capture_output=True)
    cluster = Cluster(tmp_path / "data", extra_args=(
        "--tls-cert", str(cert), "--tls-key", str(key))).start()
    try:
        trusting = pfs.Client(metaserver=cluster.address,
                              credentials=Credentials(tls_ca=str(cert)))
        assert trusting.pfs_initialize() > 0, pfs.pfs_last_error()
        round_trip(trusting, "f")
        trusting.pfs_finish(trusting.pfs_initialize())
        plaintext = pfs.Client(metaserver=cluster.address, credentials=Credentials(tls_ca=""))
        assert plaintext.pfs_initialize() == -1
    finally:
        cluster.stop()


def signed(tmp_path, ca: str, name: str, extensions: str = "") -> tuple[str, str]:
    """A certificate and key for `name`, signed by the CA `ca` (ca.pem, ca.key in tmp_path)."""
    key, csr, cert = (str(tmp_path / f"{name}.{ext}") for ext in ("key", "csr", "pem"))
    extfile = tmp_path / f"{name}.ext"
    extfile.write_text(extensions)
    subprocess.run(["openssl", "req", "-newkey", "rsa:2048", "-nodes", "-keyout", key,
                    "-out", csr, "-subj", f"/CN={name}"], check=True, capture_output=True)
    subprocess.run(["openssl", "x509", "-req", "-in", csr, "-CA", f"{ca}.pem", "-CAkey",
                    f"{ca}.key", "-CAcreateserial", "-out", cert, "-days", "1", "-extfile",
                    str(extfile)], check=True, capture_output=True)
    return cert, key


@pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl command")
def test_mutual_tls_admits_only_holders_of_a_certificate(tmp_path, monkeypatch):
    ca = str(tmp_path / "ca")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                    "-keyout", f"{ca}.key", "-out", f"{ca}.pem", "-subj", "/CN=pfs-test-ca"],
                   check=True, capture_output=True)
    server_cert, server_key = signed(tmp_path, ca, "localhost",
                                     "subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    client_cert, client_key = signed(tmp_path, ca, "a-client")
    cluster = Cluster(tmp_path / "data", extra_args=(  # fileservers attach with their own
        "--tls-cert", server_cert, "--tls-key", server_key, "--tls-ca", f"{ca}.pem",
        "--tls-client-ca", f"{ca}.pem")).start()
    try:
        monkeypatch.setenv("PFS_TLS_CA", f"{ca}.pem")
        anonymous = pfs.Client(metaserver=cluster.address)
        assert anonymous.pfs_initialize() == -1  # TLS, but no certificate to show
        monkeypatch.setenv("PFS_TLS_CERT", client_cert)
        monkeypatch.setenv("PFS_TLS_KEY", client_key)
        holder = pfs.Client(metaserver=cluster.address)
        assert holder.pfs_initialize() > 0, pfs.pfs_last_error()
        round_trip(holder, "f")
        holder.pfs_finish(holder.pfs_initialize())
        monkeypatch.delenv("PFS_TLS_KEY")
        half = pfs.Client(metaserver=cluster.address)
        assert half.pfs_initialize() == -1 and "PFS_TLS_KEY" in str(pfs.pfs_last_error())
    finally:
        cluster.stop()


def test_no_secret_means_loopback_only(tmp_path):
    """Without a secret a server refuses an address other machines reach, and takes any of
    loopback's (all of 127.0.0.0/8, as ::1)."""
    done = subprocess.run([sys.executable, "-m", "pfs", "metaserver", "--data-dir",
                           str(tmp_path), "--host", "0.0.0.0", "--port", "0"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert done.returncode != 0
    assert "without a shared secret" in done.stderr
    cluster = Cluster(tmp_path / "loopback", extra_args=("--host", "127.0.0.7")).start()
    try:
        assert cluster.address.startswith("127.0.0.7:")
        client = cluster.client()
        round_trip(client, "f")
        client.pfs_finish(client.pfs_initialize())
    finally:
        cluster.stop()


def test_an_empty_secret_is_an_error_not_no_secret(tmp_path, monkeypatch):
    """An empty secret file stops a server from starting (it would turn authentication off);
    an empty PFS_SECRET makes a client's initialize fail instead of connecting without one."""
    empty = tmp_path / "secret"
    empty.write_text("\n")
    done = subprocess.run([sys.executable, "-m", "pfs", "metaserver", "--data-dir",
                           str(tmp_path / "meta"), "--port", "0", "--secret-file", str(empty)],
                          cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert done.returncode != 0
    assert "is empty" in done.stderr
    monkeypatch.setenv("PFS_SECRET", "")
    client = pfs.Client(metaserver="127.0.0.1:1")
    assert client.pfs_initialize() == -1
    assert pfs.pfs_last_error().errno == errno.EINVAL
    assert "empty" in str(pfs.pfs_last_error())
