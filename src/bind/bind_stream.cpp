// bind_stream.cpp: cxxloop._core.StreamCore, the C half of cxxloop's stream transports.
//
// A StreamCore drives one core Stream (the fd, the write queue, the flush) for one
// Python transport object (python/cxxloop/_transports.py), which keeps the transport
// contract: close, abort, connection_lost, flow-control bookkeeping, extra info. The
// core owns only the hot paths: reading (one read per readiness report into a shared
// buffer, a bytes object of the exact size handed to data_received, or the memory of
// a BufferedProtocol's get_buffer()) and writing (a bytes chunk is queued by
// reference; bytearray and memoryview are copied, since their owner may change them).
// Whatever is rare -- errors, EOF, pausing the protocol, a drained queue the
// transport waits for -- calls back into a method of the Python transport.
//
// While the stream is registered with the loop the core holds a reference to itself
// (and so to the transport), as asyncio's selector holds a transport through its
// reader and writer handles.
//
// Pipe transports (python/cxxloop/_pipes.py, StreamCore(..., pipe="read"|"write"))
// differ from socket ones where asyncio's Unix pipe transports do; see PipeMode.
#include <cstring>
#include <new>
#include <optional>

#include "bind.hpp"
#include "cxxloop/stream.hpp"
#include "cxxloop/uring_stream.hpp"
#include "structmember.h"

namespace cxxloop::bind {
namespace {

constexpr Py_ssize_t kMaxSize = 256 * 1024;  // asyncio's max_size for one recv().
constexpr long kLogThreshold = 5;            // asyncio's LOG_THRESHOLD_FOR_CONNLOST_WRITES.

// One read at a time happens under the GIL: every stream reads into this buffer and
// copies the bytes it got into a bytes object of the exact size.
char g_scratch[kMaxSize];

PyObject* str_data_received;
PyObject* str_get_buffer;
PyObject* str_buffer_updated;

struct PyStreamCore;

// What a pipe transport changes, following asyncio's Unix pipe transports:
// - both: an exception from a protocol callback (data_received) is reported through
//   transport._protocol_error(exc, message), which does not close the transport
//   (asyncio's read pipe lets it reach the loop's handler as a callback's exception);
// - write: the fd is watched for readability only to learn that the reader went away:
//   a readable report reads nothing and calls transport._read_ready(), which closes
//   the transport (and so stops the watch). write() while the transport is closing
//   drops the data and counts it as lost. The protocol is resumed only once the queue
//   is empty: resume reports are not forwarded, every drain calls _write_drained().
enum class PipeMode : unsigned char { none, read, write };

class Core final : public StreamHandler {
public:
    Core(PyObject* self, PyObject* loop, EventLoop* ev, PyObject* transport, int fd, bool is_socket, bool completions)
        : self_(self), loop_(Py_NewRef(loop)), transport_(Py_NewRef(transport)) {
        // A socket stream on the io_uring engine is completion-based (uring_stream.hpp).
        if (completions && UringStream::supported(*ev)) stream = std::make_unique<UringStream>(*ev, fd, *this);
        else stream = std::make_unique<Stream>(*ev, fd, *this, is_socket);
    }
    ~Core() override {
        stream.reset();  // Unwatches and releases queued chunks (the GIL is held).
        Py_CLEAR(protocol_);
        Py_CLEAR(empty_waiter);
        Py_CLEAR(transport_);
        Py_CLEAR(loop_);
    }

    // --- StreamHandler -----------------------------------------------------------------
    std::span<char> read_buffer(size_t) noexcept override {
        if (pipe == PipeMode::write) {  // The hang-up watch of a write pipe.
            call_transport("_read_ready", nullptr);
            return {};
        }
        if (conn_lost || !protocol_) return {};
        if (!buffered_) return {g_scratch, size_t(kMaxSize)};
        PyObject* arg = PyLong_FromLong(-1);
        PyObject* buf = arg ? call_protocol(str_get_buffer, arg) : nullptr;
        Py_XDECREF(arg);
        if (buf) {
            int rc = PyObject_GetBuffer(buf, &view_, PyBUF_WRITABLE);
            Py_DECREF(buf);
            if (rc == 0) {
                if (view_.len > 0) {
                    have_view_ = true;
                    return {static_cast<char*>(view_.buf), size_t(view_.len)};
                }
                PyBuffer_Release(&view_);
                PyErr_SetString(PyExc_RuntimeError, "get_buffer() returned an empty buffer");
            }
        }
        protocol_failed("Fatal error: protocol.get_buffer() call failed.");
        return {};
    }

    void on_read(size_t n) noexcept override {
        if (buffered_) {
            if (have_view_) {
                PyBuffer_Release(&view_);
                have_view_ = false;
            }
            PyObject* arg = PyLong_FromSize_t(n);
            PyObject* r = arg ? call_protocol(str_buffer_updated, arg) : nullptr;
            Py_XDECREF(arg);
            if (r) Py_DECREF(r);
            else protocol_failed("Fatal error: protocol.buffer_updated() call failed.");
            return;
        }
        deliver_bytes(g_scratch, n);
    }

    // A completion-based stream's bytes go straight into the bytes object.
    bool on_bytes(const char* data, size_t n) noexcept override {
        if (buffered_ || conn_lost || !protocol_ || pipe == PipeMode::write) return false;
        deliver_bytes(data, n);
        return true;
    }

    void deliver_bytes(const char* p, size_t n) noexcept {
        PyObject* data = PyBytes_FromStringAndSize(p, Py_ssize_t(n));
        PyObject* r = data ? call_protocol(str_data_received, data) : nullptr;
        Py_XDECREF(data);
        if (r) Py_DECREF(r);
        else protocol_failed("Fatal error: protocol.data_received() call failed.");
    }

