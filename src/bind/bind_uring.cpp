// bind_uring.cpp: the io_uring engine's probe (uring_support()) and UringAcceptor, the multishot accept of servers.
#include <sys/resource.h>
#include <unistd.h>

#include <cerrno>
#include <vector>

#include "bind.hpp"
#include "cxxloop/loop.hpp"
#include "cxxloop/uring.hpp"

namespace cxxloop::bind {
namespace {

// The probe runs once per process (the core caches it); the first call may take a
// few hundred microseconds to set up and tear down a small ring.
PyObject* uring_support(PyObject*, PyObject*) {
    const UringSupport& s = cxxloop::uring_support();
    return Py_BuildValue("(Ois)", s.available ? Py_True : Py_False, s.error, s.reason.c_str());
}

PyObject* uring_features(PyObject*, PyObject*) {
    const UringSupport& s = cxxloop::uring_support();
    PyObject* names = PyList_New(0);
    if (!names) return nullptr;
    for (uint32_t bit = 1; bit & kUringAllFeatures; bit <<= 1) {
        const char* key = (s.features & bit) ? uring_feature_key(bit) : nullptr;
        if (!key) continue;
        PyObject* name = PyUnicode_FromString(key);
        if (!name || PyList_Append(names, name) < 0) {
            Py_XDECREF(name);
            Py_DECREF(names);
            return nullptr;
        }
        Py_DECREF(name);
    }
    PyObject* tuple = PyList_AsTuple(names);
    Py_DECREF(names);
    if (!tuple) return nullptr;
    return Py_BuildValue("(Ns)", tuple, s.missing_features.c_str());
}

PyMethodDef methods[] = {
    {"uring_support", uring_support, METH_NOARGS,
     "uring_support() -> (available, errno, reason): whether io_uring can be used by this\n"
     "process. errno and reason are 0 and '' when it can; otherwise reason is a sentence\n"
     "naming the cause (old kernel, seccomp, kernel.io_uring_disabled, missing features,\n"
     "or a build without liburing)."},
    {"uring_features", uring_features, METH_NOARGS,
     "uring_features() -> (names, missing): the optional io_uring features in use, by the\n"
     "names CXXLOOP_URING_DISABLE takes ('poll_multishot', 'recv_multishot',\n"
     "'buf_incremental'), and a sentence naming those missing and their fallbacks ('' when\n"
     "none is). Empty when io_uring is unavailable."},
    {nullptr, nullptr, 0, nullptr},
};

// --- UringAcceptor ----------------------------------------------------------------------
//
// A server socket's accept on the proactor: one multishot accept in the ring, whose
// connections are handed to `callback(fd, 0)` from the ready queue (where asyncio runs
// a listening socket's reader), at most `backlog` per pass as asyncio accepts at most
// backlog per readiness report. When the accept ends with an error, `callback(-1,
// errno)` decides what follows (python/cxxloop/_proactor.py: EMFILE pauses, others
// restart). While the accept is in the kernel the acceptor holds itself.
//
// The kernel checks RLIMIT_NOFILE when the accept is submitted, not per connection;
// so that a limit lowered meanwhile is still honoured as accept(2) honours it, a
// connection whose fd is at or above the current limit is parked (kept, not
// delivered), the accept is cancelled and the callback is told EMFILE. start()
// delivers parked connections first, once the limit allows them.

struct Acceptor final : AcceptOp, IoHandler {
    PyObject* self = nullptr;  // Borrowed: the Python object embedding this.
    PyObject* loop = nullptr;
    PyObject* callback = nullptr;
    EventLoop* ev = nullptr;
    int fd = -1;
    long backlog = 100;
    std::vector<int> fds;  // Accepted and not yet delivered.
    int err = 0;           // The error that ended the accept, not yet delivered.
    bool held = false;
    bool stopped = true;
    bool parked = false;  // Delivery stopped at a connection over RLIMIT_NOFILE.

