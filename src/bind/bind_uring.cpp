// bind_uring.cpp: the io_uring engine's probe, as cxxloop._core.uring_support().
#include "bind.hpp"
#include "cxxloop/uring.hpp"

namespace cxxloop::bind {
namespace {

// The probe runs once per process (the core caches it); the first call may take a
// few hundred microseconds to set up and tear down a small ring.
PyObject* uring_support(PyObject*, PyObject*) {
    const UringSupport& s = cxxloop::uring_support();
    return Py_BuildValue("(Ois)", s.available ? Py_True : Py_False, s.error, s.reason.c_str());
}

PyMethodDef methods[] = {
    {"uring_support", uring_support, METH_NOARGS,
     "uring_support() -> (available, errno, reason): whether io_uring can be used by this\n"
     "process. errno and reason are 0 and '' when it can; otherwise reason is a sentence\n"
     "naming the cause (old kernel, seccomp, kernel.io_uring_disabled, missing features,\n"
     "or a build without liburing)."},
    {nullptr, nullptr, 0, nullptr},
};

}  // namespace

bool init_uring(PyObject* module) { return PyModule_AddFunctions(module, methods) == 0; }

}  // namespace cxxloop::bind
