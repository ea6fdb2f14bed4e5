// unavailable.cpp: the io_uring API in a build without liburing: the probe says so, nothing starts.
//
// Compiled instead of the other files of this directory when CMake does not find
// liburing, so code written against uring.hpp (the binding, C++ users) still links.
#include <cerrno>
#include <system_error>

#include "cxxloop/uring.hpp"

namespace cxxloop {
namespace {

constexpr const char* kReason = "cxxloop was built without liburing";

std::error_code unsupported() noexcept { return std::make_error_code(std::errc::function_not_supported); }

}  // namespace

const char* uring_feature_key(uint32_t) noexcept { return nullptr; }  // No features without liburing.

UringSupport detect_uring(const char*) noexcept {
    UringSupport s;
    s.error = ENOSYS;
    s.reason = kReason;
    return s;
}

const UringSupport& uring_support() noexcept {
    static const UringSupport support = detect_uring();
    return support;
}

std::unique_ptr<Poller> make_uring_poller() {
    throw std::system_error(unsupported(), std::string("io_uring is unavailable: ") + kReason);
}

void Uring::RingDeleter::operator()(::io_uring*) const noexcept {}
Uring::Uring() { throw std::system_error(unsupported(), std::string("io_uring is unavailable: ") + kReason); }
Uring::~Uring() = default;
std::error_code Uring::accept(AcceptOp&, int) { return unsupported(); }
std::error_code Uring::recv(RecvOp&, int, std::span<char>, int) { return unsupported(); }
std::error_code Uring::send(SendOp&, int, iovec*, size_t, int) { return unsupported(); }
std::error_code Uring::send(SendOp&, int, std::span<const char>, int) { return unsupported(); }
std::error_code Uring::recv_multishot(RecvMultishotOp&, int, BufRing&) { return unsupported(); }
BufRing* Uring::add_buf_ring(uint16_t, uint32_t, uint32_t, std::error_code& ec, bool) {
    ec = unsupported();
    return nullptr;
}
BufRing::~BufRing() = default;
void BufRing::release(int) noexcept {}
std::error_code Uring::connect(ConnectOp&, int, const sockaddr*, socklen_t) { return unsupported(); }
std::error_code Uring::cancel(UringOp&) { return unsupported(); }
std::error_code Uring::cancel_fd(int) { return unsupported(); }
std::error_code Uring::close_fd(int) { return unsupported(); }
std::error_code Uring::cancel_fd_sync(int) { return unsupported(); }
BufRing* Uring::buf_ring(uint16_t) noexcept { return nullptr; }
size_t Uring::dispatch() noexcept { return 0; }
void Uring::close() noexcept {}
std::error_code Uring::after_fork() noexcept { return unsupported(); }
::io_uring_sqe* Uring::sqe() noexcept { return nullptr; }
int Uring::flush() noexcept { return 0; }
size_t Uring::reap(void (*)(void*, uint64_t, int, uint32_t), void*) noexcept { return 0; }

}  // namespace cxxloop
