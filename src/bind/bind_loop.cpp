// bind_loop.cpp: cxxloop._core.Loop, the C base of cxxloop.Loop: argument conversion
// for the hot scheduling methods and delegation to the core EventLoop.
#include <cstring>
#include <memory>
#include <new>
#include <string>

#include "bind.hpp"

namespace cxxloop::bind {
namespace {

struct PyLoop;

// Plugs the GIL and Python's signal handling into the core iteration.
class Observer final : public LoopObserver {
public:
    explicit Observer(PyObject* loop, bool release_gil) : loop_(loop), release_gil_(release_gil) {}
    void before_wait() noexcept override {
        // Going idle: a good moment to give back handles a past burst left unused.
        const double now = monotonic();
        trim_handle_free_lists(now);
        limit_ns_ = handle_trim_due_ns(now);
        if (release_gil_) ts_ = PyEval_SaveThread();
    }
    // An idle loop would otherwise sleep on with a burst's handles kept.
    int64_t wait_limit_ns() noexcept override { return limit_ns_; }
    void after_wait() noexcept override {
        if (ts_) PyEval_RestoreThread(ts_);
        ts_ = nullptr;
    }
    // Runs Python-level signal handlers; one that raises (KeyboardInterrupt) aborts.
    bool on_interrupted() noexcept override { return PyErr_CheckSignals() == 0; }
    bool on_poll_error(std::error_code ec) noexcept override {
        if (!PyErr_Occurred()) set_os_error(ec);
        return false;
    }
    void on_slow_callback(Callback* cb, double seconds) noexcept override {
        // A transport's readiness report stands for no handle: its logger is given None.
        PyObject* what = EventLoop::io_handler_of(cb) ? Py_None : node_handle(cb);
        PyObject* res = PyObject_CallMethod(loop_, "_log_slow_callback", "Od", what, seconds);
        if (res) Py_DECREF(res);
        else PyErr_WriteUnraisable(loop_);
    }

private:
    PyObject* loop_;  // Borrowed: the loop owns the observer.
    bool release_gil_;
    PyThreadState* ts_ = nullptr;
    int64_t limit_ns_ = -1;
};

// A Poller over any selectors.BaseSelector, for SelectorEventLoop(selector).
// It calls Python, so the loop keeps the GIL while waiting on it. A Python error
// is left set and reported as io_error; the binding raises it.
class PySelectorPoller final : public Poller {
public:
    explicit PySelectorPoller(PyObject* sel) : sel_(Py_NewRef(sel)) {}
    ~PySelectorPoller() override {
        PyObject* res = PyObject_CallMethod(sel_, "close", nullptr);
        if (res) Py_DECREF(res);
        else PyErr_WriteUnraisable(sel_);
        Py_DECREF(sel_);
    }
    std::error_code add(int fd, uint32_t interest) override { return call("register", fd, interest); }
    std::error_code modify(int fd, uint32_t interest) override { return call("modify", fd, interest); }
    std::error_code remove(int fd) override {
        PyObject* res = PyObject_CallMethod(sel_, "unregister", "i", fd);
        if (res) Py_DECREF(res);
        else PyErr_Clear();  // Not registered, or closed: either way it is gone.
        return {};
    }
    std::error_code wait(int64_t timeout_ns, std::vector<PollEvent>& out) override {
        PyObject* timeout = timeout_ns < 0 ? Py_NewRef(Py_None) : PyFloat_FromDouble(double(timeout_ns) * 1e-9);
        if (!timeout) return failed();
        PyObject* ready = PyObject_CallMethod(sel_, "select", "O", timeout);
        Py_DECREF(timeout);
        if (!ready) return failed();
        PyObject* it = PyObject_GetIter(ready);
        Py_DECREF(ready);
        if (!it) return failed();
        while (PyObject* item = PyIter_Next(it)) {
            PyObject *key, *mask;
            int fd = -1;
            long events = 0;
            if (PyArg_ParseTuple(item, "OO", &key, &mask)) {
                PyObject* fdobj = PyObject_GetAttrString(key, "fd");
                if (fdobj) {
                    fd = int(PyLong_AsLong(fdobj));
                    Py_DECREF(fdobj);
                }
                events = PyLong_AsLong(mask);
            }
            Py_DECREF(item);
            if (PyErr_Occurred()) break;
            out.push_back(PollEvent{fd, uint32_t(events) & (kReadable | kWritable)});
        }
        Py_DECREF(it);
        return PyErr_Occurred() ? failed() : std::error_code{};
    }
    std::error_code after_fork() override { return {}; }
    std::string_view name() const noexcept override { return "selector"; }

private:
    static std::error_code failed() { return std::make_error_code(std::errc::io_error); }
    std::error_code call(const char* method, int fd, uint32_t interest) {
        PyObject* res = PyObject_CallMethod(sel_, method, "iI", fd, unsigned(interest));
        if (!res) return failed();
        Py_DECREF(res);
        return {};
    }
    PyObject* sel_;
};

struct PyLoop {
    PyObject_HEAD
    EventLoop* core;
    Observer* observer;
    bool debug;
};

PyTypeObject* LoopType = nullptr;

inline PyLoop* as_loop(PyObject* o) { return reinterpret_cast<PyLoop*>(o); }

// Raises the error a failed core call left: a pending Python error, else `ec`.
PyObject* raise_ec(std::error_code ec) {
    if (!PyErr_Occurred()) set_os_error(ec);
    return nullptr;
}

EventLoop* checked_core(PyObject* self) {
    EventLoop* core = as_loop(self)->core;
    if (!core) {
        PyErr_SetString(PyExc_RuntimeError, "the event loop was not initialised (Loop.__init__ not called)");
        return nullptr;
    }
    if (core->closed()) {
        PyErr_SetString(PyExc_RuntimeError, "Event loop is closed");
        return nullptr;
    }
    return core;
}

// Whether a keyword name is "context" (names from C callers need not be the
// interned object, e.g. CPython 3.11's statically allocated identifiers).
bool is_context_name(PyObject* key) {
    return PyUnicode_Check(key) && PyUnicode_GET_LENGTH(key) == 7 && PyUnicode_KIND(key) == PyUnicode_1BYTE_KIND &&
           std::memcmp(PyUnicode_DATA(key), "context", 7) == 0;
}

// Parses the keyword-only `context=` of the scheduling methods.
bool parse_context(PyObject* const* args, Py_ssize_t nargs, PyObject* kwnames, const char* fname,
                   PyObject** context) {
    *context = nullptr;
    if (!kwnames) return true;
    // asyncio's C Task passes the same ("context",) tuple on every step; once a
    // tuple was seen to be exactly that, its identity decides. It is kept alive so
    // its address cannot be reused by another tuple.
    static PyObject* context_only = nullptr;
    if (kwnames == context_only) {
        *context = args[nargs];
        return true;
    }
    // Keyword names are interned, so identity almost always decides.
    static PyObject* context_str = PyUnicode_InternFromString("context");
    for (Py_ssize_t i = 0; i < PyTuple_GET_SIZE(kwnames); ++i) {
        PyObject* key = PyTuple_GET_ITEM(kwnames, i);
        if (key != context_str && !is_context_name(key)) {
            PyErr_Format(PyExc_TypeError, "%s() got an unexpected keyword argument '%U'", fname, key);
            return false;
        }
        *context = args[nargs + i];
    }
    if (PyTuple_GET_SIZE(kwnames) == 1) Py_XSETREF(context_only, Py_NewRef(kwnames));
    return true;
}

// Debug-mode checks, delegated to the Python-level _check_thread/_check_callback.
bool debug_checks(PyObject* self, PyObject* callback, const char* method, bool thread) {
    if (thread) {
        PyObject* r = PyObject_CallMethod(self, "_check_thread", nullptr);
        if (!r) return false;
        Py_DECREF(r);
    }
    PyObject* r = PyObject_CallMethod(self, "_check_callback", "Os", callback, method);
    if (!r) return false;
    Py_DECREF(r);
    return true;
}

// An fd argument (already converted from a file object by the Python layer).
int as_fd(PyObject* obj) {
    long v = PyLong_AsLong(obj);
    if (v == -1 && PyErr_Occurred()) return -1;
    if (v < 0 || v > INT32_MAX) {
        PyErr_Format(PyExc_ValueError, "Invalid file descriptor: %ld", v);
        return -1;
    }
    return int(v);
}

PyObject* tuple_from(PyObject* const* items, Py_ssize_t n) {
    // Most callbacks take no arguments: hand out the one empty tuple directly.
    static PyObject* empty = PyTuple_New(0);
    if (n == 0 && empty) return Py_NewRef(empty);
    PyObject* t = PyTuple_New(n);
    if (!t) return nullptr;
    for (Py_ssize_t i = 0; i < n; ++i) PyTuple_SET_ITEM(t, i, Py_NewRef(items[i]));
    return t;
}

bool missing(Py_ssize_t nargs, Py_ssize_t need, const char* fname, const char* const* names) {
    if (nargs >= need) return false;
    PyErr_Format(PyExc_TypeError, "%s() missing required positional argument: '%s'", fname, names[nargs]);
    return true;
}

// call_soon and call_soon_threadsafe share everything but the checks and the wake-up.
PyObject* schedule_soon(PyObject* self, PyObject* const* args, Py_ssize_t nargs, PyObject* kwnames,
                        const char* fname, bool threadsafe) {
    static const char* const names[] = {"callback"};
    if (missing(nargs, 1, fname, names)) return nullptr;
    PyObject* context;
    if (!parse_context(args, nargs, kwnames, fname, &context)) return nullptr;
    EventLoop* core = checked_core(self);
    if (!core) return nullptr;
    if (as_loop(self)->debug && !debug_checks(self, args[0], fname, !threadsafe)) return nullptr;
    PyObject* cbargs = tuple_from(args + 1, nargs - 1);
    if (!cbargs) return nullptr;
    PyObject* h = new_handle(self, args[0], cbargs, context);
    Py_DECREF(cbargs);
    if (!h) return nullptr;
    try {
        core->call_soon(handle_node(h));
    } catch (...) {
        Py_DECREF(h);
        set_from_cpp_exception();
        return nullptr;
    }
    if (threadsafe) core->wake();
    return h;
}

PyObject* loop_call_soon(PyObject* self, PyObject* const* args, Py_ssize_t nargs, PyObject* kwnames) {
    return schedule_soon(self, args, PyVectorcall_NARGS(nargs), kwnames, "call_soon", false);
}

PyObject* loop_call_soon_threadsafe(PyObject* self, PyObject* const* args, Py_ssize_t nargs, PyObject* kwnames) {
    return schedule_soon(self, args, PyVectorcall_NARGS(nargs), kwnames, "call_soon_threadsafe", true);
}

// Shared tail of call_at and call_later: `when` is a new reference.
PyObject* schedule_at(PyObject* self, PyObject* when, PyObject* const* rest, Py_ssize_t nrest, PyObject* context) {
    EventLoop* core = checked_core(self);
    if (!core) {
        Py_DECREF(when);
        return nullptr;
    }
    if (as_loop(self)->debug && !debug_checks(self, rest[0], "call_at", true)) {
        Py_DECREF(when);
        return nullptr;
    }
    double when_d = PyFloat_AsDouble(when);
    if (when_d == -1.0 && PyErr_Occurred()) {
        Py_DECREF(when);
        return nullptr;
    }
    PyObject* cbargs = tuple_from(rest + 1, nrest - 1);
    PyObject* h = cbargs ? new_timer_handle(self, when, when_d, rest[0], cbargs, context) : nullptr;
    Py_XDECREF(cbargs);
    Py_DECREF(when);
    if (!h) return nullptr;
    try {
        core->call_at(timer_node(h));
    } catch (...) {
        Py_DECREF(h);
        set_from_cpp_exception();
        return nullptr;
    }
    return h;
}

PyObject* loop_call_at(PyObject* self, PyObject* const* args, Py_ssize_t nargs, PyObject* kwnames) {
    static const char* const names[] = {"when", "callback"};
    nargs = PyVectorcall_NARGS(nargs);
    if (missing(nargs, 2, "call_at", names)) return nullptr;
    PyObject* context;
    if (!parse_context(args, nargs, kwnames, "call_at", &context)) return nullptr;
    if (args[0] == Py_None) {
        PyErr_SetString(PyExc_TypeError, "when cannot be None");
        return nullptr;
    }
    return schedule_at(self, Py_NewRef(args[0]), args + 1, nargs - 1, context);
}

PyObject* loop_call_later(PyObject* self, PyObject* const* args, Py_ssize_t nargs, PyObject* kwnames) {
    static const char* const names[] = {"delay", "callback"};
    nargs = PyVectorcall_NARGS(nargs);
    if (missing(nargs, 2, "call_later", names)) return nullptr;
    PyObject* context;
    if (!parse_context(args, nargs, kwnames, "call_later", &context)) return nullptr;
    if (args[0] == Py_None) {
        PyErr_SetString(PyExc_TypeError, "delay must not be None");
        return nullptr;
    }
    PyObject* when;
    if (PyFloat_CheckExact(args[0]) || PyLong_CheckExact(args[0])) {
        double delay = PyFloat_AsDouble(args[0]);
        if (delay == -1.0 && PyErr_Occurred()) return nullptr;
        when = PyFloat_FromDouble(monotonic() + delay);
    } else {
        PyObject* now = PyFloat_FromDouble(monotonic());
        if (!now) return nullptr;
        when = PyNumber_Add(now, args[0]);
        Py_DECREF(now);
    }
    if (!when) return nullptr;
    return schedule_at(self, when, args + 1, nargs - 1, context);
}

PyObject* loop_time(PyObject*, PyObject*) { return PyFloat_FromDouble(monotonic()); }

PyObject* loop_stop(PyObject* self, PyObject*) {
    if (as_loop(self)->core) as_loop(self)->core->stop();
    Py_RETURN_NONE;
}

// Runs the core until stop() (or one iteration); a callback's abort re-raises.
PyObject* run_core(PyObject* self, bool once) {
    EventLoop* core = checked_core(self);
    if (!core) return nullptr;
    bool ok;
    try {
        ok = once ? core->run_once() : core->run();
    } catch (...) {
        set_from_cpp_exception();
        return nullptr;
    }
    if (!ok) {
        if (!PyErr_Occurred()) PyErr_SetString(PyExc_RuntimeError, "the event loop iteration was aborted");
        return nullptr;
    }
    Py_RETURN_NONE;
}

PyObject* loop_run_forever_core(PyObject* self, PyObject*) { return run_core(self, false); }
PyObject* loop_run_once(PyObject* self, PyObject*) { return run_core(self, true); }

PyObject* loop_init_core(PyObject* self, PyObject* arg) {
    PyLoop* l = as_loop(self);
    if (l->core) {
        PyErr_SetString(PyExc_RuntimeError, "the event loop is already initialised");
        return nullptr;
    }
    try {
        std::unique_ptr<Poller> poller;
        bool python_selector = false;
        if (arg == Py_None) {
            poller = make_poller();
        } else if (PyUnicode_Check(arg)) {
            const char* name = PyUnicode_AsUTF8(arg);
            if (!name) return nullptr;
            poller = make_poller(name);
        } else {
            poller = std::make_unique<PySelectorPoller>(arg);
            python_selector = true;
        }
        auto core = std::make_unique<EventLoop>(std::move(poller));
        l->observer = new Observer(self, !python_selector);
        core->set_observer(l->observer);
        core->set_callback_lead(handle_node_lead());
        l->core = core.release();
    } catch (...) {
        if (!PyErr_Occurred()) set_from_cpp_exception();
        return nullptr;
    }
    Py_RETURN_NONE;
}

PyObject* loop_close_core(PyObject* self, PyObject*) {
    if (as_loop(self)->core) as_loop(self)->core->close();
    // A closed loop never waits again; let this be a trim point too.
    trim_handle_free_lists(monotonic());
    Py_RETURN_NONE;
}

PyObject* loop_is_closed(PyObject* self, PyObject*) {
    EventLoop* core = as_loop(self)->core;
    return PyBool_FromLong(!core || core->closed());
}

PyObject* loop_get_debug(PyObject* self, PyObject*) { return PyBool_FromLong(as_loop(self)->debug); }

// Cancels a handle the core handed back (a replaced or removed reader/writer) and
// drops the core's reference to it.
bool cancel_and_release(Callback* cb) {
    PyObject* h = node_handle(cb);
    PyObject* r = PyObject_CallMethod(h, "cancel", nullptr);
    cb->release(cb);
    if (!r) return false;
    Py_DECREF(r);
    return true;
}

PyObject* add_fd_callback(PyObject* self, PyObject* const* args, Py_ssize_t nargs, bool write) {
    static const char* const names[] = {"fd", "callback"};
    if (missing(nargs, 2, write ? "_add_writer" : "_add_reader", names)) return nullptr;
    EventLoop* core = checked_core(self);
    if (!core) return nullptr;
    int fd = as_fd(args[0]);
    if (fd == -1 && PyErr_Occurred()) return nullptr;
    PyObject* cbargs = tuple_from(args + 2, nargs - 2);
    if (!cbargs) return nullptr;
    PyObject* h = new_handle(self, args[1], cbargs, Py_None);
    Py_DECREF(cbargs);
    if (!h) return nullptr;
    Callback* previous = nullptr;
    std::error_code ec;
    try {
        ec = write ? core->add_writer(fd, handle_node(h), &previous) : core->add_reader(fd, handle_node(h), &previous);
    } catch (...) {
        Py_DECREF(h);
        set_from_cpp_exception();
        return nullptr;
    }
    if (ec) {
        Py_DECREF(h);
        return raise_ec(ec);
    }
    if (previous && !cancel_and_release(previous)) {
        Py_DECREF(h);
        return nullptr;
    }
    return h;
}

PyObject* loop_add_reader(PyObject* self, PyObject* const* args, Py_ssize_t nargs) {
    return add_fd_callback(self, args, nargs, false);
}
PyObject* loop_add_writer(PyObject* self, PyObject* const* args, Py_ssize_t nargs) {
    return add_fd_callback(self, args, nargs, true);
}

PyObject* remove_fd_callback(PyObject* self, PyObject* arg, bool write) {
    EventLoop* core = as_loop(self)->core;
    if (!core || core->closed()) Py_RETURN_FALSE;
    int fd = as_fd(arg);
    if (fd == -1 && PyErr_Occurred()) return nullptr;
    Callback* old = write ? core->remove_writer(fd) : core->remove_reader(fd);
    if (PyErr_Occurred()) {
        if (old) old->release(old);
        return nullptr;
    }
    if (!old) Py_RETURN_FALSE;
    if (!cancel_and_release(old)) return nullptr;
    Py_RETURN_TRUE;
}

PyObject* loop_remove_reader(PyObject* self, PyObject* arg) { return remove_fd_callback(self, arg, false); }
PyObject* loop_remove_writer(PyObject* self, PyObject* arg) { return remove_fd_callback(self, arg, true); }

// The current reader/writer handle of an fd, or None (for selector-like introspection).
PyObject* fd_handle(PyObject* self, PyObject* arg, bool write) {
    EventLoop* core = as_loop(self)->core;
    if (!core || core->closed()) Py_RETURN_NONE;
    int fd = as_fd(arg);
    if (fd == -1 && PyErr_Occurred()) return nullptr;
    Callback* cb = write ? core->writer_of(fd) : core->reader_of(fd);
    return Py_NewRef(cb ? node_handle(cb) : Py_None);
}
PyObject* loop_reader_handle(PyObject* self, PyObject* arg) { return fd_handle(self, arg, false); }
PyObject* loop_writer_handle(PyObject* self, PyObject* arg) { return fd_handle(self, arg, true); }

PyObject* loop_after_fork(PyObject* self, PyObject*) {
    EventLoop* core = as_loop(self)->core;
    if (core) {
        if (auto ec = core->after_fork()) return raise_ec(ec);
    }
    Py_RETURN_NONE;
}

PyObject* loop_wake(PyObject* self, PyObject*) {
    if (as_loop(self)->core) as_loop(self)->core->wake();
    Py_RETURN_NONE;
}

// --- attributes ------------------------------------------------------------------------

PyObject* get_debug_attr(PyObject* self, void*) { return PyBool_FromLong(as_loop(self)->debug); }
int set_debug_attr(PyObject* self, PyObject* value, void*) {
    if (!value) {
        PyErr_SetString(PyExc_AttributeError, "cannot delete _debug");
        return -1;
    }
    int on = PyObject_IsTrue(value);
    if (on < 0) return -1;
    as_loop(self)->debug = on;
    if (as_loop(self)->core) as_loop(self)->core->set_debug(on);
    return 0;
}

PyObject* get_stopping(PyObject* self, void*) {
    EventLoop* core = as_loop(self)->core;
    return PyBool_FromLong(core && core->stopping());
}
int set_stopping(PyObject* self, PyObject* value, void*) {
    EventLoop* core = as_loop(self)->core;
    int on = value ? PyObject_IsTrue(value) : 0;
    if (on < 0) return -1;
    if (core) {
        if (on) core->stop();
        else core->clear_stopping();
    }
    return 0;
}

PyObject* get_slow(PyObject* self, void*) {
    EventLoop* core = as_loop(self)->core;
    return PyFloat_FromDouble(core ? core->slow_callback_duration() : 0.1);
}
int set_slow(PyObject* self, PyObject* value, void*) {
    if (!value) {
        PyErr_SetString(PyExc_AttributeError, "cannot delete slow_callback_duration");
        return -1;
    }
    double d = PyFloat_AsDouble(value);
    if (d == -1.0 && PyErr_Occurred()) return -1;
    if (as_loop(self)->core) as_loop(self)->core->set_slow_callback_duration(d);
    return 0;
}

PyObject* get_poller(PyObject* self, void*) {
    EventLoop* core = as_loop(self)->core;
    if (!core) Py_RETURN_NONE;
    std::string_view n = core->poller_name();
    return PyUnicode_FromStringAndSize(n.data(), Py_ssize_t(n.size()));
}

PyObject* get_counts(PyObject* self, void*) {
    EventLoop* core = as_loop(self)->core;
    if (!core) return Py_BuildValue("(nnn)", Py_ssize_t(0), Py_ssize_t(0), Py_ssize_t(0));
    return Py_BuildValue("(nnn)", Py_ssize_t(core->ready_count()), Py_ssize_t(core->timer_count()),
                         Py_ssize_t(core->fd_count()));
}

// --- type slots ------------------------------------------------------------------------

PyObject* loop_new(PyTypeObject* type, PyObject*, PyObject*) {
    PyObject* self = type->tp_alloc(type, 0);
    if (!self) return nullptr;
    as_loop(self)->core = nullptr;
    as_loop(self)->observer = nullptr;
    as_loop(self)->debug = false;
    return self;
}

struct VisitCtx {
    visitproc visit;
    void* arg;
};

int loop_traverse(PyObject* self, visitproc visit, void* arg) {
    Py_VISIT(Py_TYPE(self));
    EventLoop* core = as_loop(self)->core;
    if (!core) return 0;
    VisitCtx ctx{visit, arg};
    return core->visit_callbacks(
        [](Callback* cb, void* a) {
            auto* c = static_cast<VisitCtx*>(a);
            // A transport's queued readiness report holds its core through a plain
            // reference the collector need not see (it only delays collection).
            if (EventLoop::io_handler_of(cb)) return 0;
            return c->visit(node_handle(cb), c->arg);
        },
        &ctx);
}

int loop_clear(PyObject* self) {
    // An unreachable loop drops what it holds; the handles it referenced go with it.
    if (as_loop(self)->core) as_loop(self)->core->close();
    return 0;
}

void loop_dealloc(PyObject* self) {
    PyTypeObject* type = Py_TYPE(self);
    PyObject_GC_UnTrack(self);
    PyLoop* l = as_loop(self);
    delete l->core;  // Closes it, releasing every callback.
    delete l->observer;
    l->core = nullptr;
    l->observer = nullptr;
    type->tp_free(self);
    Py_DECREF(type);
}

#define FASTKW(f) reinterpret_cast<PyCFunction>(reinterpret_cast<void (*)(void)>(f))

PyMethodDef loop_methods[] = {
    {"call_soon", FASTKW(loop_call_soon), METH_FASTCALL | METH_KEYWORDS,
     "call_soon(callback, *args, context=None): run callback(*args) on the next iteration."},
    {"call_soon_threadsafe", FASTKW(loop_call_soon_threadsafe), METH_FASTCALL | METH_KEYWORDS,
     "Like call_soon(), but callable from any thread; wakes the loop."},
    {"call_later", FASTKW(loop_call_later), METH_FASTCALL | METH_KEYWORDS,
     "call_later(delay, callback, *args, context=None) -> TimerHandle."},
    {"call_at", FASTKW(loop_call_at), METH_FASTCALL | METH_KEYWORDS,
     "call_at(when, callback, *args, context=None) -> TimerHandle."},
    {"time", loop_time, METH_NOARGS, "The loop's clock: time.monotonic()."},
    {"stop", loop_stop, METH_NOARGS, "Stop the loop after the current iteration."},
    {"is_closed", loop_is_closed, METH_NOARGS, "True once the loop was closed."},
    {"get_debug", loop_get_debug, METH_NOARGS, "True in debug mode."},
    {"_init_core", loop_init_core, METH_O, "Create the engine over a poller name, None or a selector."},
    {"_close_core", loop_close_core, METH_NOARGS, "Drop queued callbacks and close the engine."},
    {"_run_forever_core", loop_run_forever_core, METH_NOARGS, "Iterate until stop()."},
    {"_run_once", loop_run_once, METH_NOARGS, "Run one iteration."},
    {"_add_reader", FASTKW(loop_add_reader), METH_FASTCALL, "_add_reader(fd, callback, *args) -> Handle."},
    {"_add_writer", FASTKW(loop_add_writer), METH_FASTCALL, "_add_writer(fd, callback, *args) -> Handle."},
    {"_remove_reader", loop_remove_reader, METH_O, "_remove_reader(fd) -> bool."},
    {"_remove_writer", loop_remove_writer, METH_O, "_remove_writer(fd) -> bool."},
    {"_reader_handle", loop_reader_handle, METH_O, "The reader Handle of fd, or None."},
    {"_writer_handle", loop_writer_handle, METH_O, "The writer Handle of fd, or None."},
    {"_after_fork", loop_after_fork, METH_NOARGS, "Re-create kernel objects in a forked child."},
    {"_write_to_self", loop_wake, METH_NOARGS, "Wake the loop if it sleeps."},
    {nullptr, nullptr, 0, nullptr},
};

PyGetSetDef loop_getset[] = {
    {"_debug", get_debug_attr, set_debug_attr, "Debug mode flag.", nullptr},
    {"_stopping", get_stopping, set_stopping, "True once stop() was called.", nullptr},
    {"slow_callback_duration", get_slow, set_slow, "Seconds after which debug mode logs a slow callback.",
     nullptr},
    {"_poller", get_poller, nullptr, "The name of the readiness backend.", nullptr},
    {"_counts", get_counts, nullptr, "(ready callbacks, timers, watched fds).", nullptr},
    {nullptr, nullptr, nullptr, nullptr, nullptr},
};

}  // namespace

EventLoop* loop_core(PyObject* loop) {
    if (!PyObject_TypeCheck(loop, LoopType)) {
        PyErr_SetString(PyExc_TypeError, "not a cxxloop loop");
        return nullptr;
    }
    return checked_core(loop);
}

bool loop_debug_unchecked(PyObject* loop) { return as_loop(loop)->debug; }

bool loop_debug(PyObject* loop) {
    return PyObject_TypeCheck(loop, LoopType) && as_loop(loop)->debug;
}

bool init_loop(PyObject* module) {
    PyType_Slot slots[] = {
        {Py_tp_new, reinterpret_cast<void*>(loop_new)},
        {Py_tp_dealloc, reinterpret_cast<void*>(loop_dealloc)},
        {Py_tp_traverse, reinterpret_cast<void*>(loop_traverse)},
        {Py_tp_clear, reinterpret_cast<void*>(loop_clear)},
        {Py_tp_methods, loop_methods},
        {Py_tp_getset, loop_getset},
        {Py_tp_doc, const_cast<char*>("The C++ engine of a cxxloop event loop.")},
        {0, nullptr},
    };
    PyType_Spec spec = {"cxxloop._core.Loop", int(sizeof(PyLoop)), 0,
                        Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE | Py_TPFLAGS_HAVE_GC, slots};
    LoopType = reinterpret_cast<PyTypeObject*>(PyType_FromSpec(&spec));
    return LoopType && PyModule_AddObjectRef(module, "Loop", reinterpret_cast<PyObject*>(LoopType)) == 0;
}

}  // namespace cxxloop::bind
