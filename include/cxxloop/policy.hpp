// policy.hpp: per-thread current event loops for C++ users, after asyncio's default policy.
#pragma once

#include <cstdint>
#include <memory>

#include "cxxloop/loop.hpp"

namespace cxxloop {

/// Tracks one current event loop per thread, with the semantics of asyncio's default
/// policy: the main thread gets a loop created on demand by get_event_loop() (unless
/// set_event_loop() was called there first, even with null); any other thread must
/// set one. Subclass it to change how loops are made or found; get_event_loop() calls
/// the virtual new_event_loop() and set_event_loop(), as asyncio's does.
///
/// Each policy object has its own per-thread slots. A thread's slot (and the loop it
/// holds) is released when the thread exits. Destroying a policy releases the calling
/// thread's slot at once; the slots it had in other threads are released when such a
/// thread first uses another policy, or exits.
class EventLoopPolicy {
public:
    EventLoopPolicy();
    virtual ~EventLoopPolicy();
    EventLoopPolicy(const EventLoopPolicy&) = delete;
    EventLoopPolicy& operator=(const EventLoopPolicy&) = delete;

    /// The calling thread's current loop. The reference stays valid while the loop
    /// remains this thread's current loop. Throws std::runtime_error ("There is no
    /// current event loop in thread '<name>'.") when there is none to return.
    virtual EventLoop& get_event_loop();
    /// Makes `loop` (possibly null) the calling thread's current loop.
    virtual void set_event_loop(std::shared_ptr<EventLoop> loop);
    /// Creates a new loop over the default poller; never makes it current.
    virtual std::shared_ptr<EventLoop> new_event_loop();

protected:
    /// The calling thread's current loop, or null (for subclasses; never creates one).
    std::shared_ptr<EventLoop> current_loop() const;

private:
    uint64_t id_;                  // Keys this policy's per-thread slots; never reused.
    std::shared_ptr<void> alive_;  // Expires when the policy dies, so stale slots can be purged.
};

/// The process-wide policy, creating a default EventLoopPolicy on first use. Any thread.
std::shared_ptr<EventLoopPolicy> get_event_loop_policy();
/// Replaces the process-wide policy; null restores a fresh default on next use. Any thread.
void set_event_loop_policy(std::shared_ptr<EventLoopPolicy> policy);

}  // namespace cxxloop