    void on_eof() noexcept override {
        release_view();
        call_transport("_eof_received", nullptr);
    }

    void on_error(std::error_code ec, bool writing) noexcept override {
        release_view();
        PyObject* exc = make_os_error(ec);
        if (!exc) {
            abort_iteration();
            return;
        }
        PyObject* w = writing ? Py_True : Py_False;
        call_transport("_stream_error", exc, w);
        Py_DECREF(exc);
    }

    void on_pause_writing() noexcept override { call_transport("_maybe_pause_protocol", nullptr); }
    void on_resume_writing() noexcept override {
        if (pipe != PipeMode::write) call_transport("_maybe_resume_protocol", nullptr);
    }
    void on_drained() noexcept override {
        if (wants_drained()) call_transport("_write_drained", nullptr);
    }
    bool wants_drained() const noexcept override { return empty_waiter || closing || pipe == PipeMode::write; }
    // A method called from Python reports SystemExit/KeyboardInterrupt by returning
    // null itself, so the flag that would abort the loop's iteration is dropped.
    PyObject* finish(PyObject* result) noexcept {
        abort_ = false;
        if (PyErr_Occurred()) {
            Py_XDECREF(result);
            return nullptr;
        }
        return result;
    }
    bool proceed() noexcept override {
        sync_hold();
        if (!abort_) return true;
        abort_ = false;
        return false;
    }
    void retain() noexcept override { Py_INCREF(self_); }
    void release() noexcept override { Py_DECREF(self_); }
    void on_loop_closed() noexcept override { sync_hold(); }

    // --- used by the methods -------------------------------------------------------------
    // Holds the core while its stream is registered with the loop; may drop the last
    // reference but one the caller holds.
    void sync_hold() noexcept {
        bool want = stream && stream->registered();
        if (want == held_) return;
        held_ = want;
        if (want) Py_INCREF(self_);
        else Py_DECREF(self_);
    }

    void set_protocol(PyObject* protocol, bool buffered) {
        Py_XSETREF(protocol_, Py_NewRef(protocol));
        buffered_ = buffered;
    }

    // The transport is done with the fd: stop everything and drop the references
    // that tie the transport, the protocol and the core together.
    void detach() noexcept {
        release_view();
        if (stream) stream->abort();
        Py_CLEAR(protocol_);
        sync_hold();
    }

    int traverse(visitproc visit, void* arg) {
        Py_VISIT(loop_);
        Py_VISIT(transport_);
        Py_VISIT(protocol_);
        Py_VISIT(empty_waiter);
        return 0;
    }

    PyObject* transport() const noexcept { return transport_; }

    std::unique_ptr<ByteStream> stream;
    long conn_lost = 0;
    bool eof = false;
    bool closing = false;  // Mirrors the transport's _closing, for on_drained.
    PipeMode pipe = PipeMode::none;
    PyObject* empty_waiter = nullptr;

private:
    PyObject* call_protocol(PyObject* name, PyObject* arg) {
        PyObject* args[2] = {protocol_, arg};
        Py_INCREF(protocol_);  // The callback may replace or drop the protocol.
        PyObject* r = PyObject_VectorcallMethod(name, args, 2 | PY_VECTORCALL_ARGUMENTS_OFFSET, nullptr);
        Py_DECREF(args[0]);
        return r;
    }

    // A protocol callback raised: SystemExit and KeyboardInterrupt leave the loop, as
    // asyncio's transports let them; anything else is the transport's fatal error.
    void protocol_failed(const char* message) noexcept {
        release_view();
        if (PyErr_ExceptionMatches(PyExc_SystemExit) || PyErr_ExceptionMatches(PyExc_KeyboardInterrupt)) {
            abort_ = true;
            return;
        }
        PyObject* exc = fetch_exception();
        PyObject* msg = PyUnicode_FromString(message);
        if (msg) call_transport(pipe == PipeMode::none ? "_fatal_error" : "_protocol_error", exc, msg);
        else abort_iteration();
        Py_XDECREF(msg);
        Py_DECREF(exc);
    }

    // Calls transport.<name>(*args) (up to two); an exception leaves the loop when it
    // is SystemExit/KeyboardInterrupt and goes to the loop's handler otherwise.
    void call_transport(const char* name, PyObject* a, PyObject* b = nullptr) noexcept {
        PyObject* r = PyObject_CallMethod(transport_, name, b ? "OO" : (a ? "O" : nullptr), a, b);
        if (r) {
            Py_DECREF(r);
            return;
        }
        abort_iteration();
    }

    void abort_iteration() noexcept {
        if (PyErr_ExceptionMatches(PyExc_SystemExit) || PyErr_ExceptionMatches(PyExc_KeyboardInterrupt)) {
            abort_ = true;
            return;
        }
        PyErr_WriteUnraisable(transport_);
    }

    void release_view() noexcept {
        if (have_view_) {
            PyBuffer_Release(&view_);
            have_view_ = false;
        }
    }

