"""Fresh passwords for principals: random, long, and safe to write unquoted in TOML, shells and URLs."""

from __future__ import annotations

import secrets

PASSWORD_BYTES = 24  # 192 bits; 32 characters of URL-safe base64


def new_password(nbytes: int = PASSWORD_BYTES) -> str:
    """A random password of ``nbytes`` bytes of entropy, as letters, digits, '-' and '_'."""
    if nbytes < 16:
        raise ValueError(f"a password needs at least 16 random bytes, got {nbytes}")
    return secrets.token_urlsafe(nbytes)
