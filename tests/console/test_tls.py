"""The console over TLS: HTTPS only, and the session cookie marked Secure."""

from __future__ import annotations

import datetime as dt
import ssl
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from controller.app.services import StartupError
from tests.console.conftest import PASSWORD, ConsoleSite, console_config, serve_site


def _self_signed(folder: Path) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=1))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), critical=False)
        .sign(key, hashes.SHA256())
    )
    cert_file, key_file = folder / "console.crt", folder / "console.key"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_file, key_file


@pytest.fixture(scope="module")
def tls_site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ConsoleSite, Path]]:
    tmp = tmp_path_factory.mktemp("console-tls")
    cert, key = _self_signed(tmp)
    raw = console_config(tmp)
    raw["console"] = {"port": 0, "tls_cert": str(cert), "tls_key": str(key)}
    with serve_site(raw) as site:
        yield site, cert


def test_the_console_speaks_https_and_its_cookie_is_secure(
    tls_site: tuple[ConsoleSite, Path],
) -> None:
    site, cert = tls_site
    assert site.url.startswith("https://localhost:")
    trusted = ssl.create_default_context(cafile=str(cert))
    answer = httpx.post(
        f"{site.url}/api/v1/session",
        json={"user": "officer", "password": PASSWORD},
        verify=trusted,
    )
    assert answer.status_code == 200
    cookie = answer.headers["set-cookie"].lower()
    assert "secure" in cookie
    assert "httponly" in cookie


def test_plain_http_gets_no_answer(tls_site: tuple[ConsoleSite, Path]) -> None:
    site, _ = tls_site
    with pytest.raises(httpx.HTTPError):
        httpx.get(site.url.replace("https://", "http://") + "/api/v1/health", timeout=5)


def test_a_missing_certificate_stops_the_start_with_its_name(tmp_path: Path) -> None:
    raw = console_config(tmp_path)
    missing = tmp_path / "nowhere.crt"
    raw["console"] = {"port": 0, "tls_cert": str(missing), "tls_key": str(missing)}
    with pytest.raises(StartupError, match=r"console did not start.*No such file"):  # noqa: SIM117
        with serve_site(raw):
            pass
