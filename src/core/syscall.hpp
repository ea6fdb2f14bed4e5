// syscall.hpp: the one place the core turns raw syscalls and errno into std::error_code.
#pragma once

#include <cerrno>
#include <cstdint>
#include <fcntl.h>
#include <system_error>
#include <unistd.h>

namespace cxxloop::sys {

/// The error_code for an errno value (std::system_category, so it compares equal to
/// std::errc values and the binding can map it back to the matching OSError).
inline std::error_code make_error(int err) noexcept {
    return {err, std::system_category()};
}

/// The error_code for the current errno.
inline std::error_code last_error() noexcept { return make_error(errno); }

/// Calls `f()` until it stops failing with EINTR and returns its result. Use it for
/// calls that must complete (close-free setup, drains, wake-up writes), never for the
/// poller's wait, whose EINTR the loop must see to run signal handlers.
template <class F>
inline auto retry_eintr(F&& f) noexcept(noexcept(f())) {
    for (;;) {
        auto r = f();
        if (!(r == -1 && errno == EINTR)) return r;
    }
}

/// Turns a "-1 and errno" result into an error_code; any other result is success.
template <class T>
inline std::error_code check(T r) noexcept {
    return r == T(-1) ? last_error() : std::error_code{};
}

/// Sets or clears O_NONBLOCK on `fd`.
inline std::error_code set_nonblocking(int fd, bool on = true) noexcept {
    int flags = ::fcntl(fd, F_GETFL);
    if (flags == -1) return last_error();
    int want = on ? (flags | O_NONBLOCK) : (flags & ~O_NONBLOCK);
    if (want == flags) return {};
    return check(::fcntl(fd, F_SETFL, want));
}

/// Sets or clears FD_CLOEXEC on `fd`.
inline std::error_code set_cloexec(int fd, bool on = true) noexcept {
    int flags = ::fcntl(fd, F_GETFD);
    if (flags == -1) return last_error();
    int want = on ? (flags | FD_CLOEXEC) : (flags & ~FD_CLOEXEC);
    if (want == flags) return {};
    return check(::fcntl(fd, F_SETFD, want));
}

/// Closes `fd` if it is valid and sets it to -1. EINTR is not retried: on Linux the
/// descriptor is released even when close() reports EINTR, so retrying could close an
/// fd another thread has just been given.
inline void close_fd(int& fd) noexcept {
    if (fd >= 0) ::close(fd);
    fd = -1;
}

/// Rounds a nanosecond timeout up to whole milliseconds for epoll_wait/poll, so a
/// sub-millisecond wait sleeps for 1 ms instead of returning at once and busy-spinning.
/// Negative means forever (-1); values too large for an int are clamped.
inline int timeout_ms_round_up(int64_t timeout_ns) noexcept {
    if (timeout_ns < 0) return -1;
    int64_t ms = timeout_ns / 1000000 + (timeout_ns % 1000000 != 0);
    return ms > INT32_MAX ? INT32_MAX : int(ms);
}

}  // namespace cxxloop::sys
