"""Builds mmtok._C: the C++ CPU kernels (always) and the CUDA kernels (only when torch has CUDA).

Install with `pip install --no-build-isolation .` so the extension compiles against the torch already
installed (an isolated build env would download a different, CUDA-enabled torch).
"""
import glob
import os

from setuptools import setup

import torch
from torch.utils.cpp_extension import BuildExtension, CppExtension, CUDAExtension, CUDA_HOME

HERE = os.path.dirname(os.path.abspath(__file__))


def rel(paths):
    return sorted(os.path.relpath(p, HERE) for p in paths)


def extension():
    cpu_sources = rel(glob.glob(os.path.join(HERE, "csrc", "*.cpp")))
    cxx = ["-O3", "-fopenmp", "-ffp-contract=fast", "-DMMTOK_EXTENSION"]
    use_cuda = torch.version.cuda is not None and CUDA_HOME is not None and os.environ.get("MMTOK_NO_CUDA") != "1"
    if not use_cuda:
        return CppExtension("mmtok._C", cpu_sources, extra_compile_args={"cxx": cxx}, extra_link_args=["-fopenmp"])
    cuda_sources = rel(glob.glob(os.path.join(HERE, "csrc", "cuda", "*.cu")) + glob.glob(os.path.join(HERE, "csrc", "cuda", "*.cpp")))
    archs = os.environ.get("MMTOK_CUDA_ARCHS", "80;90a")
    nvcc = ["-O3", "--use_fast_math", "-lineinfo"] + [f"-gencode=arch=compute_{a},code=sm_{a}" for a in archs.split(";")]
    return CUDAExtension(
        "mmtok._C",
        cpu_sources + cuda_sources,
        define_macros=[("MMTOK_WITH_CUDA", "1")],
        extra_compile_args={"cxx": cxx, "nvcc": nvcc},
        extra_link_args=["-fopenmp"],
    )


setup(ext_modules=[extension()], cmdclass={"build_ext": BuildExtension.with_options(use_ninja=False)})
