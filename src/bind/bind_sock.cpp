// bind_sock.cpp: the loop's sock_* calls that wait for readiness, in C: sock_recv,
// sock_recv_into, sock_sendall (their syscalls made here), sock_recvfrom,
// sock_recvfrom_into, sock_sendto and sock_accept (through the socket's own methods,
// for the socket module's address handling). sock_connect and sock_sendfile stay
// asyncio's.
//
// asyncio's versions are coroutines that try the socket call at once and, when it
// would block, make a Future, add a reader (or writer) Handle that retries the call,
// and add a done callback that removes the Handle. Here each call returns a SockOp:
// a small C object that is a coroutine by the collections.abc.Coroutine protocol
// (send/throw/close/__await__, and am_send for the Task's fast path), so Task,
// create_task, ensure_future, wait_for and gather take it as they take a coroutine.
//
// - Its first step makes the call (recv/send on the socket's fd, with the socket
//   module's own error mapping and EINTR handling; or the socket's method) and
//   finishes without any Future when that succeeds.
// - Otherwise it makes a Future and has a SockWatch (one per fd, a core IoHandler,
//   shared by the fd's reader and writer ops) routed the fd's readiness. The retry
//   runs where asyncio's reader Handle would run, in the ready phase, and resolves the
//   Future; the Task then steps the op again, which returns the Future's result.
// - Cancelling the Task cancels the Future; the op stops watching when a readiness
//   report finds the Future done or when the Task throws CancelledError into it,
//   whichever comes first (asyncio's done callback removes its Handle in between).
//
// The native path is taken only where it is exactly what asyncio would do: a plain
// socket.socket (whose recv/recv_into/send are the C methods mirrored here) that is
// non-blocking, a loop not in debug mode, whose create_future() is asyncio's, simple
// arguments. Anything else -- and an fd the core cannot route to a SockWatch because
// add_reader() callbacks or a transport hold it -- goes to asyncio's own code.
#include <sys/ioctl.h>
#include <sys/socket.h>

#include <cerrno>
#include <new>
#include <vector>

#include "bind.hpp"

namespace cxxloop::bind {
namespace {

enum class Kind : uint8_t { recv, recv_into, sendall, recvfrom, recvfrom_into, sendto, accept };
constexpr int kKinds = 7;

// sock_recv(sock, n) with n up to this reads straight into a bytes object of n bytes
// (shrunk to what came); larger n up to the shared buffer's size read there first.
constexpr Py_ssize_t kDirectRecv = 16 * 1024;
// A socket whose last sock_recv() brought more than kDirectRecv bytes asks the kernel
// how much is queued (FIONREAD) and reads that straight into a bytes object of the
// exact size, when it is above kDirectRecv and at most kHeapRecv: one copy (the
// kernel's) instead of two, no shrink. Bigger bytes objects would be mmap()s (glibc's
// threshold is 128 KiB until a freed mapping raises it): those go through the shared
// buffer.
constexpr Py_ssize_t kHeapRecv = 124 * 1024;
enum class State : uint8_t { init, waiting, done };
enum class Attempt { done, would_block, error, fatal };

struct SockOp;

// Module state, set by _sock_methods().
PyObject* g_future_type = nullptr;      // asyncio.Future
PyObject* g_base_create_future = nullptr;  // BaseEventLoop.create_future
PyObject* g_socket_type = nullptr;      // socket.socket
PyObject* g_csocket_type = nullptr;     // _socket.socket
PyObject* g_stock[kKinds] = {};         // asyncio's own sock_* coroutine functions
PyTypeObject* g_op_type = nullptr;

PyObject* s_fileno = nullptr;
PyObject* s_gettimeout = nullptr;
PyObject* s_recv = nullptr;
PyObject* s_recv_into = nullptr;
PyObject* s_send = nullptr;
PyObject* s_recvfrom = nullptr;
PyObject* s_recvfrom_into = nullptr;
PyObject* s_sendto = nullptr;
PyObject* s_accept = nullptr;
PyObject* s_setblocking = nullptr;
PyObject* s_done = nullptr;
PyObject* s_result = nullptr;
PyObject* s_set_result = nullptr;
PyObject* s_set_exception = nullptr;
PyObject* s_blocking = nullptr;
PyObject* s_loop = nullptr;
PyObject* s_create_future = nullptr;
PyObject* s_transports = nullptr;
PyObject* s_data = nullptr;
PyObject* s_ensure = nullptr;
PyObject* s_wait_stock = nullptr;
PyObject* g_loop_kwnames = nullptr;  // ("loop",)

const char* const kNames[kKinds] = {"sock_recv",          "sock_recv_into", "sock_sendall", "sock_recvfrom",
                                     "sock_recvfrom_into", "sock_sendto",    "sock_accept"};

// --- the per-fd watch -----------------------------------------------------------------

// Routes one fd's readiness to the op waiting to read and the op waiting to write.
// Holds a reference to each. Lives while it is watched or a report is queued.
//
// Where the poller has one-shot registrations (epoll), the registration is kept when
// nobody waits and re-armed per wait with EventLoop::watch_once: one epoll_ctl(MOD)
// per wait instead of asyncio's ADD and DEL. The kernel decides whether it is still
// registered (MOD fails with ENOENT once a closed fd's number is reused, and the
// poller then ADDs), never this object. An idle watch gives the fd up to whoever
// else asks for it (yield_fd). Other pollers watch level-triggered and unwatch when
// nobody waits, as asyncio does.
class SockWatch final : public IoHandler {
public:
    SockWatch(EventLoop* core, int fd) : core_(core), fd_(fd) {}

    bool on_io(int fd, uint32_t events) noexcept override;
    void io_retain() noexcept override { ++pins_; }
    void io_release() noexcept override {
        if (--pins_ == 0) maybe_delete();
    }
    void on_loop_closed(int) noexcept override;
    bool yield_fd(int fd) noexcept override;

    /// Makes `op` the waiter for one direction (replacing an earlier one, which then
    /// never completes, as asyncio's add_reader replaces a Handle).
    static std::error_code attach(EventLoop* core, int fd, SockOp* op, bool write);
    /// Stops `op` waiting; drops the watch when nobody waits any more.
    void detach(SockOp* op) noexcept;

private:
    uint32_t interest() const noexcept { return (reader_ ? kReadable : 0) | (writer_ ? kWritable : 0); }
    // Ops left on a watch that could not be re-armed keep it (they wait in vain, as
    // asyncio's reader of a closed fd does, until cancelled).
    void maybe_delete() noexcept {
        if (!live_ && pins_ == 0 && !reader_ && !writer_) delete this;
    }
    // (Re-)arms the registration for `mask` (non-zero).
    std::error_code arm(uint32_t mask) noexcept {
        if (once_) {
            auto ec = core_->watch_once(fd_, this, mask);
            if (ec != std::errc::not_supported) return ec;
            once_ = false;
        }
        return core_->watch(fd_, this, mask);
    }
    // Brings the registration in line with who waits (after a detach or a report).
    void update() noexcept;
    void drop() noexcept {
        if (live_) {
            core_->unwatch(fd_);
            live_ = false;
        }
    }

