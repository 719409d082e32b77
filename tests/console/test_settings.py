"""The console section of the site file: refused when it would expose logins in clear."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from controller.console.settings import ConsoleSettings


def test_plain_http_beyond_the_host_itself_is_refused_unless_asked_for() -> None:
    with pytest.raises(ValidationError, match="give tls_cert and tls_key"):
        ConsoleSettings(host="0.0.0.0")
    assert ConsoleSettings(host="0.0.0.0", allow_insecure_http=True).host == "0.0.0.0"
    assert not ConsoleSettings(host="127.0.0.1").tls
    assert not ConsoleSettings(host="::1").tls
    assert ConsoleSettings(host="10.1.2.3", tls_cert="c.pem", tls_key="k.pem").tls


def test_a_certificate_without_its_key_is_refused() -> None:
    with pytest.raises(ValidationError, match="go together"):
        ConsoleSettings(tls_cert="c.pem")