    PyObject* self_;  // Borrowed: the Python object that owns this core.
    PyObject* loop_;
    PyObject* transport_;
    PyObject* protocol_ = nullptr;
    Py_buffer view_{};
    bool have_view_ = false;
    bool buffered_ = false;
    bool held_ = false;
    bool abort_ = false;
};

struct PyStreamCore {
    PyObject_HEAD
    Core* core;
};

inline Core* core_of(PyObject* self) { return reinterpret_cast<PyStreamCore*>(self)->core; }

Core* live_core(PyObject* self) {
    Core* c = core_of(self);
    if (!c) PyErr_SetString(PyExc_RuntimeError, "the transport core is closed");
    return c;
}

// --- writing -------------------------------------------------------------------------------

void release_bytes(void* owner) noexcept { Py_DECREF(static_cast<PyObject*>(owner)); }

// A chunk for `data` (bytes by reference, other buffers copied), or false with an error.
bool make_chunk(PyObject* data, WriteChunk* out) {
    PyObject* bytes;
    if (PyBytes_Check(data)) {
        bytes = Py_NewRef(data);
    } else if (PyByteArray_Check(data) || PyMemoryView_Check(data)) {
        bytes = PyBytes_FromObject(data);
        if (!bytes) return false;
    } else {
        PyErr_Format(PyExc_TypeError, "data argument must be a bytes-like object, not '%.200s'",
                     Py_TYPE(data)->tp_name);
        return false;
    }
    *out = WriteChunk{PyBytes_AS_STRING(bytes), size_t(PyBytes_GET_SIZE(bytes)), bytes, release_bytes};
    return true;
}

Py_ssize_t data_length(PyObject* data) {
    if (PyBytes_Check(data)) return PyBytes_GET_SIZE(data);
    if (PyByteArray_Check(data)) return PyByteArray_GET_SIZE(data);
    return PyObject_Length(data);
}

bool lost_write(Core* c) {
    if (c->conn_lost >= kLogThreshold) {
        PyObject* r = PyObject_CallMethod(c->transport(), "_warn_lost_write", nullptr);
        if (!r) return false;
        Py_DECREF(r);
    }
    ++c->conn_lost;
    return true;
}

PyObject* core_write(PyObject* self, PyObject* data) {
    Core* c = live_core(self);
    if (!c) return nullptr;
    if (!PyBytes_Check(data) && !PyByteArray_Check(data) && !PyMemoryView_Check(data)) {
        PyErr_Format(PyExc_TypeError, "data argument must be a bytes-like object, not '%.200s'",
                     Py_TYPE(data)->tp_name);
        return nullptr;
    }
    if (c->eof) {
        PyErr_SetString(PyExc_RuntimeError, "Cannot call write() after write_eof()");
        return nullptr;
    }
    if (c->empty_waiter) {
        PyErr_SetString(PyExc_RuntimeError, "unable to write; sendfile is in progress");
        return nullptr;
    }
    Py_ssize_t len = data_length(data);
    if (len < 0) return nullptr;
    if (len == 0) Py_RETURN_NONE;
    if (c->conn_lost || (c->pipe == PipeMode::write && c->closing))
        return lost_write(c) ? Py_NewRef(Py_None) : nullptr;
    WriteChunk chunk;
    if (!make_chunk(data, &chunk)) return nullptr;
    Py_INCREF(self);  // An error reported from inside write() may close the transport.
    c->stream->write(chunk);  // Errors reach on_error (the transport's fatal error).
    PyObject* r = core_of(self) ? (c->sync_hold(), c->finish(Py_NewRef(Py_None))) : Py_NewRef(Py_None);
    Py_DECREF(self);
    return r;
}

PyObject* core_writelines(PyObject* self, PyObject* seq) {
    Core* c = live_core(self);
    if (!c) return nullptr;
    if (c->eof) {
        PyErr_SetString(PyExc_RuntimeError, "Cannot call writelines() after write_eof()");
        return nullptr;
    }
    if (c->empty_waiter) {
        PyErr_SetString(PyExc_RuntimeError, "unable to writelines; sendfile is in progress");
        return nullptr;
    }
    PyObject* items = PySequence_Fast(seq, "writelines() argument must be an iterable");
    if (!items) return nullptr;
    Py_INCREF(self);
    Py_ssize_t n = PySequence_Fast_GET_SIZE(items);
    PyObject* result = Py_None;
    for (Py_ssize_t i = 0; i < n && core_of(self); ++i) {
        PyObject* item = PySequence_Fast_GET_ITEM(items, i);
        // As asyncio, which takes memoryview(item) of each: any buffer is accepted.
        PyObject* bytes = PyBytes_Check(item) ? Py_NewRef(item) : PyBytes_FromObject(item);
        if (!bytes) {
            result = nullptr;
            break;
        }
        if (PyBytes_GET_SIZE(bytes) == 0 || c->conn_lost) {
            Py_DECREF(bytes);
            continue;
        }
        c->stream->write(WriteChunk{PyBytes_AS_STRING(bytes), size_t(PyBytes_GET_SIZE(bytes)), bytes, release_bytes});
        if (PyErr_Occurred()) {
            result = nullptr;
            break;
        }
    }
    PyObject* r = result ? Py_NewRef(result) : nullptr;
    if (core_of(self)) {
        c->sync_hold();
        r = c->finish(r);
    }
    Py_DECREF(items);
    Py_DECREF(self);
    return r;
}

PyObject* core_write_eof(PyObject* self, PyObject*) {
    Core* c = live_core(self);
    if (!c) return nullptr;
    c->eof = true;
    if (auto ec = c->stream->shutdown_write()) {
        set_os_error(ec);
        return nullptr;
    }
    Py_RETURN_NONE;
}

// --- reading and state ---------------------------------------------------------------------

PyObject* core_start_reading(PyObject* self, PyObject*) {
    Core* c = live_core(self);
    if (!c) return nullptr;
    std::error_code ec = c->stream->start_reading();
    c->sync_hold();
    if (ec) {
        set_os_error(ec);
        return nullptr;
    }
    Py_RETURN_NONE;
}

PyObject* core_stop_reading(PyObject* self, PyObject*) {
    if (Core* c = core_of(self)) {
        c->stream->stop_reading();
        c->sync_hold();
    }
    Py_RETURN_NONE;
}

PyObject* core_set_protocol(PyObject* self, PyObject* const* args, Py_ssize_t nargs) {
    Core* c = live_core(self);
    if (!c) return nullptr;
    if (nargs != 2) {
        PyErr_SetString(PyExc_TypeError, "set_protocol(protocol, buffered)");
        return nullptr;
    }
    int buffered = PyObject_IsTrue(args[1]);
    if (buffered < 0) return nullptr;
    c->set_protocol(args[0], buffered);
    Py_RETURN_NONE;
}

PyObject* core_set_write_limits(PyObject* self, PyObject* const* args, Py_ssize_t nargs) {
    Core* c = live_core(self);
    if (!c) return nullptr;
    if (nargs != 2) {
        PyErr_SetString(PyExc_TypeError, "set_write_limits(high, low)");
        return nullptr;
    }
    Py_ssize_t high = PyNumber_AsSsize_t(args[0], PyExc_OverflowError);
    if (high == -1 && PyErr_Occurred()) return nullptr;
    Py_ssize_t low = PyNumber_AsSsize_t(args[1], PyExc_OverflowError);
    if (low == -1 && PyErr_Occurred()) return nullptr;
    Py_INCREF(self);
    c->stream->set_write_limits(size_t(high < 0 ? 0 : high), size_t(low < 0 ? 0 : low));
    PyObject* r = core_of(self) ? c->finish(Py_NewRef(Py_None)) : Py_NewRef(Py_None);
    Py_DECREF(self);
    return r;
}

PyObject* core_buffer_size(PyObject* self, PyObject*) {
    Core* c = core_of(self);
    return PyLong_FromSize_t(c && c->stream ? c->stream->write_buffer_size() : 0);
}

// Drops the write queue and stops watching the fd (asyncio's _force_close).
PyObject* core_abort(PyObject* self, PyObject*) {
    if (Core* c = core_of(self)) {
        Py_INCREF(self);
        c->stream->abort();
        c->sync_hold();
        Py_DECREF(self);
    }
    Py_RETURN_NONE;
}

PyObject* core_detach(PyObject* self, PyObject*) {
    if (Core* c = core_of(self)) {
        Py_INCREF(self);
        c->detach();
        Py_DECREF(self);
    }
    Py_RETURN_NONE;
}

PyObject* get_conn_lost(PyObject* self, void*) {
    Core* c = core_of(self);
    return PyLong_FromLong(c ? c->conn_lost : 0);
}
int set_conn_lost(PyObject* self, PyObject* v, void*) {
    Core* c = core_of(self);
    long n = v ? PyLong_AsLong(v) : 0;
    if (n == -1 && PyErr_Occurred()) return -1;
    if (c) c->conn_lost = n;
    return 0;
}

PyObject* get_eof(PyObject* self, void*) {
    Core* c = core_of(self);
    return PyBool_FromLong(c && c->eof);
}

PyObject* get_closing(PyObject* self, void*) {
    Core* c = core_of(self);
    return PyBool_FromLong(c && c->closing);
}
int set_closing(PyObject* self, PyObject* v, void*) {
    int on = v ? PyObject_IsTrue(v) : 0;
    if (on < 0) return -1;
    if (Core* c = core_of(self)) c->closing = on;
    return 0;
}

PyObject* get_empty_waiter(PyObject* self, void*) {
    Core* c = core_of(self);
    return Py_NewRef(c && c->empty_waiter ? c->empty_waiter : Py_None);
}
int set_empty_waiter(PyObject* self, PyObject* v, void*) {
    Core* c = core_of(self);
    if (!c) return 0;
    Py_XSETREF(c->empty_waiter, v && v != Py_None ? Py_NewRef(v) : nullptr);
    return 0;
}

PyObject* get_reading(PyObject* self, void*) {
    Core* c = core_of(self);
    return PyBool_FromLong(c && c->stream && c->stream->reading());
}

PyObject* get_flushing(PyObject* self, void*) {
    Core* c = core_of(self);
    return PyBool_FromLong(c && c->stream && c->stream->flushing());
}

// --- the type ------------------------------------------------------------------------------

PyObject* core_new(PyTypeObject* type, PyObject* args, PyObject* kwds) {
    static const char* kwlist[] = {"loop", "transport", "fd", "is_socket", "pipe", nullptr};
    PyObject *loop, *transport;
    int fd, is_socket = 1;
    const char* pipe = nullptr;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "OOi|pz", const_cast<char**>(kwlist), &loop, &transport, &fd,
                                     &is_socket, &pipe))
        return nullptr;
    PipeMode mode = PipeMode::none;
    if (pipe && std::strcmp(pipe, "read") == 0) {
        mode = PipeMode::read;
    } else if (pipe && std::strcmp(pipe, "write") == 0) {
        mode = PipeMode::write;
    } else if (pipe) {
        PyErr_SetString(PyExc_ValueError, "pipe must be None, 'read' or 'write'");
        return nullptr;
    }
    EventLoop* ev = loop_core(loop);
    if (!ev) return nullptr;
    PyObject* self = type->tp_alloc(type, 0);
    if (!self) return nullptr;
    try {
        reinterpret_cast<PyStreamCore*>(self)->core =
            new Core(self, loop, ev, transport, fd, is_socket, is_socket && mode == PipeMode::none);
        reinterpret_cast<PyStreamCore*>(self)->core->pipe = mode;
    } catch (...) {
        set_from_cpp_exception();
        Py_DECREF(self);
        return nullptr;
    }
    return self;
}

