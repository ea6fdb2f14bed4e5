// net.hpp: sockets for C++ users of the core: addresses, listening and accepting with
// asyncio's EMFILE back-off, and non-blocking connects. Connected sockets are then
// driven by Stream (stream.hpp); see examples/cpp/tcp_echo.cpp.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <system_error>

#include <sys/socket.h>

#include "cxxloop/loop.hpp"

namespace cxxloop {

/// A socket address: IPv4, IPv6 (with its scope id) or Unix (a path, or an abstract
/// name given with a leading '\0').
class SocketAddress {
public:
    SocketAddress() = default;
    /// Copies `len` bytes of `sa` (at most sizeof(sockaddr_storage)).
    SocketAddress(const sockaddr* sa, socklen_t len) noexcept;

    /// A numeric IPv4 or IPv6 host ("127.0.0.1", "::1", "fe80::1%eth0" or
    /// "fe80::1%2") and a port; nullopt when `host` is not numeric (names need a
    /// resolver: this never blocks). The empty host is the IPv4 wildcard.
    static std::optional<SocketAddress> ip(std::string_view host, uint16_t port);
    /// A Unix socket path, or an abstract name when `path` starts with '\0'; nullopt
    /// when it does not fit in sun_path.
    static std::optional<SocketAddress> unix_path(std::string_view path);
    /// The local or peer address of a socket.
    static std::optional<SocketAddress> local_of(int fd) noexcept;
    static std::optional<SocketAddress> peer_of(int fd) noexcept;

    const sockaddr* get() const noexcept { return reinterpret_cast<const sockaddr*>(&storage_); }
    sockaddr* get() noexcept { return reinterpret_cast<sockaddr*>(&storage_); }
    socklen_t size() const noexcept { return len_; }
    /// AF_INET, AF_INET6, AF_UNIX, or AF_UNSPEC when empty.
    int family() const noexcept { return len_ ? storage_.ss_family : AF_UNSPEC; }
    /// The port of an IP address (0 for others).
    uint16_t port() const noexcept;
    /// The numeric host of an IP address (IPv6 with "%scope" when it has one), or the
    /// path of a Unix one (an abstract name keeps its leading '\0').
    std::string host() const;
    /// "1.2.3.4:80", "[::1]:80", a Unix path, or "" when empty.
    std::string to_string() const;

private:
    sockaddr_storage storage_{};
    socklen_t len_ = 0;
};

/// How listen_socket() sets up a listening socket.
struct ListenOptions {
    int backlog = 100;            ///< asyncio's default backlog.
    bool reuse_address = true;    ///< SO_REUSEADDR (asyncio's default on Unix for TCP).
    bool reuse_port = false;      ///< SO_REUSEPORT.
    bool v6only = true;           ///< IPV6_V6ONLY for IPv6 (asyncio sets it).
};

/// A non-blocking, close-on-exec socket of `type` (SOCK_STREAM or SOCK_DGRAM) for
/// `family`; -1 and the error on failure.
int open_socket(int family, int type, std::error_code& ec) noexcept;

/// A non-blocking listening stream socket bound to `addr`; -1 and the error on failure
/// (nothing is left open then). TCP sockets get TCP_NODELAY on accepted connections
/// from Listener, not here.
int listen_socket(const SocketAddress& addr, const ListenOptions& opts, std::error_code& ec) noexcept;

/// What a Listener reports.
class ListenerHandler {
public:
    virtual ~ListenerHandler() = default;
    /// A new connection: `fd` is non-blocking and close-on-exec, and now the
    /// handler's to close. TCP connections have TCP_NODELAY set, as asyncio does.
    virtual void on_accept(int fd, const SocketAddress& peer) noexcept = 0;
    /// accept() failed. For the resource errors (EMFILE, ENFILE, ENOBUFS, ENOMEM)
    /// the listener has stopped accepting and resumes by itself after retry_delay
    /// seconds (asyncio's behaviour: log it, never spin); other errors are reported
    /// and accepting goes on.
    virtual void on_accept_error(std::error_code /*ec*/, bool /*backing_off*/) noexcept {}
};

/// Accepts connections on a listening socket (which it does not own) while started:
/// up to `backlog` per readiness report, as asyncio does.
class Listener final : public IoHandler {
public:
    Listener(EventLoop& loop, int fd, ListenerHandler& handler, int backlog = 100) noexcept;
    ~Listener() override;
    Listener(const Listener&) = delete;
    Listener& operator=(const Listener&) = delete;

    int fd() const noexcept { return fd_; }
    /// Starts accepting (errors come from registering the fd with the loop).
    std::error_code start();
    /// Stops accepting, including a pending back-off retry.
    void stop() noexcept;
    /// Whether start() was called and stop() was not (also true while backing off).
    bool started() const noexcept { return started_; }
    /// Whether the listener is backing off after a resource error.
    bool backing_off() const noexcept { return retry_.get() != nullptr; }
    /// Seconds to wait after EMFILE and friends before accepting again (asyncio: 1 s).
    double retry_delay = 1.0;

    bool on_io(int fd, uint32_t events) noexcept override;
    void on_loop_closed(int fd) noexcept override;

private:
    void back_off() noexcept;

    EventLoop& loop_;
    ListenerHandler& handler_;
    int fd_;
    int backlog_;
    bool started_ = false;
    bool watching_ = false;
    bool is_tcp_ = false;
    TimerRef retry_;
};

/// What a Connector reports: `ec` is empty when the socket is connected.
class ConnectHandler {
public:
    virtual ~ConnectHandler() = default;
    virtual void on_connected(std::error_code ec) noexcept = 0;
};

/// Connects a non-blocking socket (which it does not own), asyncio's sock_connect:
/// connect() now, then wait for writability and read SO_ERROR.
class Connector final : public IoHandler {
public:
    Connector(EventLoop& loop, ConnectHandler& handler) noexcept : loop_(loop), handler_(handler) {}
    ~Connector() override;
    Connector(const Connector&) = delete;
    Connector& operator=(const Connector&) = delete;

    /// Starts connecting `fd` to `addr`. An error returned here is final and no
    /// callback follows; otherwise on_connected() runs from the loop exactly once
    /// (even when the kernel connected at once), unless cancel() comes first.
    std::error_code connect(int fd, const SocketAddress& addr);
    /// Stops waiting; no callback follows.
    void cancel() noexcept;
    bool pending() const noexcept { return fd_ >= 0; }

    bool on_io(int fd, uint32_t events) noexcept override;
    void on_loop_closed(int fd) noexcept override;

private:
    EventLoop& loop_;
    ConnectHandler& handler_;
    int fd_ = -1;
};

}  // namespace cxxloop
