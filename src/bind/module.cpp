// module.cpp: the cxxloop._core extension module: registers the types of each area.
#include <nanobind/nanobind.h>

#include "bind.hpp"

namespace nb = nanobind;

namespace cxxloop::bind {

Hooks hooks;

namespace {

// The package installs its Python-level helpers once, at import.
void set_hooks(nb::object report_callback_error, nb::object extract_stack) {
    Py_XSETREF(hooks.report_callback_error, report_callback_error.release().ptr());
    Py_XSETREF(hooks.extract_stack, extract_stack.release().ptr());
}

}  // namespace
}  // namespace cxxloop::bind

NB_MODULE(_core, m) {
    using namespace cxxloop::bind;
    if (!init_handles(m.ptr()) || !init_loop(m.ptr()) || !init_stream(m.ptr()) ||
        !init_datagram(m.ptr()) || !init_uring(m.ptr()) || !init_tls(m.ptr()) ||
        !init_sock(m.ptr()))
        throw nb::python_error();
    m.def("_set_hooks", &set_hooks, nb::arg("report_callback_error"), nb::arg("extract_stack"),
          "Install the Python helpers the engine calls (error reports, debug tracebacks).");
}
