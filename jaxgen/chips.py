"""Accelerator chips: dense bf16 peak FLOP/s and memory, in one table.

MFU (`metrics.peak_flops`) and `jaxgen plan` (does a run fit, how long would a
step take) both read `CHIPS`. Figures are the vendors' own, per chip:
  * NVIDIA datasheets: H100 SXM 80 GB and 989 TFLOPS bf16 dense (H100 PCIe:
    80 GB, 756); H200 141 GB HBM3e, 989; GH200 96 GB HBM3 (the 144 GB HBM3e
    version has more), 989; A100 40 GB or 80 GB, 312; L4 24 GB, 121.
  * Google Cloud TPU system architecture pages: v4 32 GiB HBM, 275 TFLOPS;
    v5e 16 GiB, 197; v5p 95 GiB, 459; v6e (Trillium) 32 GiB, 918.
NVIDIA quotes decimal gigabytes and Google binary gibibytes; each size is
kept in the vendor's unit. The marketed size is more than a program can use
(the runtime and CUDA context take some), so a plan with little headroom is
a warning sign.
"""

from __future__ import annotations

import dataclasses
import re
from typing import Any

GB, GIB = 10**9, 2**30


@dataclasses.dataclass(frozen=True)
class Chip:
  name: str  # what `jaxgen plan --chip=` takes
  pattern: str  # matched against jax's `device.device_kind`, lower-cased
  peak_flops: float  # dense bf16 FLOP/s
  memory_bytes: int  # high-bandwidth memory per chip, as marketed
  memory: str  # the marketed size, as the vendor writes it
  platform: str  # 'gpu' | 'tpu'


# Matched in order: the first pattern found in device_kind wins.
CHIPS = (
    Chip("h100_pcie", r"h100.*pcie", 756e12, 80 * GB, "80 GB", "gpu"),  # clocked lower
    Chip("h100", r"h100", 989e12, 80 * GB, "80 GB", "gpu"),
    Chip("gh200", r"gh200", 989e12, 96 * GB, "96 GB", "gpu"),
    Chip("h200", r"h200", 989e12, 141 * GB, "141 GB", "gpu"),
    Chip("a100_80", r"a100.*80", 312e12, 80 * GB, "80 GB", "gpu"),
    Chip("a100_40", r"a100", 312e12, 40 * GB, "40 GB", "gpu"),
    Chip("l4", r"\bl4\b", 121e12, 24 * GB, "24 GB", "gpu"),  # not L40/L40S
    Chip("tpu_v4", r"tpu v4", 275e12, 32 * GIB, "32 GiB", "tpu"),
    Chip("tpu_v5e", r"v5 ?lite|v5e", 197e12, 16 * GIB, "16 GiB", "tpu"),
    Chip("tpu_v5p", r"v5p|tpu v5\b", 459e12, 95 * GIB, "95 GiB", "tpu"),  # JAX says "TPU v5"
    Chip("tpu_v6e", r"v6 ?lite|v6e", 918e12, 32 * GIB, "32 GiB", "tpu"),
)
BY_NAME = {c.name: c for c in CHIPS}


def chip_of(device: Any) -> Chip | None:
  """The chip a jax device is, from its `device_kind`; None for CPUs and unknown chips."""
  if getattr(device, "platform", None) == "cpu":
    return None
  kind = str(getattr(device, "device_kind", "")).lower()
  return next((c for c in CHIPS if re.search(c.pattern, kind)), None)
