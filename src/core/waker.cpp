// waker.cpp: the loop's cross-thread wake-up fd: an eventfd on Linux, a pipe elsewhere.
#include "cxxloop/waker.hpp"

#include <unistd.h>

#include <cerrno>
#include <cstdint>

#ifdef __linux__
#include <sys/eventfd.h>
#endif

#include "syscall.hpp"

namespace cxxloop {

Waker::Waker() { open(); }

Waker::~Waker() { close_fds(); }

#ifdef __linux__
/// One eventfd serves as both ends: its counter coalesces any number of wake-ups
/// into a single readable state, and one read resets it.
void Waker::open() {
    rfd_ = wfd_ = ::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (rfd_ < 0) throw std::system_error(sys::last_error(), "eventfd");
}
#else
/// A non-blocking pipe: wake() writes a byte, drain() reads them all. A full pipe
/// is already readable, so a write that would block can be dropped.
void Waker::open() {
    int p[2];
    if (::pipe(p) < 0) throw std::system_error(sys::last_error(), "pipe");
    rfd_ = p[0];
    wfd_ = p[1];
    for (int fd : p) {
        std::error_code ec = sys::set_cloexec(fd);
        if (!ec) ec = sys::set_nonblocking(fd);
        if (ec) { close_fds(); throw std::system_error(ec, "waker pipe setup"); }
    }
}
#endif

void Waker::close_fds() noexcept {
    if (wfd_ != rfd_) sys::close_fd(wfd_);
    sys::close_fd(rfd_);
    wfd_ = -1;
}

void Waker::wake() noexcept {
    // A signal handler may call this, so errno is preserved and only write(2), which
    // is async-signal-safe, is used. EAGAIN means already readable; nothing to do.
    int saved = errno;
    uint64_t one = 1;
    sys::retry_eintr([&] { return ::write(wfd_, &one, rfd_ == wfd_ ? sizeof one : 1); });
    errno = saved;
}

void Waker::drain() noexcept {
    // One read resets an eventfd's counter, so it is drained (EAGAIN-clean) after it:
    // a second read would only cost a syscall per wake-up. A pipe may hold more bytes
    // than one buffer, so it is read until EAGAIN; stopping early would leave it
    // readable and the loop spinning. (The io_uring poller relies on this: it watches
    // the waker with a multishot poll, which reports wake-ups, not a level.)
    uint64_t buf[32];
    if (rfd_ == wfd_) {
        sys::retry_eintr([&] { return ::read(rfd_, buf, sizeof(uint64_t)); });
        return;
    }
    for (;;) {
        ssize_t n = sys::retry_eintr([&] { return ::read(rfd_, buf, sizeof buf); });
        if (n <= 0) return;
    }
}

void Waker::reopen() {
    close_fds();
    open();
}

}  // namespace cxxloop
