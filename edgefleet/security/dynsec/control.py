"""The plugin's control protocol as values: commands to send on ``$CONTROL/dynamic-security/v1`` and
the answers that come back on ``.../v1/response``.

A request is ``{"commands": [...]}``; the answer is ``{"responses": [...]}`` with one entry per command
in the same order, each naming its command and carrying ``error`` when it failed and ``data`` when it
returns something. Every answer goes to every subscriber of the response topic, so each command
carries a ``correlationData`` string that the plugin copies into its answer.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

REQUEST_TOPIC = "$CONTROL/dynamic-security/v1"
RESPONSE_TOPIC = "$CONTROL/dynamic-security/v1/response"


class ControlError(ValueError):
    """An answer that is not the plugin's JSON; the message says what was wrong."""


@dataclass(frozen=True)
class ControlReply:
    command: str
    correlation: str | None
    error: str | None = None
    data: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.error is None


def command(name: str, correlation: str, **fields: object) -> dict[str, object]:
    return {"command": name, **fields, "correlationData": correlation}


def encode_request(commands: list[dict[str, object]]) -> bytes:
    return json.dumps({"commands": commands}).encode()


def parse_replies(payload: bytes) -> list[ControlReply]:
    """The answers in a response message; raise ControlError for anything else."""
    try:
        doc = json.loads(payload)
    except (UnicodeDecodeError, ValueError) as exc:
        raise ControlError(f"not JSON: {exc}") from None
    responses = doc.get("responses") if isinstance(doc, dict) else None
    if not isinstance(responses, list):
        raise ControlError("no 'responses' list")
    out = []
    for r in responses:
        if not isinstance(r, dict) or not isinstance(r.get("command"), str):
            raise ControlError(f"malformed response entry {r!r:.80}")
        corr, error, data = r.get("correlationData"), r.get("error"), r.get("data", {})
        out.append(ControlReply(
            command=r["command"],
            correlation=corr if isinstance(corr, str) else None,
            error=None if error is None else str(error),
            data=data if isinstance(data, dict) else {},
        ))
    return out