    void sync_hold() noexcept {
        const bool want = pending();
        if (want == held) return;
        held = want;
        if (want) Py_INCREF(self);
        else Py_DECREF(self);
    }

    void close_queued() noexcept {
        for (int f : fds) ::close(f);
        fds.clear();
    }

    void on_accept(int res, bool) noexcept override {
        if (ev->closed() || stopped) {
            if (res >= 0) ::close(res);
            if (ev->closed()) close_queued();
        } else {
            if (res >= 0) fds.push_back(res);
            else if (res != -ECANCELED) err = -res;
            ev->post_io(this, kReadable);
        }
        sync_hold();  // May drop the last reference: last.
    }

    static bool over_limit(int f) noexcept {
        rlimit rl{};
        return ::getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur != RLIM_INFINITY && rlim_t(f) >= rl.rlim_cur;
    }

    bool on_io(int, uint32_t) noexcept override {
        bool ok = true;
        long n = 0;
        while (ok && !stopped && !parked && !fds.empty() && n++ < backlog) {
            const int f = fds.front();
            if (over_limit(f)) {
                parked = true;
                if (pending())
                    if (Uring* ring = ev->uring()) ring->cancel(*this);
                err = 0;
                ok = call(-1, EMFILE);
                break;
            }
            fds.erase(fds.begin());
            ok = call(f, 0);
        }
        if (!stopped && !parked && !fds.empty()) ev->post_io(this, kReadable);
        else if (ok && !stopped && !parked && err && fds.empty()) ok = call(-1, std::exchange(err, 0));
        sync_hold();
        return ok;
    }

    // Calls back; false (leave the iteration) only for SystemExit/KeyboardInterrupt:
    // anything else the callback raises goes to the unraisable hook (it catches its own).
    bool call(int f, int e) noexcept {
        PyObject* r = PyObject_CallFunction(callback, "ii", f, e);
        if (r) {
            Py_DECREF(r);
            return true;
        }
        if (PyErr_ExceptionMatches(PyExc_SystemExit) || PyErr_ExceptionMatches(PyExc_KeyboardInterrupt)) return false;
        PyErr_WriteUnraisable(callback);
        return true;
    }

    void io_retain() noexcept override { Py_INCREF(self); }
    void io_release() noexcept override { Py_DECREF(self); }
};

struct PyAcceptor {
    PyObject_HEAD
    Acceptor* a;
};

Acceptor* acceptor_of(PyObject* self) { return reinterpret_cast<PyAcceptor*>(self)->a; }

PyObject* acceptor_new(PyTypeObject* type, PyObject* args, PyObject* kwds) {
    static const char* kwlist[] = {"loop", "fd", "callback", "backlog", nullptr};
    PyObject *loop, *callback;
    int fd;
    long backlog = 100;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "OiO|l", const_cast<char**>(kwlist), &loop, &fd, &callback,
                                     &backlog))
        return nullptr;
    EventLoop* ev = loop_core(loop);
    if (!ev) return nullptr;
    if (!ev->uring()) {
        PyErr_SetString(PyExc_RuntimeError, "the loop has no io_uring engine");
        return nullptr;
    }
    PyObject* self = type->tp_alloc(type, 0);
    if (!self) return nullptr;
    auto* a = new (std::nothrow) Acceptor;
    if (!a) {
        Py_DECREF(self);
        return PyErr_NoMemory();
    }
    a->self = self;
    a->loop = Py_NewRef(loop);
    a->callback = Py_NewRef(callback);
    a->ev = ev;
    a->fd = fd;
    a->backlog = backlog > 0 ? backlog : 1;
    reinterpret_cast<PyAcceptor*>(self)->a = a;
    return self;
}

