"""Build hook for the compiled extension fastticket._C (metadata lives in pyproject.toml).

The C++ CPU part is built whenever torch is importable (FASTTICKET_BUILD_EXT=0 skips the extension: the
torch and triton backends serve every op). The CUDA part (csrc/**/*.cu) only when it can build: torch has
CUDA, and the nvcc torch's build would use (CUDA_HOME / CUDA_PATH, else nvcc on PATH) exists with the same
major version as torch.version.cuda; otherwise one line says why and the CPU part is built alone
(FASTTICKET_BUILD_CUDA=0 asks for that). Architectures: TORCH_CUDA_ARCH_LIST, by default "8.0;9.0"
(A100, H100/H200). The decision is the pure function cuda_decision (tests/ops/test_build.py).
"""

import glob
import os
import re
import subprocess
import sys

from setuptools import setup

DEFAULT_ARCHS = "8.0;9.0"


def parse_nvcc_version(text):
    """'13.0' from `nvcc --version` output ("Cuda compilation tools, release 13.0, V13.0.48"), else None."""
    m = re.search(r"release (\d+)\.(\d+)", text or "")
    return f"{m.group(1)}.{m.group(2)}" if m else None


def cuda_decision(torch_cuda, nvcc_path, nvcc_version, cu_sources, env):
    """(build the CUDA part?, the one line that says why). torch_cuda: torch.version.cuda (None for a CPU
    build); nvcc_path / nvcc_version: the nvcc found (None when none); env: the environment."""
    if env.get("FASTTICKET_BUILD_CUDA", "1") == "0":
        return False, "FASTTICKET_BUILD_CUDA=0: building the CPU part of fastticket._C only"
    if not cu_sources:
        return False, "no CUDA sources in csrc/: building the CPU part of fastticket._C only"
    if not torch_cuda:
        return False, "torch has no CUDA: building the CPU part of fastticket._C only"
    if not nvcc_path:
        return False, (f"torch has CUDA {torch_cuda} but no nvcc was found (set CUDA_HOME): building the CPU "
                       "part of fastticket._C only; the triton and torch backends serve CUDA")
    if not nvcc_version:
        return False, f"cannot read the version of {nvcc_path}: building the CPU part of fastticket._C only"
    if nvcc_version.split(".")[0] != str(torch_cuda).split(".")[0]:
        return False, (f"nvcc {nvcc_version} ({nvcc_path}) does not match torch's CUDA {torch_cuda} (major versions "
                       "differ): building the CPU part of fastticket._C only")
    archs = env.get("TORCH_CUDA_ARCH_LIST") or DEFAULT_ARCHS
    return True, f"building fastticket._C with CUDA {nvcc_version} ({nvcc_path}) for {archs}"


def _find_nvcc(cuda_home):
    """The nvcc torch's build would run: CUDA_HOME's, else the one on PATH; with its version."""
    candidates = [os.path.join(cuda_home, "bin", "nvcc")] if cuda_home else []
    from shutil import which

    candidates.append(which("nvcc"))
    for path in candidates:
        if path and os.path.exists(path):
            try:
                out = subprocess.run([path, "--version"], capture_output=True, text=True, timeout=60).stdout
            except (OSError, subprocess.SubprocessError):
                return path, None
            return path, parse_nvcc_version(out)
    return None, None


def _extensions():
    if os.environ.get("FASTTICKET_BUILD_EXT", "1") == "0":
        return [], {}
    here = os.path.dirname(os.path.abspath(__file__))
    cpp = sorted(glob.glob(os.path.join("csrc", "**", "*.cpp"), recursive=True))
    if not cpp:
        return [], {}
    try:
        import torch
        from torch.utils import cpp_extension
    except ImportError:  # an isolated build without torch: install pure Python, the torch backend serves
        print("fastticket: torch is not importable at build time: fastticket._C is not built (install torch "
              "first and build with --no-build-isolation)", file=sys.stderr)
        return [], {}

    cuda = sorted(glob.glob(os.path.join("csrc", "**", "*.cu"), recursive=True))
    nvcc_path, nvcc_version = _find_nvcc(cpp_extension.CUDA_HOME) if torch.version.cuda else (None, None)
    with_cuda, why = cuda_decision(torch.version.cuda, nvcc_path, nvcc_version, cuda, os.environ)
    print(f"fastticket: {why}", file=sys.stderr)
    common = dict(
        name="fastticket._C",
        include_dirs=[os.path.join(here, "csrc")],
        extra_compile_args={"cxx": ["-O3", "-std=c++17", "-fopenmp-simd", "-fno-math-errno"]},
    )
    if with_cuda:
        os.environ.setdefault("TORCH_CUDA_ARCH_LIST", DEFAULT_ARCHS)
        common["extra_compile_args"]["nvcc"] = ["-O3", "-std=c++17"]
        ext = cpp_extension.CUDAExtension(sources=cpp + cuda, define_macros=[("FASTTICKET_WITH_CUDA", None)], **common)
    else:
        ext = cpp_extension.CppExtension(sources=cpp, **common)
    return [ext], {"build_ext": cpp_extension.BuildExtension.with_options(use_ninja=True)}


if __name__ == "__main__":  # setuptools runs this file as __main__; tests import the functions above
    ext_modules, cmdclass = _extensions()
    setup(ext_modules=ext_modules, cmdclass=cmdclass)
