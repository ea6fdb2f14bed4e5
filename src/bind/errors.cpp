// errors.cpp: the one place core error codes become Python exceptions.
#include <new>
#include <stdexcept>
#include <system_error>

#include "bind.hpp"

namespace cxxloop::bind {

void set_os_error(std::error_code ec) {
    // OSError(errno, strerror) constructs the errno-specific subclass itself
    // (ConnectionResetError, BrokenPipeError, FileNotFoundError, ...).
    PyObject* args = Py_BuildValue("(is)", ec.value(), ec.message().c_str());
    if (!args) return;
    PyErr_SetObject(PyExc_OSError, args);
    Py_DECREF(args);
}

PyObject* fetch_exception() noexcept {
    PyObject *type, *value, *tb;
    PyErr_Fetch(&type, &value, &tb);
    PyErr_NormalizeException(&type, &value, &tb);
    if (tb && value) PyException_SetTraceback(value, tb);
    Py_XDECREF(type);
    Py_XDECREF(tb);
    return value;
}

PyObject* make_os_error(std::error_code ec) {
    return PyObject_CallFunction(PyExc_OSError, "is", ec.value(), ec.message().c_str());
}

void set_from_cpp_exception() {
    try {
        throw;
    } catch (const std::bad_alloc&) {
        PyErr_NoMemory();
    } catch (const std::system_error& e) {
        if (e.code().category() == std::system_category() || e.code().category() == std::generic_category())
            set_os_error(e.code());
        else
            PyErr_SetString(PyExc_RuntimeError, e.what());
    } catch (const std::invalid_argument& e) {
        PyErr_SetString(PyExc_ValueError, e.what());
    } catch (const std::exception& e) {
        PyErr_SetString(PyExc_RuntimeError, e.what());
    } catch (...) {
        PyErr_SetString(PyExc_RuntimeError, "unknown C++ exception");
    }
}

}  // namespace cxxloop::bind
