// send.cpp: send (one buffer) or sendmsg of an iovec array, resubmitted after short sends until all is sent.
#include <sys/socket.h>

#include <cerrno>

#include "uring_internal.hpp"

namespace cxxloop {

std::error_code Uring::send(SendOp& op, int fd, iovec* iov, size_t iovcnt, int flags) {
    if (auto ec = check_start(op)) return ec;
    return arm_send(op, fd, iov, iovcnt, flags);
}

std::error_code Uring::send(SendOp& op, int fd, std::span<const char> data, int flags) {
    if (auto ec = check_start(op)) return ec;
    op.one_ = iovec{const_cast<char*>(data.data()), data.size()};
    return arm_send(op, fd, &op.one_, 1, flags);
}

// Both forms after check_start(): the op's message and counters, then the entry.
std::error_code Uring::arm_send(SendOp& op, int fd, iovec* iov, size_t iovcnt, int flags) noexcept {
    op.msg_ = msghdr{};
    op.msg_.msg_iov = iov;
    op.msg_.msg_iovlen = iovcnt;
    op.sent_ = 0;
    op.fd_ = fd;
    op.flags_ = flags | MSG_NOSIGNAL;
    op.completions_ = 0;
    return submit_send(op);
}

std::error_code Uring::submit_send(SendOp& op) noexcept {
    io_uring_sqe* s = sqe();
    if (!s) return std::make_error_code(closed_ ? std::errc::operation_canceled : std::errc::resource_unavailable_try_again);
    // One buffer (the common case: a message, or the rest of one) goes by a plain
    // send, which spares the kernel copying and checking the msghdr and iovec array.
    if (op.msg_.msg_iovlen == 1)
        io_uring_prep_send(s, op.fd_, op.msg_.msg_iov->iov_base, op.msg_.msg_iov->iov_len, op.flags_);
    else
        io_uring_prep_sendmsg(s, op.fd_, &op.msg_, unsigned(op.flags_));
    start(op, &Uring::send_complete, s);
    return {};
}

namespace {

/// Drops the first `n` bytes from `msg`'s iovecs (modifying the caller's array) and
/// returns true when nothing is left to send.
bool advance(msghdr& msg, size_t n) noexcept {
    while (msg.msg_iovlen && n >= msg.msg_iov->iov_len) {
        n -= msg.msg_iov->iov_len;
        ++msg.msg_iov;
        --msg.msg_iovlen;
    }
    if (msg.msg_iovlen) {
        msg.msg_iov->iov_base = static_cast<char*>(msg.msg_iov->iov_base) + n;
        msg.msg_iov->iov_len -= n;
    }
    // Trailing empty iovecs need no further send.
    while (msg.msg_iovlen && msg.msg_iov->iov_len == 0) {
        ++msg.msg_iov;
        --msg.msg_iovlen;
    }
    return msg.msg_iovlen == 0;
}

}  // namespace

void Uring::send_complete(UringOp* base, Uring& ring, int res, uint32_t) noexcept {
    auto& op = static_cast<SendOp&>(*base);
    ++op.completions_;
    ring.finish(op);
    if (res < 0) {
        op.on_send(res);
        return;
    }
    op.sent_ += size_t(res);
    // A stream socket takes what fits in its buffer and the kernel reports that much;
    // the rest goes out with the next entry (nothing else may send on this fd meanwhile).
    if (!advance(op.msg_, size_t(res)) && res > 0) {
        if (op.cancelling_) {
            // Cancelled between two parts: the fd may be closed (and its number
            // reused) by now, so the rest is not sent.
            op.on_send(-ECANCELED);
            return;
        }
        if (auto ec = ring.submit_send(op); !ec) return;
        else res = -ec.value();
    } else if (res == 0 && op.msg_.msg_iovlen) {
        res = -EPIPE;  // Not reached on sockets; guards against resubmitting forever.
    }
    op.on_send(res < 0 ? res : int(op.sent_));
}

}  // namespace cxxloop
