"""setup.py: the decision whether fastticket._C gets its CUDA part (a pure function: torch's CUDA, the
nvcc found and its version, FASTTICKET_BUILD_CUDA), the nvcc version parser, and setup.py run as setuptools
runs it (setuptools.setup stubbed: nothing builds) with FASTTICKET_BUILD_EXT=0 / 1 on this CPU torch."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def setup_py():
    spec = importlib.util.spec_from_file_location("fastticket_setup_under_test", ROOT / "setup.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)  # not __main__: defines the functions, calls no setup()
    return module


@pytest.mark.parametrize("text,version", [
    ("nvcc: NVIDIA (R) Cuda compiler driver\nCuda compilation tools, release 13.0, V13.0.48\n", "13.0"),
    ("Cuda compilation tools, release 12.4, V12.4.131", "12.4"),
    ("", None), (None, None), ("nvcc: command not found", None)])
def test_parse_nvcc_version(setup_py, text, version):
    assert setup_py.parse_nvcc_version(text) == version


CU = ["csrc/cuda/residual_layernorm.cu"]


@pytest.mark.parametrize("torch_cuda,nvcc,version,sources,env,build,why", [
    ("13.0", "/usr/local/cuda/bin/nvcc", "13.0", CU, {}, True, "for 8.0;9.0"),
    ("13.0", "/opt/cuda/bin/nvcc", "13.2", CU, {"TORCH_CUDA_ARCH_LIST": "9.0a"}, True, "for 9.0a"),
    ("12.8", "/usr/local/cuda/bin/nvcc", "12.4", CU, {}, True, "CUDA 12.4"),
    (None, "/usr/local/cuda/bin/nvcc", "13.0", CU, {}, False, "torch has no CUDA"),
    ("13.0", None, None, CU, {}, False, "no nvcc was found"),
    ("13.0", "/usr/bin/nvcc", "12.4", CU, {}, False, "nvcc 12.4 (/usr/bin/nvcc) does not match torch's CUDA 13.0"),
    ("12.1", "/usr/bin/nvcc", "11.8", CU, {}, False, "does not match"),
    ("13.0", "/usr/bin/nvcc", None, CU, {}, False, "cannot read the version"),
    ("13.0", "/usr/local/cuda/bin/nvcc", "13.0", [], {}, False, "no CUDA sources"),
    ("13.0", "/usr/local/cuda/bin/nvcc", "13.0", CU, {"FASTTICKET_BUILD_CUDA": "0"}, False, "FASTTICKET_BUILD_CUDA=0"),
])
def test_cuda_decision(setup_py, torch_cuda, nvcc, version, sources, env, build, why):
    """The CUDA part only when torch has CUDA and a same-major nvcc is found; else one line, CPU part only."""
    decided, message = setup_py.cuda_decision(torch_cuda, nvcc, version, sources, env)
    assert decided is build and why in message and "\n" not in message
    if not build:
        assert "CPU part" in message


def _run_setup(monkeypatch, capsys):
    """setup.py executed as setuptools does (as __main__) with setuptools.setup stubbed."""
    import setuptools

    seen = {}
    monkeypatch.setattr(setuptools, "setup", lambda **kw: seen.update(kw))
    monkeypatch.chdir(ROOT)
    code = compile((ROOT / "setup.py").read_text(), str(ROOT / "setup.py"), "exec")
    exec(code, {"__name__": "__main__", "__file__": str(ROOT / "setup.py")})
    return seen, capsys.readouterr().err


def test_setup_skips_the_extension_with_build_ext_0(monkeypatch, capsys):
    monkeypatch.setenv("FASTTICKET_BUILD_EXT", "0")
    seen, _ = _run_setup(monkeypatch, capsys)
    assert seen["ext_modules"] == [] and seen["cmdclass"] == {}


def test_setup_on_cpu_torch_builds_the_cpu_part_and_says_why(monkeypatch, capsys):
    import torch

    monkeypatch.setenv("FASTTICKET_BUILD_EXT", "1")
    monkeypatch.delenv("FASTTICKET_BUILD_CUDA", raising=False)
    seen, err = _run_setup(monkeypatch, capsys)
    (ext,) = seen["ext_modules"]
    assert ext.name == "fastticket._C" and any(s.endswith("attention.cpp") for s in ext.sources)
    if torch.version.cuda is None:
        assert not any(s.endswith(".cu") for s in ext.sources)
        assert "fastticket: torch has no CUDA: building the CPU part of fastticket._C only" in err


def _nvcc():
    import glob
    import os
    import shutil

    home = os.environ.get("CUDA_HOME") or os.environ.get("CUDA_PATH")
    candidates = ([os.path.join(home, "bin", "nvcc")] if home else []) + [shutil.which("nvcc") or ""] + \
        sorted(glob.glob("/usr/local/cuda*/bin/nvcc"), reverse=True)
    return next((c for c in candidates if c and os.path.exists(c)), None)


def test_cuda_kernels_compile_for_sm80_and_sm90(tmp_path):
    """The CUDA extension's device kernels (csrc/cuda/*_kernels.cuh, no ATen) compile with nvcc for A100 and
    H100 without register spills. Skipped where no nvcc is installed (the host side needs CUDA torch)."""
    import re
    import subprocess

    nvcc = _nvcc()
    if nvcc is None:
        pytest.skip("no nvcc on this machine")
    headers = sorted((ROOT / "csrc" / "cuda").glob("*_kernels.cuh"))
    assert headers
    src = tmp_path / "kernels.cu"
    src.write_text("".join(f'#include "{h}"\n' for h in headers))
    out = subprocess.run([nvcc, "-std=c++17", "-O3", "-c", str(src), "-o", str(tmp_path / "k.o"), "-Xptxas", "-v",
                          "-gencode", "arch=compute_80,code=sm_80", "-gencode", "arch=compute_90,code=sm_90"],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "Compiling entry function" in out.stderr and "sm_90" in out.stderr
    spills = [int(x) for x in re.findall(r"(\d+) bytes spill (?:stores|loads)", out.stderr)]
    assert not any(spills), out.stderr[-3000:]
