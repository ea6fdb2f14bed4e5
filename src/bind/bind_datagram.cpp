// bind_datagram.cpp: cxxloop._core.DatagramReader and DatagramSender, the C halves of
// cxxloop's datagram (UDP) transports.
//
// A DatagramReader is the `_read_ready` of a datagram transport (an instance attribute
// set before asyncio's transport code registers it as the fd's reader): it receives
// into the shared buffer and hands (bytes, address) to the protocol's
// datagram_received, as asyncio's _SelectorDatagramTransport._read_ready does, without
// a Python frame, for a batch of datagrams per readiness report. Only AF_INET and
// AF_INET6 sockets get one: their addresses convert exactly as the socket module
// converts them (inet_ntop, and the four-tuple for IPv6).

#include <cstring>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include "bind.hpp"
#include "structmember.h"

namespace cxxloop::bind {
namespace {

PyObject* str_datagram_received;
PyObject* str_error_received;

// --- the transport's state ------------------------------------------------------------------
//
// asyncio's datagram transport keeps its state in attributes: _protocol, _conn_lost,
// _closing, _paused, _address, _buffer (instance attributes of the stock class, slots
// of cxxloop's subclass) and _extra (a slot of BaseTransport). Where the transport's
// type makes a name a plain object slot, the reader and sender read the slot itself
// (one load, found once from the type's member descriptor); otherwise, and when the
// slot is empty, they use getattr, as Python code would.

enum StateField { kProtocol, kConnLost, kClosing, kPaused, kAddress, kBuffer, kExtra, kStateFields };
PyObject* g_state_names[kStateFields];

struct StateSlots {
    Py_ssize_t offset[kStateFields];  // 0: not a plain slot of the type.
};

StateSlots state_slots(PyTypeObject* type) {
    StateSlots s{};
    for (int i = 0; i < kStateFields; ++i) {
        PyObject* d = _PyType_Lookup(type, g_state_names[i]);  // Borrowed.
        if (!d || !Py_IS_TYPE(d, &PyMemberDescr_Type)) continue;
        PyMemberDef* m = reinterpret_cast<PyMemberDescrObject*>(d)->d_member;
        if (m->type == T_OBJECT_EX && !(m->flags & READONLY) && m->offset > 0) s.offset[i] = m->offset;
    }
    return s;
}

// transport.<field>, a new reference.
PyObject* state_get(PyObject* o, const StateSlots& s, StateField f) {
    if (Py_ssize_t off = s.offset[f]) {
        PyObject* v = *reinterpret_cast<PyObject**>(reinterpret_cast<char*>(o) + off);
        if (v) return Py_NewRef(v);
    }
    return PyObject_GetAttr(o, g_state_names[f]);
}

// Whether transport.<field> is false (0/None/empty); -1 on error.
int attr_false(PyObject* o, const StateSlots& s, StateField f) {
    PyObject* v = state_get(o, s, f);
    if (!v) return -1;
    int t = PyObject_IsTrue(v);
    Py_DECREF(v);
    return t < 0 ? -1 : !t;
}

PyObject* str_peername;

// --- addresses ---------------------------------------------------------------------------------
//
// A peer usually sends many datagrams, and an echo answers to the address it was
// given. The (host, port[, flowinfo, scope_id]) tuples made for received datagrams are
// kept in a small table keyed by the address, so a repeated peer gets the same
// (immutable) tuple without formatting it again, and a sendto() given one of these
// tuples finds its sockaddr without parsing it (a second table maps the tuple's
// identity to its entry; the table's reference keeps that identity unique).

struct AddrEntry {
    sockaddr_storage ss;
    socklen_t len;
    PyObject* tuple;  // Strong; null for an empty slot.
};

constexpr size_t kAddrSlots = 64;
AddrEntry g_addrs[kAddrSlots];
unsigned char g_by_tuple[kAddrSlots];  // Slot of g_addrs per hash of a tuple's address.

size_t tuple_slot(PyObject* tuple) { return (reinterpret_cast<uintptr_t>(tuple) >> 4) % kAddrSlots; }

// Equality of the fields the Python address is made of.
bool same_address(const sockaddr_storage& a, const sockaddr_storage& b) {
    if (a.ss_family != b.ss_family) return false;
    if (a.ss_family == AF_INET) {
        const auto& x = reinterpret_cast<const sockaddr_in&>(a);
        const auto& y = reinterpret_cast<const sockaddr_in&>(b);
        return x.sin_port == y.sin_port && x.sin_addr.s_addr == y.sin_addr.s_addr;
    }
    const auto& x = reinterpret_cast<const sockaddr_in6&>(a);
    const auto& y = reinterpret_cast<const sockaddr_in6&>(b);
    return x.sin6_port == y.sin6_port && x.sin6_flowinfo == y.sin6_flowinfo &&
           x.sin6_scope_id == y.sin6_scope_id && std::memcmp(&x.sin6_addr, &y.sin6_addr, sizeof(x.sin6_addr)) == 0;
}

// The slot of `ss` in g_addrs.
size_t address_slot(const sockaddr_storage& ss) {
    uint32_t h;
    if (ss.ss_family == AF_INET) {
        const auto& a = reinterpret_cast<const sockaddr_in&>(ss);
        h = a.sin_addr.s_addr ^ (uint32_t(a.sin_port) << 16 | a.sin_port);
    } else {
        const auto& a = reinterpret_cast<const sockaddr_in6&>(ss);
        uint32_t w[4];
        std::memcpy(w, &a.sin6_addr, sizeof(w));
        h = w[0] ^ w[1] ^ w[2] ^ w[3] ^ a.sin6_scope_id ^ (uint32_t(a.sin6_port) << 16 | a.sin6_port);
    }
    h *= 2654435761u;
    return (h >> 16) % kAddrSlots;
}

// "a.b.c.d" for an IPv4 address (what inet_ntop writes), without printf.
PyObject* ipv4_str(in_addr addr) {
    const auto* b = reinterpret_cast<const unsigned char*>(&addr.s_addr);
    char buf[16];
    char* p = buf;
    for (int i = 0; i < 4; ++i) {
        unsigned v = b[i];
        if (v >= 100) *p++ = char('0' + v / 100);
        if (v >= 10) *p++ = char('0' + v / 10 % 10);
        *p++ = char('0' + v % 10);
        if (i < 3) *p++ = '.';
    }
    return PyUnicode_FromStringAndSize(buf, p - buf);
}

// The Python address of `ss`, as the socket module makes it.
PyObject* make_address(const sockaddr_storage& ss) {
    if (ss.ss_family == AF_INET) {
        const auto& a = reinterpret_cast<const sockaddr_in&>(ss);
        PyObject* host = ipv4_str(a.sin_addr);
        if (!host) return nullptr;
        PyObject* port = PyLong_FromLong(ntohs(a.sin_port));
        if (!port) {
            Py_DECREF(host);
            return nullptr;
        }
        PyObject* t = PyTuple_Pack(2, host, port);
        Py_DECREF(host);
        Py_DECREF(port);
        return t;
    }
    char buf[INET6_ADDRSTRLEN];
    const auto& a = reinterpret_cast<const sockaddr_in6&>(ss);
    if (!inet_ntop(AF_INET6, &a.sin6_addr, buf, sizeof(buf))) return PyErr_SetFromErrno(PyExc_OSError);
    return Py_BuildValue("(siII)", buf, int(ntohs(a.sin6_port)), unsigned(ntohl(a.sin6_flowinfo)),
                         unsigned(a.sin6_scope_id));
}

PyObject* sockaddr_to_python(const sockaddr_storage& ss, socklen_t len) {
    if (len == 0) Py_RETURN_NONE;
    if (ss.ss_family != AF_INET && ss.ss_family != AF_INET6) {
        PyErr_Format(PyExc_OSError, "unsupported address family %d", int(ss.ss_family));
        return nullptr;
    }
    const size_t slot = address_slot(ss);
    AddrEntry& e = g_addrs[slot];
    if (e.tuple && e.len == len && same_address(e.ss, ss)) return Py_NewRef(e.tuple);
    PyObject* t = make_address(ss);
    if (!t) return nullptr;
    PyObject* old = e.tuple;
    e.ss = ss;
    e.len = len;
    e.tuple = Py_NewRef(t);
    g_by_tuple[tuple_slot(t)] = static_cast<unsigned char>(slot);
    Py_XDECREF(old);  // A tuple of a str and ints: no code runs.
    return t;
}

// The sockaddr of an address tuple sockaddr_to_python() made (and still holds) for a
// socket of `family`, or null.
const AddrEntry* known_address(PyObject* addr, int family) {
    const AddrEntry& e = g_addrs[g_by_tuple[tuple_slot(addr)]];
    return e.tuple == addr && e.ss.ss_family == family ? &e : nullptr;
}

struct PyDatagramReader {
    PyObject_HEAD
    vectorcallfunc vectorcall;
    PyObject* transport;
    int fd;
    StateSlots slots;
};

// Whether the transport still wants datagrams: not lost, not closing, not paused.
int still_reading(PyObject* transport, const StateSlots& s, bool first) {
    int ok = attr_false(transport, s, kConnLost);
    if (ok != 1 || first) return ok;
    ok = attr_false(transport, s, kClosing);
    return ok == 1 ? attr_false(transport, s, kPaused) : ok;
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
        int go = still_reading(transport, r->slots, i == 0);
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
        PyObject* protocol = state_get(transport, r->slots, kProtocol);
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
    r->slots = state_slots(Py_TYPE(transport));
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

struct PyDatagramSender {
    PyObject_HEAD
    vectorcallfunc vectorcall;
    PyObject* transport;
    PyObject* fallback;
    int fd;
    int family;
    StateSlots slots;
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
    Py_ssize_t hlen;
    const char* h = PyUnicode_AsUTF8AndSize(host, &hlen);
    if (!h) {
        PyErr_Clear();
        return false;
    }
    // inet_pton would stop at a NUL; the socket module refuses such a host name.
    if (std::strlen(h) != size_t(hlen)) return false;
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
        int ok = 1;
        for (StateField f : {kAddress, kConnLost, kBuffer}) {
            ok = attr_false(s->transport, s->slots, f);
            if (ok != 1) break;
        }
        if (ok == 1) {
            // asyncio sends with send() when the socket has a peer name.
            PyObject* extra = state_get(s->transport, s->slots, kExtra);
            PyObject* peer = extra && PyDict_Check(extra) ? PyDict_GetItemWithError(extra, str_peername) : nullptr;
            ok = extra && PyDict_Check(extra) && !PyErr_Occurred() && (!peer || peer == Py_None) ? 1 : 0;
            Py_XDECREF(extra);
        }
        if (PyErr_Occurred()) return nullptr;
        if (ok < 0) return nullptr;
        sockaddr_storage parsed;
        const sockaddr_storage* ss = nullptr;
        socklen_t len = 0;
        if (ok == 1) {
            if (const AddrEntry* e = known_address(args[1], s->family)) {
                ss = &e->ss;  // Stays valid: nothing below runs Python code before sendto.
                len = e->len;
            } else if (numeric_sockaddr(args[1], s->family, &parsed, &len)) {
                ss = &parsed;
            }
        }
        if (ss) {
            ssize_t n;
            do {
                n = ::sendto(s->fd, PyBytes_AS_STRING(args[0]), size_t(PyBytes_GET_SIZE(args[0])), 0,
                             reinterpret_cast<const sockaddr*>(ss), len);
            } while (n < 0 && errno == EINTR);
            if (n >= 0) Py_RETURN_NONE;
            if (errno != EAGAIN && errno != EWOULDBLOCK) {
                PyObject* exc = make_os_error(std::error_code(errno, std::generic_category()));
                if (!exc) return nullptr;
                PyObject* protocol = state_get(s->transport, s->slots, kProtocol);
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
    s->slots = state_slots(Py_TYPE(transport));
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
    str_peername = PyUnicode_InternFromString("peername");
    if (!str_datagram_received || !str_error_received || !str_peername) return false;
    const char* state_names[kStateFields] = {"_protocol", "_conn_lost", "_closing", "_paused",
                                             "_address",  "_buffer",    "_extra"};
    for (int i = 0; i < kStateFields; ++i) {
        g_state_names[i] = PyUnicode_InternFromString(state_names[i]);
        if (!g_state_names[i]) return false;
    }
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
