// callback.hpp: the type-erased unit of work the loop queues and runs.
#pragma once

#include <cstddef>
#include <cstdint>
#include <utility>

namespace cxxloop {

/// A node the loop can queue without knowing what it wraps.
///
/// The owner of a Callback (a Python handle in the binding, a lambda for C++ users)
/// fills in the three functions. The loop calls `retain` when it stores a callback (in
/// the ready queue, the timer heap, or as an fd's reader or writer) and `release` when
/// it lets go of it, so a callback outlives every place that holds it.
///
/// `run` returns true to go on, false to abort the current iteration; the loop then
/// leaves the remaining callbacks queued and reports the abort to its caller (the
/// binding uses this to let KeyboardInterrupt and SystemExit propagate, as asyncio does).
struct Callback {
    using RunFn = bool (*)(Callback*) noexcept;
    using RefFn = void (*)(Callback*) noexcept;

    RunFn run = nullptr;
    RefFn retain = nullptr;
    RefFn release = nullptr;
    bool cancelled = false;
};

/// A callback with a deadline, kept in the loop's timer heap.
struct Timer : Callback {
    double when = 0.0;       ///< Deadline in seconds on the monotonic clock.
    bool scheduled = false;  ///< True while the timer sits in the heap.
    size_t heap_index = 0;   ///< Its position in the heap while scheduled (heap-owned).
};

/// A refcounted Callback (or Timer) that runs a C++ callable. Starts with no
/// references: whoever stores it retains it.
template <class Base, class F>
struct FnNode final : Base {
    explicit FnNode(F f) : fn(std::move(f)) {
        this->run = [](Callback* c) noexcept {
            static_cast<FnNode*>(c)->fn();
            return true;
        };
        this->retain = [](Callback* c) noexcept { ++static_cast<FnNode*>(c)->refs; };
        this->release = [](Callback* c) noexcept {
            auto* self = static_cast<FnNode*>(c);
            if (--self->refs == 0) delete self;
        };
    }
    F fn;
    long refs = 0;
};

}  // namespace cxxloop
