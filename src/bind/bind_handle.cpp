// bind_handle.cpp: Handle and TimerHandle, real subclasses of asyncio's, with a core node.
//
// Our types derive from asyncio.Handle / asyncio.TimerHandle, so isinstance() holds
// and every inherited method (repr, comparisons, _run) works on the same __slots__.
// The slots are written directly at the offsets their member descriptors report; the
// core node (a Callback or Timer) sits after the base layout. Nothing Python lives
// in the node, so the inherited dealloc and GC traversal stay correct.
#include <algorithm>
#include <cmath>
#include <cstddef>

#include "bind.hpp"
#include "structmember.h"

namespace cxxloop::bind {
namespace {

struct SlotOffsets {
    Py_ssize_t callback = -1, args = -1, cancelled = -1, loop = -1, source_traceback = -1,
               repr = -1, context = -1, when = -1, scheduled = -1;
};
SlotOffsets S;

// The extension that follows the base layout: a back-pointer, then the node.
struct HandleExt {
    PyObject* self;
    Callback node;
};
struct TimerExt {
    PyObject* self;
    Timer node;
};
static_assert(offsetof(HandleExt, node) == offsetof(TimerExt, node));
constexpr size_t kNodeOffset = offsetof(HandleExt, node);

PyTypeObject* HandleType = nullptr;

// Dead handles kept for reuse, per type. A free object keeps its memory and GC
// header; its slots are all cleared and it is untracked. The next pointer lives in
// the callback slot.
//
// Allocation and GC linking are a large share of call_soon's cost, and a burst of
// callbacks (thousands scheduled before the loop runs them) costs far more: pymalloc
// faults fresh arenas in for the burst and unmaps them once it is over, each time.
// So the list keeps every handle it is given, and trim() hands back what the loop
// did not need: at each check, at least kTrimPeriod apart, the handles that stayed
// on the list for the whole period (its low-water mark, above kKeep) are freed.
// Memory held after a burst thus returns within one or two periods of the loop
// going idle, and is never more than the peak number of live handles: while the
// lists hold more than they keep, a loop about to sleep caps its wait at the next
// check (handle_trim_due_ns), so even a loop with nothing to wait for wakes up to
// give the burst back, then sleeps on.
struct FreeList {
    PyObject* head = nullptr;
    size_t size = 0;
    size_t low = 0;  // The smallest size since the last trim.
    static constexpr size_t kKeep = 1024;
};
FreeList handle_free, timer_free;
constexpr double kTrimPeriod = 1.0;  // Seconds.
double last_trim = 0.0;
PyTypeObject* TimerHandleType = nullptr;
Py_ssize_t handle_ext_off = 0;
Py_ssize_t timer_ext_off = 0;

inline PyObject*& slot(PyObject* o, Py_ssize_t off) { return *reinterpret_cast<PyObject**>(reinterpret_cast<char*>(o) + off); }
inline void set_slot(PyObject* o, Py_ssize_t off, PyObject* value) { Py_XSETREF(slot(o, off), value); }

inline PyObject* self_of(Callback* cb) {
    return *reinterpret_cast<PyObject**>(reinterpret_cast<char*>(cb) - kNodeOffset);
}

void node_retain(Callback* cb) noexcept { Py_INCREF(self_of(cb)); }
void node_release(Callback* cb) noexcept { Py_DECREF(self_of(cb)); }

// Reports an exception raised by a callback, as asyncio's Handle._run does: through
// the loop's exception handler. Returns false when the exception must propagate.
bool report_error(PyObject* self) {
    if (PyErr_ExceptionMatches(PyExc_SystemExit) || PyErr_ExceptionMatches(PyExc_KeyboardInterrupt)) return false;
    PyObject* value = fetch_exception();
    PyObject* res = hooks.report_callback_error
                        ? PyObject_CallFunctionObjArgs(hooks.report_callback_error, self, value, nullptr)
                        : nullptr;
    Py_XDECREF(value);
    if (res) {
        Py_DECREF(res);
        return true;
    }
    if (!PyErr_Occurred()) return true;
    if (PyErr_ExceptionMatches(PyExc_SystemExit) || PyErr_ExceptionMatches(PyExc_KeyboardInterrupt)) return false;
    PyErr_WriteUnraisable(self);
    return true;
}

// Runs callback(*args) inside the handle's context (asyncio's Context.run).
bool node_run(Callback* cb) noexcept {
    PyObject* self = self_of(cb);
    PyObject* callback = slot(self, S.callback);
    PyObject* args = slot(self, S.args);
    PyObject* ctx = slot(self, S.context);
    if (!callback || !args || !ctx || !PyTuple_Check(args)) return true;
    // The callback may cancel its own handle, which drops these slots. The handle
    // itself stays alive: the loop holds a reference until run() returns.
    Py_INCREF(callback);
    Py_INCREF(args);
    Py_INCREF(ctx);
    PyObject* res = nullptr;
    if (PyContext_Enter(ctx) == 0) {
        res = PyObject_Vectorcall(callback, &PyTuple_GET_ITEM(args, 0), size_t(PyTuple_GET_SIZE(args)), nullptr);
        if (PyContext_Exit(ctx) < 0) Py_CLEAR(res);
    }
    Py_DECREF(callback);
    Py_DECREF(args);
    Py_DECREF(ctx);
    if (res) {
        Py_DECREF(res);
        return true;
    }
    return report_error(self);
}

bool init_node(PyObject* h, Callback* node) {
    node->run = node_run;
    node->retain = node_retain;
    node->release = node_release;
    node->cancelled = false;
    *reinterpret_cast<PyObject**>(reinterpret_cast<char*>(node) - kNodeOffset) = h;
    return true;
}

// Fills the asyncio.Handle slots of a fresh handle (all slots null); returns false
// with an error set.
bool init_slots(PyObject* h, PyObject* loop, PyObject* callback, PyObject* args, PyObject* context) {
    if (!context || context == Py_None) {
        context = PyContext_CopyCurrent();
        if (!context) return false;
    } else {
        Py_INCREF(context);
    }
    slot(h, S.context) = context;
    slot(h, S.loop) = Py_NewRef(loop);
    slot(h, S.callback) = Py_NewRef(callback);
    slot(h, S.args) = Py_NewRef(args);
    slot(h, S.cancelled) = Py_NewRef(Py_False);
    slot(h, S.repr) = Py_NewRef(Py_None);
    PyObject* tb = Py_None;
    if (loop_debug_unchecked(loop) && hooks.extract_stack) {
        tb = PyObject_CallNoArgs(hooks.extract_stack);
        if (!tb) return false;
    } else {
        Py_INCREF(tb);
    }
    slot(h, S.source_traceback) = tb;
    return true;
}

// --- methods ---------------------------------------------------------------------------

PyObject* cancel_common(PyObject* self, Timer* timer) {
    if (slot(self, S.cancelled) == Py_True) Py_RETURN_NONE;
    PyObject* loop = slot(self, S.loop);
    if (timer && loop) {
        // asyncio counts cancelled timers still in the heap to decide when to compact.
        EventLoop* core = loop_core(loop);
        if (core) core->timer_cancelled(timer);
        else PyErr_Clear();
    }
    handle_node(self)->cancelled = true;
    set_slot(self, S.cancelled, Py_NewRef(Py_True));
    if (loop && loop_debug(loop)) {
        // Keep a representation in debug mode, for "Executing <Handle...> took" logs.
        PyObject* r = PyObject_Repr(self);
        if (!r) return nullptr;
        set_slot(self, S.repr, r);
    }
    set_slot(self, S.callback, Py_NewRef(Py_None));
    set_slot(self, S.args, Py_NewRef(Py_None));
    Py_RETURN_NONE;
}

PyObject* handle_cancel(PyObject* self, PyObject*) { return cancel_common(self, nullptr); }
PyObject* timer_cancel(PyObject* self, PyObject*) { return cancel_common(self, timer_node(self)); }

PyObject* handle_get_context(PyObject* self, PyObject*) {
    PyObject* ctx = slot(self, S.context);
    return Py_NewRef(ctx ? ctx : Py_None);
}

PyObject* timer_get_scheduled(PyObject* self, void*) { return PyBool_FromLong(timer_node(self)->scheduled); }

PyMethodDef handle_methods[] = {
    {"cancel", handle_cancel, METH_NOARGS, "Cancel the callback; a no-op if it already ran."},
    {"get_context", handle_get_context, METH_NOARGS, "The contextvars.Context the callback runs in."},
    {nullptr, nullptr, 0, nullptr},
};
PyMethodDef timer_methods[] = {
    {"cancel", timer_cancel, METH_NOARGS, "Cancel the timer; a no-op if it already ran."},
    {"get_context", handle_get_context, METH_NOARGS, "The contextvars.Context the callback runs in."},
    {nullptr, nullptr, 0, nullptr},
};
PyGetSetDef timer_getset[] = {
    {"_scheduled", timer_get_scheduled, nullptr, "True while the timer waits in the loop's heap.", nullptr},
    {nullptr, nullptr, nullptr, nullptr, nullptr},
};

PyObject*& free_next(PyObject* o) { return slot(o, S.callback); }

void clear_handle_slots(PyObject* self) {
    for (Py_ssize_t off : {S.callback, S.args, S.cancelled, S.loop, S.source_traceback, S.repr, S.context})
        Py_CLEAR(slot(self, off));
}

// Our own deallocation: what the inherited subtype_dealloc does for these exact
// layouts (weak references, then the slots), without its generic walk, and with the
// memory kept on a free list.
void dealloc_into(PyObject* self, FreeList& fl) {
    PyTypeObject* tp = Py_TYPE(self);
    PyObject_GC_UnTrack(self);
    if (tp->tp_weaklistoffset && slot(self, tp->tp_weaklistoffset)) PyObject_ClearWeakRefs(self);
    clear_handle_slots(self);
    if (tp == TimerHandleType) {
        Py_CLEAR(slot(self, S.when));
        Py_CLEAR(slot(self, S.scheduled));
    }
    free_next(self) = fl.head;
    fl.head = self;
    ++fl.size;
    Py_DECREF(tp);
}

// Frees the handles that stayed on the list since the last trim, keeping kKeep.
void trim(FreeList& fl, PyTypeObject* tp) {
    for (size_t n = fl.low > FreeList::kKeep ? fl.low - FreeList::kKeep : 0; n > 0; --n) {
        PyObject* op = fl.head;
        fl.head = free_next(op);
        free_next(op) = nullptr;
        --fl.size;
        tp->tp_free(op);
    }
    fl.low = fl.size;
}

void handle_dealloc(PyObject* self) { dealloc_into(self, handle_free); }
void timer_dealloc(PyObject* self) { dealloc_into(self, timer_free); }

PyObject* alloc_from(PyTypeObject* tp, FreeList& fl) {
    PyObject* op = fl.head;
    if (!op) return tp->tp_alloc(tp, 0);
    fl.head = free_next(op);
    free_next(op) = nullptr;
    if (--fl.size < fl.low) fl.low = fl.size;
    PyObject_Init(op, tp);
    PyObject_GC_Track(op);
    return op;
}

Py_ssize_t member_offset(PyObject* cls, const char* name) {
    PyObject* descr = PyObject_GetAttrString(cls, name);
    if (!descr) return -1;
    Py_ssize_t off = -1;
    if (Py_IS_TYPE(descr, &PyMemberDescr_Type))
        off = reinterpret_cast<PyMemberDescrObject*>(descr)->d_member->offset;
    else
        PyErr_Format(PyExc_TypeError, "asyncio handle slot %s is not a member descriptor", name);
    Py_DECREF(descr);
    return off;
}

PyTypeObject* make_type(const char* name, PyObject* base, Py_ssize_t ext_size, PyMethodDef* methods,
                        PyGetSetDef* getset, destructor dealloc, Py_ssize_t* ext_off) {
    *ext_off = reinterpret_cast<PyTypeObject*>(base)->tp_basicsize;
    PyType_Slot slots[] = {
        {Py_tp_methods, methods},
        {Py_tp_dealloc, reinterpret_cast<void*>(dealloc)},
        {getset ? Py_tp_getset : Py_tp_doc, getset ? static_cast<void*>(getset) : const_cast<char*>("")},
        {0, nullptr},
    };
    PyType_Spec spec = {name, int(*ext_off + ext_size), 0, Py_TPFLAGS_DEFAULT, slots};
    PyObject* bases = PyTuple_Pack(1, base);
    if (!bases) return nullptr;
    PyObject* t = PyType_FromSpecWithBases(&spec, bases);
    Py_DECREF(bases);
    return reinterpret_cast<PyTypeObject*>(t);
}

}  // namespace

Callback* handle_node(PyObject* h) {
    if (Py_TYPE(h) == TimerHandleType)
        return &reinterpret_cast<TimerExt*>(reinterpret_cast<char*>(h) + timer_ext_off)->node;
    return &reinterpret_cast<HandleExt*>(reinterpret_cast<char*>(h) + handle_ext_off)->node;
}

Timer* timer_node(PyObject* h) {
    return &reinterpret_cast<TimerExt*>(reinterpret_cast<char*>(h) + timer_ext_off)->node;
}

PyObject* node_handle(Callback* cb) { return self_of(cb); }

size_t handle_node_lead() {
    // Everything from the GC header (two pointers before the object) to the node.
    const Py_ssize_t lead = std::max(handle_ext_off, timer_ext_off) + Py_ssize_t(kNodeOffset + 2 * sizeof(void*));
    return size_t(lead);
}

int64_t handle_trim_due_ns(double now) {
    if (handle_free.size <= FreeList::kKeep && timer_free.size <= FreeList::kKeep) return -1;
    const double wait = last_trim + kTrimPeriod - now;
    return wait <= 0 ? 0 : int64_t(std::ceil(wait * 1e9));
}

void trim_handle_free_lists(double now) {
    if (now - last_trim < kTrimPeriod) return;
    last_trim = now;
    trim(handle_free, HandleType);
    trim(timer_free, TimerHandleType);
}

PyObject* new_handle(PyObject* loop, PyObject* callback, PyObject* args, PyObject* context) {
    PyObject* h = alloc_from(HandleType, handle_free);
    if (!h) return nullptr;
    init_node(h, handle_node(h));
    if (!init_slots(h, loop, callback, args, context)) {
        Py_DECREF(h);
        return nullptr;
    }
    return h;
}

PyObject* new_timer_handle(PyObject* loop, PyObject* when, double when_d, PyObject* callback, PyObject* args,
                           PyObject* context) {
    PyObject* h = alloc_from(TimerHandleType, timer_free);
    if (!h) return nullptr;
    Timer* t = timer_node(h);
    init_node(h, t);
    t->when = when_d;
    t->scheduled = false;
    set_slot(h, S.when, Py_NewRef(when));
    if (!init_slots(h, loop, callback, args, context)) {
        Py_DECREF(h);
        return nullptr;
    }
    return h;
}

bool init_handles(PyObject* module) {
    PyObject* events = PyImport_ImportModule("asyncio.events");
    if (!events) return false;
    PyObject* handle = PyObject_GetAttrString(events, "Handle");
    PyObject* timer = PyObject_GetAttrString(events, "TimerHandle");
    Py_DECREF(events);
    bool ok = false;
    if (handle && timer) {
        S.callback = member_offset(handle, "_callback");
        S.args = member_offset(handle, "_args");
        S.cancelled = member_offset(handle, "_cancelled");
        S.loop = member_offset(handle, "_loop");
        S.source_traceback = member_offset(handle, "_source_traceback");
        S.repr = member_offset(handle, "_repr");
        S.context = member_offset(handle, "_context");
        S.when = member_offset(timer, "_when");
        S.scheduled = member_offset(timer, "_scheduled");
        if (!PyErr_Occurred()) {
            HandleType = make_type("cxxloop._core.Handle", handle, sizeof(HandleExt), handle_methods, nullptr,
                                   handle_dealloc, &handle_ext_off);
            TimerHandleType = HandleType ? make_type("cxxloop._core.TimerHandle", timer, sizeof(TimerExt),
                                                     timer_methods, timer_getset, timer_dealloc, &timer_ext_off)
                                         : nullptr;
            ok = TimerHandleType && PyModule_AddObjectRef(module, "Handle", (PyObject*)HandleType) == 0 &&
                 PyModule_AddObjectRef(module, "TimerHandle", (PyObject*)TimerHandleType) == 0;
        }
    }
    Py_XDECREF(handle);
    Py_XDECREF(timer);
    return ok;
}

}  // namespace cxxloop::bind
