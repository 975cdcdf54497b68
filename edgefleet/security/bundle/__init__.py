"""Everything ``edgefleet security init`` writes, built in memory (``build``) from a plan and its
options (``options``), rendered by ``broker_conf`` and ``client_conf``, laid out by ``layout`` and put on
disk by ``write``."""

from __future__ import annotations

from edgefleet.security.bundle.build import Bundle, BundleFile, build_bundle
from edgefleet.security.bundle.options import BundleOptions, TlsOptions
from edgefleet.security.bundle.write import BundleExists, write_bundle

__all__ = ["Bundle", "BundleExists", "BundleFile", "BundleOptions", "TlsOptions", "build_bundle", "write_bundle"]