int core_traverse(PyObject* self, visitproc visit, void* arg) {
    Py_VISIT(Py_TYPE(self));
    Core* c = core_of(self);
    return c ? c->traverse(visit, arg) : 0;
}

int core_clear(PyObject* self) {
    Core* c = core_of(self);
    reinterpret_cast<PyStreamCore*>(self)->core = nullptr;
    delete c;
    return 0;
}

void core_dealloc(PyObject* self) {
    PyTypeObject* type = Py_TYPE(self);
    PyObject_GC_UnTrack(self);
    core_clear(self);
    type->tp_free(self);
    Py_DECREF(type);
}

#define FAST(f) reinterpret_cast<PyCFunction>(reinterpret_cast<void (*)(void)>(f))

PyMethodDef core_methods[] = {
    {"write", core_write, METH_O, "Write bytes-like data (the transport's write())."},
    {"writelines", core_writelines, METH_O, "Write each item of a sequence of bytes-like objects."},
    {"write_eof", core_write_eof, METH_NOARGS, "Shut down the write side once the queue is flushed."},
    {"start_reading", core_start_reading, METH_NOARGS, "Deliver reads to the protocol."},
    {"stop_reading", core_stop_reading, METH_NOARGS, "Stop delivering reads."},
    {"set_protocol", FAST(core_set_protocol), METH_FASTCALL, "set_protocol(protocol, buffered)."},
    {"set_write_limits", FAST(core_set_write_limits), METH_FASTCALL, "set_write_limits(high, low)."},
    {"buffer_size", core_buffer_size, METH_NOARGS, "Bytes queued and not yet written."},
    {"abort", core_abort, METH_NOARGS, "Drop the write queue and stop watching the fd."},
    {"detach", core_detach, METH_NOARGS, "Stop everything and drop the protocol."},
    {nullptr, nullptr, 0, nullptr},
};

