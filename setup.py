"""Build hook for the compiled extension fastticket._C.

Metadata lives in pyproject.toml. The C++/CUDA sources arrive in csrc/ with the extension issue; until
then (or with FASTTICKET_BUILD_EXT=0) this installs the pure-Python package and the torch backend works.
The CUDA part is compiled only when the installed torch has CUDA (torch.version.cuda is set).
"""

import glob
import os

from setuptools import setup


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
        import warnings

        warnings.warn("torch is not importable at build time: fastticket._C is not built "
                      "(install torch first and build with --no-build-isolation)")
        return [], {}

    cuda = sorted(glob.glob(os.path.join("csrc", "**", "*.cu"), recursive=True))
    common = dict(
        name="fastticket._C",
        include_dirs=[os.path.join(here, "csrc")],
        extra_compile_args={"cxx": ["-O3", "-std=c++17", "-fopenmp-simd", "-fno-math-errno"], "nvcc": ["-O3", "-std=c++17"]},
    )
    if torch.version.cuda and cuda:
        ext = cpp_extension.CUDAExtension(sources=cpp + cuda, define_macros=[("FASTTICKET_WITH_CUDA", None)], **common)
    else:
        common["extra_compile_args"] = {"cxx": common["extra_compile_args"]["cxx"]}
        ext = cpp_extension.CppExtension(sources=cpp, **common)
    return [ext], {"build_ext": cpp_extension.BuildExtension.with_options(use_ninja=True)}


ext_modules, cmdclass = _extensions()
setup(ext_modules=ext_modules, cmdclass=cmdclass)
