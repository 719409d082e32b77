"""OPC UA with Basic256Sha256 Sign&Encrypt and user/password, certificates made at test time.

The controller knows the PLC's certificate (a file or a pin) and refuses any other; the
emulated PLC admits only the client certificates of its trust list. One secure-only server
(its start-up is slow) serves every test, one line each; it trusts the controller's
certificate, not the intruder's."""

from __future__ import annotations

import contextlib
import logging
import shutil
import subprocess
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace
from pathlib import Path

import pytest
import pytest_asyncio
import yaml
from asyncua import ua
from asyncua.client.client import Client
from asyncua.ua.uaerrors import UaError, UaStatusCodeError
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from controller.app.site import load_config
from controller.core.clock import MonotonicClock
from controller.core.domain import DestinationReply, DestinationRequest
from controller.core.pins import fingerprint, first_certificate
from controller.core.reasons import Reason
from controller.core.settings import ConfigError
from plc_adapters.cert_pins import certificate_der, parse_pin
from plc_adapters.certs import CertificatePair, make_certificate
from plc_adapters.cli import Emulator, Protocol, load_emulator_site
from plc_adapters.layout import Layout
from plc_adapters.opcua_server import OpcUaHost, OpcUaServerImage
from plc_adapters.opcua_wire import Credentials, OpcUaTransport, Security
from plc_adapters.settings import SettingsError
from tests.plc.rigs import NAMESPACE, open_rig, wait_for

module_loop = pytest.mark.asyncio(loop_scope="module")  # the one server's loop
USER = Credentials("sorter-client", "correct horse battery staple")
EXAMPLE = Path(__file__).resolve().parents[1] / "config" / "plc" / "site-wire.yaml"


@dataclass(frozen=True)
class Pki:
    """Certificates of one test run, in a temporary folder (no key lands in the repository)."""

    plc: CertificatePair
    controller: CertificatePair
    intruder: CertificatePair
    trusted: Path  # a folder holding the controller's certificate only

    def server(self) -> Security:
        plc = self.plc
        return Security(
            plc.certificate, plc.private_key, None, plc.application_uri, trusted=(self.trusted,)
        )

    def client(
        self,
        pair: CertificatePair | None = None,
        *,
        peer_certificate: Path | None = None,
        peer_sha256: str | None = None,
        accept_any_peer: bool = False,
    ) -> Security:
        """A client with ``pair``'s material (default the controller's) that knows the PLC's
        certificate as told (by default: as the PLC's certificate file)."""
        pair = pair or self.controller
        if peer_certificate is None and peer_sha256 is None and not accept_any_peer:
            peer_certificate = self.plc.certificate
        return Security(
            pair.certificate,
            pair.private_key,
            peer_certificate,
            pair.application_uri,
            peer_sha256,
            accept_any_peer,
        )

    @property
    def plc_pin(self) -> str:
        return fingerprint(certificate_der(self.plc.certificate))


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    folder: Path = tmp_path_factory.mktemp("pki")
    plc = make_certificate(folder / "plc", "plc", "urn:cargogate:test:plc")
    controller = make_certificate(folder / "controller", "controller", "urn:cargogate:test:ctl")
    intruder = make_certificate(folder / "intruder", "intruder", "urn:cargogate:test:intruder")
    trusted = folder / "trusted"
    trusted.mkdir()
    shutil.copy(controller.certificate, trusted)
    return Pki(plc, controller, intruder, trusted)


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def secure_host(pki: Pki) -> AsyncIterator[OpcUaHost]:
    host = OpcUaHost("127.0.0.1", 0, NAMESPACE, security=pki.server(), credentials=USER)
    yield host
    await host.stop()


async def _refusal(rig_security: Security, host: OpcUaHost) -> str:
    """The link alarm's message of a client with ``rig_security``, once raised; the adapter
    must not be connected."""
    async with open_rig(
        "opcua", opcua_host=host, security=(None, rig_security), credentials=(None, USER)
    ) as rig:
        source = f"{rig.sorter.line}/plc-link"
        await wait_for(lambda: source in rig.alarms.active, "the link alarm")
        assert not rig.adapter.connected
        return rig.alarms.active[source].message


async def _carries_telegrams(client: Security, host: OpcUaHost) -> None:
    async with open_rig(
        "opcua", opcua_host=host, security=(None, client), credentials=(None, USER)
    ) as rig:
        rig.plant.request(42, "SECURE1", rig.clock.now())
        (request,) = await rig.receive(1)
        assert isinstance(request, DestinationRequest)
        assert request.barcode == "SECURE1"
        await rig.sorter.reply(DestinationReply(request.line, 42, 2, Reason.RISK_RED))
        await wait_for(lambda: len(rig.replies) == 1, "the reply at the PLC")
        assert rig.replies[0].lane == 2
        assert f"{rig.sorter.line}/plc-link" not in rig.alarms.active