PyObject* acceptor_start(PyObject* self, PyObject*) {
    Acceptor* a = acceptor_of(self);
    if (!a) Py_RETURN_NONE;
    a->stopped = false;
    a->parked = false;
    if (!a->fds.empty()) a->ev->post_io(a, kReadable);  // Parked connections go first.
    if (a->pending()) Py_RETURN_NONE;
    Uring* ring = a->ev->uring();
    std::error_code ec = ring ? ring->accept(*a, a->fd) : std::make_error_code(std::errc::bad_file_descriptor);
    if (ec) {
        set_os_error(ec);
        return nullptr;
    }
    a->sync_hold();
    Py_RETURN_NONE;
}

// Stops accepting: the kernel has let go of the listening socket when this returns,
// so it may be closed at once; connections accepted and not delivered are closed.
PyObject* acceptor_stop(PyObject* self, PyObject*) {
    Acceptor* a = acceptor_of(self);
    if (!a) Py_RETURN_NONE;
    a->stopped = true;
    a->err = 0;
    a->close_queued();
    if (a->pending())
        if (Uring* ring = a->ev->uring()) {
            ring->cancel(*a);
            ring->cancel_fd_sync(a->fd);
        }
    Py_RETURN_NONE;
}

PyObject* acceptor_active(PyObject* self, void*) {
    Acceptor* a = acceptor_of(self);
    return PyBool_FromLong(a && !a->stopped && a->pending());
}

int acceptor_traverse(PyObject* self, visitproc visit, void* arg) {
    Py_VISIT(Py_TYPE(self));
    if (Acceptor* a = acceptor_of(self)) {
        Py_VISIT(a->loop);
        Py_VISIT(a->callback);
    }
    return 0;
}

int acceptor_clear(PyObject* self) {
    Acceptor* a = acceptor_of(self);
    if (!a || a->pending()) return 0;  // Held while pending: never garbage then.
    reinterpret_cast<PyAcceptor*>(self)->a = nullptr;
    a->ev->drop_io(a);
    a->close_queued();
    Py_CLEAR(a->callback);
    Py_CLEAR(a->loop);  // The EventLoop goes with it: a is not touched after.
    delete a;
    return 0;
}

void acceptor_dealloc(PyObject* self) {
    PyTypeObject* type = Py_TYPE(self);
    PyObject_GC_UnTrack(self);
    acceptor_clear(self);
    type->tp_free(self);
    Py_DECREF(type);
}

PyMethodDef acceptor_methods[] = {
    {"start", acceptor_start, METH_NOARGS, "Start (or restart) the multishot accept."},
    {"stop", acceptor_stop, METH_NOARGS, "Stop accepting; the listening socket may be closed right after."},
    {nullptr, nullptr, 0, nullptr},
};

PyGetSetDef acceptor_getset[] = {
    {"active", acceptor_active, nullptr, "True while the accept is in the kernel.", nullptr},
    {nullptr, nullptr, nullptr, nullptr, nullptr},
};

}  // namespace

bool init_uring(PyObject* module) {
    if (PyModule_AddFunctions(module, methods) != 0) return false;
    PyType_Slot slots[] = {
        {Py_tp_new, reinterpret_cast<void*>(acceptor_new)},
        {Py_tp_dealloc, reinterpret_cast<void*>(acceptor_dealloc)},
        {Py_tp_traverse, reinterpret_cast<void*>(acceptor_traverse)},
        {Py_tp_clear, reinterpret_cast<void*>(acceptor_clear)},
        {Py_tp_methods, acceptor_methods},
        {Py_tp_getset, acceptor_getset},
        {Py_tp_doc, const_cast<char*>("UringAcceptor(loop, fd, callback, backlog=100): a listening socket's "
                                      "multishot accept; callback(fd, 0) per connection, callback(-1, errno) "
                                      "when the accept ends with an error.")},
        {0, nullptr},
    };
    PyType_Spec spec = {"cxxloop._core.UringAcceptor", int(sizeof(PyAcceptor)), 0,
                        Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC, slots};
    PyObject* type = PyType_FromSpec(&spec);
    if (!type) return false;
    int rc = PyModule_AddObjectRef(module, "UringAcceptor", type);
    Py_DECREF(type);
    return rc == 0;
}

}  // namespace cxxloop::bind
