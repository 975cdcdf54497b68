"""What accelerators this box has and what kind of box it is, for the agent's capability report.

Everything here reads what the kernel and the vendor libraries expose, never guesses from the Python
packages installed: NVIDIA GPUs from NVML (or the Tegra files on a Jetson, whose integrated GPU NVML does
not see), Edge TPUs from pycoral where it imports, else from ``/dev/apex_*`` (PCIe) and the USB ids of
the Coral USB Accelerator in sysfs. ``root`` lets tests point the file reads at a fake tree.
"""

from __future__ import annotations

import contextlib
import logging
import platform
import re
from pathlib import Path

log = logging.getLogger(__name__)

# Coral USB Accelerator: Global Unichip before its firmware is loaded, Google after.
CORAL_USB_IDS = {("1a6e", "089a"), ("18d1", "9302")}

_JETSON_MODELS = (  # (pattern in /proc/device-tree/model, kind), most specific first
    (r"orin nano", "jetson-orin-nano"),
    (r"orin nx", "jetson-orin-nx"),
    (r"agx orin", "jetson-agx-orin"),
    (r"xavier nx", "jetson-xavier-nx"),
    (r"agx xavier", "jetson-agx-xavier"),
    (r"agx thor", "jetson-agx-thor"),
    (r"jetson tx2", "jetson-tx2"),
    (r"jetson nano", "jetson-nano"),
)


def _read(root: Path, rel: str) -> str:
    try:
        return (root / rel).read_text(errors="replace").replace("\0", "").strip()
    except OSError:
        return ""


def board_model(root: Path = Path("/")) -> str:
    """The board's name from the device tree ("NVIDIA Jetson Orin Nano Developer Kit"), or ""."""
    return _read(root, "proc/device-tree/model")


def is_jetson(root: Path = Path("/")) -> bool:
    return "jetson" in board_model(root).lower() or (root / "etc/nv_tegra_release").is_file()


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")


def device_kind(root: Path = Path("/"), *, accelerators: list[str] | None = None) -> str:
    """A short name for this kind of box: ``jetson-orin-nano``, ``coral-dev-board``, ``raspberry-pi-5``,
    else ``<arch>-cuda`` with an NVIDIA GPU, ``<arch>-coral`` with an Edge TPU, or ``<arch>-cpu``."""
    model = board_model(root)
    lowered = model.lower()
    if "jetson" in lowered:
        for pattern, kind in _JETSON_MODELS:
            if re.search(pattern, lowered):
                return kind
        return "jetson"
    if (root / "etc/nv_tegra_release").is_file():
        return "jetson"
    if "coral" in lowered or "phanbell" in lowered:  # the Dev Board's i.MX 8M tree is named "Phanbell"
        return "coral-dev-board-mini" if "mini" in lowered else "coral-dev-board"
    match = re.search(r"raspberry pi (\d+|zero 2|zero|compute module \d+)", lowered)
    if match:
        return "raspberry-pi-" + _slug(match.group(1))
    arch = platform.machine() or "unknown"
    found = accelerators if accelerators is not None else detect_accelerators(root)
    if any(a.startswith("cuda:") for a in found):
        return f"{arch}-cuda"
    if any(a.startswith("edgetpu:") for a in found):
        return f"{arch}-coral"
    return f"{arch}-cpu"


# -- accelerators -----------------------------------------------------------------------------------------
def nvml_gpus() -> int:
    """How many NVIDIA GPUs NVML sees; 0 when nvidia-ml-py is missing or NVML does not initialise."""
    try:
        import pynvml
    except ImportError:
        return 0
    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError as exc:
        log.debug("NVML did not initialise: %s", exc)
        return 0
    try:
        return int(pynvml.nvmlDeviceGetCount())
    except pynvml.NVMLError:
        return 0
    finally:
        with contextlib.suppress(pynvml.NVMLError):
            pynvml.nvmlShutdown()


def _pycoral_tpus() -> list[str] | None:
    try:
        from pycoral.utils.edgetpu import list_edge_tpus
    except ImportError:
        return None
    try:
        tpus = list_edge_tpus()
    except Exception as exc:  # a vendor failure means no TPU we can use
        log.debug("pycoral could not list Edge TPUs: %s", exc)
        return []
    counts: dict[str, int] = {}
    names = []
    for tpu in tpus:
        kind = str(tpu.get("type", "usb"))
        names.append(f"edgetpu:{kind}:{counts.get(kind, 0)}")
        counts[kind] = counts.get(kind, 0) + 1
    return names


def _sysfs_tpus(root: Path) -> list[str]:
    pci = sorted((root / "dev").glob("apex_*"))
    names = [f"edgetpu:pci:{i}" for i in range(len(pci))]
    usb = 0
    for dev in sorted((root / "sys/bus/usb/devices").glob("*")):
        if (_read(dev, "idVendor"), _read(dev, "idProduct")) in CORAL_USB_IDS:
            names.append(f"edgetpu:usb:{usb}")
            usb += 1
    return names


def detect_accelerators(root: Path = Path("/")) -> list[str]:
    """``["cpu", "cuda:0", ..., "edgetpu:usb:0", "edgetpu:pci:0", ...]``; "cpu" always comes first."""
    found = ["cpu"]
    gpus = nvml_gpus()
    if gpus == 0 and is_jetson(root):
        gpus = 1  # every Jetson has one integrated GPU, which NVML does not list
    found += [f"cuda:{i}" for i in range(gpus)]
    tpus = _pycoral_tpus()
    found += tpus if tpus is not None else _sysfs_tpus(root)
    return found
