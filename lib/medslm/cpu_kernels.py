"""Pin PyTorch's CPU vector kernels, so that a CPU run's figures do not depend on which x86-64 CPU ran it.

PyTorch picks the widest vector kernels the CPU has (AVX-512 where present, else AVX2), and MKL and oneDNN do the
same; their rounding differs, and a barely trained tiny model can tip on it (the toy world's JSON validity after SFT
was 0.66 on one machine and 0.34 on another with the same seed). ``medslm run`` therefore starts the notebooks'
kernels with the AVX2 paths of all three (``run.cpu_kernels: avx2``, the default), which every x86-64 CPU with AVX2
runs (measured: pinned, an AMD EPYC with AVX-512 gave an AVX2-only AMD EPYC's smoke figures to the last digit; other
CPU makers not checked); ``native`` leaves the choice to the libraries. Variables already set in the environment are kept, and nothing is
set on a CPU without AVX2 or on other architectures. A GPU's kernels are not affected.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

AVX2_KERNELS = {
    "ATEN_CPU_CAPABILITY": "avx2",  # PyTorch's own vectorised operators
    "MKL_CBWR": "AVX2",  # MKL's conditional numerical reproducibility: BLAS on its AVX2 code path
    "ONEDNN_MAX_CPU_ISA": "AVX2",  # oneDNN (mkldnn) primitives
}


def cpu_has_avx2() -> bool:
    """Whether this process's PyTorch runs AVX2 (or wider) kernels on this CPU."""
    import torch

    return torch.backends.cpu.get_cpu_capability() in ("AVX2", "AVX512")


def kernel_variables(cpu_kernels: str, environ: Mapping[str, str] | None = None,
                     has_avx2: bool | None = None) -> dict[str, str]:
    """The variables to add to the notebooks' environment for ``run.cpu_kernels`` (``avx2`` or ``native``)."""
    environ = os.environ if environ is None else environ
    if cpu_kernels == "native":
        return {}
    if cpu_kernels != "avx2":
        raise ValueError(f"run.cpu_kernels is {cpu_kernels!r}; allowed: 'avx2', 'native'")
    if not (cpu_has_avx2() if has_avx2 is None else has_avx2):
        return {}
    return {name: value for name, value in AVX2_KERNELS.items() if name not in environ}
