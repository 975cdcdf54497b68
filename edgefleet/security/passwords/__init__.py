"""Mosquitto password files: the hash format (``hashing``), fresh passwords (``generate``) and the file
itself (``file``)."""

from __future__ import annotations

from edgefleet.security.passwords.file import render_password_file
from edgefleet.security.passwords.generate import new_password
from edgefleet.security.passwords.hashing import hash_password, verify_password

__all__ = ["hash_password", "new_password", "render_password_file", "verify_password"]
