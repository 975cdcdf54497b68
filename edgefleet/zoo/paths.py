"""Where the zoo lives on disk, and the only way to turn a model name into a verified file path.

Names and variants are checked against a strict pattern and the catalog before any path is built, so a
request from the network can never point outside the data directory; the file's sha256 is checked on
every call, so a tampered model is refused even after it was fetched.
"""

from __future__ import annotations

import hashlib
import os
import sys
from pathlib import Path

from edgefleet.zoo.catalog import NAME_RE, VARIANTS, Catalog, read_catalog
from edgefleet.zoo.errors import ModelIntegrityError, ModelNotFound


def _models_dir() -> Path:
    """``models/`` of the source checkout, or where the wheel installs its copy (``share/edgefleet/models``)."""
    checkout = Path(__file__).resolve().parents[2] / "models"
    if (checkout / "catalog.json").is_file():
        return checkout
    return Path(sys.prefix) / "share" / "edgefleet" / "models"


REPO_MODELS_DIR = _models_dir()
COMMITTED_CATALOG = REPO_MODELS_DIR / "catalog.json"
SAMPLES_DIR = REPO_MODELS_DIR / "samples"
FETCH_HINT = "run `edgefleet models fetch`"


def checkout_data_dir() -> Path | None:
    """``<checkout>/.data`` when edgefleet runs from a source checkout (an editable install, as ``make``
    makes), where ``make`` fetches the zoo; None for an installed wheel."""
    root = REPO_MODELS_DIR.parent
    if (root / "pyproject.toml").is_file() and COMMITTED_CATALOG.is_file():
        return root / ".data"
    return None


def data_dir() -> Path:
    """``$EDGEFLEET_DATA_DIR``; else, run from a source checkout, the checkout's ``.data`` (what ``make``
    fetched: every command finds it without an export); else ``$XDG_CACHE_HOME/edgefleet``, else
    ``~/.cache/edgefleet``."""
    explicit = os.environ.get("EDGEFLEET_DATA_DIR")
    if explicit:
        return Path(explicit).expanduser()
    checkout = checkout_data_dir()
    if checkout is not None:
        return checkout
    cache = os.environ.get("XDG_CACHE_HOME")
    base = Path(cache).expanduser() if cache else Path.home() / ".cache"
    return base / "edgefleet"


_default_data_dir = data_dir


def local_catalog_path(root: Path | None = None) -> Path:
    return (root or data_dir()) / "catalog.json"


def load_catalog(path: Path | None = None) -> Catalog:
    """The catalog at ``path``; by default this machine's catalog if fetched, else the committed one."""
    if path is not None:
        return read_catalog(Path(path))
    local = local_catalog_path()
    return read_catalog(local if local.is_file() else COMMITTED_CATALOG)


def check_name(name: str, variant: str = "fp32") -> None:
    """Refuse names that could not be catalog names, and unknown variants, before any path is built."""
    if not isinstance(name, str) or not NAME_RE.fullmatch(name):
        raise ModelNotFound(f"invalid model name {name!r}: names match [a-z0-9][a-z0-9-]{{0,62}}")
    if variant not in VARIANTS:
        raise ModelNotFound(f"invalid variant {variant!r}: expected one of {', '.join(VARIANTS)}")


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def variant_file(root: Path, name: str, variant: str, extension: str) -> Path:
    check_name(name, variant)
    return root / "models" / name / f"{variant}{extension}"


def model_path(name: str, variant: str = "fp32", data_dir: Path | None = None) -> Path:
    """The verified path of a fetched model file.

    Raises :class:`ModelNotFound` for an unknown name or variant, an unavailable variant or a file not
    fetched yet, and :class:`ModelIntegrityError` when the file's sha256 differs from the catalog's.
    """
    check_name(name, variant)
    root = Path(data_dir) if data_dir is not None else _default_data_dir()
    local = local_catalog_path(root)
    catalog = read_catalog(local if local.is_file() else COMMITTED_CATALOG)
    entry = catalog.get(name)
    record = entry.variant(variant)
    path = variant_file(root, entry.name, variant, entry.extension)
    if not path.is_file():
        raise ModelNotFound(f"{name}/{variant} is not on this machine ({path}); {FETCH_HINT}")
    actual = sha256_file(path)
    if actual != record.sha256:
        raise ModelIntegrityError(
            f"{path}: sha256 {actual} differs from the catalog's {record.sha256}; delete it and {FETCH_HINT}"
        )
    return path