# --- the controller knows the PLC's certificate ---------------------------------------------


@module_loop
async def test_configured_server_certificate_session_with_password_carries_telegrams(
    pki: Pki, secure_host: OpcUaHost
) -> None:
    await _carries_telegrams(pki.client(), secure_host)


@module_loop
async def test_pinned_server_certificate_carries_telegrams(
    pki: Pki, secure_host: OpcUaHost
) -> None:
    bare_lower_case = pki.plc_pin.replace(":", "").lower()  # the other accepted spelling
    await _carries_telegrams(pki.client(peer_sha256=bare_lower_case), secure_host)


def _certificate_files(pki: Pki, folder: Path) -> dict[str, Path]:
    """The PLC's certificate as files hold it in the field: a PEM chain (its certificate,
    then an issuer's), DER certificates back to back, a DER file with a trailing newline."""
    plc, other = pki.plc.certificate.read_bytes(), pki.intruder.certificate.read_bytes()

    def pem(der: bytes) -> bytes:
        return x509.load_der_x509_certificate(der).public_bytes(serialization.Encoding.PEM)

    contents = {
        "chain.pem": pem(plc) + pem(other),
        "chain.der": plc + other,
        "newline.der": plc + b"\n",
    }
    for name, content in contents.items():
        (folder / name).write_bytes(content)
    return {name: folder / name for name in contents}


@pytest.mark.parametrize("name", ["chain.pem", "chain.der", "newline.der"])
def test_the_pin_of_a_certificate_file_is_its_first_certificate(
    pki: Pki, tmp_path: Path, name: str
) -> None:
    path = _certificate_files(pki, tmp_path)[name]
    assert fingerprint(certificate_der(path)) == pki.plc_pin
    if shutil.which("openssl") is not None:  # as the documented command prints it
        form = "DER" if name.endswith(".der") else "PEM"
        printed = subprocess.run(
            ["openssl", "x509", "-inform", form, "-in", str(path),
             "-noout", "-fingerprint", "-sha256"],
            capture_output=True, text=True, check=True,
        ).stdout  # fmt: skip
        assert parse_pin(printed.split("=", 1)[1]) == pki.plc_pin


@pytest.mark.parametrize(
    "data", [b"\x30\x82\xff\xff\x01", b"\x30\x80\x00\x00", b"\x30\x85\x01"], ids=str
)
def test_a_truncated_or_indefinite_length_certificate_is_refused_not_pinned(data: bytes) -> None:
    with pytest.raises(ValueError, match="DER certificate"):
        first_certificate(data)


@module_loop
async def test_a_certificate_file_holding_a_chain_carries_telegrams(
    pki: Pki, secure_host: OpcUaHost, tmp_path: Path
) -> None:
    chain = _certificate_files(pki, tmp_path)["chain.der"]
    await _carries_telegrams(pki.client(peer_certificate=chain), secure_host)


@module_loop
@pytest.mark.parametrize("known_as", ["pin", "file"])
async def test_a_server_presenting_another_certificate_is_refused_with_the_reason(
    pki: Pki, secure_host: OpcUaHost, known_as: str
) -> None:
    """The PLC's address answered by a server whose certificate is not the configured one
    (here: the controller expects the intruder's certificate)."""
    wrong_pin = fingerprint(certificate_der(pki.intruder.certificate))
    client = (
        pki.client(peer_sha256=wrong_pin)
        if known_as == "pin"
        else pki.client(peer_certificate=pki.intruder.certificate)
    )
    message = await _refusal(client, secure_host)
    assert "refused the link: server certificate mismatch" in message
    assert f"presents sha256 {pki.plc_pin}" in message
    assert wrong_pin in message
    if known_as == "file":
        assert str(pki.intruder.certificate) in message


@module_loop
async def test_insecure_setting_connects_and_warns_on_every_connect(
    pki: Pki, secure_host: OpcUaHost, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="plc_adapters.opcua_wire")
    insecure = pki.client(accept_any_peer=True)
    await _carries_telegrams(insecure, secure_host)
    async with open_rig("opcua", opcua_host=secure_host) as rig:  # a line to connect to
        transport = OpcUaTransport(
            secure_host.endpoint, NAMESPACE, rig.sorter.line, rig.adapter.layout,
            timeout_s=5.0, security=insecure, credentials=USER,
        )  # fmt: skip
        caplog.clear()
        for _ in range(2):
            await transport.connect(lambda: None)
            await transport.close()
    warnings = [r for r in caplog.records if "insecure_accept_any_server_cert" in r.message]
    assert len(warnings) == 2
    assert all(r.levelno == logging.WARNING for r in warnings)
    assert f"server_certificate_sha256: {pki.plc_pin}" in warnings[0].message


