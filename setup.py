"""Builds mmtok._C, the library of `torch.ops.mmtok.*` operators: the C++ CPU kernels (always) and the CUDA kernels
(only when torch has CUDA).

Packaged as pytorch/extension-cpp packages custom ops: the library has no Python bindings (pybind11 is not used;
the helpers are ops too), so it is built against the stable CPython ABI (Py_LIMITED_API, an `abi3` wheel for
CPython >= 3.9) and loaded with `torch.ops.load_library`. Install with `pip install --no-build-isolation .` so the
extension compiles against the torch already installed (an isolated build env would download a different,
CUDA-enabled torch).
"""
import glob
import os

from setuptools import setup

import torch
from torch.utils.cpp_extension import BuildExtension, CppExtension, CUDAExtension, CUDA_HOME

HERE = os.path.dirname(os.path.abspath(__file__))
PY_LIMITED_API = "cp310"  # torch defines Py_LIMITED_API=0x030A0000 (CPython 3.10) for py_limited_api builds


def rel(paths):
    return sorted(os.path.relpath(p, HERE) for p in paths)


def extension():
    cpu_sources = rel(glob.glob(os.path.join(HERE, "csrc", "*.cpp")))
    cxx = ["-O3", "-fopenmp", "-ffp-contract=fast", "-DMMTOK_EXTENSION"]
    use_cuda = torch.version.cuda is not None and CUDA_HOME is not None and os.environ.get("MMTOK_NO_CUDA") != "1"
    if not use_cuda:
        return CppExtension("mmtok._C", cpu_sources, extra_compile_args={"cxx": cxx}, extra_link_args=["-fopenmp"],
                            py_limited_api=True)
    cuda_sources = rel(glob.glob(os.path.join(HERE, "csrc", "cuda", "*.cu")) + glob.glob(os.path.join(HERE, "csrc", "cuda", "*.cpp")))
    archs = os.environ.get("MMTOK_CUDA_ARCHS", "80;90a")
    nvcc = ["-O3", "--use_fast_math", "-lineinfo"] + [f"-gencode=arch=compute_{a},code=sm_{a}" for a in archs.split(";")]
    return CUDAExtension(
        "mmtok._C",
        cpu_sources + cuda_sources,
        define_macros=[("MMTOK_WITH_CUDA", "1")],
        extra_compile_args={"cxx": cxx, "nvcc": nvcc},
        extra_link_args=["-fopenmp"],
        py_limited_api=True,
    )


setup(
    ext_modules=[extension()],
    cmdclass={"build_ext": BuildExtension.with_options(use_ninja=False)},
    options={"bdist_wheel": {"py_limited_api": PY_LIMITED_API}},
)
