// bind.hpp: shared declarations of the binding (cxxloop._core). No loop logic here.
#pragma once

#include <Python.h>

#include <system_error>

#include "cxxloop/loop.hpp"

namespace cxxloop::bind {

// --- errors.cpp -----------------------------------------------------------------
/// Sets the Python OSError subclass that matches `ec` (the errno table is CPython's
/// OSError constructor, which picks ConnectionResetError, BrokenPipeError, ...).
void set_os_error(std::error_code ec);
/// Takes the exception in flight as one normalised object carrying its traceback
/// (new reference; the error indicator is cleared).
PyObject* fetch_exception() noexcept;
/// A new OSError instance (of the errno's subclass) for `ec`, or null with an error set.
PyObject* make_os_error(std::error_code ec);
/// Converts the C++ exception in flight into a Python exception. Call in a catch(...).
void set_from_cpp_exception();

// --- bind_handle.cpp ------------------------------------------------------------
/// Creates the Handle/TimerHandle types as subclasses of asyncio.Handle and
/// asyncio.TimerHandle and adds them to `module`. Returns false with an error set.
bool init_handles(PyObject* module);
/// A new Handle (kind = plain) wrapping `callback(*args)` in `context` (None: copy
/// the current context) for `loop`. `args` is a tuple. New reference, or null.
PyObject* new_handle(PyObject* loop, PyObject* callback, PyObject* args, PyObject* context);
/// A new TimerHandle for `when` (a number; `when_d` its double value).
PyObject* new_timer_handle(PyObject* loop, PyObject* when, double when_d, PyObject* callback,
                           PyObject* args, PyObject* context);
/// The core node inside a handle made by new_handle/new_timer_handle.
Callback* handle_node(PyObject* handle);
Timer* timer_node(PyObject* handle);
/// The handle object that owns a core node (borrowed).
PyObject* node_handle(Callback* cb);
/// Bytes of a handle object before its core node, counting the GC header (for
/// EventLoop::set_callback_lead).
size_t handle_node_lead();
/// Frees the dead handles kept for reuse that no loop needed during the last trim
/// period; a no-op when called again within the period. `now` is monotonic().
void trim_handle_free_lists(double now);
// Nanoseconds until a trim check could give handles back (0: due now), or -1 when
// the free lists hold no more than they keep for good.
int64_t handle_trim_due_ns(double now);

// --- bind_loop.cpp -----------------------------------------------------------------
bool init_loop(PyObject* module);
/// The core loop of a Python loop object, or null (with RuntimeError set) when the
/// object is not initialised or is closed.
EventLoop* loop_core(PyObject* loop);
/// Whether the loop is in debug mode (for handle creation).
bool loop_debug(PyObject* loop);
/// Same, for a loop object known to be ours (the scheduling methods' self).
bool loop_debug_unchecked(PyObject* loop);

// --- bind_stream.cpp ----------------------------------------------------------------
/// Creates the StreamCore type (the C half of the stream transports).
bool init_stream(PyObject* module);
/// The buffer every read goes through under the GIL before it is copied out.
constexpr Py_ssize_t kStreamScratchSize = 256 * 1024;
char* stream_scratch() noexcept;

// --- bind_datagram.cpp --------------------------------------------------------------
/// Creates the DatagramReader and DatagramSender types (the C halves of UDP transports).
bool init_datagram(PyObject* module);

// --- bind_sock.cpp ------------------------------------------------------------------
/// Creates the SockOp type and _sock_methods() (the native sock_recv, sock_recv_into
/// and sock_sendall the package installs on the loop classes).
bool init_sock(PyObject* module);

// --- bind_uring.cpp -----------------------------------------------------------------
/// Adds uring_support() (the io_uring probe) to the module.
bool init_uring(PyObject* module);

// --- bind_tls.cpp -------------------------------------------------------------------
/// Creates the TLSProtocolBase type (the per-record half of _sslproto.SSLProtocol)
/// and the _tls_setup/_tls_install_transport functions.
bool init_tls(PyObject* module);

// --- module.cpp: Python-level helpers installed by the package -------------------------
struct Hooks {
    PyObject* report_callback_error = nullptr;  ///< (handle, exc) -> None
    PyObject* extract_stack = nullptr;          ///< () -> list of frames of the caller
};
extern Hooks hooks;

}  // namespace cxxloop::bind
