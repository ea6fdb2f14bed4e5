// bind_tls.cpp: cxxloop._core.TLSProtocolBase, the C half of cxxloop's TLS protocol.
//
// python/cxxloop/_sslproto.py defines SSLProtocol as a subclass of this type and of
// the running interpreter's asyncio.sslproto.SSLProtocol. The stdlib class keeps
// everything rare (the handshake, shutdown, state changes, EOF, error reports), so
// that behaviour is the running Python's own. This type overrides only the
// per-record methods, with the same names and the same effects:
//
//   get_buffer / buffer_updated      the socket transport's reads -> incoming BIO
//   _do_read                         SSLObject.read -> the app's data_received, or
//                                    its get_buffer() memory and buffer_updated
//   _write_appdata / _do_write       app writes -> SSLObject.write
//   _process_outgoing                outgoing BIO -> transport.write
//   _control_app_writing / _control_ssl_reading   the water-mark checks
//
// TLS itself is the stdlib's: the ssl module's SSLObject and MemoryBIO, called
// through the C API (for an exact ssl.SSLObject, its inner _ssl._SSLSocket is called
// directly, which is what SSLObject.read/write do). Whenever a check crosses a
// water mark, or state is not the steady one, the stdlib's own method runs.
//
// The attributes those methods read on every record live in this object's struct,
// exposed under asyncio's names (_state, _sslobj, _incoming, ...), so the stdlib's
// Python methods and ours share one state. max_size, a class attribute in asyncio,
// is a descriptor here that returns the class's value unless one was set on the
// object (see "max_size" below).
//
// tls_transport_write / tls_transport_writelines are the app transport's write and
// writelines (installed as methods of _sslproto._SSLProtocolTransport).
#include <algorithm>
#include <climits>
#include <cstring>

#include "bind.hpp"
#include "structmember.h"

