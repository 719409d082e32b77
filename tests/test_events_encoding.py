"""Text the journal took goes out to MQTT and SCADA readers intact, whatever it holds.

A lone surrogate arrives through the command channel (``json.loads`` of ``"\\ud800"``) and the
journal stores it escaped; before, encoding it as UTF-8 stopped the MQTT stream for good and
failed every SCADA read that included it.
"""

from __future__ import annotations

import json

from controller.events.topics import encode
from controller.scada.points import _text

ODD = "hold: bad \ud800 label"


def test_an_event_payload_with_a_lone_surrogate_is_sent_escaped_and_reads_back() -> None:
    payload = encode({"seq": 2, "data": {"reason": ODD}})
    assert payload.isascii()
    assert json.loads(payload)["data"]["reason"] == ODD


def test_scada_text_with_a_lone_surrogate_is_utf8_encodable() -> None:
    shown = _text(ODD)
    assert shown is not None
    shown.encode("utf-8")  # raised UnicodeEncodeError before
    assert shown == "hold: bad \\ud800 label"