PyGetSetDef core_getset[] = {
    {"conn_lost", get_conn_lost, set_conn_lost, "asyncio's _conn_lost counter.", nullptr},
    {"eof", get_eof, nullptr, "True once write_eof() was called.", nullptr},
    {"closing", get_closing, set_closing, "The transport's _closing flag.", nullptr},
    {"empty_waiter", get_empty_waiter, set_empty_waiter, "The future sendfile waits on, or None.", nullptr},
    {"reading", get_reading, nullptr, "True while reads are delivered.", nullptr},
    {"flushing", get_flushing, nullptr, "True while queued data waits for the fd.", nullptr},
    {nullptr, nullptr, nullptr, nullptr, nullptr},
};

}  // namespace

char* stream_scratch() noexcept { return g_scratch; }

bool init_stream(PyObject* module) {
    str_data_received = PyUnicode_InternFromString("data_received");
    str_get_buffer = PyUnicode_InternFromString("get_buffer");
    str_buffer_updated = PyUnicode_InternFromString("buffer_updated");
    if (!str_data_received || !str_get_buffer || !str_buffer_updated) return false;
    PyType_Slot slots[] = {
        {Py_tp_new, reinterpret_cast<void*>(core_new)},
        {Py_tp_dealloc, reinterpret_cast<void*>(core_dealloc)},
        {Py_tp_traverse, reinterpret_cast<void*>(core_traverse)},
        {Py_tp_clear, reinterpret_cast<void*>(core_clear)},
        {Py_tp_methods, core_methods},
        {Py_tp_getset, core_getset},
        {Py_tp_doc, const_cast<char*>("StreamCore(loop, transport, fd, is_socket=True, pipe=None): the C++ "
                                      "data path of a stream transport (pipe: 'read' or 'write' for "
                                      "asyncio's pipe transport semantics).")},
        {0, nullptr},
    };
    PyType_Spec spec = {"cxxloop._core.StreamCore", int(sizeof(PyStreamCore)), 0,
                        Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC, slots};
    PyObject* type = PyType_FromSpec(&spec);
    if (!type) return false;
    int rc = PyModule_AddObjectRef(module, "StreamCore", type);
    Py_DECREF(type);
    return rc == 0;
}

}  // namespace cxxloop::bind

// --- datagrams: the read side of UDP transports ------------------------------------------------
//
// A DatagramReader is the `_read_ready` of a datagram transport (an instance attribute
// set before asyncio's transport code registers it as the fd's reader): it receives
// into the shared buffer and hands (bytes, address) to the protocol's
// datagram_received, as asyncio's _SelectorDatagramTransport._read_ready does, without
// a Python frame, for a batch of datagrams per readiness report. Only AF_INET and AF_INET6 sockets get one: their addresses convert
// exactly as the socket module converts them (inet_ntop, and the four-tuple for IPv6).

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>

