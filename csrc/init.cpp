// Python module init for pydet_ops._C. Ops register themselves from their own files through
// TORCH_LIBRARY_FRAGMENT / TORCH_LIBRARY_IMPL when the library is loaded; nothing is listed here.
#include <Python.h>

extern "C" PyObject* PyInit__C(void) {
  static PyModuleDef module = {PyModuleDef_HEAD_INIT, "_C", "pydet_ops compiled ops (use torch.ops.pydet_ops)", -1,
                               nullptr};
  return PyModule_Create(&module);
}
