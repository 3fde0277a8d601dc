"""rediss:// as docs/production.md has it: the server's certificate is checked, and a
private CA is given in the URL (``ssl_ca_certs``)."""

from __future__ import annotations

import datetime
import ipaddress
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from support import bearer, free_port, login, redis_server_binary, register

# A Redis of its own that speaks TLS only.
pytestmark = pytest.mark.slow

ONE_DAY = datetime.timedelta(days=1)


def _write_key(path: Path, key: ec.EllipticCurvePrivateKey) -> None:
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )


def make_certificates(directory: Path) -> tuple[Path, Path, Path]:
    """A private CA, and a certificate it signed for 127.0.0.1: (ca, cert, key) paths."""
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "authsvc test CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - ONE_DAY)
        .not_valid_after(now + ONE_DAY)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - ONE_DAY)
        .not_valid_after(now + ONE_DAY)
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    paths = directory / "ca.pem", directory / "server.pem", directory / "server.key"
    paths[0].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    paths[1].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    _write_key(paths[2], key)
    return paths


@pytest.fixture
def tls_redis(tmp_path: Path) -> Iterator[tuple[int, Path]]:
    """A Redis that speaks TLS only, on a free port: (port, CA file)."""
    ca, cert, key = make_certificates(tmp_path)
    port = free_port()
    process = subprocess.Popen(
        [
            redis_server_binary(), "--port", "0", "--tls-port", str(port),
            "--bind", "127.0.0.1", "--tls-cert-file", str(cert), "--tls-key-file", str(key),
            "--tls-ca-cert-file", str(ca), "--tls-auth-clients", "no",
            "--save", "", "--appendonly", "no", "--dir", str(tmp_path),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        client = redis.Redis(
            host="127.0.0.1", port=port, ssl=True, ssl_ca_certs=str(ca), socket_timeout=1
        )
        deadline = time.monotonic() + 10
        while True:
            if process.poll() is not None:
                pytest.skip("this redis-server was built without TLS")
            try:
                client.ping()
                break
            except redis.ConnectionError:
                assert time.monotonic() < deadline, "the TLS redis did not start"
                time.sleep(0.05)
        client.close()
        yield port, ca
    finally:
        process.kill()
        process.wait()


async def test_rediss_with_a_private_ca_in_the_url_runs_the_flows(
    tls_redis: tuple[int, Path], make_client: Any
) -> None:
    port, ca = tls_redis
    client = await make_client(redis_url=f"rediss://127.0.0.1:{port}/0?ssl_ca_certs={ca}")
    assert (await client.get("/readyz")).status == 200
    await register(client)
    pair = await login(client)
    assert (await client.get("/v1/auth/me", headers=bearer(pair))).status == 200


async def test_rediss_refuses_a_server_whose_certificate_it_cannot_check(
    tls_redis: tuple[int, Path], make_client: Any
) -> None:
    port, _ = tls_redis
    # The private CA is not in the system's trust store.
    client = await make_client(redis_url=f"rediss://127.0.0.1:{port}/0", store_timeout=1.0)
    assert (await client.get("/readyz")).status == 503
