"""Mosquitto 2's password hash, written in Python so no ``mosquitto_passwd`` binary is needed.

The format is ``$7$ITERATIONS$SALT$HASH``: PBKDF2-HMAC-SHA512 over the password with a 12-byte random
salt, salt and 64-byte hash in standard base64. ``mosquitto_passwd`` uses 101 iterations and so do we by
default: the broker pays the iterations on every connect, and the passwords we generate are random
192-bit strings, which no iteration count would make easier or harder to guess.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os

ITERATIONS = 101
SALT_BYTES = 12
_TAG = "7"


def hash_password(password: str, *, salt: bytes | None = None, iterations: int = ITERATIONS) -> str:
    """The ``$7$`` hash of ``password``; ``salt`` defaults to fresh random bytes."""
    if iterations < 1:
        raise ValueError(f"iterations must be >= 1, got {iterations}")
    salt = os.urandom(SALT_BYTES) if salt is None else salt
    digest = hashlib.pbkdf2_hmac("sha512", password.encode(), salt, iterations)
    return f"${_TAG}${iterations}${base64.b64encode(salt).decode()}${base64.b64encode(digest).decode()}"


def verify_password(password: str, encoded: str) -> bool:
    """Whether ``password`` matches a ``$7$`` hash; False for any other or malformed hash."""
    parts = encoded.split("$")
    if len(parts) != 5 or parts[0] or parts[1] != _TAG or not parts[2].isdigit():
        return False
    try:
        salt = base64.b64decode(parts[3], validate=True)
        expected = base64.b64decode(parts[4], validate=True)
    except (binascii.Error, ValueError):
        return False
    digest = hashlib.pbkdf2_hmac("sha512", password.encode(), salt, int(parts[2]))
    return hmac.compare_digest(digest, expected)
