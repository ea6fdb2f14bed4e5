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
#include <fcntl.h>

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

// The bytes object of the last read of kLargeRead bytes or more, kept until the next
// such read. A protocol usually drops what data_received() got at once (StreamReader
// copies it into its bytearray), and the exact-size hole it left in glibc's heap was
// what the reader's next bytes(...) of the same size took, leaving the bytearray at
// the top of the heap: freeing it put the free top above glibc's trim threshold, and
// the heap was trimmed and grown again about every other message (a brk each way, and
// page faults on the regrown pages). Keeping the last large bytes until the next large
// read is allocated breaks that pattern (streams echo 100 KiB: 0.58 brk per message
// before, 0.06 after). It costs one object of at most kMaxSize for the whole process.
constexpr size_t kLargeRead = 64 * 1024;
PyObject* g_last_large;

// The bytes object of the last read below kLargeRead that data_received() left to us
// alone (its reference count back to our one when the call returned), kept for the
// next read of the same size: the bytes are copied into it instead of allocating a new
// object and freeing this one. A bytes object above glibc's tcache limit (about 1 KiB)
// costs a malloc and a free of a few hundred instructions each, a quarter of the
// Protocol echo's user-space work per 1 KiB message. Only an object nobody else can
// see is reused, as CPython's zip() reuses its result tuple; its cached hash is reset.
// (Not on the free-threaded build, where a reference count of 1 proves less.)
PyObject* g_spare_bytes;

// A bytes object holding p[0:n]: the spare one when it has that size.
PyObject* bytes_from(const char* p, Py_ssize_t n) noexcept {
#ifndef Py_GIL_DISABLED
    if (PyObject* s = g_spare_bytes; s && PyBytes_GET_SIZE(s) == n) {
        g_spare_bytes = nullptr;
        std::memcpy(PyBytes_AS_STRING(s), p, size_t(n));
#if defined(__GNUC__)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wdeprecated-declarations"
#endif
        reinterpret_cast<PyBytesObject*>(s)->ob_shash = -1;
#if defined(__GNUC__)
#pragma GCC diagnostic pop
#endif
        return s;
    }
#endif
    return PyBytes_FromStringAndSize(p, n);
}

// Drops our reference to `data` (a bytes object this file made), keeping it as the
// spare when nobody else holds it.
void release_bytes(PyObject* data) noexcept {
#ifndef Py_GIL_DISABLED
    if (Py_REFCNT(data) == 1 && PyBytes_CheckExact(data) && PyBytes_GET_SIZE(data) >= 2 &&
        size_t(PyBytes_GET_SIZE(data)) < kLargeRead) {
        Py_XSETREF(g_spare_bytes, data);
        return;
    }
#endif
    Py_DECREF(data);
}

// A read pipe whose last read brought at least this much reads straight into a new
// bytes object of the pipe's capacity (one copy less: the kernel's), shrunk in place
// to what came; smaller reads go through g_scratch and are copied out.
constexpr Py_ssize_t kDirectReadMin = 16 * 1024;
// Every this many full reads a read pipe asks for its capacity again (F_SETPIPE_SZ
// by the writer), so that it reads what asyncio's max_size read would.
constexpr unsigned kCapacityCheckEvery = 32;

