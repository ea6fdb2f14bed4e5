// connector.cpp: a non-blocking connect() completed through the loop (asyncio's
// sock_connect: connect now, then wait for writability and read SO_ERROR).
#include "cxxloop/net.hpp"
#include "syscall.hpp"

namespace cxxloop {

Connector::~Connector() { cancel(); }

std::error_code Connector::connect(int fd, const SocketAddress& addr) {
    if (fd_ >= 0) return sys::make_error(EALREADY);
    if (::connect(fd, addr.get(), addr.size()) != 0 && errno != EINPROGRESS) {
        // EINTR leaves the connect going on in the background, as EINPROGRESS does.
        if (errno != EINTR) return sys::last_error();
    }
    // Even a connect that finished at once (Unix sockets) is reported from the loop,
    // once the socket is writable, so the handler always runs in a callback.
    if (auto ec = loop_.watch(fd, this, kWritable)) return ec;
    fd_ = fd;
    return {};
}

void Connector::cancel() noexcept {
    if (fd_ < 0) return;
    (void)loop_.unwatch(fd_);
    fd_ = -1;
}

void Connector::on_loop_closed(int) noexcept { fd_ = -1; }

bool Connector::on_io(int fd, uint32_t) noexcept {
    int err = 0;
    socklen_t len = sizeof err;
    if (::getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) != 0) err = errno;
    cancel();
    handler_.on_connected(err ? sys::make_error(err) : std::error_code{});
    return true;
}

}  // namespace cxxloop
