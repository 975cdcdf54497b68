"""Validation of the names that become topic segments: tenants, devices, client inboxes.

A name is embedded in topics (and in shared-subscription group names, which may not contain '/', '+'
or '#'), in SQLite rows and in file names on the device, so one strict rule protects all of them.
"""

from __future__ import annotations

import re

from edgefleet.wire.errors import ErrorCode, WireError

# Lower-case letters, digits, '-' and '_', starting with a letter or digit, at most 63 characters.
NAME_RE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")
# Client ids are chosen by MQTT libraries too: allow upper case and '.', still no topic syntax.
CLIENT_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")


NAME_RULE = "lower-case letters, digits, '-' and '_', starting with a letter or digit, 1-63 characters"
CLIENT_RULE = "letters, digits, '-', '_' and '.', starting with a letter or digit, 1-128 characters"


def _check(kind: str, value: object, pattern: re.Pattern[str], rule: str) -> str:
    # fullmatch, not match: '$' also matches before a trailing newline, which no topic may contain
    if not isinstance(value, str) or not pattern.fullmatch(value):
        raise WireError(
            ErrorCode.BAD_REQUEST,
            f"invalid {kind} {value!r}: {rule} (must match {pattern.pattern})",
        )
    return value


def validate_tenant_name(value: object) -> str:
    """Return ``value`` if it is a valid tenant name, else raise WireError(bad_request)."""
    return _check("tenant name", value, NAME_RE, NAME_RULE)


def validate_device_id(value: object) -> str:
    """Return ``value`` if it is a valid device id, else raise WireError(bad_request)."""
    return _check("device id", value, NAME_RE, NAME_RULE)


def validate_client_id(value: object) -> str:
    """Return ``value`` if it is usable as an inbox segment, else raise WireError(bad_request)."""
    return _check("client id", value, CLIENT_RE, CLIENT_RULE)