    EventLoop* core_;
    int fd_;
    SockOp* reader_ = nullptr;
    SockOp* writer_ = nullptr;
    int pins_ = 0;
    bool live_ = false;   // Registered with the core.
    bool once_ = true;    // One-shot registrations (until the poller says ENOTSUP).
    bool in_io_ = false;  // In on_io(), which updates the registration at its end.
};

// --- the op ------------------------------------------------------------------------------

struct SockOp {
    PyObject_HEAD
    Kind kind;
    State state;
    bool have_view;
    PyObject* loop;
    PyObject* sock;
    PyObject* arg;   // n, the buffer, or the data (null for accept)
    PyObject* arg2;  // recvfrom_into: nbytes; sendto: the address (else null)
    PyObject* fut;
    SockWatch* watch;  // Non-null while routed a watch's readiness.
    Py_buffer view;    // sendall: the data, held while waiting (asyncio's memoryview)
    Py_ssize_t pos;    // sendall: bytes sent so far
};

inline SockOp* as_op(PyObject* o) { return reinterpret_cast<SockOp*>(o); }

// obj.<name>() through a local argument array: with PY_VECTORCALL_ARGUMENTS_OFFSET
// the callee may overwrite args[0] for the call's duration, which must not be a field
// the garbage collector can read meanwhile.
PyObject* call0(PyObject* name, PyObject* obj) {
    PyObject* args[1] = {obj};
    return PyObject_VectorcallMethod(name, args, 1 | PY_VECTORCALL_ARGUMENTS_OFFSET, nullptr);
}

void release_view(SockOp* op) {
    if (op->have_view) {
        op->have_view = false;
        PyBuffer_Release(&op->view);
    }
}

void stop_watching(SockOp* op) {
    if (op->watch) op->watch->detach(op);
}

// Sets the result of a finished op: done and everything released but the Future.
void finish(SockOp* op) {
    stop_watching(op);
    op->state = State::done;
    release_view(op);
}

// The leading fields of the socket module's socket object (PySocketSockObject in
// CPython's Modules/socketmodule.h, the same on 3.11 to 3.13). They are read directly
// only for a plain socket.socket / _socket.socket, and only when init_sock() found
// them to agree with fileno() and gettimeout() on a real socket; otherwise the
// methods are called. Reading them saves a method call (and, for the timeout, a float
// object) per check: two of each per sock_recv or sock_sendall.
struct SocketFields {
    PyObject_HEAD
    int sock_fd;
    int sock_family;
    int sock_type;
    int sock_proto;
    PyObject* (*errorhandler)(void);
    int64_t sock_timeout;  // Nanoseconds; -1 s blocking, 0 non-blocking.
};
bool g_socket_fields = false;

bool plain_socket(PyObject* sock) {
    PyObject* st = reinterpret_cast<PyObject*>(Py_TYPE(sock));
    return st == g_socket_type || st == g_csocket_type;
}

// The socket's current fd (-1 once closed, as socket.fileno() says).
int sock_fd(SockOp* op) {
    if (g_socket_fields && plain_socket(op->sock)) return reinterpret_cast<SocketFields*>(op->sock)->sock_fd;
    PyObject* r = call0(s_fileno, op->sock);
    if (!r) return -2;
    long fd = PyLong_AsLong(r);
    Py_DECREF(r);
    if (fd == -1 && PyErr_Occurred()) return -2;
    return int(fd);
}

// asyncio treats these two as "try again later".
bool pending_blocking_error() {
    return PyErr_ExceptionMatches(PyExc_BlockingIOError) || PyErr_ExceptionMatches(PyExc_InterruptedError);
}

bool is_fatal() {
    return PyErr_ExceptionMatches(PyExc_SystemExit) || PyErr_ExceptionMatches(PyExc_KeyboardInterrupt);
}

// The error in flight after a failed socket call: would-block or an exception.
Attempt classify_error() {
    if (pending_blocking_error()) {
        PyErr_Clear();
        return Attempt::would_block;
    }
    return Attempt::error;
}

// What the socket module does with a failed call: EINTR runs the signal handlers and
// retries; EAGAIN is BlockingIOError for a non-blocking socket; anything else is
// OSError of the errno's subclass.
enum class Sys { ok, retry, would_block, error };
Sys sys_failed() {
    int err = errno;
    if (err == EINTR) return PyErr_CheckSignals() ? Sys::error : Sys::retry;
    if (err == EAGAIN || err == EWOULDBLOCK) return Sys::would_block;
    errno = err;
    PyErr_SetFromErrno(PyExc_OSError);
    return Sys::error;
}

// Calls sock.<name>(arg) the slow way (arguments the fast path does not take, so that
// errors are exactly the socket module's).
Attempt call_socket(SockOp* op, PyObject* name, PyObject** result) {
    PyObject* args[2] = {op->sock, op->arg};
    *result = PyObject_VectorcallMethod(name, args, 2 | PY_VECTORCALL_ARGUMENTS_OFFSET, nullptr);
    return *result ? Attempt::done : classify_error();
}

// Per fd: whether its last sock_recv() of more than kDirectRecv brought more than
// kDirectRecv (a hint only; a reused fd number just costs one FIONREAD).
std::vector<bool> g_large_recv;

bool large_recv_hint(int fd) { return size_t(fd) < g_large_recv.size() && g_large_recv[size_t(fd)]; }

void set_large_recv_hint(int fd, bool large) {
    if (fd < 0) return;
    if (size_t(fd) >= g_large_recv.size()) {
        if (!large) return;
        try {
            g_large_recv.resize(size_t(fd) + 64);
        } catch (const std::bad_alloc&) {
            return;
        }
    }
    g_large_recv[size_t(fd)] = large;
}

// recv(fd, n) into a new bytes object of `size` bytes (n >= size: shrunk to what came).
Attempt recv_bytes(int fd, Py_ssize_t size, PyObject** result) {
    PyObject* bytes = PyBytes_FromStringAndSize(nullptr, size);
    if (!bytes) return Attempt::error;
    for (;;) {
        ssize_t got = ::recv(fd, PyBytes_AS_STRING(bytes), size_t(size), 0);
        if (got >= 0) {
            if (got != size && _PyBytes_Resize(&bytes, got) < 0) return Attempt::error;
            *result = bytes;
            return Attempt::done;
        }
        Sys s = sys_failed();
        if (s == Sys::retry) continue;
        Py_DECREF(bytes);
        return s == Sys::would_block ? Attempt::would_block : Attempt::error;
    }
}

Attempt try_recv(SockOp* op, PyObject** result) {
    Py_ssize_t n = PyLong_AsSsize_t(op->arg);
    if (n < 0) {
        PyErr_Clear();
        return call_socket(op, s_recv, result);
    }
    int fd = sock_fd(op);
    if (fd == -2) return Attempt::error;
    if (n > kDirectRecv && n <= kStreamScratchSize) {
        if (large_recv_hint(fd)) {
            // What recv(n) would take now is min(queued, n) (a datagram socket's
            // FIONREAD is its next datagram, which recv(n) truncates to n the same).
            int queued = 0;
            Py_ssize_t size = ::ioctl(fd, FIONREAD, &queued) == 0 && queued > 0 ? (queued < n ? queued : n) : 0;
            if (size > kDirectRecv && size <= kHeapRecv) {
                Attempt a = recv_bytes(fd, size, result);
                if (a == Attempt::done) set_large_recv_hint(fd, PyBytes_GET_SIZE(*result) > kDirectRecv);
                return a;
            }
        }
        // A bytes object of n bytes would be an mmap() that the shrink mremap()s and
        // the free munmap()s: read into the shared buffer and copy what came.
        for (;;) {
            ssize_t got = ::recv(fd, stream_scratch(), size_t(n), 0);
            if (got >= 0) {
                set_large_recv_hint(fd, got > kDirectRecv);
                *result = PyBytes_FromStringAndSize(stream_scratch(), got);
                return *result ? Attempt::done : Attempt::error;
            }
            Sys s = sys_failed();
            if (s == Sys::retry) continue;
            return s == Sys::would_block ? Attempt::would_block : Attempt::error;
        }
    }
    return recv_bytes(fd, n, result);
}

Attempt try_recv_into(SockOp* op, PyObject** result) {
    Py_buffer view;
    if (PyObject_GetBuffer(op->arg, &view, PyBUF_WRITABLE) < 0) {
        PyErr_Clear();
        return call_socket(op, s_recv_into, result);
    }
    if (!PyBuffer_IsContiguous(&view, 'C')) {
        PyBuffer_Release(&view);
        return call_socket(op, s_recv_into, result);
    }
    int fd = sock_fd(op);
    if (fd == -2) {
        PyBuffer_Release(&view);
        return Attempt::error;
    }
    for (;;) {
        ssize_t got = ::recv(fd, view.buf, size_t(view.len), 0);
        if (got >= 0) {
            PyBuffer_Release(&view);
            *result = PyLong_FromSsize_t(got);
            return *result ? Attempt::done : Attempt::error;
        }
        Sys s = sys_failed();
        if (s == Sys::retry) continue;
        PyBuffer_Release(&view);
        return s == Sys::would_block ? Attempt::would_block : Attempt::error;
    }
}

// One send of what is left; done once everything went.
Attempt try_sendall(SockOp* op, PyObject** result) {
    if (!op->have_view) {
        if (PyObject_GetBuffer(op->arg, &op->view, PyBUF_SIMPLE) < 0) return Attempt::error;
        op->have_view = true;
        op->pos = 0;
    }
    int fd = sock_fd(op);
    if (fd == -2) return Attempt::error;
    const char* base = static_cast<const char*>(op->view.buf);
    for (;;) {
        ssize_t sent = ::send(fd, base + op->pos, size_t(op->view.len - op->pos), 0);
        if (sent >= 0) {
            op->pos += sent;
            if (op->pos < op->view.len) return Attempt::would_block;
            *result = Py_NewRef(Py_None);
            return Attempt::done;
        }
        Sys s = sys_failed();
        if (s == Sys::retry) continue;
        return s == Sys::would_block ? Attempt::would_block : Attempt::error;
    }
}

// The calls with addresses go through the socket's own methods (their address
// parsing and formatting are the socket module's); only the wait is native.
Attempt call_method(PyObject* name, PyObject* const* args, size_t nargs, PyObject** result) {
    *result = PyObject_VectorcallMethod(name, args, nargs | PY_VECTORCALL_ARGUMENTS_OFFSET, nullptr);
    return *result ? Attempt::done : classify_error();
}

// conn, address = sock.accept(); conn.setblocking(False), as asyncio's _sock_accept.
Attempt try_accept(SockOp* op, PyObject** result) {
    PyObject* self[1] = {op->sock};
    Attempt a = call_method(s_accept, self, 1, result);
    if (a != Attempt::done) return a;
    if (!PyTuple_Check(*result) || PyTuple_GET_SIZE(*result) != 2) {  // Not socket.socket's.
        Py_CLEAR(*result);
        PyErr_SetString(PyExc_ValueError, "sock.accept() did not return (conn, address)");
        return Attempt::error;
    }
    PyObject* args[2] = {PyTuple_GET_ITEM(*result, 0), Py_False};
    PyObject* r = PyObject_VectorcallMethod(s_setblocking, args, 2 | PY_VECTORCALL_ARGUMENTS_OFFSET, nullptr);
    if (!r) {
        Py_CLEAR(*result);
        return Attempt::error;  // asyncio's try block covers setblocking() too.
    }
    Py_DECREF(r);
    return Attempt::done;
}

Attempt attempt(SockOp* op, PyObject** result) {
    *result = nullptr;
    Attempt a;
    switch (op->kind) {
        case Kind::recv: a = try_recv(op, result); break;
        case Kind::recv_into: a = try_recv_into(op, result); break;
        case Kind::sendall: a = try_sendall(op, result); break;
        case Kind::recvfrom: {
            PyObject* args[2] = {op->sock, op->arg};
            a = call_method(s_recvfrom, args, 2, result);
            break;
        }
        case Kind::recvfrom_into: {
            PyObject* args[3] = {op->sock, op->arg, op->arg2};
            a = call_method(s_recvfrom_into, args, 3, result);
            break;
        }
        case Kind::sendto: {
            PyObject* args[3] = {op->sock, op->arg, op->arg2};
            a = call_method(s_sendto, args, 3, result);
            break;
        }
        default: a = try_accept(op, result); break;
    }
    if (a == Attempt::error && is_fatal()) return Attempt::fatal;
    return a;
}

// asyncio's _ensure_fd_no_transport(fd): the WeakValueDictionary's dict answers the
// common case (no transport has this fd) without a Python frame.
bool ensure_no_transport(SockOp* op, int fd) {
    PyObject* transports = PyObject_GetAttr(op->loop, s_transports);
    if (!transports) {
        PyErr_Clear();
    } else {
        PyObject* data = PyObject_GetAttr(transports, s_data);
        Py_DECREF(transports);
        if (!data) {
            PyErr_Clear();
        } else {
            bool clear = false;
            if (PyDict_CheckExact(data)) {
                PyObject* key = PyLong_FromLong(fd);
                if (!key) {
                    Py_DECREF(data);
                    return false;
                }
                PyObject* hit = PyDict_GetItemWithError(data, key);
                Py_DECREF(key);
                if (!hit && PyErr_Occurred()) {
                    Py_DECREF(data);
                    return false;
                }
                clear = hit == nullptr;
            }
            Py_DECREF(data);
            if (clear) return true;
        }
    }
    PyObject* fdo = PyLong_FromLong(fd);
    if (!fdo) return false;
    PyObject* args[2] = {op->loop, fdo};
    PyObject* r = PyObject_VectorcallMethod(s_ensure, args, 2 | PY_VECTORCALL_ARGUMENTS_OFFSET, nullptr);
    Py_DECREF(fdo);
    if (!r) return false;
    Py_DECREF(r);
    return true;
}

PyObject* new_future(PyObject* loop) {
    PyObject* args[2] = {nullptr, loop};
    return PyObject_Vectorcall(g_future_type, args + 1, 0 | PY_VECTORCALL_ARGUMENTS_OFFSET, g_loop_kwnames);
}

// Has the watch's op retry after a readiness report. False aborts the iteration
// (SystemExit/KeyboardInterrupt, left set).
bool op_ready(SockOp* op) {
    PyObject* done = call0(s_done, op->fut);
    if (!done) goto unraisable;
    if (done == Py_True) {
        // Cancelled meanwhile: asyncio's Handle returns, its done callback removes it.
        Py_DECREF(done);
        stop_watching(op);
        return true;
    }
    Py_DECREF(done);
    {
        PyObject* result;
        Attempt a = attempt(op, &result);
        if (a == Attempt::would_block) return true;  // Spurious: try again next time.
        if (a == Attempt::fatal) return false;
        stop_watching(op);
        PyObject* r;
        if (a == Attempt::done) {
            PyObject* args[2] = {op->fut, result};
            r = PyObject_VectorcallMethod(s_set_result, args, 2 | PY_VECTORCALL_ARGUMENTS_OFFSET, nullptr);
            Py_DECREF(result);
        } else {
            PyObject* exc = fetch_exception();
            PyObject* args[2] = {op->fut, exc};
            r = PyObject_VectorcallMethod(s_set_exception, args, 2 | PY_VECTORCALL_ARGUMENTS_OFFSET, nullptr);
            Py_DECREF(exc);
        }
        if (!r) goto unraisable;
        Py_DECREF(r);
        return true;
    }
unraisable:
    if (is_fatal()) return false;
    PyErr_WriteUnraisable(reinterpret_cast<PyObject*>(op));
    return true;
}

bool SockWatch::on_io(int, uint32_t events) noexcept {
    if (!reader_ && !writer_) {
        // Nobody waits: a report armed before a cancellation, or a level-triggered
        // one (after fork the registrations are re-made that way). Stop watching.
        ++pins_;
        drop();
        io_release();
        return true;
    }
    SockOp* r = (events & kReadable) ? reader_ : nullptr;
    SockOp* w = (events & kWritable) ? writer_ : nullptr;
    Py_XINCREF(r);
    Py_XINCREF(w);
    ++pins_;
    in_io_ = true;
    bool ok = true;
    if (r) ok = op_ready(r);
    if (ok && w && w->watch == this) ok = op_ready(w);
    in_io_ = false;
    update();
    Py_XDECREF(r);
    Py_XDECREF(w);
    io_release();
    return ok;
}

void SockWatch::update() noexcept {
    if (!live_ || in_io_) return;
    // A Python selector's register()/unregister() run Python code: keep an error in
    // flight (the caller's) out of their way.
    PyObject *type, *value, *tb;
    PyErr_Fetch(&type, &value, &tb);
    if (uint32_t mask = interest()) {
        // A one-shot registration is disarmed by a report, and one armed for more
        // than is waited for now would report in vain: re-arm (level-triggered, this
        // changes nothing when the interest is the same).
        // (A failure, e.g. the fd closed meanwhile, leaves the op waiting, as a
        // closed fd leaves asyncio's reader.)
        if (arm(mask)) drop();
    } else if (!once_) {
        drop();
    }
    if (PyErr_Occurred()) PyErr_WriteUnraisable(nullptr);
    PyErr_Restore(type, value, tb);
}

void SockWatch::on_loop_closed(int) noexcept {
    live_ = false;
    ++pins_;  // Outlive the references dropped here.
    for (SockOp** slot : {&reader_, &writer_}) {
        if (SockOp* op = *slot) {
            *slot = nullptr;
            op->watch = nullptr;
            Py_DECREF(op);
        }
    }
    io_release();
}

std::error_code SockWatch::attach(EventLoop* core, int fd, SockOp* op, bool write) {
    IoHandler* h = core->handler_of(fd);
    SockWatch* w = h ? dynamic_cast<SockWatch*>(h) : nullptr;
    if (h && !w) return std::make_error_code(std::errc::device_or_resource_busy);
    bool fresh = !w;
    if (fresh) w = new SockWatch(core, fd);
    SockOp*& slot = write ? w->writer_ : w->reader_;
    SockOp* old = slot;
    uint32_t mask = w->interest() | (write ? kWritable : kReadable);
    // One-shot: every wait re-arms. Level-triggered: only a new interest is a change.
    if (w->once_ || fresh || mask != w->interest()) {
        if (auto ec = w->arm(mask)) {
            if (fresh) delete w;
            return ec;
        }
    }
    w->live_ = true;
    Py_INCREF(op);
    slot = op;
    op->watch = w;
    if (old) {
        old->watch = nullptr;
        Py_DECREF(old);
    }
    return {};
}

void SockWatch::detach(SockOp* op) noexcept {
    SockOp*& slot = reader_ == op ? reader_ : writer_;
    if (slot != op) return;
    slot = nullptr;
    op->watch = nullptr;
    ++pins_;  // The op's reference may be the last thing keeping this alive.
    update();
    PyObject *type, *value, *tb;
    PyErr_Fetch(&type, &value, &tb);
    Py_DECREF(op);
    if (PyErr_Occurred()) PyErr_WriteUnraisable(nullptr);
    PyErr_Restore(type, value, tb);
    io_release();
}

// Has asyncio's own code wait for `op` (a reader or writer Handle retrying the call,
// and the done callback removing it), for an fd whose registration the core's
// add_reader()/add_writer() callbacks hold. False with an error set on failure.
bool wait_stock(SockOp* op, int fd) {
    PyObject* pos = op->kind == Kind::sendall ? PyLong_FromSsize_t(op->pos) : Py_NewRef(op->arg2 ? op->arg2 : Py_None);
    PyObject* fdo = PyLong_FromLong(fd);
    PyObject* name = PyUnicode_FromString(kNames[int(op->kind)]);
    PyObject* r = nullptr;
    if (pos && fdo && name) {
        PyObject* args[7] = {op->loop, name, fdo, op->fut, op->sock, op->arg ? op->arg : Py_None, pos};
        r = PyObject_VectorcallMethod(s_wait_stock, args, 7 | PY_VECTORCALL_ARGUMENTS_OFFSET, nullptr);
    }
    Py_XDECREF(pos);
    Py_XDECREF(fdo);
    Py_XDECREF(name);
    if (!r) return false;
    Py_DECREF(r);
    release_view(op);  // The stock code holds its own memoryview of the data.
    return true;
}

// add_reader()/add_writer() claims the fd: the waiting ops move to asyncio's own
// Handles, which the claiming call then sits beside or replaces, as in asyncio.
bool SockWatch::yield_fd(int fd) noexcept {
    ++pins_;
    PyObject *type, *value, *tb;
    PyErr_Fetch(&type, &value, &tb);
    if (live_) {
        core_->unwatch(fd);
        live_ = false;
    }
    SockOp* ops[2] = {reader_, writer_};
    reader_ = writer_ = nullptr;
    for (SockOp* op : ops) {
        if (!op) continue;
        op->watch = nullptr;
        if (!wait_stock(op, fd)) PyErr_WriteUnraisable(reinterpret_cast<PyObject*>(op));
        Py_DECREF(op);
    }
    PyErr_Restore(type, value, tb);
    io_release();
    return true;
}

// --- the coroutine protocol -------------------------------------------------------------

// The first step: the syscall, then (if it would block) the wait.
PySendResult op_start(SockOp* op, PyObject** out) {
    if (op->kind == Kind::recvfrom_into) {
        // asyncio: `if not nbytes: nbytes = len(buf)`, before the first try.
        int given = PyObject_IsTrue(op->arg2);
        if (given == 0) {
            Py_ssize_t len = PyObject_Length(op->arg);
            PyObject* n = len < 0 ? nullptr : PyLong_FromSsize_t(len);
            if (n) Py_SETREF(op->arg2, n);
            else given = -1;
        }
        if (given < 0) {
            finish(op);
            *out = nullptr;
            return PYGEN_ERROR;
        }
    }
    PyObject* result;
    Attempt a = attempt(op, &result);
    if (a == Attempt::done) {
        finish(op);
        *out = result;
        return PYGEN_RETURN;
    }
    if (a != Attempt::would_block) {
        finish(op);
        *out = nullptr;
        return PYGEN_ERROR;
    }
    op->fut = new_future(op->loop);
    int fd = op->fut ? sock_fd(op) : -2;
    if (fd == -2 || !ensure_no_transport(op, fd)) {
        finish(op);
        *out = nullptr;
        return PYGEN_ERROR;
    }
    EventLoop* core = loop_core(op->loop);
    bool write = op->kind == Kind::sendall || op->kind == Kind::sendto;
    std::error_code ec;
    if (!core || (ec = SockWatch::attach(core, fd, op, write))) {
        if (core && ec == std::errc::device_or_resource_busy) {
            // add_reader() callbacks own the fd's registration: wait as asyncio does.
            if (!wait_stock(op, fd)) {
                finish(op);
                *out = nullptr;
                return PYGEN_ERROR;
            }
        } else {
            if (core && !PyErr_Occurred()) set_os_error(ec);
            finish(op);
            *out = nullptr;
            return PYGEN_ERROR;
        }
    }
    if (PyObject_SetAttr(op->fut, s_blocking, Py_True) < 0) {
        finish(op);
        *out = nullptr;
        return PYGEN_ERROR;
    }
    op->state = State::waiting;
    *out = Py_NewRef(op->fut);
    return PYGEN_NEXT;
}

PySendResult op_am_send(PyObject* self, PyObject* value, PyObject** out) {
    SockOp* op = as_op(self);
    switch (op->state) {
        case State::init:
            if (value != Py_None) {
                PyErr_SetString(PyExc_TypeError, "can't send non-None value to a just-started coroutine");
                *out = nullptr;
                return PYGEN_ERROR;
            }
            return op_start(op, out);
        case State::waiting: {
            finish(op);
            PyObject* done = call0(s_done, op->fut);
            if (!done) {
                *out = nullptr;
                return PYGEN_ERROR;
            }
            bool is_done = done == Py_True;
            Py_DECREF(done);
            if (!is_done) {
                PyErr_SetString(PyExc_RuntimeError, "await wasn't used with future");
                *out = nullptr;
                return PYGEN_ERROR;
            }
            *out = call0(s_result, op->fut);
            return *out ? PYGEN_RETURN : PYGEN_ERROR;
        }
        default:
            PyErr_SetString(PyExc_RuntimeError, "cannot reuse already awaited coroutine");
            *out = nullptr;
            return PYGEN_ERROR;
    }
}

// A result is raised as StopIteration(value), made afresh each time, as a coroutine's
// return does. (Reusing one exception object saved ~850 instructions per call on
// 3.12+, but the kept object holds its value, and a traceback once it has reached a
// Python frame, until the next op; no reference rule makes that invisible on every
// interpreter, so the op does what asyncio's coroutine does.)
void raise_stop_iteration(PyObject* value) {
    // Wrapped in an instance: a tuple value must not become the exception's args.
    PyObject* exc = PyObject_CallOneArg(PyExc_StopIteration, value);
    if (!exc) return;
    PyErr_SetObject(PyExc_StopIteration, exc);
    Py_DECREF(exc);
}

PyObject* gen_result(PySendResult r, PyObject* value) {
    if (r == PYGEN_NEXT) return value;
    if (r == PYGEN_ERROR) return nullptr;
    // PYGEN_RETURN: StopIteration carrying the value (a bare one for None, as a
    // coroutine's return raises).
    if (value == Py_None) PyErr_SetNone(PyExc_StopIteration);
    else raise_stop_iteration(value);
    Py_DECREF(value);
    return nullptr;
}

PyObject* op_send(PyObject* self, PyObject* value) {
    PyObject* out = nullptr;
    PySendResult r = op_am_send(self, value, &out);
    return gen_result(r, out);
}

PyObject* op_iternext(PyObject* self) {
    PyObject* out;
    PySendResult r = op_am_send(self, Py_None, &out);
    if (r == PYGEN_RETURN) {
        if (out == Py_None) {
            Py_DECREF(out);
            return nullptr;  // StopIteration without a value.
        }
        return gen_result(r, out);
    }
    return r == PYGEN_NEXT ? out : nullptr;
}

// throw(exc) / throw(type[, value[, tb]]): the op ends and raises it, as a coroutine
// suspended in `await fut` does.
PyObject* op_throw(PyObject* self, PyObject* const* args, Py_ssize_t nargs) {
    if (nargs < 1 || nargs > 3) {
        PyErr_SetString(PyExc_TypeError, "throw expected at least 1 argument");
        return nullptr;
    }
    SockOp* op = as_op(self);
    finish(op);
    PyObject* typ = args[0];
    PyObject* val = nargs > 1 ? args[1] : nullptr;
    PyObject* tb = nargs > 2 ? args[2] : nullptr;
    if (tb == Py_None) tb = nullptr;
    if (tb && !PyTraceBack_Check(tb)) {
        PyErr_SetString(PyExc_TypeError, "throw() third argument must be a traceback object");
        return nullptr;
    }
    if (PyExceptionInstance_Check(typ)) {
        if (val && val != Py_None) {
            PyErr_SetString(PyExc_TypeError, "instance exception may not have a separate value");
            return nullptr;
        }
        if (tb) PyException_SetTraceback(typ, tb);
        PyErr_SetObject(reinterpret_cast<PyObject*>(Py_TYPE(typ)), typ);
        return nullptr;
    }
    if (!PyExceptionClass_Check(typ)) {
        PyErr_Format(PyExc_TypeError, "exceptions must be classes or instances deriving from BaseException, not %s",
                     Py_TYPE(typ)->tp_name);
        return nullptr;
    }
    PyObject* exc = (val && PyObject_TypeCheck(val, reinterpret_cast<PyTypeObject*>(typ)))
                        ? Py_NewRef(val)
                        : (!val || val == Py_None ? PyObject_CallNoArgs(typ)
                                                  : (PyTuple_Check(val) ? PyObject_Call(typ, val, nullptr)
                                                                        : PyObject_CallOneArg(typ, val)));
    if (!exc) return nullptr;
    if (tb) PyException_SetTraceback(exc, tb);
    PyErr_SetObject(reinterpret_cast<PyObject*>(Py_TYPE(exc)), exc);
    Py_DECREF(exc);
    return nullptr;
}

PyObject* op_close(PyObject* self, PyObject*) {
    finish(as_op(self));
    Py_RETURN_NONE;
}

PyObject* op_await(PyObject* self) { return Py_NewRef(self); }

PyObject* op_get_name(PyObject* self, void*) { return PyUnicode_FromString(kNames[int(as_op(self)->kind)]); }
PyObject* op_get_qualname(PyObject* self, void*) {
    return PyUnicode_FromFormat("Loop.%s", kNames[int(as_op(self)->kind)]);
}
PyObject* op_get_running(PyObject*, void*) { Py_RETURN_FALSE; }
PyObject* op_get_none(PyObject*, void*) { Py_RETURN_NONE; }
PyObject* op_get_await(PyObject* self, void*) {
    SockOp* op = as_op(self);
    if (op->state == State::waiting && op->fut) return Py_NewRef(op->fut);
    Py_RETURN_NONE;
}

int op_traverse(PyObject* self, visitproc visit, void* arg) {
    SockOp* op = as_op(self);
    Py_VISIT(Py_TYPE(self));
    Py_VISIT(op->loop);
    Py_VISIT(op->sock);
    Py_VISIT(op->arg);
    Py_VISIT(op->arg2);
    Py_VISIT(op->fut);
    return 0;
}

int op_clear(PyObject* self) {
    SockOp* op = as_op(self);
    finish(op);
    Py_CLEAR(op->loop);
    Py_CLEAR(op->sock);
    Py_CLEAR(op->arg);
    Py_CLEAR(op->arg2);
    Py_CLEAR(op->fut);
    return 0;
}

void op_dealloc(PyObject* self) {
    PyTypeObject* tp = Py_TYPE(self);
    PyObject_GC_UnTrack(self);
    op_clear(self);
    tp->tp_free(self);
    Py_DECREF(tp);
}

PyObject* op_repr(PyObject* self) {
    SockOp* op = as_op(self);
    static const char* const states[] = {"created", "waiting", "done"};
    return PyUnicode_FromFormat("<Loop.%s() %s>", kNames[int(op->kind)], states[int(op->state)]);
}

PyMethodDef op_methods[] = {
    {"send", op_send, METH_O, "send(value): step the operation (a coroutine's send)."},
    {"throw", reinterpret_cast<PyCFunction>(reinterpret_cast<void*>(op_throw)), METH_FASTCALL,
     "throw(exc): end the operation with exc (a coroutine's throw)."},
    {"close", op_close, METH_NOARGS, "close(): end the operation (a coroutine's close)."},
    {nullptr, nullptr, 0, nullptr},
};

PyGetSetDef op_getset[] = {
    {"__name__", op_get_name, nullptr, nullptr, nullptr},
    {"__qualname__", op_get_qualname, nullptr, nullptr, nullptr},
    {"cr_running", op_get_running, nullptr, nullptr, nullptr},
    {"cr_frame", op_get_none, nullptr, nullptr, nullptr},
    {"cr_code", op_get_none, nullptr, nullptr, nullptr},
    {"cr_await", op_get_await, nullptr, nullptr, nullptr},
    {nullptr, nullptr, nullptr, nullptr, nullptr},
};

// --- the loop methods ---------------------------------------------------------------------

// The stock coroutine, for calls the native path does not take.
PyObject* call_stock(Kind kind, PyObject* self, PyObject* const* args, size_t nargsf, PyObject* kwnames) {
    Py_ssize_t nargs = PyVectorcall_NARGS(nargsf);
    Py_ssize_t total = nargs + (kwnames ? PyTuple_GET_SIZE(kwnames) : 0);
    PyObject* small[8];
    PyObject** buf = total + 1 <= 8 ? small : static_cast<PyObject**>(PyMem_Malloc(sizeof(PyObject*) * (total + 1)));
    if (!buf) return PyErr_NoMemory();
    buf[0] = self;
    for (Py_ssize_t i = 0; i < total; ++i) buf[i + 1] = args[i];
    PyObject* r = PyObject_Vectorcall(g_stock[int(kind)], buf, size_t(nargs + 1), kwnames);
    if (buf != small) PyMem_Free(buf);
    return r;
}

// Whether the native path is exactly asyncio's for this loop and socket.
bool native_ok(PyObject* self, PyObject* sock) {
    if (!g_op_type) return false;
    if (!plain_socket(sock)) return false;
    if (loop_debug_unchecked(self)) return false;
    if (_PyType_Lookup(Py_TYPE(self), s_create_future) != g_base_create_future) return false;
    if (g_socket_fields) return reinterpret_cast<SocketFields*>(sock)->sock_timeout == 0;
    PyObject* t = PyObject_VectorcallMethod(s_gettimeout, &sock, 1 | PY_VECTORCALL_ARGUMENTS_OFFSET, nullptr);
    if (!t) {
        PyErr_Clear();
        return false;
    }
    bool nonblocking = PyFloat_CheckExact(t) && PyFloat_AS_DOUBLE(t) == 0.0;
    Py_DECREF(t);
    return nonblocking;
}

// Whether SocketFields reads what fileno() and gettimeout() say, on a socket in each
// timeout mode: sets g_socket_fields (false keeps the method calls). Never fails.
void check_socket_fields() {
    g_socket_fields = false;
    PyObject* sock = PyObject_CallNoArgs(g_socket_type);
    if (!sock) {
        PyErr_Clear();  // No socket to look at: keep the method calls.
        return;
    }
    bool agree = Py_TYPE(sock)->tp_basicsize >= Py_ssize_t(sizeof(SocketFields));
    const SocketFields* f = reinterpret_cast<SocketFields*>(sock);
    struct {
        const char* call;
        PyObject* arg;
        int64_t want;
    } modes[] = {{"setblocking", Py_False, 0}, {"setblocking", Py_True, -1000000000LL}};
    for (auto& m : modes) {
        if (!agree) break;
        PyObject* r = PyObject_CallMethod(sock, m.call, "O", m.arg);
        agree = r && f->sock_timeout == m.want;
        Py_XDECREF(r);
    }
    if (agree) {
        PyObject* r = PyObject_CallMethod(sock, "settimeout", "d", 2.5);
        agree = r && f->sock_timeout == 2500000000LL;
        Py_XDECREF(r);
    }
    if (agree) {
        PyObject* r = PyObject_CallMethod(sock, "fileno", nullptr);
        agree = r && PyLong_Check(r) && PyLong_AsLong(r) == f->sock_fd && f->sock_fd >= 0;
        Py_XDECREF(r);
    }
    PyObject* r = PyObject_CallMethod(sock, "close", nullptr);
    Py_XDECREF(r);
    if (agree && r) agree = f->sock_fd == -1;
    Py_DECREF(sock);
    if (PyErr_Occurred()) PyErr_Clear();
    g_socket_fields = agree;
}

PyObject* new_op(Kind kind, PyObject* self, PyObject* sock, PyObject* arg, PyObject* arg2 = nullptr) {
    SockOp* op = PyObject_GC_New(SockOp, g_op_type);
    if (!op) return nullptr;
    op->kind = kind;
    op->state = State::init;
    op->have_view = false;
    op->loop = Py_NewRef(self);
    op->sock = Py_NewRef(sock);
    op->arg = Py_XNewRef(arg);
    op->arg2 = Py_XNewRef(arg2);
    op->fut = nullptr;
    op->watch = nullptr;
    op->pos = 0;
    PyObject_GC_Track(reinterpret_cast<PyObject*>(op));
    return reinterpret_cast<PyObject*>(op);
}

PyObject* loop_sock_recv(PyObject* self, PyObject* const* args, size_t nargsf, PyObject* kwnames) {
    if (kwnames || PyVectorcall_NARGS(nargsf) != 2 || !PyLong_CheckExact(args[1]) || !native_ok(self, args[0]))
        return call_stock(Kind::recv, self, args, nargsf, kwnames);
    return new_op(Kind::recv, self, args[0], args[1]);
}

PyObject* loop_sock_recv_into(PyObject* self, PyObject* const* args, size_t nargsf, PyObject* kwnames) {
    if (kwnames || PyVectorcall_NARGS(nargsf) != 2 || !native_ok(self, args[0]))
        return call_stock(Kind::recv_into, self, args, nargsf, kwnames);
    return new_op(Kind::recv_into, self, args[0], args[1]);
}

// asyncio compares what send() returned with len(data): the native path takes data
// whose len() is its size in bytes.
bool bytes_like(PyObject* data) {
    if (PyBytes_CheckExact(data) || PyByteArray_CheckExact(data)) return true;
    if (!PyMemoryView_Check(data)) return false;
    Py_buffer* b = PyMemoryView_GET_BUFFER(data);
    return b->buf && b->itemsize == 1 && b->ndim == 1 && PyBuffer_IsContiguous(b, 'C');
}

PyObject* loop_sock_sendall(PyObject* self, PyObject* const* args, size_t nargsf, PyObject* kwnames) {
    if (kwnames || PyVectorcall_NARGS(nargsf) != 2 || !bytes_like(args[1]) || !native_ok(self, args[0]))
        return call_stock(Kind::sendall, self, args, nargsf, kwnames);
    return new_op(Kind::sendall, self, args[0], args[1]);
}

PyObject* loop_sock_recvfrom(PyObject* self, PyObject* const* args, size_t nargsf, PyObject* kwnames) {
    if (kwnames || PyVectorcall_NARGS(nargsf) != 2 || !native_ok(self, args[0]))
        return call_stock(Kind::recvfrom, self, args, nargsf, kwnames);
    return new_op(Kind::recvfrom, self, args[0], args[1]);
}

PyObject* g_zero = nullptr;

PyObject* loop_sock_recvfrom_into(PyObject* self, PyObject* const* args, size_t nargsf, PyObject* kwnames) {
    Py_ssize_t n = PyVectorcall_NARGS(nargsf);
    if (kwnames || n < 2 || n > 3 || !native_ok(self, args[0]))
        return call_stock(Kind::recvfrom_into, self, args, nargsf, kwnames);
    return new_op(Kind::recvfrom_into, self, args[0], args[1], n == 3 ? args[2] : g_zero);
}

PyObject* loop_sock_sendto(PyObject* self, PyObject* const* args, size_t nargsf, PyObject* kwnames) {
    if (kwnames || PyVectorcall_NARGS(nargsf) != 3 || !native_ok(self, args[0]))
        return call_stock(Kind::sendto, self, args, nargsf, kwnames);
    return new_op(Kind::sendto, self, args[0], args[1], args[2]);
}

PyObject* loop_sock_accept(PyObject* self, PyObject* const* args, size_t nargsf, PyObject* kwnames) {
    if (kwnames || PyVectorcall_NARGS(nargsf) != 1 || !native_ok(self, args[0]))
        return call_stock(Kind::accept, self, args, nargsf, kwnames);
    return new_op(Kind::accept, self, args[0], nullptr);
}

PyObject* intern(const char* s) { return PyUnicode_InternFromString(s); }

// _sock_methods(loop_type, stock): {name: method descriptor} for the loop class; stock
// maps each name to asyncio's function, which calls the native path cannot take get.
PyObject* sock_methods(PyObject*, PyObject* const* args, Py_ssize_t nargs) {
    if (nargs != 2 || !PyType_Check(args[0]) || !PyDict_Check(args[1])) {
        PyErr_SetString(PyExc_TypeError, "_sock_methods(loop_type, stock)");
        return nullptr;
    }
    for (int i = 0; i < kKinds; ++i) {
        PyObject* f = PyDict_GetItemString(args[1], kNames[i]);
        if (!f) {
            PyErr_Format(PyExc_KeyError, "%s", kNames[i]);
            return nullptr;
        }
        Py_XSETREF(g_stock[i], Py_NewRef(f));
    }
    PyObject* asyncio = PyImport_ImportModule("asyncio");
    PyObject* socket = asyncio ? PyImport_ImportModule("socket") : nullptr;
    PyObject* csocket = socket ? PyImport_ImportModule("_socket") : nullptr;
    PyObject* base_events = csocket ? PyImport_ImportModule("asyncio.base_events") : nullptr;
    bool ok = base_events != nullptr;
    if (ok) {
        Py_XSETREF(g_future_type, PyObject_GetAttrString(asyncio, "Future"));
        Py_XSETREF(g_socket_type, PyObject_GetAttrString(socket, "socket"));
        Py_XSETREF(g_csocket_type, PyObject_GetAttrString(csocket, "socket"));
        PyObject* bel = PyObject_GetAttrString(base_events, "BaseEventLoop");
        Py_XSETREF(g_base_create_future, bel ? PyObject_GetAttrString(bel, "create_future") : nullptr);
        if (g_base_create_future) {
            // _PyType_Lookup finds the function in the class dict, not a bound method.
            PyObject* raw = _PyType_Lookup(reinterpret_cast<PyTypeObject*>(bel), s_create_future);
            Py_SETREF(g_base_create_future, Py_XNewRef(raw));
        }
        Py_XDECREF(bel);
        ok = g_future_type && g_socket_type && g_csocket_type && g_base_create_future;
    }
    Py_XDECREF(asyncio);
    Py_XDECREF(socket);
    Py_XDECREF(csocket);
    Py_XDECREF(base_events);
    if (!ok) return nullptr;
    check_socket_fields();

    static PyMethodDef defs[] = {
        {"sock_recv", reinterpret_cast<PyCFunction>(reinterpret_cast<void*>(loop_sock_recv)),
         METH_FASTCALL | METH_KEYWORDS,
         "sock_recv(sock, n): receive up to n bytes from sock (a coroutine, as asyncio's)."},
        {"sock_recv_into", reinterpret_cast<PyCFunction>(reinterpret_cast<void*>(loop_sock_recv_into)),
         METH_FASTCALL | METH_KEYWORDS,
         "sock_recv_into(sock, buf): receive into buf; the number of bytes (a coroutine, as asyncio's)."},
        {"sock_sendall", reinterpret_cast<PyCFunction>(reinterpret_cast<void*>(loop_sock_sendall)),
         METH_FASTCALL | METH_KEYWORDS,
         "sock_sendall(sock, data): send all of data to sock (a coroutine, as asyncio's)."},
        {"sock_recvfrom", reinterpret_cast<PyCFunction>(reinterpret_cast<void*>(loop_sock_recvfrom)),
         METH_FASTCALL | METH_KEYWORDS,
         "sock_recvfrom(sock, bufsize): a datagram and its address (a coroutine, as asyncio's)."},
        {"sock_recvfrom_into", reinterpret_cast<PyCFunction>(reinterpret_cast<void*>(loop_sock_recvfrom_into)),
         METH_FASTCALL | METH_KEYWORDS,
         "sock_recvfrom_into(sock, buf, nbytes=0): (bytes received, address) (a coroutine, as asyncio's)."},
        {"sock_sendto", reinterpret_cast<PyCFunction>(reinterpret_cast<void*>(loop_sock_sendto)),
         METH_FASTCALL | METH_KEYWORDS,
         "sock_sendto(sock, data, address): send a datagram (a coroutine, as asyncio's)."},
        {"sock_accept", reinterpret_cast<PyCFunction>(reinterpret_cast<void*>(loop_sock_accept)),
         METH_FASTCALL | METH_KEYWORDS,
         "sock_accept(sock): (conn, address), conn non-blocking (a coroutine, as asyncio's)."},
    };
    PyObject* out = PyDict_New();
    if (!out) return nullptr;
    for (PyMethodDef& d : defs) {
        PyObject* descr = PyDescr_NewMethod(reinterpret_cast<PyTypeObject*>(args[0]), &d);
        if (!descr || PyDict_SetItemString(out, d.ml_name, descr) < 0) {
            Py_XDECREF(descr);
            Py_DECREF(out);
            return nullptr;
        }
        Py_DECREF(descr);
    }
    return out;
}

PyObject* sock_fields_ok(PyObject*, PyObject*) { return PyBool_FromLong(g_socket_fields); }

PyMethodDef module_methods[] = {
    {"_sock_fields_ok", sock_fields_ok, METH_NOARGS,
     "_sock_fields_ok() -> bool: whether the sock_* calls read a socket's fd and timeout directly."},
    {"_sock_methods", reinterpret_cast<PyCFunction>(reinterpret_cast<void*>(sock_methods)), METH_FASTCALL,
     "_sock_methods(loop_type, stock) -> {name: method}: the native sock_* methods."},
    {nullptr, nullptr, 0, nullptr},
};

}  // namespace

bool init_sock(PyObject* module) {
    struct {
        PyObject** slot;
        const char* text;
    } names[] = {
        {&s_fileno, "fileno"},         {&s_gettimeout, "gettimeout"},
        {&s_recv, "recv"},             {&s_recv_into, "recv_into"},
        {&s_send, "send"},             {&s_done, "done"},
        {&s_recvfrom, "recvfrom"},     {&s_recvfrom_into, "recvfrom_into"},
        {&s_sendto, "sendto"},         {&s_accept, "accept"},
        {&s_setblocking, "setblocking"},
        {&s_result, "result"},         {&s_set_result, "set_result"},
        {&s_set_exception, "set_exception"}, {&s_blocking, "_asyncio_future_blocking"},
        {&s_loop, "loop"},             {&s_create_future, "create_future"},
        {&s_transports, "_transports"}, {&s_data, "data"},
        {&s_ensure, "_ensure_fd_no_transport"}, {&s_wait_stock, "_sock_wait_stock"},
    };
    for (auto& n : names)
        if (!(*n.slot = intern(n.text))) return false;
    g_loop_kwnames = PyTuple_Pack(1, s_loop);
    g_zero = PyLong_FromLong(0);
    if (!g_loop_kwnames || !g_zero) return false;

    PyType_Slot slots[] = {
        {Py_tp_dealloc, reinterpret_cast<void*>(op_dealloc)},
        {Py_tp_traverse, reinterpret_cast<void*>(op_traverse)},
        {Py_tp_clear, reinterpret_cast<void*>(op_clear)},
        {Py_tp_repr, reinterpret_cast<void*>(op_repr)},
        {Py_tp_iternext, reinterpret_cast<void*>(op_iternext)},
        {Py_tp_methods, op_methods},
        {Py_tp_getset, op_getset},
        {Py_am_await, reinterpret_cast<void*>(op_await)},
        {Py_am_send, reinterpret_cast<void*>(op_am_send)},
        {Py_tp_doc, const_cast<char*>("A pending loop.sock_*() call: a coroutine implemented in C.")},
        {0, nullptr},
    };
    PyType_Spec spec = {"cxxloop._core.SockOp", int(sizeof(SockOp)), 0,
                        Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC, slots};
    PyObject* type = PyType_FromSpec(&spec);
    if (!type) return false;
    g_op_type = reinterpret_cast<PyTypeObject*>(type);
    if (PyModule_AddObjectRef(module, "SockOp", type) < 0) return false;
    return PyModule_AddFunctions(module, module_methods) == 0;
}

}  // namespace cxxloop::bind