namespace cxxloop::bind {
namespace {

PyObject* str_datagram_received;
PyObject* str_error_received;
PyObject* str_protocol;
PyObject* str_conn_lost;
PyObject* str_closing;
PyObject* str_paused;

// Whether attribute `name` of `o` is false (0/None/empty); -1 on error.
int attr_false(PyObject* o, PyObject* name) {
    PyObject* v = PyObject_GetAttr(o, name);
    if (!v) return -1;
    int t = PyObject_IsTrue(v);
    Py_DECREF(v);
    return t < 0 ? -1 : !t;
}

struct PyDatagramReader {
    PyObject_HEAD
    vectorcallfunc vectorcall;
    PyObject* transport;
    int fd;
};

PyObject* sockaddr_to_python(const sockaddr_storage& ss, socklen_t len) {
    if (len == 0) Py_RETURN_NONE;
    char buf[INET6_ADDRSTRLEN];
    if (ss.ss_family == AF_INET) {
        const auto& a = reinterpret_cast<const sockaddr_in&>(ss);
        if (!inet_ntop(AF_INET, &a.sin_addr, buf, sizeof(buf))) return PyErr_SetFromErrno(PyExc_OSError);
        return Py_BuildValue("(si)", buf, int(ntohs(a.sin_port)));
    }
    if (ss.ss_family == AF_INET6) {
        const auto& a = reinterpret_cast<const sockaddr_in6&>(ss);
        if (!inet_ntop(AF_INET6, &a.sin6_addr, buf, sizeof(buf))) return PyErr_SetFromErrno(PyExc_OSError);
        return Py_BuildValue("(siII)", buf, int(ntohs(a.sin6_port)), unsigned(ntohl(a.sin6_flowinfo)),
                             unsigned(a.sin6_scope_id));
    }
    PyErr_Format(PyExc_OSError, "unsupported address family %d", int(ss.ss_family));
    return nullptr;
}

// Whether the transport still wants datagrams: not lost, not closing, not paused.
int still_reading(PyObject* transport, bool first) {
    int ok = attr_false(transport, str_conn_lost);
    if (ok != 1 || first) return ok;
    ok = attr_false(transport, str_closing);
    return ok == 1 ? attr_false(transport, str_paused) : ok;
}

PyObject* reader_call(PyObject* self, PyObject* const*, size_t nargsf, PyObject* kwnames) {
    auto* r = reinterpret_cast<PyDatagramReader*>(self);
    if (PyVectorcall_NARGS(nargsf) || kwnames) {
        PyErr_SetString(PyExc_TypeError, "_read_ready() takes no arguments");
        return nullptr;
    }
    // Up to kBatch datagrams per readiness report (as libuv does), so a busy socket
    // costs one wait per batch rather than one per datagram; the batch ends as soon
    // as the transport pauses reading, closes, or the socket runs dry.
    constexpr int kBatch = 32;
    PyObject* transport = Py_NewRef(r->transport);
    PyObject* ret = Py_None;
    for (int i = 0; i < kBatch; ++i) {
        int go = still_reading(transport, i == 0);
        if (go != 1) {
            if (go < 0) ret = nullptr;
            break;
        }
        sockaddr_storage ss;
        socklen_t len;
        ssize_t n;
        do {
            len = sizeof(ss);
            n = ::recvfrom(r->fd, stream_scratch(), kStreamScratchSize, 0, reinterpret_cast<sockaddr*>(&ss), &len);
        } while (n < 0 && errno == EINTR);
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) break;
        const int err = errno;
        PyObject* protocol = PyObject_GetAttr(transport, str_protocol);
        if (!protocol) {
            ret = nullptr;
            break;
        }
        PyObject* result = nullptr;
        if (n < 0) {
            PyObject* exc = make_os_error(std::error_code(err, std::generic_category()));
            if (exc) {
                PyObject* args[2] = {protocol, exc};
                result = PyObject_VectorcallMethod(str_error_received, args, 2, nullptr);
                Py_DECREF(exc);
            }
        } else {
            PyObject* data = PyBytes_FromStringAndSize(stream_scratch(), n);
            PyObject* addr = data ? sockaddr_to_python(ss, len) : nullptr;
            if (addr) {
                PyObject* args[3] = {protocol, data, addr};
                result = PyObject_VectorcallMethod(str_datagram_received, args, 3, nullptr);
            }
            Py_XDECREF(data);
            Py_XDECREF(addr);
        }
        Py_DECREF(protocol);
        if (!result) {
            ret = nullptr;
            break;
        }
        Py_DECREF(result);
        if (n < 0) break;  // One error report per readiness report, as asyncio.
    }
    Py_DECREF(transport);
    return ret ? Py_NewRef(ret) : nullptr;
}

PyObject* reader_new(PyTypeObject* type, PyObject* args, PyObject* kwds) {
    static const char* kwlist[] = {"transport", "fd", nullptr};
    PyObject* transport;
    int fd;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "Oi", const_cast<char**>(kwlist), &transport, &fd)) return nullptr;
    PyObject* self = type->tp_alloc(type, 0);
    if (!self) return nullptr;
    auto* r = reinterpret_cast<PyDatagramReader*>(self);
    r->vectorcall = reader_call;
    r->transport = Py_NewRef(transport);
    r->fd = fd;
    return self;
}

PyObject* reader_repr(PyObject* self) {
    // Reads like the bound method it stands for, in "Exception in callback ..." logs.
    PyObject* tr = reinterpret_cast<PyDatagramReader*>(self)->transport;
    return PyUnicode_FromFormat("%s._read_ready", tr ? Py_TYPE(tr)->tp_name : "DatagramTransport");
}

int reader_traverse(PyObject* self, visitproc visit, void* arg) {
    Py_VISIT(Py_TYPE(self));
    Py_VISIT(reinterpret_cast<PyDatagramReader*>(self)->transport);
    return 0;
}

int reader_clear(PyObject* self) {
    Py_CLEAR(reinterpret_cast<PyDatagramReader*>(self)->transport);
    return 0;
}

void reader_dealloc(PyObject* self) {
    PyTypeObject* type = Py_TYPE(self);
    PyObject_GC_UnTrack(self);
    reader_clear(self);
    type->tp_free(self);
    Py_DECREF(type);
}

