// The `mmtok` operator library: every schema, defined once, and the empty Python module `mmtok._C`.
//
// Packaged as pytorch/extension-cpp packages custom ops: the kernels register themselves per dispatch key
// (TORCH_LIBRARY_IMPL(mmtok, CPU) in nearest_code_cpu.cpp and group_norm_cpu.cpp, TORCH_LIBRARY_IMPL(mmtok, CUDA)
// in cuda/nearest_code_cuda.cpp, built only when torch has CUDA); the fake (shape) kernels and autograd formulas
// are registered on these schemas from Python (mmtok/ops/registration.py). No pybind11: the helpers are ops too,
// so the library uses only the stable CPython ABI (an abi3 wheel) and loads with torch.ops.load_library.
#include <Python.h>

#include <torch/library.h>

#include "mmtok_ops.h"

extern "C" {
// An empty module, so `import mmtok._C` also works: loading the shared object runs the registrations below.
PyObject* PyInit__C(void) {
  static struct PyModuleDef module_def = {PyModuleDef_HEAD_INIT, "_C", "mmtok's compiled kernels (torch.ops.mmtok.*)",
                                          -1, nullptr};
  return PyModule_Create(&module_def);
}
}

namespace mmtok {
namespace {

bool with_cuda() {
#ifdef MMTOK_WITH_CUDA
  return true;
#else
  return false;
#endif
}

}  // namespace
}  // namespace mmtok

TORCH_LIBRARY(mmtok, m) {
  // Keep this signature equal to NEAREST_CODE_SIGNATURE in mmtok/ops/registration.py (which defines the same
  // schema, with the torch reference as its kernel, when this library is absent; a test compares the two).
  m.def("nearest_code(Tensor x, Tensor codebook, str metric) -> (Tensor, Tensor)");
  m.def("group_norm_cl(Tensor x, Tensor weight, Tensor bias, int groups, float eps, bool swish) -> Tensor");
  // Helpers (no tensors: one kernel for every dispatch key).
  m.def("cpu_capability() -> str", &mmtok::cpu_capability);
  m.def("set_cpu_capability(str isa) -> ()", &mmtok::set_cpu_capability);
  m.def("with_cuda() -> bool", &mmtok::with_cuda);
}