namespace cxxloop::bind {
namespace {

// Objects from the Python side, given once by _tls_setup().
struct Setup {
    PyObject* st_unwrapped = nullptr;  // SSLProtocolState members
    PyObject* st_do_handshake = nullptr;
    PyObject* st_wrapped = nullptr;
    PyObject* st_flushing = nullptr;
    PyObject* st_shutdown = nullptr;
    PyObject* again_errors = nullptr;  // sslproto.SSLAgainErrors (a tuple)
    PyObject* sslobject_type = nullptr;  // ssl.SSLObject
    // The stdlib's own functions, for the rare cases.
    PyObject* py_write_appdata = nullptr;
    PyObject* py_do_write = nullptr;
    PyObject* py_control_app_writing = nullptr;
    PyObject* py_control_ssl_reading = nullptr;
    PyObject* fatal_message = nullptr;  // 'Fatal error on SSL protocol'
    // The ssl module's C types and their methods, called without a lookup when an
    // object is exactly of that type.
    PyTypeObject* sock_type = nullptr;  // _ssl._SSLSocket
    PyTypeObject* bio_type = nullptr;   // ssl.MemoryBIO
    PyObject* sock_read = nullptr;
    PyObject* sock_write = nullptr;
    PyObject* sock_pending = nullptr;
    PyObject* bio_read = nullptr;
    PyObject* bio_write = nullptr;
    PyGetSetDef* bio_pending = nullptr;  // The getter of MemoryBIO.pending.
} g;

PyObject* str_read;
PyObject* str_write;
PyObject* str_pending;
PyObject* str_sslobj_inner;  // "_sslobj"
PyObject* str_max_size;
PyObject* str_data_received;
PyObject* str_do_handshake;
PyObject* str_do_flush;
PyObject* str_do_shutdown;
PyObject* str_app_get_buffer;
PyObject* str_app_buffer_updated;
PyObject* str_loop;
PyObject* str_do_read;
PyObject* str_call_soon;
PyObject* str_call_eof_received;
PyObject* str_start_shutdown;
PyObject* str_fatal_error;
PyObject* str_ssl_protocol;
PyObject* str_write_appdata;

// A water mark: the object asyncio stored (returned as is) and its value for the
// comparisons.
struct Mark {
    PyObject* obj;
    double value;
};

struct PyTLS {
    PyObject_HEAD
    PyObject* state;
    PyObject* sslobj;
    PyObject* sslsock;  // sslobj._sslobj when sslobj is exactly an ssl.SSLObject
    PyObject* incoming;
    PyObject* outgoing;
    PyObject* app_protocol;
    PyObject* transport;
    PyObject* write_backlog;
    PyObject* ssl_buffer;
    PyObject* ssl_buffer_view;
    PyObject* record_buffer;  // A bytearray of kRecordBuffer bytes, made on first use.
    PyObject* window;         // A Window over the socket read, made on first use.
    PyObject* max_size;       // max_size set on this object (null: the class's).
    Py_ssize_t write_buffer_size;
    Mark in_high, in_low, out_high, out_low;
    bool app_is_buffer;
    bool ssl_writing_paused;
    bool app_reading_paused;
    bool ssl_reading_paused;
    bool app_writing_paused;
};

// Each protocol decrypts into a buffer of its own (the ssl module releases the GIL
// while it decrypts, so a buffer shared by loops in several threads would not do),
// one TLS record in size: SSL_read returns one record's data at most.
constexpr Py_ssize_t kRecordBuffer = 16 * 1024;

PyObject* g_record_size;  // kRecordBuffer as an int.

PyTLS* as_tls(PyObject* o) { return reinterpret_cast<PyTLS*>(o); }

PyTypeObject* g_type;  // TLSProtocolBase

// --- Window: the bytes the socket transport just read, as a buffer ----------------------
//
// buffer_updated(n) hands ssl_buffer[:n] to the incoming MemoryBIO's write(). A
// memoryview slice costs two objects per read; a Window is one reusable object whose
// buffer is the n bytes. It is only given to an exact ssl.MemoryBIO, whose write()
// copies the bytes and releases the buffer before returning; the Window is then
// pointed at nothing again.
struct Window {
    PyObject_HEAD
    char* buf;
    Py_ssize_t len;
    Py_ssize_t exports;
};

PyTypeObject* g_window_type;

int window_getbuffer(PyObject* self, Py_buffer* view, int flags) {
    Window* w = reinterpret_cast<Window*>(self);
    if (!w->buf) {
        PyErr_SetString(PyExc_BufferError, "the TLS read window is not in use");
        return -1;
    }
    if (PyBuffer_FillInfo(view, self, w->buf, w->len, 1, flags) < 0) return -1;
    ++w->exports;
    return 0;
}

void window_releasebuffer(PyObject* self, Py_buffer*) { --reinterpret_cast<Window*>(self)->exports; }

void window_dealloc(PyObject* self) {
    PyTypeObject* type = Py_TYPE(self);
    type->tp_free(self);
    Py_DECREF(type);
}

bool init_window_type() {
    PyType_Slot slots[] = {
        {Py_tp_dealloc, reinterpret_cast<void*>(window_dealloc)},
        {Py_bf_getbuffer, reinterpret_cast<void*>(window_getbuffer)},
        {Py_bf_releasebuffer, reinterpret_cast<void*>(window_releasebuffer)},
        {Py_tp_doc, const_cast<char*>("The bytes of one socket read, handed to MemoryBIO.write().")},
        {0, nullptr},
    };
    PyType_Spec spec = {"cxxloop._core._TLSReadWindow", int(sizeof(Window)), 0, Py_TPFLAGS_DEFAULT,
                        slots};
    g_window_type = reinterpret_cast<PyTypeObject*>(PyType_FromSpec(&spec));
    return g_window_type != nullptr;
}

// incoming.write(bytes [p, p + n)) through the protocol's Window; 1 done, 0 when the
// Window cannot be used (the caller makes a memoryview), -1 on error.
int bio_write_window(PyTLS* t, char* p, Py_ssize_t n) {
    if (!t->incoming || !g.bio_write || !Py_IS_TYPE(t->incoming, g.bio_type)) return 0;  // Null: bio_write() reports it.
    if (!t->window) {
        t->window = PyType_GenericAlloc(g_window_type, 0);
        if (!t->window) return -1;
    }
    Window* w = reinterpret_cast<Window*>(t->window);
    if (w->buf || w->exports) return 0;  // In use (a write re-entered): not twice.
    w->buf = p;
    w->len = n;
    PyObject* args[] = {t->incoming, t->window};
    PyObject* r = PyObject_Vectorcall(g.bio_write, args, 2, nullptr);
    w->buf = nullptr;
    w->len = 0;
    if (!r) return -1;
    Py_DECREF(r);
    return 1;
}

// --- calls ------------------------------------------------------------------------------

// An attribute the C paths need was deleted (they are read from the struct).
PyObject* deleted() {
    PyErr_SetString(PyExc_AttributeError, "an attribute of the SSL protocol was deleted");
    return nullptr;
}

PyObject* call0(PyObject* obj, PyObject* name) {
    if (!obj) return deleted();
    PyObject* args[] = {obj};
    return PyObject_VectorcallMethod(name, args, 1 | PY_VECTORCALL_ARGUMENTS_OFFSET, nullptr);
}

PyObject* call1(PyObject* obj, PyObject* name, PyObject* a) {
    if (!obj) return deleted();
    PyObject* args[] = {obj, a};
    return PyObject_VectorcallMethod(name, args, 2 | PY_VECTORCALL_ARGUMENTS_OFFSET, nullptr);
}

// obj.name(*args[1:]) for args[0] = obj: the cached method `descr` when obj is
// exactly of `type`, else a normal method call.
PyObject* call_on(PyTypeObject* type, PyObject* descr, PyObject* name, PyObject** args, size_t n) {
    if (!args[0]) return deleted();
    if (descr && Py_IS_TYPE(args[0], type)) return PyObject_Vectorcall(descr, args, n, nullptr);
    return PyObject_VectorcallMethod(name, args, n, nullptr);
}

PyObject* bio_read_all(PyObject* bio) {
    PyObject* args[] = {bio};
    return call_on(g.bio_type, g.bio_read, str_read, args, 1);
}

PyObject* bio_write(PyObject* bio, PyObject* data) {
    PyObject* args[] = {bio, data};
    return call_on(g.bio_type, g.bio_write, str_write, args, 2);
}

// Calls a method for its effect; -1 on error.
int run0(PyObject* obj, PyObject* name) {
    PyObject* r = call0(obj, name);
    if (!r) return -1;
    Py_DECREF(r);
    return 0;
}

// Calls one of the stdlib's functions as a method of self; -1 on error.
int run_py(PyObject* func, PyObject* self, PyObject* arg = nullptr) {
    PyObject* args[] = {self, arg};
    PyObject* r = PyObject_Vectorcall(func, args, arg ? 2 : 1, nullptr);
    if (!r) return -1;
    Py_DECREF(r);
    return 0;
}

// SSLObject.read(n) / .write(data), through the inner _SSLSocket when there is one.
PyObject* ssl_read(PyTLS* t, PyObject* n, PyObject* buffer = nullptr) {
    PyObject* args[] = {t->sslsock ? t->sslsock : t->sslobj, n, buffer};
    return call_on(g.sock_type, g.sock_read, str_read, args, buffer ? 3 : 2);
}
PyObject* ssl_write(PyTLS* t, PyObject* data) {
    PyObject* args[] = {t->sslsock ? t->sslsock : t->sslobj, data};
    return call_on(g.sock_type, g.sock_write, str_write, args, 2);
}

// MemoryBIO.pending, or -1 with an error set.
Py_ssize_t bio_pending(PyObject* bio) {
    if (!bio) {
        deleted();
        return -1;
    }
    PyObject* v = g.bio_pending && Py_IS_TYPE(bio, g.bio_type)
                      ? g.bio_pending->get(bio, g.bio_pending->closure)
                      : PyObject_GetAttr(bio, str_pending);
    if (!v) return -1;
    Py_ssize_t n = PyLong_AsSsize_t(v);
    Py_DECREF(v);
    return n;
}

// Whether another SSLObject.read could return something: bytes in the incoming BIO
// or decrypted bytes held by the SSL object. `got` and `asked` are the sizes of the
// read just made: SSL_read returns data of one record at most, so a read that got
// less than it asked for took all that its record held, and the SSL object's
// pending() (which releases the GIL) need not be asked. 1, 0, or -1 with an error.
int more_to_read(PyTLS* t, Py_ssize_t got, Py_ssize_t asked) {
    Py_ssize_t n = bio_pending(t->incoming);
    if (n != 0) return n < 0 ? -1 : 1;
    if (got < asked && asked <= INT_MAX) return 0;
    PyObject* args[] = {t->sslsock};
    PyObject* r = call_on(g.sock_type, g.sock_pending, str_pending, args, 1);
    if (!r) return -1;
    n = PyLong_AsSsize_t(r);
    Py_DECREF(r);
    if (n == -1 && PyErr_Occurred()) return -1;
    return n > 0;
}

bool again_error() { return PyErr_ExceptionMatches(g.again_errors); }

// `except Exception as ex: self._fatal_error(ex, 'Fatal error on SSL protocol')`.
// Returns 0 when the exception was handled, -1 when one is still set.
int fatal_on_exception(PyObject* self) {
    if (!PyErr_ExceptionMatches(PyExc_Exception)) return -1;
    PyObject* exc = fetch_exception();
    PyObject* args[] = {self, exc, g.fatal_message};
    PyObject* r = PyObject_VectorcallMethod(str_fatal_error, args, 3, nullptr);
    Py_DECREF(exc);
    if (!r) return -1;
    Py_DECREF(r);
    return 0;
}

// --- max_size -------------------------------------------------------------------------------
//
// asyncio reads self.max_size (a class attribute of its SSLProtocol) on every socket
// read, twice. TLSProtocolBase has a `max_size` data descriptor that keeps a value
// set on the object in the struct and otherwise returns the class's: the first
// `max_size` after this descriptor in the type's MRO. In C, that class value is kept
// per type with the type's version tag, which CPython changes whenever an attribute of
// the type or of a base is set or deleted, so the value read is always the current one.
// A class before TLSProtocolBase in the MRO that defines max_size itself hides the
// descriptor; then the generic attribute lookup runs, as in Python.

PyObject* g_max_size_descr;  // Our descriptor, skipped in the MRO walk.

struct {
    PyTypeObject* type = nullptr;  // A strong reference.
    unsigned int tag = 0;
    Py_ssize_t value = 0;
} g_max_size_cache;

// The class's max_size for an object of `type` (descriptors applied to `self`), a new
// reference; *hidden: a class before ours defines it. Null with AttributeError when
// no class does.
PyObject* class_max_size(PyTypeObject* type, PyObject* self, bool* hidden, bool* plain) {
    *hidden = false;
    *plain = false;
    bool seen_ours = false;
    PyObject* mro = type->tp_mro;
    Py_ssize_t n = mro && PyTuple_Check(mro) ? PyTuple_GET_SIZE(mro) : 0;
    for (Py_ssize_t i = 0; i < n; ++i) {
        PyTypeObject* base = reinterpret_cast<PyTypeObject*>(PyTuple_GET_ITEM(mro, i));
#if PY_VERSION_HEX >= 0x030C0000
        PyObject* dict = PyType_GetDict(base);
#else
        PyObject* dict = Py_XNewRef(base->tp_dict);
#endif
        if (!dict) continue;
        PyObject* v = PyDict_GetItemWithError(dict, str_max_size);
        Py_XINCREF(v);
        Py_DECREF(dict);
        if (!v) {
            if (PyErr_Occurred()) return nullptr;
            continue;
        }
        if (v == g_max_size_descr) {
            Py_DECREF(v);
            seen_ours = true;
            continue;
        }
        if (!seen_ours) {
            *hidden = true;
            return v;
        }
        descrgetfunc get = Py_TYPE(v)->tp_descr_get;
        if (!get) {
            *plain = true;
            return v;
        }
        PyObject* r = get(v, self, reinterpret_cast<PyObject*>(type));
        Py_DECREF(v);
        return r;
    }
    PyErr_Format(PyExc_AttributeError, "'%.100s' object has no attribute 'max_size'", type->tp_name);
    return nullptr;
}

int get_max_size(PyTLS* t, Py_ssize_t* out) {
    PyObject* self = reinterpret_cast<PyObject*>(t);
    PyObject* obj;
    if (t->max_size) {
        obj = Py_NewRef(t->max_size);
    } else {
        PyTypeObject* type = Py_TYPE(self);
        // 0 is no tag; before 3.13 a flag also marks a valid one.
        unsigned int tag = type->tp_version_tag;
#if PY_VERSION_HEX >= 0x030D0000
        bool valid = tag != 0;
#else
        bool valid = tag != 0 && PyType_HasFeature(type, Py_TPFLAGS_VALID_VERSION_TAG);
#endif
        if (valid && type == g_max_size_cache.type && tag == g_max_size_cache.tag) {
            *out = g_max_size_cache.value;
            return 0;
        }
        bool hidden, plain;
        obj = class_max_size(type, self, &hidden, &plain);
        if (!obj) return -1;
        if (hidden) {
            Py_SETREF(obj, PyObject_GetAttr(self, str_max_size));
            if (!obj) return -1;
        } else if (plain && valid && PyLong_CheckExact(obj)) {
            Py_ssize_t v = PyLong_AsSsize_t(obj);
            if (v == -1 && PyErr_Occurred()) {
                PyErr_Clear();
            } else {
                Py_INCREF(type);
                Py_XSETREF(g_max_size_cache.type, type);
                g_max_size_cache.tag = tag;
                g_max_size_cache.value = v;
            }
        }
    }
    *out = PyNumber_AsSsize_t(obj, PyExc_OverflowError);
    Py_DECREF(obj);
    return *out == -1 && PyErr_Occurred() ? -1 : 0;
}

PyObject* get_max_size_attr(PyObject* self, void*) {
    PyTLS* t = as_tls(self);
    if (t->max_size) return Py_NewRef(t->max_size);
    bool hidden, plain;
    return class_max_size(Py_TYPE(self), self, &hidden, &plain);
}

int set_max_size_attr(PyObject* self, PyObject* value, void*) {
    PyTLS* t = as_tls(self);
    if (!value && !t->max_size) {
        PyErr_Format(PyExc_AttributeError, "'%.100s' object has no attribute 'max_size'",
                     Py_TYPE(self)->tp_name);
        return -1;
    }
    Py_XINCREF(value);
    Py_XSETREF(t->max_size, value);
    return 0;
}

// --- flow control ---------------------------------------------------------------------------

// The app's writes crossed a water mark: above the high one while not paused, or at
// or below the low one while paused (asyncio's _control_app_writing).
inline bool app_writing_mark_crossed(const PyTLS* t, double size) {
    return (size >= t->out_high.value && !t->app_writing_paused) ||
           (size <= t->out_low.value && t->app_writing_paused);
}

int control_app_writing(PyTLS* t) {
    Py_ssize_t pending = bio_pending(t->outgoing);
    if (pending < 0) return -1;
    double size = double(pending + t->write_buffer_size);
    if (app_writing_mark_crossed(t, size))
        return run_py(g.py_control_app_writing, reinterpret_cast<PyObject*>(t));
    return 0;
}

int control_ssl_reading(PyTLS* t) {
    Py_ssize_t pending = bio_pending(t->incoming);
    if (pending < 0) return -1;
    double size = double(pending);
    if ((size >= t->in_high.value && !t->ssl_reading_paused) ||
        (size <= t->in_low.value && t->ssl_reading_paused))
        return run_py(g.py_control_ssl_reading, reinterpret_cast<PyObject*>(t));
    return 0;
}

// --- outgoing -------------------------------------------------------------------------------

// `filled`: the caller just wrote records into the outgoing BIO. Otherwise the BIO's
// pending count is asked first and an empty BIO is not read: MemoryBIO.read() of an
// empty BIO returns b"" and changes nothing, and asking costs a quarter of that call.
int process_outgoing(PyTLS* t, bool filled = false) {
    if (!t->ssl_writing_paused) {
        if (!filled && t->outgoing && g.bio_pending && Py_IS_TYPE(t->outgoing, g.bio_type)) {
            Py_ssize_t pending = bio_pending(t->outgoing);
            if (pending < 0) return -1;
            if (pending == 0) {
                double size = double(t->write_buffer_size);
                if (app_writing_mark_crossed(t, size))
                    return control_app_writing(t);
                return 0;
            }
        }
        PyObject* data = bio_read_all(t->outgoing);
        if (!data) return -1;
        Py_ssize_t n = PyBytes_Check(data) ? PyBytes_GET_SIZE(data) : PyObject_Size(data);
        if (n < 0) {
            Py_DECREF(data);
            return -1;
        }
        if (n > 0) {
            PyObject* r = call1(t->transport, str_write, data);
            Py_DECREF(data);
            if (!r) return -1;
            Py_DECREF(r);
        } else {
            Py_DECREF(data);
        }
        // The outgoing BIO was just emptied (transport.write does not write to it),
        // so only the backlog counts: the stdlib's check runs only if it would act.
        double size = double(t->write_buffer_size);
        if (app_writing_mark_crossed(t, size))
            return control_app_writing(t);
        return 0;
    }
    return control_app_writing(t);
}

Py_ssize_t backlog_len(PyTLS* t) {
    return t->write_backlog ? PyObject_Length(t->write_backlog) : 0;
}

int do_write(PyTLS* t) {
    Py_ssize_t n = backlog_len(t);
    if (n < 0) return -1;
    if (n > 0) return run_py(g.py_do_write, reinterpret_cast<PyObject*>(t));
    return process_outgoing(t);
}

// Whether `data` can take the direct path: a non-empty bytes or bytearray.
Py_ssize_t plain_size(PyObject* data) {
    if (PyBytes_CheckExact(data)) return PyBytes_GET_SIZE(data);
    if (PyByteArray_CheckExact(data)) return PyByteArray_GET_SIZE(data);
    return 0;
}

PyObject* str_append;
PyObject* str_join;

// _write_appdata over items[0:n]. In the steady state (WRAPPED, nothing in the
// backlog, plain non-empty chunks) each chunk goes straight to SSLObject.write and the
// records to the transport; anything else is the stdlib's method, given `seq` (or a
// tuple of the items when seq is null).
PyObject* write_appdata(PyTLS* t, PyObject* const* items, Py_ssize_t n, PyObject* seq) {
    PyObject* self = reinterpret_cast<PyObject*>(t);
    bool direct = t->state == g.st_wrapped && t->sslobj && t->write_backlog && t->transport;
    if (direct) {
        Py_ssize_t bl = backlog_len(t);
        if (bl < 0) return nullptr;
        direct = bl == 0;
    }
    for (Py_ssize_t i = 0; direct && i < n; ++i) direct = plain_size(items[i]) > 0;
    if (!direct) {
        PyObject* owned = nullptr;
        if (!seq) {
            seq = owned = PyTuple_New(n);
            if (!seq) return nullptr;
            for (Py_ssize_t i = 0; i < n; ++i) PyTuple_SET_ITEM(seq, i, Py_NewRef(items[i]));
        }
        PyObject* args[] = {self, seq};
        PyObject* r = PyObject_Vectorcall(g.py_write_appdata, args, 2, nullptr);
        Py_XDECREF(owned);
        return r;
    }
    Py_ssize_t i = 0;
    bool to_stdlib = false;  // A chunk was not taken whole: the stdlib's _do_write goes on.
    bool wrote = false;      // SSLObject.write took bytes: records are in the outgoing BIO.
    for (; i < n; ++i) {
        Py_ssize_t size = plain_size(items[i]);
        PyObject* r = ssl_write(t, items[i]);
        if (!r) {
            if (again_error()) {
                PyErr_Clear();
                break;  // The rest waits in the backlog, as in the stdlib.
            }
            break;  // Reported below, with this chunk and the rest in the backlog.
        }
        Py_ssize_t count = PyLong_AsSsize_t(r);
        Py_DECREF(r);
        if (count == -1 && PyErr_Occurred()) break;
        if (count > 0) wrote = true;
        if (count < size) {
            // The stdlib keeps data[count:] at the head and writes again.
            PyObject* rest = PySequence_GetSlice(items[i], count, size);
            if (!rest) break;
            PyObject* ar = call1(t->write_backlog, str_append, rest);
            Py_DECREF(rest);
            if (!ar) break;
            Py_DECREF(ar);
            t->write_buffer_size += size - count;
            ++i;
            to_stdlib = true;
            break;
        }
    }
    // Whatever was not written joins the backlog (an error in flight is kept aside).
    PyObject* exc = PyErr_Occurred() ? fetch_exception() : nullptr;
    for (; i < n; ++i) {
        PyObject* ar = call1(t->write_backlog, str_append, items[i]);
        if (!ar) {
            Py_XDECREF(exc);
            return nullptr;
        }
        Py_DECREF(ar);
        t->write_buffer_size += plain_size(items[i]);
    }
    int rc;
    if (exc) {
        PyErr_Restore(Py_NewRef(reinterpret_cast<PyObject*>(Py_TYPE(exc))), exc,
                      PyException_GetTraceback(exc));
        rc = -1;
    } else {
        rc = to_stdlib ? run_py(g.py_do_write, self) : process_outgoing(t, wrote);
    }
    if (rc < 0 && fatal_on_exception(self) < 0) return nullptr;
    Py_RETURN_NONE;
}

// --- incoming -------------------------------------------------------------------------------

// b"".join(list) for a list of bytes objects (what _SSLSocket.read returns).
PyObject* join_bytes(PyObject* list) {
    Py_ssize_t n = PyList_GET_SIZE(list), total = 0;
    for (Py_ssize_t i = 0; i < n; ++i) {
        PyObject* b = PyList_GET_ITEM(list, i);
        if (!PyBytes_Check(b)) {
            PyObject* empty = PyBytes_FromStringAndSize(nullptr, 0);
            if (!empty) return nullptr;
            PyObject* args[] = {empty, list};
            PyObject* r = PyObject_VectorcallMethod(str_join, args, 2, nullptr);
            Py_DECREF(empty);
            return r;
        }
        total += PyBytes_GET_SIZE(b);
    }
    PyObject* out = PyBytes_FromStringAndSize(nullptr, total);
    if (!out) return nullptr;
    char* p = PyBytes_AS_STRING(out);
    for (Py_ssize_t i = 0; i < n; ++i) {
        PyObject* b = PyList_GET_ITEM(list, i);
        std::memcpy(p, PyBytes_AS_STRING(b), size_t(PyBytes_GET_SIZE(b)));
        p += PyBytes_GET_SIZE(b);
    }
    return out;
}

// The stdlib's _do_read__copied: every record available, joined, to data_received;
// an empty read is the peer's close_notify.
//
// Two differences that nobody can observe make it cheaper. Records are decrypted into
// the protocol's record buffer and copied out at their size (SSLObject.read(n)
// allocates n bytes and shrinks them: 256 KiB per call); the chunks are joined
// anyway. And the read that the stdlib expects to
// fail with SSLWantReadError is skipped when it can only fail so: nothing left in the
// incoming BIO and no decrypted byte held by the SSL object. Raising that exception
// costs more than decrypting a 1 KiB record.
int do_read_copied(PyTLS* t) {
    PyObject* self = reinterpret_cast<PyObject*>(t);
    Py_ssize_t max_size;
    if (get_max_size(t, &max_size) < 0) return -1;
    // Through the record buffer when the stdlib would read at least a record.
    bool scratch = t->sslsock && max_size >= kRecordBuffer;
    if (scratch && !t->record_buffer) {
        t->record_buffer = PyByteArray_FromStringAndSize(nullptr, kRecordBuffer);
        if (!t->record_buffer) return -1;
    }
    // With the record buffer, SSLObject.read(n, buffer) reads min(n, len(buffer)):
    // the record buffer's size, made once, says the same as max_size.
    PyObject* n_obj = scratch ? Py_NewRef(g_record_size) : PyLong_FromSsize_t(max_size);
    if (!n_obj) return -1;
    PyObject* first = nullptr;
    PyObject* list = nullptr;
    bool eof = false;
    auto fail = [&] {
        Py_DECREF(n_obj);
        Py_XDECREF(first);
        Py_XDECREF(list);
        return -1;
    };
    for (;;) {
        PyObject* chunk;
        if (scratch) {
            PyObject* r = ssl_read(t, n_obj, t->record_buffer);
            if (r) {
                Py_ssize_t got = PyLong_AsSsize_t(r);
                Py_DECREF(r);
                if (got == -1 && PyErr_Occurred()) return fail();
                if (got < 0 || got > PyByteArray_GET_SIZE(t->record_buffer)) {
                    PyErr_SetString(PyExc_SystemError, "SSLObject.read() returned a bad count");
                    return fail();
                }
                chunk = PyBytes_FromStringAndSize(PyByteArray_AS_STRING(t->record_buffer), got);
            } else {
                chunk = nullptr;
            }
        } else {
            chunk = ssl_read(t, n_obj);
        }
        if (!chunk) {
            if (again_error()) {
                PyErr_Clear();
                break;
            }
            return fail();
        }
        int truth = PyObject_IsTrue(chunk);
        if (truth <= 0) {
            Py_DECREF(chunk);
            if (truth < 0) return fail();
            eof = true;
            break;
        }
        Py_ssize_t got = PyBytes_Check(chunk) ? PyBytes_GET_SIZE(chunk) : PY_SSIZE_T_MAX;
        if (!first) {
            first = chunk;
        } else {
            if (!list) {
                list = PyList_New(0);
                if (!list || PyList_Append(list, first) < 0) {
                    Py_DECREF(chunk);
                    return fail();
                }
            }
            int rc = PyList_Append(list, chunk);
            Py_DECREF(chunk);
            if (rc < 0) return fail();
        }
        if (t->sslsock) {
            int more = more_to_read(t, got, scratch ? std::min(max_size, kRecordBuffer) : max_size);
            if (more < 0) return fail();
            if (!more) break;
        }
    }
    Py_DECREF(n_obj);
    if (first) {
        PyObject* data = first;
        if (list) {
            data = join_bytes(list);
            Py_DECREF(list);
            Py_DECREF(first);
            if (!data) return -1;
        }
        // A strong reference for the call, as asyncio's caller holds one: the
        // callback may replace the app protocol (set_protocol) and drop the last one
        // while a C method of it still runs.
        PyObject* app = Py_XNewRef(t->app_protocol);
        PyObject* r = app ? call1(app, str_data_received, data) : PyObject_GetAttr(Py_None, str_data_received);
        Py_XDECREF(app);
        Py_DECREF(data);
        if (!r) return -1;
        Py_DECREF(r);
    }
    if (eof) {
        if (run0(self, str_call_eof_received) < 0) return -1;
        if (run0(self, str_start_shutdown) < 0) return -1;
    }
    return 0;
}

// The stdlib's _do_read__buffered: decrypt straight into the app's get_buffer()
// memory, then one buffer_updated(); a read of 0 is the peer's close_notify. The
// last read, which could only raise SSLWantReadError, is skipped as above.
int do_read_buffered(PyTLS* t) {
    PyObject* self = reinterpret_cast<PyObject*>(t);
    PyObject* get_buffer = PyObject_GetAttr(self, str_app_get_buffer);
    if (!get_buffer) return -1;
    Py_ssize_t pending = bio_pending(t->incoming);
    PyObject* hint = pending < 0 ? nullptr : PyLong_FromSsize_t(pending);
    PyObject* buf = hint ? PyObject_CallOneArg(get_buffer, hint) : nullptr;
    Py_XDECREF(hint);
    Py_DECREF(get_buffer);
    if (!buf) return -1;
    Py_ssize_t wants = PyObject_Size(buf);
    if (wants < 0) {
        Py_DECREF(buf);
        return -1;
    }
    Py_ssize_t offset = 0, count = 1;
    bool reschedule = false;
    auto read_into = [&](Py_ssize_t n, PyObject* into, Py_ssize_t* got) -> int {
        // 1: read *got; 0: SSLAgainErrors (cleared); -1: another error.
        PyObject* n_obj = PyLong_FromSsize_t(n);
        PyObject* r = n_obj ? ssl_read(t, n_obj, into) : nullptr;
        Py_XDECREF(n_obj);
        if (!r) {
            if (again_error()) {
                PyErr_Clear();
                return 0;
            }
            return -1;
        }
        *got = PyLong_AsSsize_t(r);
        Py_DECREF(r);
        return *got == -1 && PyErr_Occurred() ? -1 : 1;
    };
    int rc = read_into(wants, buf, &count);
    if (rc < 0) {
        Py_DECREF(buf);
        return -1;
    }
    if (rc > 0 && count > 0) {
        offset = count;
        reschedule = true;
        Py_ssize_t asked = wants;
        while (offset < wants) {
            if (t->sslsock) {
                int more = more_to_read(t, count, asked);
                if (more < 0) {
                    Py_DECREF(buf);
                    return -1;
                }
                if (!more) {  // What SSLWantReadError would have done.
                    reschedule = false;
                    break;
                }
            }
            PyObject* rest = PySequence_GetSlice(buf, offset, PY_SSIZE_T_MAX);
            if (!rest) {
                Py_DECREF(buf);
                return -1;
            }
            Py_ssize_t got = 0;
            asked = wants - offset;
            rc = read_into(asked, rest, &got);
            Py_DECREF(rest);
            if (rc < 0) {
                Py_DECREF(buf);
                return -1;
            }
            if (rc == 0) {
                reschedule = false;
                break;
            }
            count = got;
            if (got <= 0) {
                reschedule = false;
                break;
            }
            offset += got;
        }
    }
    Py_DECREF(buf);
    if (reschedule) {  // The app's buffer is full: read the rest on a later turn.
        PyObject* loop = PyObject_GetAttr(self, str_loop);
        PyObject* again = loop ? PyObject_GetAttr(self, str_do_read) : nullptr;
        PyObject* r = again ? call1(loop, str_call_soon, again) : nullptr;
        Py_XDECREF(again);
        Py_XDECREF(loop);
        if (!r) return -1;
        Py_DECREF(r);
    }
    if (offset > 0) {
        PyObject* updated = PyObject_GetAttr(self, str_app_buffer_updated);
        PyObject* n = updated ? PyLong_FromSsize_t(offset) : nullptr;
        PyObject* r = n ? PyObject_CallOneArg(updated, n) : nullptr;
        Py_XDECREF(n);
        Py_XDECREF(updated);
        if (!r) return -1;
        Py_DECREF(r);
    }
    if (count == 0) {
        if (run0(self, str_call_eof_received) < 0) return -1;
        if (run0(self, str_start_shutdown) < 0) return -1;
    }
    return 0;
}

int do_read_body(PyTLS* t) {
    if (!t->app_reading_paused) {
        int rc = t->app_is_buffer ? do_read_buffered(t) : do_read_copied(t);
        if (rc < 0) return -1;
        if (do_write(t) < 0) return -1;
    }
    return control_ssl_reading(t);
}

PyObject* do_read(PyTLS* t) {
    if (t->state != g.st_wrapped && t->state != g.st_flushing) Py_RETURN_NONE;
    if (do_read_body(t) < 0 && fatal_on_exception(reinterpret_cast<PyObject*>(t)) < 0) return nullptr;
    Py_RETURN_NONE;
}

// --- methods --------------------------------------------------------------------------------

// The stdlib's __init__ sets every attribute the C paths read; a method called on an
// object it has not initialised raises AttributeError, as the stdlib's would.
bool unready(PyObject* self) {
    PyTLS* t = as_tls(self);
    const char* name = !t->state          ? "_state"
                       : !t->sslobj        ? "_sslobj"
                       : !t->incoming      ? "_incoming"
                       : !t->outgoing      ? "_outgoing"
                       : !t->transport     ? "_transport"
                       : !t->write_backlog ? "_write_backlog"
                                           : nullptr;
    if (!name) return false;
    PyErr_Format(PyExc_AttributeError, "'%.100s' object has no attribute '%s'", Py_TYPE(self)->tp_name,
                 name);
    return true;
}

PyObject* m_get_buffer(PyObject* self, PyObject* arg) {
    if (unready(self)) return nullptr;
    PyTLS* t = as_tls(self);
    Py_ssize_t want = PyNumber_AsSsize_t(arg, PyExc_OverflowError);
    if (want == -1 && PyErr_Occurred()) return nullptr;
    Py_ssize_t max_size;
    if (get_max_size(t, &max_size) < 0) return nullptr;
    if (want <= 0 || want > max_size) want = max_size;
    Py_ssize_t have = t->ssl_buffer ? PyObject_Length(t->ssl_buffer) : -1;
    if (have < 0 && t->ssl_buffer) return nullptr;
    if (have < want) {
        PyObject* buf = PyByteArray_FromStringAndSize(nullptr, want);
        if (!buf) return nullptr;
        PyObject* view = PyMemoryView_FromObject(buf);
        if (!view) {
            Py_DECREF(buf);
            return nullptr;
        }
        Py_XSETREF(t->ssl_buffer, buf);
        Py_XSETREF(t->ssl_buffer_view, view);
    }
    if (!t->ssl_buffer_view) {
        PyErr_SetString(PyExc_AttributeError, "_ssl_buffer_view");
        return nullptr;
    }
    return Py_NewRef(t->ssl_buffer_view);
}

PyObject* m_buffer_updated(PyObject* self, PyObject* arg) {
    if (unready(self)) return nullptr;
    PyTLS* t = as_tls(self);
    Py_ssize_t n = PyNumber_AsSsize_t(arg, PyExc_OverflowError);
    if (n == -1 && PyErr_Occurred()) return nullptr;
    PyObject* view = t->ssl_buffer_view;
    if (!view) {
        PyErr_SetString(PyExc_AttributeError, "_ssl_buffer_view");
        return nullptr;
    }
    // self._incoming.write(self._ssl_buffer_view[:nbytes]). A released view keeps its
    // Py_buffer fields while the memory they name may be gone: the slice refuses it.
    bool flat = PyMemoryView_Check(view) &&
                !(reinterpret_cast<PyMemoryViewObject*>(view)->flags & _Py_MEMORYVIEW_RELEASED) &&
                n >= 0 && n <= PyMemoryView_GET_BUFFER(view)->len &&
                PyMemoryView_GET_BUFFER(view)->itemsize == 1 &&
                PyBuffer_IsContiguous(PyMemoryView_GET_BUFFER(view), 'C');
    char* p = flat ? static_cast<char*>(PyMemoryView_GET_BUFFER(view)->buf) : nullptr;
    int done = flat ? bio_write_window(t, p, n) : 0;
    if (done < 0) return nullptr;
    if (!done) {
        PyObject* piece = flat ? PyMemoryView_FromMemory(p, n, PyBUF_READ) : PySequence_GetSlice(view, 0, n);
        if (!piece) return nullptr;
        PyObject* r = bio_write(t->incoming, piece);
        Py_DECREF(piece);
        if (!r) return nullptr;
        Py_DECREF(r);
    }
    if (t->state == g.st_do_handshake) return call0(self, str_do_handshake);
    if (t->state == g.st_wrapped) return do_read(t);
    if (t->state == g.st_flushing) return call0(self, str_do_flush);
    if (t->state == g.st_shutdown) return call0(self, str_do_shutdown);
    Py_RETURN_NONE;
}

PyObject* m_do_read(PyObject* self, PyObject*) {
    if (unready(self)) return nullptr;
    return do_read(as_tls(self));
}

PyObject* m_do_write(PyObject* self, PyObject*) {
    if (unready(self)) return nullptr;
    if (do_write(as_tls(self)) < 0) return nullptr;
    Py_RETURN_NONE;
}

PyObject* m_process_outgoing(PyObject* self, PyObject*) {
    if (unready(self)) return nullptr;
    if (process_outgoing(as_tls(self)) < 0) return nullptr;
    Py_RETURN_NONE;
}

PyObject* m_control_app_writing(PyObject* self, PyObject*) {
    if (unready(self)) return nullptr;
    if (control_app_writing(as_tls(self)) < 0) return nullptr;
    Py_RETURN_NONE;
}

PyObject* m_control_ssl_reading(PyObject* self, PyObject*) {
    if (unready(self)) return nullptr;
    if (control_ssl_reading(as_tls(self)) < 0) return nullptr;
    Py_RETURN_NONE;
}

PyObject* m_get_write_buffer_size(PyObject* self, PyObject*) {
    if (unready(self)) return nullptr;
    PyTLS* t = as_tls(self);
    Py_ssize_t pending = bio_pending(t->outgoing);
    if (pending < 0) return nullptr;
    return PyLong_FromSsize_t(pending + t->write_buffer_size);
}

PyObject* m_get_read_buffer_size(PyObject* self, PyObject*) {
    if (unready(self)) return nullptr;
    Py_ssize_t pending = bio_pending(as_tls(self)->incoming);
    if (pending < 0) return nullptr;
    return PyLong_FromSsize_t(pending);
}

PyObject* m_write_appdata(PyObject* self, PyObject* list_of_data) {
    if (unready(self)) return nullptr;
    if (PyTuple_CheckExact(list_of_data))
        return write_appdata(as_tls(self), &PyTuple_GET_ITEM(list_of_data, 0),
                             PyTuple_GET_SIZE(list_of_data), list_of_data);
    if (PyList_CheckExact(list_of_data)) {
        // A copy of the item pointers: a write may run code that changes the list.
        PyObject* items = PyList_AsTuple(list_of_data);
        if (!items) return nullptr;
        PyObject* r = write_appdata(as_tls(self), &PyTuple_GET_ITEM(items, 0), PyTuple_GET_SIZE(items),
                                    list_of_data);
        Py_DECREF(items);
        return r;
    }
    PyObject* args[] = {self, list_of_data};
    return PyObject_Vectorcall(g.py_write_appdata, args, 2, nullptr);
}

// --- the app transport's write/writelines ---------------------------------------------------

// The app transport class given to _tls_install_transport and the offset of its
// `_ssl_protocol` slot (0 when it has none): read with one load on its instances.
PyTypeObject* g_transport_type;
Py_ssize_t g_transport_proto_offset;

// transport._ssl_protocol, a new reference.
PyObject* transport_protocol(PyObject* transport) {
    if (g_transport_proto_offset && PyObject_TypeCheck(transport, g_transport_type)) {
        PyObject* proto = *reinterpret_cast<PyObject**>(reinterpret_cast<char*>(transport) +
                                                        g_transport_proto_offset);
        if (proto) return Py_NewRef(proto);
    }
    return PyObject_GetAttr(transport, str_ssl_protocol);
}

PyObject* tls_transport_write(PyObject* transport, PyObject* data) {
    if (!PyBytes_Check(data) && !PyByteArray_Check(data) && !PyMemoryView_Check(data)) {
        PyObject* name = PyType_GetName(Py_TYPE(data));
        if (name) {
            PyErr_Format(PyExc_TypeError, "data: expecting a bytes-like instance, got %U", name);
            Py_DECREF(name);
        }
        return nullptr;
    }
    int truth = PyObject_IsTrue(data);
    if (truth < 0) return nullptr;
    if (!truth) Py_RETURN_NONE;
    PyObject* proto = transport_protocol(transport);
    if (!proto) return nullptr;
    PyObject* r;
    if (PyObject_TypeCheck(proto, g_type)) {
        r = unready(proto) ? nullptr : write_appdata(as_tls(proto), &data, 1, nullptr);
    } else {
        PyObject* tup = PyTuple_Pack(1, data);
        r = tup ? call1(proto, str_write_appdata, tup) : nullptr;
        Py_XDECREF(tup);
    }
    Py_DECREF(proto);
    return r;
}

PyObject* tls_transport_writelines(PyObject* transport, PyObject* list_of_data) {
    PyObject* proto = transport_protocol(transport);
    if (!proto) return nullptr;
    PyObject* r = call1(proto, str_write_appdata, list_of_data);
    Py_DECREF(proto);
    return r;
}

// --- attributes -----------------------------------------------------------------------------

PyObject* get_sslobj(PyObject* self, void*) {
    PyTLS* t = as_tls(self);
    if (!t->sslobj) {
        PyErr_SetString(PyExc_AttributeError, "_sslobj");
        return nullptr;
    }
    return Py_NewRef(t->sslobj);
}

int set_sslobj(PyObject* self, PyObject* value, void*) {
    PyTLS* t = as_tls(self);
    PyObject* inner = nullptr;
    if (value && Py_IS_TYPE(value, reinterpret_cast<PyTypeObject*>(g.sslobject_type))) {
        inner = PyObject_GetAttr(value, str_sslobj_inner);
        if (!inner) PyErr_Clear();  // Then every call goes through the SSLObject.
    }
    Py_XINCREF(value);
    Py_XSETREF(t->sslobj, value);
    Py_XSETREF(t->sslsock, inner);
    return 0;
}

// Flags: any object is accepted and kept as its truth value.
template <bool PyTLS::*F>
PyObject* get_flag(PyObject* self, void*) {
    return PyBool_FromLong(as_tls(self)->*F);
}
template <bool PyTLS::*F>
int set_flag(PyObject* self, PyObject* value, void*) {
    if (!value) {
        PyErr_SetString(PyExc_AttributeError, "cannot delete attribute");
        return -1;
    }
    int truth = PyObject_IsTrue(value);
    if (truth < 0) return -1;
    as_tls(self)->*F = truth;
    return 0;
}

template <Mark PyTLS::*M>
PyObject* get_mark(PyObject* self, void*) {
    Mark& m = as_tls(self)->*M;
    if (!m.obj) return PyLong_FromLong(0);
    return Py_NewRef(m.obj);
}
template <Mark PyTLS::*M>
int set_mark(PyObject* self, PyObject* value, void*) {
    if (!value) {
        PyErr_SetString(PyExc_AttributeError, "cannot delete attribute");
        return -1;
    }
    double v = PyFloat_AsDouble(value);
    if (v == -1.0 && PyErr_Occurred()) return -1;
    Mark& m = as_tls(self)->*M;
    Py_INCREF(value);
    Py_XSETREF(m.obj, value);
    m.value = v;
    return 0;
}

#define FLAG(name, field, doc) \
    {name, get_flag<&PyTLS::field>, set_flag<&PyTLS::field>, doc, nullptr}
#define MARK(name, field, doc) \
    {name, get_mark<&PyTLS::field>, set_mark<&PyTLS::field>, doc, nullptr}

PyGetSetDef tls_getset[] = {
    {"_sslobj", get_sslobj, set_sslobj, "The ssl.SSLObject.", nullptr},
    {"max_size", get_max_size_attr, set_max_size_attr,
     "Buffer size passed to read() (the class's unless set on the object).", nullptr},
    FLAG("_app_protocol_is_buffer", app_is_buffer, "Whether the app protocol is a BufferedProtocol."),
    FLAG("_ssl_writing_paused", ssl_writing_paused, "The socket transport paused our writing."),
    FLAG("_app_reading_paused", app_reading_paused, "The app paused reading."),
    FLAG("_ssl_reading_paused", ssl_reading_paused, "We paused the socket transport's reading."),
    FLAG("_app_writing_paused", app_writing_paused, "We paused the app protocol's writing."),
    MARK("_incoming_high_water", in_high, "High water mark of the incoming BIO."),
    MARK("_incoming_low_water", in_low, "Low water mark of the incoming BIO."),
    MARK("_outgoing_high_water", out_high, "High water mark of the app's writes."),
    MARK("_outgoing_low_water", out_low, "Low water mark of the app's writes."),
    {nullptr, nullptr, nullptr, nullptr, nullptr},
};

#define OBJ(name, field, doc) {name, T_OBJECT_EX, offsetof(PyTLS, field), 0, doc}

PyMemberDef tls_members[] = {
    OBJ("_state", state, "The SSLProtocolState."),
    OBJ("_incoming", incoming, "The incoming ssl.MemoryBIO."),
    OBJ("_outgoing", outgoing, "The outgoing ssl.MemoryBIO."),
    OBJ("_app_protocol", app_protocol, "The app protocol."),
    OBJ("_transport", transport, "The socket transport."),
    OBJ("_write_backlog", write_backlog, "The app's chunks not yet written."),
    OBJ("_ssl_buffer", ssl_buffer, "The buffer reads land in."),
    OBJ("_ssl_buffer_view", ssl_buffer_view, "A memoryview of _ssl_buffer."),
    {"_write_buffer_size", T_PYSSIZET, offsetof(PyTLS, write_buffer_size), 0, "Bytes in the backlog."},
    {nullptr, 0, 0, 0, nullptr},
};

#define FAST(f) reinterpret_cast<PyCFunction>(reinterpret_cast<void (*)(void)>(f))

PyMethodDef tls_methods[] = {
    {"get_buffer", m_get_buffer, METH_O, "The buffer the socket transport reads into."},
    {"buffer_updated", m_buffer_updated, METH_O, "nbytes of the buffer were filled."},
    {"_do_read", m_do_read, METH_NOARGS, "Decrypt what can be and deliver it to the app."},
    {"_do_write", m_do_write, METH_NOARGS, "Encrypt the backlog and send the records."},
    {"_process_outgoing", m_process_outgoing, METH_NOARGS, "Send the outgoing BIO's records."},
    {"_write_appdata", m_write_appdata, METH_O, "Write the app's chunks."},
    {"_control_app_writing", m_control_app_writing, METH_NOARGS, "Pause or resume the app's writing."},
    {"_control_ssl_reading", m_control_ssl_reading, METH_NOARGS, "Pause or resume the socket's reading."},
    {"_get_write_buffer_size", m_get_write_buffer_size, METH_NOARGS, "Bytes the app wrote, not yet sent."},
    {"_get_read_buffer_size", m_get_read_buffer_size, METH_NOARGS, "Bytes received, not yet decrypted."},
    {nullptr, nullptr, 0, nullptr},
};

PyObject* tls_new(PyTypeObject* type, PyObject*, PyObject*) {
    PyObject* self = type->tp_alloc(type, 0);
    if (!self) return nullptr;
    PyTLS* t = as_tls(self);
    t->in_high.value = t->in_low.value = t->out_high.value = t->out_low.value = 0.0;
    return self;
}

int tls_traverse(PyObject* self, visitproc visit, void* arg) {
    PyTLS* t = as_tls(self);
    Py_VISIT(Py_TYPE(self));
    Py_VISIT(t->state);
    Py_VISIT(t->sslobj);
    Py_VISIT(t->sslsock);
    Py_VISIT(t->incoming);
    Py_VISIT(t->outgoing);
    Py_VISIT(t->app_protocol);
    Py_VISIT(t->transport);
    Py_VISIT(t->write_backlog);
    Py_VISIT(t->ssl_buffer);
    Py_VISIT(t->ssl_buffer_view);
    Py_VISIT(t->record_buffer);
    Py_VISIT(t->window);
    Py_VISIT(t->max_size);
    Py_VISIT(t->in_high.obj);
    Py_VISIT(t->in_low.obj);
    Py_VISIT(t->out_high.obj);
    Py_VISIT(t->out_low.obj);
    return 0;
}

int tls_clear(PyObject* self) {
    PyTLS* t = as_tls(self);
    Py_CLEAR(t->state);
    Py_CLEAR(t->sslobj);
    Py_CLEAR(t->sslsock);
    Py_CLEAR(t->incoming);
    Py_CLEAR(t->outgoing);
    Py_CLEAR(t->app_protocol);
    Py_CLEAR(t->transport);
    Py_CLEAR(t->write_backlog);
    Py_CLEAR(t->ssl_buffer_view);
    Py_CLEAR(t->ssl_buffer);
    Py_CLEAR(t->record_buffer);
    Py_CLEAR(t->window);
    Py_CLEAR(t->max_size);
    Py_CLEAR(t->in_high.obj);
    Py_CLEAR(t->in_low.obj);
    Py_CLEAR(t->out_high.obj);
    Py_CLEAR(t->out_low.obj);
    return 0;
}

void tls_dealloc(PyObject* self) {
    PyTypeObject* type = Py_TYPE(self);
    PyObject_GC_UnTrack(self);
    tls_clear(self);
    type->tp_free(self);
    Py_DECREF(type);
}

PyObject* tls_setup(PyObject*, PyObject* const* args, Py_ssize_t nargs) {
    // (state_enum, again_errors, sslobject_type, stdlib_protocol_class,
    //  sslsocket_type, memorybio_type)
    if (nargs != 6 || !PyType_Check(args[4]) || !PyType_Check(args[5])) {
        PyErr_SetString(PyExc_TypeError, "_tls_setup takes 6 arguments");
        return nullptr;
    }
    struct {
        PyObject** slot;
        PyObject* from;
        const char* name;
    } items[] = {
        {&g.st_unwrapped, args[0], "UNWRAPPED"},
        {&g.st_do_handshake, args[0], "DO_HANDSHAKE"},
        {&g.st_wrapped, args[0], "WRAPPED"},
        {&g.st_flushing, args[0], "FLUSHING"},
        {&g.st_shutdown, args[0], "SHUTDOWN"},
        {&g.py_write_appdata, args[3], "_write_appdata"},
        {&g.py_do_write, args[3], "_do_write"},
        {&g.py_control_app_writing, args[3], "_control_app_writing"},
        {&g.py_control_ssl_reading, args[3], "_control_ssl_reading"},
        {&g.sock_read, args[4], "read"},
        {&g.sock_write, args[4], "write"},
        {&g.sock_pending, args[4], "pending"},
        {&g.bio_read, args[5], "read"},
        {&g.bio_write, args[5], "write"},
    };
    for (auto& it : items) {
        PyObject* v = PyObject_GetAttrString(it.from, it.name);
        if (!v) return nullptr;
        Py_XSETREF(*it.slot, v);
    }
    // Methods are used directly only if they are the C types' own descriptors.
    for (PyObject** m : {&g.sock_read, &g.sock_write, &g.sock_pending, &g.bio_read, &g.bio_write})
        if (!Py_IS_TYPE(*m, &PyMethodDescr_Type)) Py_CLEAR(*m);
    PyObject* pending = PyObject_GetAttrString(args[5], "pending");
    if (!pending) return nullptr;
    g.bio_pending = Py_IS_TYPE(pending, &PyGetSetDescr_Type) &&
                            reinterpret_cast<PyGetSetDescrObject*>(pending)->d_getset->get
                        ? reinterpret_cast<PyGetSetDescrObject*>(pending)->d_getset
                        : nullptr;
    Py_DECREF(pending);  // The type keeps its descriptor (and the getset table) alive.
    g.sock_type = reinterpret_cast<PyTypeObject*>(args[4]);
    g.bio_type = reinterpret_cast<PyTypeObject*>(args[5]);
    Py_INCREF(args[4]);
    Py_INCREF(args[5]);
    Py_XSETREF(g.again_errors, Py_NewRef(args[1]));
    Py_XSETREF(g.sslobject_type, Py_NewRef(args[2]));
    Py_RETURN_NONE;
}

PyMethodDef transport_methods[] = {
    {"write", tls_transport_write, METH_O,
     "Write some data bytes to the transport (encrypted, then sent by the socket transport)."},
    {"writelines", tls_transport_writelines, METH_O,
     "Write a list (or any iterable) of data bytes to the transport."},
    {nullptr, nullptr, 0, nullptr},
};

// Sets write/writelines of the (Python) app transport class to method descriptors of
// the functions above, so a call costs what a C method's does.
PyObject* tls_install_transport(PyObject*, PyObject* cls) {
    if (!PyType_Check(cls)) {
        PyErr_SetString(PyExc_TypeError, "a class is required");
        return nullptr;
    }
    PyObject* slot = PyObject_GetAttr(cls, str_ssl_protocol);  // The slot's member descriptor.
    if (!slot) PyErr_Clear();
    if (slot && Py_IS_TYPE(slot, &PyMemberDescr_Type)) {
        PyMemberDef* m = reinterpret_cast<PyMemberDescrObject*>(slot)->d_member;
        if (m->type == T_OBJECT_EX && !(m->flags & READONLY)) {
            Py_INCREF(cls);
            Py_XSETREF(g_transport_type, reinterpret_cast<PyTypeObject*>(cls));
            g_transport_proto_offset = m->offset;
        }
    }
    Py_XDECREF(slot);
    for (PyMethodDef* def = transport_methods; def->ml_name; ++def) {
        PyObject* descr = PyDescr_NewMethod(reinterpret_cast<PyTypeObject*>(cls), def);
        if (!descr) return nullptr;
        int rc = PyObject_SetAttrString(cls, def->ml_name, descr);
        Py_DECREF(descr);
        if (rc < 0) return nullptr;
    }
    Py_RETURN_NONE;
}

PyMethodDef module_functions[] = {
    {"_tls_setup", FAST(tls_setup), METH_FASTCALL,
     "_tls_setup(SSLProtocolState, SSLAgainErrors, ssl.SSLObject, sslproto.SSLProtocol, "
     "_ssl._SSLSocket, ssl.MemoryBIO)."},
    {"_tls_install_transport", tls_install_transport, METH_O,
     "_tls_install_transport(cls): give the app transport class its C write and writelines."},
    {nullptr, nullptr, 0, nullptr},
};

bool intern(PyObject*& slot, const char* s) {
    slot = PyUnicode_InternFromString(s);
    return slot != nullptr;
}

}  // namespace

bool init_tls(PyObject* module) {
    if (!intern(str_read, "read") || !intern(str_write, "write") || !intern(str_pending, "pending") ||
        !intern(str_sslobj_inner, "_sslobj") || !intern(str_max_size, "max_size") ||
        !intern(str_data_received, "data_received") || !intern(str_do_handshake, "_do_handshake") ||
        !intern(str_do_flush, "_do_flush") || !intern(str_do_shutdown, "_do_shutdown") ||
        !intern(str_app_get_buffer, "_app_protocol_get_buffer") ||
        !intern(str_app_buffer_updated, "_app_protocol_buffer_updated") ||
        !intern(str_loop, "_loop") || !intern(str_do_read, "_do_read") ||
        !intern(str_call_soon, "call_soon") ||
        !intern(str_call_eof_received, "_call_eof_received") ||
        !intern(str_start_shutdown, "_start_shutdown") || !intern(str_fatal_error, "_fatal_error") ||
        !intern(str_ssl_protocol, "_ssl_protocol") || !intern(str_write_appdata, "_write_appdata") ||
        !intern(str_append, "append") || !intern(str_join, "join"))
        return false;
    g.fatal_message = PyUnicode_FromString("Fatal error on SSL protocol");
    if (!g.fatal_message) return false;
    g_record_size = PyLong_FromSsize_t(kRecordBuffer);
    if (!g_record_size || !init_window_type()) return false;
    PyType_Slot slots[] = {
        {Py_tp_new, reinterpret_cast<void*>(tls_new)},
        {Py_tp_dealloc, reinterpret_cast<void*>(tls_dealloc)},
        {Py_tp_traverse, reinterpret_cast<void*>(tls_traverse)},
        {Py_tp_clear, reinterpret_cast<void*>(tls_clear)},
        {Py_tp_methods, tls_methods},
        {Py_tp_members, tls_members},
        {Py_tp_getset, tls_getset},
        {Py_tp_doc, const_cast<char*>("The per-record methods of cxxloop's SSLProtocol (see _sslproto).")},
        {0, nullptr},
    };
    PyType_Spec spec = {"cxxloop._core.TLSProtocolBase", int(sizeof(PyTLS)), 0,
                        Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE | Py_TPFLAGS_HAVE_GC, slots};
    PyObject* type = PyType_FromSpec(&spec);
    if (!type) return false;
    g_type = reinterpret_cast<PyTypeObject*>(type);
    // A reference of our own: the type is mutable, and a deleted or replaced
    // TLSProtocolBase.max_size must not leave the MRO walk comparing with a freed
    // object's address (which a new object could take).
    g_max_size_descr = Py_XNewRef(PyDict_GetItemWithError(g_type->tp_dict, str_max_size));
    if (!g_max_size_descr) {
        if (!PyErr_Occurred()) PyErr_SetString(PyExc_SystemError, "TLSProtocolBase.max_size is missing");
        return false;
    }
    if (PyModule_AddObjectRef(module, "TLSProtocolBase", type) < 0) return false;
    return PyModule_AddFunctions(module, module_functions) == 0;
}

}  // namespace cxxloop::bind