PyMemberDef reader_members[] = {
    {"__vectorcalloffset__", T_PYSSIZET, offsetof(PyDatagramReader, vectorcall), READONLY, nullptr},
    {nullptr, 0, 0, 0, nullptr},
};

// --- the send side: sendto's common case without a Python frame ----------------------------
//
// A DatagramSender is the transport's `sendto` (an instance attribute). It takes the
// case asyncio's sendto would send at once -- bytes, nothing buffered, not connected,
// no lost connection, a numeric (host, port) address -- and makes the sendto(2) call
// itself; an error is given to error_received as asyncio does. Anything else, and a
// send that would block, goes to the stock method (`fallback`), which re-checks
// everything and queues.

PyObject* str_address;
PyObject* str_buffer;
PyObject* str_extra;
PyObject* str_peername;

struct PyDatagramSender {
    PyObject_HEAD
    vectorcallfunc vectorcall;
    PyObject* transport;
    PyObject* fallback;
    int fd;
    int family;
};

// Parses a numeric (host, port[, flowinfo[, scope_id]]) into `ss`; false (no error
// set) when the address needs the socket module's full treatment.
bool numeric_sockaddr(PyObject* addr, int family, sockaddr_storage* ss, socklen_t* len) {
    if (!PyTuple_CheckExact(addr)) return false;
    Py_ssize_t n = PyTuple_GET_SIZE(addr);
    if (n < 2) return false;
    PyObject* host = PyTuple_GET_ITEM(addr, 0);
    PyObject* port = PyTuple_GET_ITEM(addr, 1);
    if (!PyUnicode_Check(host) || !PyLong_CheckExact(port)) return false;
    const char* h = PyUnicode_AsUTF8(host);
    if (!h) {
        PyErr_Clear();
        return false;
    }
    int overflow = 0;
    long p = PyLong_AsLongAndOverflow(port, &overflow);
    if (overflow || p < 0 || p > 65535) return false;
    std::memset(ss, 0, sizeof(*ss));
    if (family == AF_INET && n == 2) {
        auto* a = reinterpret_cast<sockaddr_in*>(ss);
        if (inet_pton(AF_INET, h, &a->sin_addr) != 1) return false;
        a->sin_family = AF_INET;
        a->sin_port = htons(uint16_t(p));
        *len = sizeof(*a);
        return true;
    }
    if (family == AF_INET6 && n <= 4) {
        auto* a = reinterpret_cast<sockaddr_in6*>(ss);
        unsigned long flow = 0, scope = 0;
        if (n >= 3) {
            PyObject* f = PyTuple_GET_ITEM(addr, 2);
            if (!PyLong_CheckExact(f)) return false;
            flow = PyLong_AsUnsignedLong(f);
            if (PyErr_Occurred() || flow > 0xfffff) return PyErr_Clear(), false;
        }
        if (n == 4) {
            PyObject* sc = PyTuple_GET_ITEM(addr, 3);
            if (!PyLong_CheckExact(sc)) return false;
            scope = PyLong_AsUnsignedLong(sc);
            if (PyErr_Occurred() || scope > 0xffffffffUL) return PyErr_Clear(), false;
        }
        if (inet_pton(AF_INET6, h, &a->sin6_addr) != 1) return false;
        a->sin6_family = AF_INET6;
        a->sin6_port = htons(uint16_t(p));
        a->sin6_flowinfo = htonl(uint32_t(flow));
        a->sin6_scope_id = uint32_t(scope);
        *len = sizeof(*a);
        return true;
    }
    return false;
}

PyObject* sender_call(PyObject* self, PyObject* const* args, size_t nargsf, PyObject* kwnames) {
    auto* s = reinterpret_cast<PyDatagramSender*>(self);
    Py_ssize_t nargs = PyVectorcall_NARGS(nargsf);
    if (!kwnames && nargs == 2 && PyBytes_CheckExact(args[0]) && PyBytes_GET_SIZE(args[0]) > 0 &&
        args[1] != Py_None) {
        sockaddr_storage ss;
        socklen_t len;
        int ok = 1;
        for (PyObject* name : {str_address, str_conn_lost, str_buffer}) {
            ok = attr_false(s->transport, name);
            if (ok != 1) break;
        }
        if (ok == 1) {
            // asyncio sends with send() when the socket has a peer name.
            PyObject* extra = PyObject_GetAttr(s->transport, str_extra);
            PyObject* peer = extra && PyDict_Check(extra) ? PyDict_GetItemWithError(extra, str_peername) : nullptr;
            ok = extra && PyDict_Check(extra) && !PyErr_Occurred() && (!peer || peer == Py_None) ? 1 : 0;
            Py_XDECREF(extra);
            if (PyErr_Occurred()) return nullptr;
        }
        if (ok < 0) return nullptr;
        if (ok == 1 && numeric_sockaddr(args[1], s->family, &ss, &len)) {
            ssize_t n;
            do {
                n = ::sendto(s->fd, PyBytes_AS_STRING(args[0]), size_t(PyBytes_GET_SIZE(args[0])), 0,
                             reinterpret_cast<sockaddr*>(&ss), len);
            } while (n < 0 && errno == EINTR);
            if (n >= 0) Py_RETURN_NONE;
            if (errno != EAGAIN && errno != EWOULDBLOCK) {
                PyObject* exc = make_os_error(std::error_code(errno, std::generic_category()));
                if (!exc) return nullptr;
                PyObject* protocol = PyObject_GetAttr(s->transport, str_protocol);
                PyObject* r = nullptr;
                if (protocol) {
                    PyObject* cargs[2] = {protocol, exc};
                    r = PyObject_VectorcallMethod(str_error_received, cargs, 2, nullptr);
                    Py_DECREF(protocol);
                }
                Py_DECREF(exc);
                if (!r) return nullptr;
                Py_DECREF(r);
                Py_RETURN_NONE;
            }
            // Would block: the stock method queues it and watches for writability.
        }
    }
    return PyObject_Vectorcall(s->fallback, args, nargsf, kwnames);
}

