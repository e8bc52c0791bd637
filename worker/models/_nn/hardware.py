"""Whether this machine runs bf16 natively, for inference (``worker.pipeline.precision``) and
training (``worker.models._nn.budget``) alike.

Where it does not, bf16 autocast is emulated and many times slower than fp32: on a CPU
without bf16 units (an AMD EPYC or Intel Xeon without AVX512-BF16), one 3x3 convolution
measured ~100x slower under bf16 autocast than in fp32, so reduced precision is used only
where this says the device has the units for it.
"""

from __future__ import annotations

from pathlib import Path

#: /proc/cpuinfo flags of the x86 units that compute in bf16 (Intel AMX, AVX512-BF16).
BF16_CPU_FLAGS = frozenset({"amx_bf16", "avx512_bf16"})
#: The first CUDA compute capability with bf16 tensor cores (Ampere).
BF16_CUDA_CAPABILITY = (8, 0)


def cpu_flags() -> frozenset[str]:
    """The CPU's feature flags from /proc/cpuinfo (empty where there is none: not Linux)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return frozenset()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "flags":
            return frozenset(value.split())
    return frozenset()


def _onednn_bf16() -> bool:
    """Whether PyTorch's oneDNN kernels run bf16 here (False under ONEDNN_MAX_CPU_ISA=AVX2)."""
    import torch

    if not torch.backends.mkldnn.is_available():  # type: ignore[no-untyped-call]
        return False
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def bf16_native(device: str) -> bool:
    """Whether ``device`` ("cpu", "cuda", "cuda:1") computes in bf16 natively: a CUDA GPU
    of compute capability 8.0 or later, or a CPU with AMX/AVX512-BF16 units that oneDNN uses."""
    if device.startswith("cuda"):
        import torch

        if not torch.cuda.is_available():
            return False
        return torch.cuda.get_device_capability(device) >= BF16_CUDA_CAPABILITY
    return bool(BF16_CPU_FLAGS & cpu_flags()) and _onednn_bf16()


def unsupported_bf16_reason(device: str) -> str:
    """Why ``device`` has no native bf16, in words for a log line."""
    if device.startswith("cuda"):
        return f"{device} is older than compute capability 8.0 (no bf16 tensor cores)"
    if not BF16_CPU_FLAGS & cpu_flags():
        return "this CPU has no bf16 units (no amx_bf16 or avx512_bf16 flag)"
    return "PyTorch's oneDNN does not run bf16 on this CPU (ONEDNN_MAX_CPU_ISA?)"
