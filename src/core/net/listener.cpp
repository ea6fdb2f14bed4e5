// listener.cpp: listening sockets and the accept loop, with asyncio's EMFILE back-off.
#include <netinet/in.h>
#include <netinet/tcp.h>

#include "cxxloop/net.hpp"
#include "syscall.hpp"

namespace cxxloop {

int open_socket(int family, int type, std::error_code& ec) noexcept {
    int fd = ::socket(family, type | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    ec = fd < 0 ? sys::last_error() : std::error_code{};
    return fd;
}

int listen_socket(const SocketAddress& addr, const ListenOptions& opts, std::error_code& ec) noexcept {
    int fd = open_socket(addr.family(), SOCK_STREAM, ec);
    if (fd < 0) return -1;
    const int one = 1;
    const bool ip = addr.family() == AF_INET || addr.family() == AF_INET6;
    if (!ec && ip && opts.reuse_address)
        ec = sys::check(::setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one));
    if (!ec && opts.reuse_port)
        ec = sys::check(::setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof one));
    if (!ec && addr.family() == AF_INET6 && opts.v6only)
        ec = sys::check(::setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof one));
    if (!ec) ec = sys::check(::bind(fd, addr.get(), addr.size()));
    if (!ec) ec = sys::check(::listen(fd, opts.backlog));
    if (ec) {
        sys::close_fd(fd);
        return -1;
    }
    return fd;
}

Listener::Listener(EventLoop& loop, int fd, ListenerHandler& handler, int backlog) noexcept
    : loop_(loop), handler_(handler), fd_(fd), backlog_(backlog > 0 ? backlog : 1) {
    if (auto local = SocketAddress::local_of(fd))
        is_tcp_ = local->family() == AF_INET || local->family() == AF_INET6;
}

Listener::~Listener() { stop(); }

std::error_code Listener::start() {
    if (started_) return {};
    if (auto ec = loop_.watch(fd_, this, kReadable)) return ec;
    started_ = watching_ = true;
    return {};
}

void Listener::stop() noexcept {
    started_ = false;
    if (retry_.get()) {
        loop_.cancel(retry_);
        retry_ = TimerRef();
    }
    if (watching_) {
        watching_ = false;
        (void)loop_.unwatch(fd_);
    }
}

void Listener::on_loop_closed(int) noexcept { watching_ = false; }

void Listener::back_off() noexcept {
    if (watching_) {
        watching_ = false;
        (void)loop_.unwatch(fd_);
    }
    retry_ = loop_.call_later(retry_delay, [this] {
        retry_ = TimerRef();
        if (started_ && !watching_ && !loop_.watch(fd_, this, kReadable)) watching_ = true;
    });
}

bool Listener::on_io(int, uint32_t) noexcept {
    // Up to backlog connections per report, as asyncio's _accept_connection does, so
    // one busy listener does not starve the rest of the loop.
    for (int i = 0; i < backlog_ && watching_; ++i) {
        sockaddr_storage ss;
        socklen_t len = sizeof ss;
        int conn = ::accept4(fd_, reinterpret_cast<sockaddr*>(&ss), &len, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (conn < 0) {
            const int err = errno;
            if (err == EAGAIN || err == EWOULDBLOCK || err == EINTR || err == ECONNABORTED) return true;
            const bool resources = err == EMFILE || err == ENFILE || err == ENOBUFS || err == ENOMEM;
            if (resources) back_off();
            handler_.on_accept_error(sys::make_error(err), resources);
            return true;
        }
        if (is_tcp_) {
            const int one = 1;
            (void)::setsockopt(conn, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        }
        handler_.on_accept(conn, SocketAddress(reinterpret_cast<sockaddr*>(&ss), len));
    }
    return true;
}

}  // namespace cxxloop