PyObject* sender_new(PyTypeObject* type, PyObject* args, PyObject* kwds) {
    static const char* kwlist[] = {"transport", "fd", "family", "fallback", nullptr};
    PyObject *transport, *fallback;
    int fd, family;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "OiiO", const_cast<char**>(kwlist), &transport, &fd, &family,
                                     &fallback))
        return nullptr;
    PyObject* self = type->tp_alloc(type, 0);
    if (!self) return nullptr;
    auto* s = reinterpret_cast<PyDatagramSender*>(self);
    s->vectorcall = sender_call;
    s->transport = Py_NewRef(transport);
    s->fallback = Py_NewRef(fallback);
    s->fd = fd;
    s->family = family;
    return self;
}

PyObject* sender_repr(PyObject* self) {
    PyObject* tr = reinterpret_cast<PyDatagramSender*>(self)->transport;
    return PyUnicode_FromFormat("%s.sendto", tr ? Py_TYPE(tr)->tp_name : "DatagramTransport");
}

int sender_traverse(PyObject* self, visitproc visit, void* arg) {
    Py_VISIT(Py_TYPE(self));
    Py_VISIT(reinterpret_cast<PyDatagramSender*>(self)->transport);
    Py_VISIT(reinterpret_cast<PyDatagramSender*>(self)->fallback);
    return 0;
}

int sender_clear(PyObject* self) {
    Py_CLEAR(reinterpret_cast<PyDatagramSender*>(self)->transport);
    Py_CLEAR(reinterpret_cast<PyDatagramSender*>(self)->fallback);
    return 0;
}

void sender_dealloc(PyObject* self) {
    PyTypeObject* type = Py_TYPE(self);
    PyObject_GC_UnTrack(self);
    sender_clear(self);
    type->tp_free(self);
    Py_DECREF(type);
}

PyMemberDef sender_members[] = {
    {"__vectorcalloffset__", T_PYSSIZET, offsetof(PyDatagramSender, vectorcall), READONLY, nullptr},
    {nullptr, 0, 0, 0, nullptr},
};

}  // namespace

bool init_datagram(PyObject* module) {
    str_datagram_received = PyUnicode_InternFromString("datagram_received");
    str_error_received = PyUnicode_InternFromString("error_received");
    str_protocol = PyUnicode_InternFromString("_protocol");
    str_conn_lost = PyUnicode_InternFromString("_conn_lost");
    str_closing = PyUnicode_InternFromString("_closing");
    str_paused = PyUnicode_InternFromString("_paused");
    if (!str_closing || !str_paused) return false;
    if (!str_datagram_received || !str_error_received || !str_protocol || !str_conn_lost) return false;
    PyType_Slot slots[] = {
        {Py_tp_new, reinterpret_cast<void*>(reader_new)},
        {Py_tp_dealloc, reinterpret_cast<void*>(reader_dealloc)},
        {Py_tp_traverse, reinterpret_cast<void*>(reader_traverse)},
        {Py_tp_clear, reinterpret_cast<void*>(reader_clear)},
        {Py_tp_call, reinterpret_cast<void*>(PyVectorcall_Call)},
        {Py_tp_repr, reinterpret_cast<void*>(reader_repr)},
        {Py_tp_members, reader_members},
        {Py_tp_doc, const_cast<char*>("DatagramReader(transport, fd): one recvfrom into datagram_received.")},
        {0, nullptr},
    };
    PyType_Spec spec = {"cxxloop._core.DatagramReader", int(sizeof(PyDatagramReader)), 0,
                        Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_HAVE_VECTORCALL, slots};
    PyObject* type = PyType_FromSpec(&spec);
    if (!type) return false;
    int rc = PyModule_AddObjectRef(module, "DatagramReader", type);
    Py_DECREF(type);
    if (rc != 0) return false;

    str_address = PyUnicode_InternFromString("_address");
    str_buffer = PyUnicode_InternFromString("_buffer");
    str_extra = PyUnicode_InternFromString("_extra");
    str_peername = PyUnicode_InternFromString("peername");
    if (!str_address || !str_buffer || !str_extra || !str_peername) return false;
    PyType_Slot sslots[] = {
        {Py_tp_new, reinterpret_cast<void*>(sender_new)},
        {Py_tp_dealloc, reinterpret_cast<void*>(sender_dealloc)},
        {Py_tp_traverse, reinterpret_cast<void*>(sender_traverse)},
        {Py_tp_clear, reinterpret_cast<void*>(sender_clear)},
        {Py_tp_call, reinterpret_cast<void*>(PyVectorcall_Call)},
        {Py_tp_repr, reinterpret_cast<void*>(sender_repr)},
        {Py_tp_members, sender_members},
        {Py_tp_doc, const_cast<char*>("DatagramSender(transport, fd, family, fallback): sendto's common case.")},
        {0, nullptr},
    };
    PyType_Spec sspec = {"cxxloop._core.DatagramSender", int(sizeof(PyDatagramSender)), 0,
                         Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_HAVE_VECTORCALL, sslots};
    PyObject* stype = PyType_FromSpec(&sspec);
    if (!stype) return false;
    rc = PyModule_AddObjectRef(module, "DatagramSender", stype);
    Py_DECREF(stype);
    return rc == 0;
}

}  // namespace cxxloop::bind