def test_a_client_with_security_must_know_the_server_certificate(pki: Pki) -> None:
    unknown = replace(pki.client(), peer_certificate=None)
    with pytest.raises(ValueError, match="needs the server's certificate"):
        OpcUaTransport("opc.tcp://127.0.0.1:4840", NAMESPACE, "L1", Layout(8, 4), security=unknown)


# --- the emulated PLC's trust list ---------------------------------------------------------


@module_loop
async def test_emulator_refuses_a_client_certificate_outside_its_trust_list(
    pki: Pki, secure_host: OpcUaHost, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="plc_adapters.opcua_server")
    intruder = pki.client(pki.intruder, peer_sha256=pki.plc_pin)  # knows the right PLC
    message = await _refusal(intruder, secure_host)
    assert "BadCertificateUntrusted" in message
    intruder_pin = fingerprint(certificate_der(pki.intruder.certificate))
    assert any(
        f"refused client certificate sha256 {intruder_pin}" in r.message for r in caplog.records
    )


@module_loop
async def test_emulator_refuses_a_session_over_an_unsecured_channel(
    secure_host: OpcUaHost, caplog: pytest.LogCaptureFixture
) -> None:
    """A hand-written client that knows the password skips the secure channel: asyncua's
    server would create and activate its session (the password travels in clear)."""
    caplog.set_level(logging.WARNING, logger="plc_adapters.opcua_server")
    async with open_rig("opcua", opcua_host=secure_host):  # the host is serving
        client = Client(secure_host.endpoint, timeout=5.0)
        await client.connect_socket()
        try:
            await client.send_hello()
            await client.open_secure_channel()
            with contextlib.suppress(UaError):  # asyncua's client stops here, by its own rule
                await client.create_session()
            params = ua.ActivateSessionParameters()
            token = ua.UserNameIdentityToken()
            token.UserName = USER.username
            token.Password = USER.password.encode()
            token.PolicyId = "username"
            params.UserIdentityToken = token
            with pytest.raises(UaStatusCodeError) as refused:
                await client.uaclient.activate_session(params)
        finally:
            client.disconnect_socket()
    assert type(refused.value).__name__ == "BadSecurityModeRejected"
    assert any("without a client certificate" in r.message for r in caplog.records)


@module_loop
async def test_client_without_security_cannot_use_a_secure_only_server(
    secure_host: OpcUaHost,
) -> None:
    async with open_rig("opcua", opcua_host=secure_host, credentials=(None, USER)) as rig:
        source = f"{rig.sorter.line}/plc-link"
        await wait_for(lambda: source in rig.alarms.active, "the link alarm")
        assert not rig.adapter.connected


@module_loop
async def test_wrong_password_is_refused_and_alarmed(pki: Pki, secure_host: OpcUaHost) -> None:
    wrong = Credentials(USER.username, "wrong")
    async with open_rig(
        "opcua", opcua_host=secure_host, security=(None, pki.client()), credentials=(None, wrong)
    ) as rig:
        source = f"{rig.sorter.line}/plc-link"
        await wait_for(lambda: source in rig.alarms.active, "the link alarm")
        assert "refused" in rig.alarms.active[source].message
        assert not rig.adapter.connected


def test_emulator_trusts_the_site_controller_certificate_and_the_trust_option(
    pki: Pki, tmp_path: Path
) -> None:
    site = _site_file(tmp_path, pki, {"server_certificate": str(pki.plc.certificate)})
    sorters = load_emulator_site(site)[1]
    emulator = Emulator(
        load_config(site), sorters, Protocol.OPCUA, MonotonicClock(), tmp_path / "emu-pki",
        "127.0.0.1", (pki.trusted,),
    )  # fmt: skip
    image = emulator.plcs["L1"].image
    assert isinstance(image, OpcUaServerImage)
    security = image.host.security
    assert security is not None
    assert security.trusted == (pki.controller.certificate, pki.trusted)
    assert (tmp_path / "emu-pki" / "plc.der").is_file()
    with pytest.raises(SettingsError, match=r"missing\.der: no such file"):
        Emulator(
            load_config(site), sorters, Protocol.OPCUA, MonotonicClock(), tmp_path / "emu-pki",
            "127.0.0.1", (tmp_path / "missing.der",),
        )  # fmt: skip


