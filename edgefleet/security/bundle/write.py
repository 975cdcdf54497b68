"""Putting a bundle on disk: all or nothing about overwriting, exact file modes, no partial files.

Existing files are never replaced unless asked (``force``): regenerating changes every password and
certificate, which locks out every client still holding the old ones. Each file is written to a
temporary name with its final mode and renamed into place, so a reader never sees half a file and a
secret is never readable by others, not even briefly.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

from edgefleet.security.bundle.build import Bundle

SECRET_MODE = 0o600
PUBLIC_MODE = 0o644


class BundleExists(FileExistsError):
    """Some files of the bundle are already there; ``paths`` lists them."""

    def __init__(self, paths: list[Path]) -> None:
        shown = ", ".join(str(p) for p in paths[:5]) + (f" and {len(paths) - 5} more" if len(paths) > 5 else "")
        super().__init__(f"refusing to overwrite existing files: {shown} (use --force to replace them)")
        self.paths = paths


def _write(path: Path, content: bytes, mode: int) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        with os.fdopen(fd, "wb") as f:
            os.fchmod(f.fileno(), mode)  # exact mode whatever the umask
            f.write(content)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise


def write_bundle(bundle: Bundle, out: Path, *, force: bool = False) -> list[Path]:
    """Write every file under ``out`` (created if missing); return their paths in bundle order."""
    targets = [(out / f.path, f) for f in bundle.files]
    existing = [p for p, _ in targets if p.exists() or p.is_symlink()]
    if existing and not force:
        raise BundleExists(existing)
    for path, f in targets:
        path.parent.mkdir(parents=True, exist_ok=True)
        _write(path, f.content, SECRET_MODE if f.secret else PUBLIC_MODE)
    return [p for p, _ in targets]
