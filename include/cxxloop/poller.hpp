// poller.hpp: the readiness multiplexer interface, one implementation per OS mechanism.
#pragma once

#include <cstdint>
#include <memory>
#include <string_view>
#include <system_error>
#include <vector>

namespace cxxloop {

class Uring;

/// Interest and event bits. Pollers fold error and hang-up conditions into readable
/// and writable, as Python's selectors do (an fd in error is both, for whichever of
/// the two is watched), so callers only test these two.
enum : uint32_t {
    kReadable = 1u << 0,
    kWritable = 1u << 1,
};

/// One readiness report: `events` is a mask of kReadable | kWritable.
struct PollEvent {
    int fd;
    uint32_t events;
};

/// Level-triggered readiness multiplexer. Events may be spurious; callers must cope
/// with EAGAIN. Each fd appears at most once per wait(). All methods return a
/// default-constructed error_code on success; modify() and remove() of an fd that is
/// not watched return ENOENT. A watched fd closed behind the poller's back is dropped
/// by epoll, reported ready by poll, and fails select's wait() with EBADF.
class Poller {
public:
    virtual ~Poller() = default;
    /// Starts watching `fd` for `interest` (non-zero); fails with EEXIST if watched.
    virtual std::error_code add(int fd, uint32_t interest) = 0;
    /// Like add(), for an fd whose consumer reads (or writes) until EAGAIN at every
    /// report, such as the loop's waker: the backend may then report only new
    /// readiness (wake-ups after the drain) instead of a level, which lets io_uring
    /// keep one multishot poll armed. Others use add() (the default).
    virtual std::error_code add_drained(int fd, uint32_t interest) { return add(fd, interest); }
    /// Changes the interest of a watched fd (non-zero).
    virtual std::error_code modify(int fd, uint32_t interest) = 0;
    /// Stops watching `fd`. An fd already closed is not an error (EBADF is ignored).
    virtual std::error_code remove(int fd) = 0;
    /// Optional one-shot interest: watches `fd` for `interest` (non-zero) as add() or
    /// modify() would, but reports it at most once and then disarms it in the kernel,
    /// keeping it registered, until the next arm_once(), modify() or remove(). Each
    /// call re-arms through the kernel, so a registration the kernel dropped (the fd
    /// closed and its number reused) is made again, never assumed. Backends without
    /// one-shot registrations return ENOTSUP (the default).
    virtual std::error_code arm_once(int /*fd*/, uint32_t /*interest*/) {
        return std::make_error_code(std::errc::not_supported);
    }
    /// Waits up to `timeout_ns` (negative: forever, 0: poll) and appends what is ready
    /// to `out` (which the caller has cleared). EINTR is returned, not retried, so the
    /// caller can run signal handlers.
    virtual std::error_code wait(int64_t timeout_ns, std::vector<PollEvent>& out) = 0;
    /// Re-creates kernel state after fork() in the child. The watched set is kept.
    virtual std::error_code after_fork() = 0;
    /// The backend's name: "epoll", "poll", "select", ... (static storage: the loop
    /// keeps it after the poller is gone).
    virtual std::string_view name() const noexcept = 0;

    // --- completion-based backends (io_uring); readiness-only ones keep the defaults ---
    /// True for a backend that also runs completion operations (the loop asks once).
    virtual bool completion_based() const noexcept { return false; }
    /// True while completion operations are in flight or completed but not yet
    /// delivered: the loop must then call wait(), even a zero-timeout one it would
    /// otherwise skip, so that queued submissions go out and completions come back.
    virtual bool has_completions() const noexcept { return false; }
    /// Runs the callbacks of the completions the last wait() collected. The loop calls
    /// it in its I/O phase, after readiness dispatch and outside the embedder's
    /// before_wait()/after_wait() bracket (the binding holds the GIL again by then);
    /// wait() itself never runs a callback.
    virtual void dispatch_completions() noexcept {}
    /// The io_uring engine sharing this backend's ring, or null.
    virtual Uring* uring() noexcept { return nullptr; }
};

/// Creates a poller. `name` is "epoll", "poll", "select", "uring", or empty for the
/// default: the CXXLOOP_POLLER environment variable if set, else the best the platform
/// has (epoll; "uring" is never chosen implicitly). Throws std::system_error if the
/// kernel object cannot be created (for "uring", with the probe's reason when io_uring
/// is unusable) and std::invalid_argument for an unknown name.
std::unique_ptr<Poller> make_poller(std::string_view name = {});

std::unique_ptr<Poller> make_epoll_poller();   ///< Linux epoll(7).
std::unique_ptr<Poller> make_poll_poller();    ///< POSIX poll(2), any fd number.
std::unique_ptr<Poller> make_select_poller();  ///< select(2); fds must be < FD_SETSIZE.
std::unique_ptr<Poller> make_uring_poller();   ///< io_uring poll operations (uring.hpp).

}  // namespace cxxloop
