// recv.cpp: one receive into the caller's buffer.
#include "uring_internal.hpp"

namespace cxxloop {

std::error_code Uring::recv(RecvOp& op, int fd, std::span<char> buf, int flags) {
    if (auto ec = check_start(op)) return ec;
    io_uring_sqe* s = sqe();
    if (!s) return std::make_error_code(std::errc::resource_unavailable_try_again);
    io_uring_prep_recv(s, fd, buf.data(), buf.size(), flags);
    start(op, &Uring::recv_complete, s);
    return {};
}

void Uring::recv_complete(UringOp* base, Uring& ring, int res, uint32_t) noexcept {
    auto& op = static_cast<RecvOp&>(*base);
    ring.finish(op);
    op.on_recv(res);
}

}  // namespace cxxloop
