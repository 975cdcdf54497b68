"""The ``password_file`` Mosquitto reads: one ``username:hash`` line per principal."""

from __future__ import annotations

from collections.abc import Callable, Mapping

from edgefleet.security.passwords.hashing import hash_password


def render_password_file(passwords: Mapping[str, str], *, hasher: Callable[[str], str] = hash_password) -> str:
    """The file text for ``{username: password}``, in the mapping's order. Usernames may not contain ':'
    or line breaks (Mosquitto splits on the first ':')."""
    lines = []
    for user, password in passwords.items():
        if not user or ":" in user or any(c in user for c in "\r\n") or any(c in password for c in "\r\n"):
            raise ValueError(f"username {user!r} or its password cannot be written to a password file")
        lines.append(f"{user}:{hasher(password)}")
    return "\n".join(lines) + "\n"