// How much one read of a pipe can bring: its capacity, capped at kMaxSize; `other`
// for an fd that is not a pipe (or where the capacity cannot be asked).
Py_ssize_t pipe_read_size(int fd, Py_ssize_t other) noexcept {
#ifdef F_GETPIPE_SZ
    int cap = ::fcntl(fd, F_GETPIPE_SZ);
    if (cap > 0) return cap < kMaxSize ? Py_ssize_t(cap) : kMaxSize;
#else
    (void)fd;
#endif
    return other;
}

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
        : self_(self), loop_(Py_NewRef(loop)), transport_(Py_NewRef(transport)), fd_(fd) {
        // A socket stream on the io_uring engine is completion-based (uring_stream.hpp).
        if (completions && UringStream::supported(*ev)) stream = std::make_unique<UringStream>(*ev, fd, *this);
        else stream = std::make_unique<Stream>(*ev, fd, *this, is_socket);
    }
    ~Core() override {
        stream.reset();  // Unwatches and releases queued chunks (the GIL is held).
        Py_CLEAR(rbuf_);
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
        if (!buffered_) {
            if (direct_next_) {
                if (!rbuf_) {
                    if (size_t(direct_size) >= kLargeRead) Py_CLEAR(g_last_large);
                    rbuf_ = PyBytes_FromStringAndSize(nullptr, direct_size);
                }
                if (rbuf_) return {PyBytes_AS_STRING(rbuf_), size_t(PyBytes_GET_SIZE(rbuf_))};
                PyErr_Clear();  // No memory for it: the scratch buffer does.
            }
            return {g_scratch, size_t(kMaxSize)};
        }
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
        // See g_last_large: its slot is emptied before the allocation it makes room for
        // (for a direct read, in read_buffer()).
        const bool large = n >= kLargeRead;
        PyObject* data;
        if (rbuf_) {
            data = rbuf_;  // Read into directly; shrunk in place (realloc) if not full.
            rbuf_ = nullptr;
            if (Py_ssize_t(n) < PyBytes_GET_SIZE(data)) _PyBytes_Resize(&data, Py_ssize_t(n));
        } else {
            if (large) Py_CLEAR(g_last_large);
            data = bytes_from(g_scratch, Py_ssize_t(n));
        }
        if (direct_size) {
            direct_next_ = Py_ssize_t(n) >= kDirectReadMin;
            // The pipe came full: now and then, see whether its capacity changed.
            if (Py_ssize_t(n) >= direct_size && ++full_reads_ % kCapacityCheckEvery == 0)
                direct_size = pipe_read_size(fd_, direct_size);
        }
        deliver(data, large);
    }

    // A completion-based stream's bytes go straight into the bytes object.
    bool on_bytes(const char* p, size_t n) noexcept override {
        if (buffered_ || conn_lost || !protocol_ || pipe == PipeMode::write) return false;
        const bool large = n >= kLargeRead;
        if (large) Py_CLEAR(g_last_large);
        deliver(bytes_from(p, Py_ssize_t(n)), large);
        return true;
    }

    // A burst a completion-based stream received into several buffers: one bytes
    // object and one data_received(), as one recv() of a readiness-based stream.
    bool on_bytes_parts(const iovec* parts, size_t count, size_t total) noexcept override {
        if (buffered_ || conn_lost || !protocol_ || pipe == PipeMode::write) return false;
        const bool large = total >= kLargeRead;
        if (large) Py_CLEAR(g_last_large);
        PyObject* data = PyBytes_FromStringAndSize(nullptr, Py_ssize_t(total));
        if (data) {
            char* out = PyBytes_AS_STRING(data);
            for (size_t i = 0; i < count; ++i) {
                std::memcpy(out, parts[i].iov_base, parts[i].iov_len);
                out += parts[i].iov_len;
            }
        }
        deliver(data, large);
        return true;
    }

    // Hands `data` (a new reference, or null with an exception set) to data_received.
    void deliver(PyObject* data, bool large) noexcept {
        PyObject* r = data ? call_protocol(str_data_received, data) : nullptr;
        if (data) {
            if (large) Py_XSETREF(g_last_large, Py_NewRef(data));
            release_bytes(data);
        }
        if (r) Py_DECREF(r);
        else protocol_failed("Fatal error: protocol.data_received() call failed.");
    }

    void on_eof() noexcept override {
        release_view();
        Py_CLEAR(rbuf_);
        call_transport("_eof_received", nullptr);
    }

    void on_error(std::error_code ec, bool writing) noexcept override {
        release_view();
        Py_CLEAR(rbuf_);
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
        Py_CLEAR(rbuf_);
        if (stream) stream->abort();
        Py_CLEAR(protocol_);
        sync_hold();
        weaken_transport();
    }

    // The transport holds this core (its _c and the bound hot methods); once the
    // stream is done nothing more comes from it, so the core keeps only a weak
    // reference back. A closed transport is then freed as soon as its last user lets
    // go, as asyncio's is, rather than waiting for the cyclic GC.
    void weaken_transport() noexcept {
        if (transport_weak_) return;
        PyObject* ref = PyWeakref_NewRef(transport_, nullptr);
        if (!ref) {  // Not weak-referenceable: keep the strong reference.
            PyErr_Clear();
            return;
        }
        Py_SETREF(transport_, ref);
        transport_weak_ = true;
    }

    int traverse(visitproc visit, void* arg) {
        Py_VISIT(loop_);
        Py_VISIT(transport_);
        Py_VISIT(protocol_);
        Py_VISIT(empty_waiter);
        return 0;
    }

    /// A new reference to the transport, or null once a weakly held one is gone.
    PyObject* transport() const noexcept {
        if (!transport_weak_) return Py_NewRef(transport_);
#if PY_VERSION_HEX >= 0x030D0000
        PyObject* t = nullptr;
        if (PyWeakref_GetRef(transport_, &t) < 0) PyErr_Clear();
        return t;
#else
        PyObject* t = PyWeakref_GetObject(transport_);
        return t && t != Py_None ? Py_NewRef(t) : nullptr;
#endif
    }

    std::unique_ptr<ByteStream> stream;
    long conn_lost = 0;
    bool eof = false;
    bool closing = false;  // Mirrors the transport's _closing, for on_drained.
    PipeMode pipe = PipeMode::none;
    PyObject* empty_waiter = nullptr;
    // A read pipe's capacity (up to kMaxSize): the size of its direct reads; 0 for
    // anything that is not a pipe (a socket, a PTY), which always reads via g_scratch.
    Py_ssize_t direct_size = 0;

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
        PyObject* tr = transport();
        if (!tr) return;  // Gone after detach: nobody is left to tell.
        PyObject* r = PyObject_CallMethod(tr, name, b ? "OO" : (a ? "O" : nullptr), a, b);
        Py_DECREF(tr);
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
        PyObject* tr = transport();
        PyErr_WriteUnraisable(tr ? tr : Py_None);
        Py_XDECREF(tr);
    }

    void release_view() noexcept {
        if (have_view_) {
            PyBuffer_Release(&view_);
            have_view_ = false;
        }
    }

    PyObject* self_;  // Borrowed: the Python object that owns this core.
    PyObject* loop_;
    PyObject* transport_;  // Strong until detach(), then a weak reference.
    bool transport_weak_ = false;
    int fd_;  // Not owned: the transport closes it.
    PyObject* protocol_ = nullptr;
    Py_buffer view_{};
    bool have_view_ = false;
    bool buffered_ = false;
    bool direct_next_ = false;  // The last read was big: read the next into rbuf_.
    unsigned full_reads_ = 0;
    PyObject* rbuf_ = nullptr;  // The bytes object a direct read goes into.
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
        PyObject* tr = c->transport();
        PyObject* r = tr ? PyObject_CallMethod(tr, "_warn_lost_write", nullptr) : Py_NewRef(Py_None);
        Py_XDECREF(tr);
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

// The transport's is_closing(), bound on the instance: StreamWriter.drain() asks it
// for every message.
PyObject* core_is_closing(PyObject* self, PyObject*) {
    Core* c = core_of(self);
    return PyBool_FromLong(c && c->closing);
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
        Core* c = reinterpret_cast<PyStreamCore*>(self)->core;
        c->pipe = mode;
        // Only a pipe has a capacity; a read never brings more than that.
        if (mode == PipeMode::read) c->direct_size = pipe_read_size(fd, 0);
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
    {"is_closing", core_is_closing, METH_NOARGS, "The transport's closing flag (its is_closing())."},
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
