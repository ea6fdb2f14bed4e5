// cancel.cpp: cancelling one op, every op on an fd, and closing an fd with ops in flight.
#include <unistd.h>

#include <cerrno>

#include "syscall.hpp"
#include "uring_internal.hpp"

namespace cxxloop {

std::error_code Uring::cancel(UringOp& op) {
    if (!op.pending_) return std::make_error_code(std::errc::no_such_file_or_directory);
    op.cancelling_ = true;
    io_uring_sqe* s = sqe();
    if (!s) return std::make_error_code(closed_ ? std::errc::bad_file_descriptor : std::errc::resource_unavailable_try_again);
    // Entries go to the kernel in order, so an op restarted after this cancel was
    // queued is not hit by it; one whose result is already collected is not found.
    io_uring_prep_cancel64(s, uring::op_data(op), 0);
    io_uring_sqe_set_data64(s, kTagIgnore);
    return {};
}

std::error_code Uring::cancel_fd(int fd) {
    io_uring_sqe* s = sqe();
    if (!s) return std::make_error_code(closed_ ? std::errc::bad_file_descriptor : std::errc::resource_unavailable_try_again);
    io_uring_prep_cancel_fd(s, fd, IORING_ASYNC_CANCEL_ALL);
    io_uring_sqe_set_data64(s, kTagIgnore);
    return {};
}

std::error_code Uring::cancel_fd_sync(int fd) {
    if (fd < 0) return std::make_error_code(std::errc::bad_file_descriptor);
    if (!ring_ || closed_ || pending_count_ == 0) return {};
    // Ops queued but not submitted would otherwise start after the cancel, on a
    // closed (or reused) fd number.
    flush();
    io_uring_sync_cancel_reg reg{};
    reg.fd = fd;
    reg.flags = IORING_ASYNC_CANCEL_FD | IORING_ASYNC_CANCEL_ALL;
    reg.timeout.tv_sec = -1;
    reg.timeout.tv_nsec = -1;
    int ret = sync_cancel_ ? io_uring_register_sync_cancel(ring_.get(), &reg) : -EINVAL;
    if (ret == -EINVAL || ret == -ENOSYS || ret == -EOPNOTSUPP) {
        // Before 6.0: cancel asynchronously, but submit before the fd goes.
        sync_cancel_ = false;
        if (!cancel_fd(fd)) flush();
    }
    return {};
}

std::error_code Uring::close_fd(int fd) {
    if (fd < 0) return std::make_error_code(std::errc::bad_file_descriptor);
    cancel_fd_sync(fd);
    // As sys::close_fd: EINTR is not retried (Linux has released the fd regardless).
    return sys::check(::close(fd));
}

}  // namespace cxxloop
