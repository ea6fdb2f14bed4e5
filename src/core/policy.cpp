// policy.cpp: per-thread current loops and the process-wide policy (asyncio's semantics).
#include "cxxloop/policy.hpp"

#include <pthread.h>
#include <unistd.h>

#include <atomic>
#include <mutex>
#include <stdexcept>
#include <string>
#include <thread>
#include <unordered_map>

#ifdef __linux__
#include <sys/syscall.h>
#endif

namespace cxxloop {
namespace {

/// One thread's state for one policy, like asyncio's `_local` (`_loop`, `_set_called`).
struct Slot {
    std::weak_ptr<void> policy_alive;
    std::shared_ptr<EventLoop> loop;
    bool set_called = false;
};

std::atomic<uint64_t> next_policy_id{1};

// Set once this thread's slot map has been destroyed. At exit the main thread's
// thread_locals die before static objects, so a policy kept in a static (such as the
// process-wide one) must not touch the map from its destructor after that.
thread_local bool slots_gone = false;

/// A thread's slot map that records its own destruction in `slots_gone`.
struct SlotMap : std::unordered_map<uint64_t, Slot> {
    ~SlotMap() { slots_gone = true; }
};

/// This thread's slots, keyed by policy id. Being thread_local, a thread's loops are
/// released when it exits, as with Python's threading.local.
SlotMap& thread_slots() {
    thread_local SlotMap slots;
    return slots;
}

/// Drops this thread's slots whose policy has been destroyed.
void purge_dead_slots(std::unordered_map<uint64_t, Slot>& slots) {
    std::erase_if(slots, [](const auto& kv) { return kv.second.policy_alive.expired(); });
}

/// This thread's slot for policy `id`, created on first use. Creating one is also
/// when stale slots are purged, which keeps lookups of existing slots cheap.
Slot& thread_slot(uint64_t id, const std::shared_ptr<void>& alive) {
    auto& slots = thread_slots();
    if (auto it = slots.find(id); it != slots.end()) return it->second;
    purge_dead_slots(slots);
    Slot& s = slots[id];
    s.policy_alive = alive;
    return s;
}

#ifndef __linux__
// Off Linux the main thread is taken to be the one that ran static initialisation.
const std::thread::id main_thread_id = std::this_thread::get_id();
#endif

/// Whether the caller is the process's main thread (asyncio's threading.main_thread()).
bool is_main_thread() noexcept {
#ifdef __linux__
    return ::syscall(SYS_gettid) == ::getpid();
#else
    return std::this_thread::get_id() == main_thread_id;
#endif
}

/// The calling thread's name for error messages: "MainThread" for the main thread,
/// as in Python, else its pthread name (which Linux sets to the program's name
/// unless pthread_setname_np changed it).
std::string thread_name() {
    if (is_main_thread()) return "MainThread";
    char buf[64] = {};
    if (::pthread_getname_np(::pthread_self(), buf, sizeof buf) == 0 && buf[0]) return buf;
    return "unnamed";
}

}  // namespace

EventLoopPolicy::EventLoopPolicy() : id_(next_policy_id++), alive_(std::make_shared<char>()) {}

EventLoopPolicy::~EventLoopPolicy() {
    // Release this thread's loop now; other threads purge theirs lazily (see the header).
    alive_.reset();
    if (!slots_gone) thread_slots().erase(id_);
}

EventLoop& EventLoopPolicy::get_event_loop() {
    Slot& s = thread_slot(id_, alive_);
    // As asyncio: only the main thread gets a loop on demand, and only if nobody has
    // called set_event_loop() there (setting null means "no loop here", on purpose).
    if (!s.loop && !s.set_called && is_main_thread()) set_event_loop(new_event_loop());
    if (!s.loop) throw std::runtime_error("There is no current event loop in thread '" + thread_name() + "'.");
    return *s.loop;
}

void EventLoopPolicy::set_event_loop(std::shared_ptr<EventLoop> loop) {
    Slot& s = thread_slot(id_, alive_);
    s.set_called = true;
    // Swap first, so the old loop is destroyed after the slot already holds the new one.
    std::swap(s.loop, loop);
}

std::shared_ptr<EventLoop> EventLoopPolicy::new_event_loop() { return std::make_shared<EventLoop>(); }

std::shared_ptr<EventLoop> EventLoopPolicy::current_loop() const {
    auto& slots = thread_slots();
    auto it = slots.find(id_);
    return it == slots.end() ? nullptr : it->second.loop;
}

namespace {

std::mutex policy_mu;
std::shared_ptr<EventLoopPolicy> policy;  // Guarded by policy_mu; null means "default".

}  // namespace

std::shared_ptr<EventLoopPolicy> get_event_loop_policy() {
    std::lock_guard lock(policy_mu);
    if (!policy) policy = std::make_shared<EventLoopPolicy>();
    return policy;
}

void set_event_loop_policy(std::shared_ptr<EventLoopPolicy> p) {
    std::shared_ptr<EventLoopPolicy> old;
    {
        std::lock_guard lock(policy_mu);
        old = std::exchange(policy, std::move(p));
    }
    // `old` is released here, outside the lock: its destructor may destroy a loop.
}

}  // namespace cxxloop
