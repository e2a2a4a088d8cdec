"""The second kernel setting that the test command runs everything under (scripts/test.sh).

PyTorch picks its vectorised CPU kernels once, at start-up, from the CPU's instruction sets
(``ATEN_CPU_CAPABILITY`` overrides it), and MKL its matrix-product kernels (``MKL_CBWR=COMPATIBLE``
forces its vendor-neutral path). Another CPU, Intel or AMD, with or without AVX-512, makes other
choices and rounds differently. The second setting changes both on this machine: one step down
from the machine's own vector width (avx2 under AVX-512, the plain C kernels under AVX2) plus MKL's
vendor-neutral path, and one thread (chapters that reduce over threads round differently too).

``python tests/kernels.py`` prints it as ``NAME=value`` words for ``env``.
"""
import os
import subprocess
import sys


def native_capability() -> str:
    """The kernel set PyTorch picks on this CPU when nothing overrides it (e.g. 'AVX512')."""
    env = {k: v for k, v in os.environ.items() if k not in ("ATEN_CPU_CAPABILITY", "MKL_CBWR")}
    out = subprocess.run([sys.executable, "-c", "import torch; print(torch.backends.cpu.get_cpu_capability())"],
                         env=env, capture_output=True, text=True, check=True)
    return out.stdout.strip()


def other_kernels() -> dict:
    """The environment of the second setting (see the module docstring)."""
    step_down = "avx2" if native_capability() == "AVX512" else "default"
    return {"ATEN_CPU_CAPABILITY": step_down, "MKL_CBWR": "COMPATIBLE", "OMP_NUM_THREADS": "1"}


if __name__ == "__main__":
    print(" ".join(f"{k}={v}" for k, v in other_kernels().items()))
