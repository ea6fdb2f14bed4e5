// accept.cpp: multishot accept: one entry, one completion per connection.
#include <sys/socket.h>

#include <cerrno>

#include "uring_internal.hpp"

namespace cxxloop {

std::error_code Uring::accept(AcceptOp& op, int fd) {
    if (auto ec = check_start(op)) return ec;
    op.fd_ = fd;
    return submit_accept(op);
}

std::error_code Uring::submit_accept(AcceptOp& op) noexcept {
    io_uring_sqe* s = sqe();
    if (!s) return std::make_error_code(closed_ ? std::errc::bad_file_descriptor : std::errc::resource_unavailable_try_again);
    // The peer address is not asked for: getpeername() gives it when wanted, and
    // without it the kernel writes nothing into the op.
    if (op.multishot_) io_uring_prep_multishot_accept(s, op.fd_, nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
    else io_uring_prep_accept(s, op.fd_, nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
    start(op, &Uring::accept_complete, s);
    return {};
}

void Uring::accept_complete(UringOp* base, Uring& ring, int res, uint32_t flags) noexcept {
    auto& op = static_cast<AcceptOp&>(*base);
    bool more = flags & IORING_CQE_F_MORE;
    if (more) {
        op.on_accept(res, true);
        return;
    }
    ring.finish(op);
    // Kernels before 5.19 refuse IORING_ACCEPT_MULTISHOT with EINVAL: from then on the
    // op re-arms a single-shot accept after each connection, which looks the same to
    // the owner (a listening socket that truly fails with EINVAL fails again below).
    if (res == -EINVAL && op.multishot_) {
        op.multishot_ = false;
        if (!ring.submit_accept(op)) return;
    } else if (!op.multishot_ && res >= 0) {
        more = !ring.submit_accept(op);
    }
    op.on_accept(res, more);
}

}  // namespace cxxloop
