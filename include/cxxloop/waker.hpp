// waker.hpp: wakes a loop blocked in its poller from any thread.
#pragma once

#include <system_error>

namespace cxxloop {

/// An eventfd (or a pipe where eventfd is missing) that another thread writes to
/// wake the loop. Writes coalesce: many wake() calls before drain() cost one event.
class Waker {
public:
    /// Creates the kernel object; throws std::system_error on failure.
    Waker();
    ~Waker();
    Waker(const Waker&) = delete;
    Waker& operator=(const Waker&) = delete;

    /// The fd to watch for readability.
    int fd() const noexcept { return rfd_; }
    /// Makes fd() readable. Async-signal-safe; never blocks.
    void wake() noexcept;
    /// Consumes pending wake-ups so fd() is no longer readable.
    void drain() noexcept;
    /// Re-creates the kernel object (in a child after fork).
    void reopen();

private:
    void open();
    void close_fds() noexcept;
    int rfd_ = -1;
    int wfd_ = -1;  // Same as rfd_ for eventfd.
};

}  // namespace cxxloop
