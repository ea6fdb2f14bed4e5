// connect.cpp: connect a non-blocking socket.
#include <cstring>

#include "uring_internal.hpp"

namespace cxxloop {

std::error_code Uring::connect(ConnectOp& op, int fd, const sockaddr* addr, socklen_t len) {
    if (auto ec = check_start(op)) return ec;
    if (len > sizeof op.addr_) return std::make_error_code(std::errc::invalid_argument);
    io_uring_sqe* s = sqe();
    if (!s) return std::make_error_code(std::errc::resource_unavailable_try_again);
    std::memcpy(&op.addr_, addr, len);
    io_uring_prep_connect(s, fd, reinterpret_cast<const sockaddr*>(&op.addr_), len);
    start(op, &Uring::connect_complete, s);
    return {};
}

void Uring::connect_complete(UringOp* base, Uring& ring, int res, uint32_t) noexcept {
    auto& op = static_cast<ConnectOp&>(*base);
    ring.finish(op);
    op.on_connect(res);
}

}  // namespace cxxloop