# --- settings: checked at load (what `cargogate config check` prints) -----------------------


def _site_file(folder: Path, pki: Pki, server: dict[str, object]) -> Path:
    """The lab site file with Sign&Encrypt on its OPC UA line; ``server`` says how the PLC's
    certificate is known."""
    raw = yaml.safe_load(EXAMPLE.read_text(encoding="utf-8"))
    raw["lines"][0]["sorter"]["security"] = {
        "certificate": str(pki.controller.certificate),
        "private_key": str(pki.controller.private_key),
        **server,
    }
    path = folder / "site.yaml"
    path.write_text(yaml.safe_dump(raw), encoding="utf-8")
    return path


def _problems(path: Path) -> list[tuple[str, str, str]]:
    with pytest.raises(ConfigError) as failed:
        load_config(path)
    return failed.value.problems


SECURITY = "lines.0.sorter.security"


def test_security_without_server_certificate_or_pin_is_a_config_error(
    pki: Pki, tmp_path: Path
) -> None:
    ((where, _, message),) = _problems(_site_file(tmp_path, pki, {}))
    assert where == SECURITY
    assert "server_certificate or server_certificate_sha256 is required" in message


@pytest.mark.parametrize(
    "pin",
    [
        "AB:CD",  # too short
        "sha256 Fingerprint=" + ":".join(["AB"] * 32),  # openssl's whole line, not the value
        ":".join(["AB"] * 31) + ":GG",  # not hexadecimal
        "AB" * 31,  # 62 digits
    ],
)
def test_a_malformed_pin_is_named_with_its_value(pki: Pki, tmp_path: Path, pin: str) -> None:
    ((where, value, message),) = _problems(
        _site_file(tmp_path, pki, {"server_certificate_sha256": pin})
    )
    assert where == f"{SECURITY}.server_certificate_sha256"
    assert value == repr(pin)
    assert "openssl x509 -noout -fingerprint -sha256" in message


def test_a_pin_is_kept_in_one_spelling(pki: Pki, tmp_path: Path) -> None:
    bare = pki.plc_pin.replace(":", "").lower()
    config = load_config(_site_file(tmp_path, pki, {"server_certificate_sha256": bare}))
    security = config.lines[0].sorter.security  # type: ignore[attr-defined]
    assert security.server_certificate_sha256 == pki.plc_pin


@pytest.mark.parametrize(
    ("file", "problem"),
    [("missing.der", "cannot read"), ("key", "without a CERTIFICATE block")],
)
def test_a_missing_or_wrong_server_certificate_file_is_named_with_its_value(
    pki: Pki, tmp_path: Path, file: str, problem: str
) -> None:
    path = pki.plc.private_key if file == "key" else tmp_path / file
    ((where, value, message),) = _problems(
        _site_file(tmp_path, pki, {"server_certificate": str(path)})
    )
    assert where == f"{SECURITY}.server_certificate"
    assert value == repr(str(path))
    assert problem in message


@pytest.mark.parametrize(
    ("server", "problem"),
    [
        ({"server_certificate": "plc", "server_certificate_sha256": "pin"}, "not both"),
        ({"server_certificate_sha256": "pin", "insecure_accept_any_server_cert": True},
         "contradicts server_certificate_sha256"),
    ],
)  # fmt: skip
def test_ways_to_know_the_server_certificate_exclude_each_other(
    pki: Pki, tmp_path: Path, server: dict[str, object], problem: str
) -> None:
    values = {"plc": str(pki.plc.certificate), "pin": pki.plc_pin}
    given = {k: values.get(v, v) if isinstance(v, str) else v for k, v in server.items()}
    ((where, _, message),) = _problems(_site_file(tmp_path, pki, given))
    assert where == SECURITY
    assert problem in message


def test_insecure_setting_loads_with_a_warning_naming_it(
    pki: Pki, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="plc_adapters.settings")
    load_config(_site_file(tmp_path, pki, {"insecure_accept_any_server_cert": True}))
    (warning,) = [r for r in caplog.records if r.name == "plc_adapters.settings"]
    assert "security.insecure_accept_any_server_cert is true" in warning.message
    assert "opc.tcp://127.0.0.1:4840" in warning.message


def test_the_documented_openssl_command_prints_an_accepted_pin(pki: Pki) -> None:
    if shutil.which("openssl") is None:
        pytest.skip("openssl is not installed")
    printed = subprocess.run(
        ["openssl", "x509", "-inform", "DER", "-in", str(pki.plc.certificate),
         "-noout", "-fingerprint", "-sha256"],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    assert parse_pin(printed.split("=", 1)[1]) == pki.plc_pin
