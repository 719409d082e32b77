"""OPC UA with Basic256Sha256 Sign&Encrypt and user/password, certificates made at test time.

One secure-only server (its start-up is slow) serves every test, one line each."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio

from controller.core.domain import DestinationReply, DestinationRequest
from controller.core.reasons import Reason
from plc_adapters.certs import make_certificate
from plc_adapters.opcua_server import OpcUaHost
from plc_adapters.opcua_wire import Credentials, Security
from tests.plc.rigs import NAMESPACE, open_rig, wait_for

pytestmark = pytest.mark.asyncio(loop_scope="module")
USER = Credentials("sorter-client", "correct horse battery staple")


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Security, Security]:
    """(server, client) material in a temporary folder; no key ever lands in the repository."""
    folder: Path = tmp_path_factory.mktemp("pki")
    server = make_certificate(folder, "plc", "urn:cargogate:test:plc")
    client = make_certificate(folder, "controller", "urn:cargogate:test:controller")
    return (
        Security(server.certificate, server.private_key, None, server.application_uri),
        Security(
            client.certificate, client.private_key, server.certificate, client.application_uri
        ),
    )


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def secure_host(certs: tuple[Security, Security]) -> AsyncIterator[OpcUaHost]:
    host = OpcUaHost("127.0.0.1", 0, NAMESPACE, security=certs[0], credentials=USER)
    yield host
    await host.stop()


async def test_signed_and_encrypted_session_with_password_carries_telegrams(
    certs: tuple[Security, Security], secure_host: OpcUaHost
) -> None:
    async with open_rig(
        "opcua", opcua_host=secure_host, security=(None, certs[1]), credentials=(None, USER)
    ) as rig:
        rig.plant.request(42, "SECURE1", rig.clock.now())
        (request,) = await rig.receive(1)
        assert isinstance(request, DestinationRequest)
        assert request.barcode == "SECURE1"
        await rig.sorter.reply(DestinationReply(request.line, 42, 2, Reason.RISK_RED))
        await wait_for(lambda: len(rig.replies) == 1, "the reply at the PLC")
        assert rig.replies[0].lane == 2
        assert f"{rig.sorter.line}/plc-link" not in rig.alarms.active


async def test_wrong_password_is_refused_and_alarmed(
    certs: tuple[Security, Security], secure_host: OpcUaHost
) -> None:
    wrong = Credentials(USER.username, "wrong")
    async with open_rig(
        "opcua", opcua_host=secure_host, security=(None, certs[1]), credentials=(None, wrong)
    ) as rig:
        source = f"{rig.sorter.line}/plc-link"
        await wait_for(lambda: source in rig.alarms.active, "the link alarm")
        assert "refused" in rig.alarms.active[source].message
        assert not rig.adapter.connected


async def test_client_without_security_cannot_use_a_secure_only_server(
    secure_host: OpcUaHost,
) -> None:
    async with open_rig("opcua", opcua_host=secure_host, credentials=(None, USER)) as rig:
        source = f"{rig.sorter.line}/plc-link"
        await wait_for(lambda: source in rig.alarms.active, "the link alarm")
        assert not rig.adapter.connected
