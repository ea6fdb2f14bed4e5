// test_net.cpp: SocketAddress, listen_socket, Listener (incl. the EMFILE back-off) and
// Connector, per poller; and an echo over Stream on accepted and connected sockets.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/resource.h>
#include <sys/un.h>
#include <unistd.h>

#include <functional>
#include <string>
#include <vector>

#include "cxxloop/net.hpp"
#include "cxxloop/stream.hpp"
#include "test_util.hpp"

using namespace cxxloop;
using namespace cxxloop::test;

namespace {

TEST(SocketAddress, ParsesNumericIPv4AndIPv6) {
    auto a = SocketAddress::ip("127.0.0.1", 8080);
    ASSERT_TRUE(a);
    EXPECT_EQ(a->family(), AF_INET);
    EXPECT_EQ(a->port(), 8080);
    EXPECT_EQ(a->host(), "127.0.0.1");
    EXPECT_EQ(a->to_string(), "127.0.0.1:8080");

    auto b = SocketAddress::ip("::1", 443);
    ASSERT_TRUE(b);
    EXPECT_EQ(b->family(), AF_INET6);
    EXPECT_EQ(b->to_string(), "[::1]:443");
    auto bracketed = SocketAddress::ip("[::1]", 443);
    ASSERT_TRUE(bracketed);
    EXPECT_EQ(bracketed->host(), "::1");

    auto any = SocketAddress::ip("", 0);
    ASSERT_TRUE(any);
    EXPECT_EQ(any->host(), "0.0.0.0");
}

TEST(SocketAddress, KeepsTheIPv6ScopeId) {
    auto a = SocketAddress::ip("fe80::1%7", 1);
    ASSERT_TRUE(a);
    EXPECT_EQ(reinterpret_cast<const sockaddr_in6*>(a->get())->sin6_scope_id, 7u);
    auto lo = SocketAddress::ip("fe80::1%lo", 1);
    ASSERT_TRUE(lo);
    EXPECT_NE(reinterpret_cast<const sockaddr_in6*>(lo->get())->sin6_scope_id, 0u);
    EXPECT_EQ(lo->host(), "fe80::1%lo");
    EXPECT_FALSE(SocketAddress::ip("fe80::1%", 1));
    EXPECT_FALSE(SocketAddress::ip("fe80::1%no-such-interface0", 1));
}

TEST(SocketAddress, RefusesNamesAndGarbage) {
    EXPECT_FALSE(SocketAddress::ip("localhost", 80));   // A name needs a resolver.
    EXPECT_FALSE(SocketAddress::ip("1.2.3", 80));
    EXPECT_FALSE(SocketAddress::ip("::g", 80));
}

TEST(SocketAddress, UnixPathsAndAbstractNames) {
    auto p = SocketAddress::unix_path("/tmp/x.sock");
    ASSERT_TRUE(p);
    EXPECT_EQ(p->family(), AF_UNIX);
    EXPECT_EQ(p->host(), "/tmp/x.sock");
    EXPECT_EQ(p->port(), 0);
    auto abs = SocketAddress::unix_path(std::string_view("\0name", 5));
    ASSERT_TRUE(abs);
    EXPECT_EQ(abs->host(), std::string("\0name", 5));
    EXPECT_EQ(abs->size(), offsetof(sockaddr_un, sun_path) + 5);
    EXPECT_FALSE(SocketAddress::unix_path(std::string(sizeof(sockaddr_un::sun_path), 'x')));
}

TEST(ListenSocket, BindsAndReportsErrors) {
    std::error_code ec;
    int fd = listen_socket(*SocketAddress::ip("127.0.0.1", 0), {}, ec);
    ASSERT_GE(fd, 0) << ec.message();
    Fd owned(fd);
    auto local = SocketAddress::local_of(fd);
    ASSERT_TRUE(local);
    EXPECT_NE(local->port(), 0);
    int one = 0;
    socklen_t len = sizeof one;
    ASSERT_EQ(::getsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, &len), 0);
    EXPECT_EQ(one, 1);
    EXPECT_TRUE(::fcntl(fd, F_GETFL) & O_NONBLOCK);
    EXPECT_TRUE(::fcntl(fd, F_GETFD) & FD_CLOEXEC);

    // The same port again, without SO_REUSEPORT: EADDRINUSE, and no fd left open.
    int again = listen_socket(*local, {}, ec);
    EXPECT_EQ(again, -1);
    EXPECT_EQ(ec, std::errc::address_in_use);
}

/// Records a listener's and a connector's reports.
struct Rec : ListenerHandler, ConnectHandler {
    std::vector<Fd> accepted;
    std::vector<SocketAddress> peers;
    std::vector<std::pair<std::error_code, bool>> accept_errors;
    std::vector<std::error_code> connects;
    std::function<void()> on_accept_hook;
    void on_accept(int fd, const SocketAddress& peer) noexcept override {
        accepted.emplace_back(fd);
        peers.push_back(peer);
        if (on_accept_hook) on_accept_hook();
    }
    void on_accept_error(std::error_code ec, bool backing_off) noexcept override {
        accept_errors.emplace_back(ec, backing_off);
    }
    void on_connected(std::error_code ec) noexcept override { connects.push_back(ec); }
};

class NetTest : public BackendLoopTest {
protected:
    Fd listener_fd(const SocketAddress& addr, int backlog = 100) {
        std::error_code ec;
        int fd = listen_socket(addr, ListenOptions{.backlog = backlog}, ec);
        EXPECT_GE(fd, 0) << ec.message();
        return Fd(fd);
    }
    /// A blocking client already connected to the listener (waiting in its backlog).
    static Fd connected_client(int lfd) {
        auto where = *SocketAddress::local_of(lfd);
        Fd c(::socket(where.family(), SOCK_STREAM | SOCK_CLOEXEC, 0));
        EXPECT_EQ(::connect(c.get(), where.get(), where.size()), 0);
        return c;
    }
};

TEST_P(NetTest, ConnectsAndAcceptsOverTcp) {
    Fd lfd = listener_fd(*SocketAddress::ip("127.0.0.1", 0));
    auto where = *SocketAddress::local_of(lfd.get());
    Rec rec;
    Listener listener(loop, lfd.get(), rec);
    ASSERT_FALSE(listener.start());
    EXPECT_TRUE(listener.started());

    std::error_code ec;
    Fd client(open_socket(AF_INET, SOCK_STREAM, ec));
    ASSERT_FALSE(ec);
    Connector conn(loop, rec);
    ASSERT_FALSE(conn.connect(client.get(), where));
    EXPECT_TRUE(conn.pending());
    ASSERT_TRUE(run_until([&] { return rec.connects.size() == 1 && rec.accepted.size() == 1; }));
    EXPECT_FALSE(rec.connects[0]);
    EXPECT_FALSE(conn.pending());
    EXPECT_EQ(rec.peers[0].to_string(), SocketAddress::local_of(client.get())->to_string());

    // Accepted sockets are non-blocking, close-on-exec, and TCP_NODELAY.
    int fd = rec.accepted[0].get();
    EXPECT_TRUE(::fcntl(fd, F_GETFL) & O_NONBLOCK);
    EXPECT_TRUE(::fcntl(fd, F_GETFD) & FD_CLOEXEC);
    int nodelay = 0;
    socklen_t len = sizeof nodelay;
    ASSERT_EQ(::getsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &nodelay, &len), 0);
    EXPECT_EQ(nodelay, 1);

    listener.stop();
    EXPECT_FALSE(listener.started());
    EXPECT_EQ(loop.fd_count(), 0u);
}

TEST_P(NetTest, ConnectsOverUnixAndAbstractSockets) {
    for (std::string path : {std::string("\0cxxloop-test-net-") + std::to_string(::getpid()) + GetParam()}) {
        auto addr = *SocketAddress::unix_path(path);
        Fd lfd = listener_fd(addr);
        Rec rec;
        Listener listener(loop, lfd.get(), rec);
        ASSERT_FALSE(listener.start());
        std::error_code ec;
        Fd client(open_socket(AF_UNIX, SOCK_STREAM, ec));
        Connector conn(loop, rec);
        ASSERT_FALSE(conn.connect(client.get(), addr));
        ASSERT_TRUE(run_until([&] { return rec.connects.size() == 1 && rec.accepted.size() == 1; }));
        EXPECT_FALSE(rec.connects[0]);
        // Unix connections get no TCP option (setting one would fail).
        EXPECT_EQ(SocketAddress::local_of(rec.accepted[0].get())->host(), path);
    }
}

TEST_P(NetTest, ConnectionRefusedIsReported) {
    // A port that was just free: listen, note the port, close.
    SocketAddress where;
    {
        Fd lfd = listener_fd(*SocketAddress::ip("127.0.0.1", 0));
        where = *SocketAddress::local_of(lfd.get());
    }
    Rec rec;
    std::error_code ec;
    Fd client(open_socket(AF_INET, SOCK_STREAM, ec));
    Connector conn(loop, rec);
    std::error_code now = conn.connect(client.get(), where);
    if (now) {
        EXPECT_EQ(now, std::errc::connection_refused);  // Final; no callback follows.
        EXPECT_FALSE(conn.pending());
    } else {
        ASSERT_TRUE(run_until([&] { return rec.connects.size() == 1; }));
        EXPECT_EQ(rec.connects[0], std::errc::connection_refused);
    }
    EXPECT_EQ(loop.fd_count(), 0u);
}

TEST_P(NetTest, CancelledConnectReportsNothing) {
    Fd lfd = listener_fd(*SocketAddress::ip("127.0.0.1", 0));
    Rec rec;
    std::error_code ec;
    Fd client(open_socket(AF_INET, SOCK_STREAM, ec));
    Connector conn(loop, rec);
    ASSERT_FALSE(conn.connect(client.get(), *SocketAddress::local_of(lfd.get())));
    EXPECT_EQ(conn.connect(client.get(), *SocketAddress::local_of(lfd.get())), std::errc::connection_already_in_progress);
    conn.cancel();
    EXPECT_FALSE(conn.pending());
    spin(5);
    EXPECT_TRUE(rec.connects.empty());
    EXPECT_EQ(loop.fd_count(), 0u);
}

TEST_P(NetTest, AcceptsAtMostBacklogPerReportAndStopFromTheHandler) {
    Fd lfd = listener_fd(*SocketAddress::ip("127.0.0.1", 0), 64);
    std::vector<Fd> clients;
    for (int i = 0; i < 6; ++i) clients.push_back(connected_client(lfd.get()));
    Rec rec;
    Listener listener(loop, lfd.get(), rec, /*backlog=*/4);
    ASSERT_FALSE(listener.start());
    // One report takes at most 4, even though 6 wait.
    ASSERT_TRUE(run_until([&] { return !rec.accepted.empty(); }));
    EXPECT_EQ(rec.accepted.size(), 4u);
    // A handler that stops the listener ends the batch at once.
    rec.on_accept_hook = [&] { listener.stop(); };
    ASSERT_TRUE(run_until([&] { return rec.accepted.size() == 5; }));
    spin(5);
    EXPECT_EQ(rec.accepted.size(), 5u);
    EXPECT_EQ(loop.fd_count(), 0u);
}

/// While alive, no fd number is free: RLIMIT_NOFILE is lowered to the lowest free
/// number and every free number below it is taken, so accept() fails with EMFILE.
struct NoFreeFds {
    rlimit saved{};
    std::vector<Fd> fill;
    NoFreeFds() {
        ::getrlimit(RLIMIT_NOFILE, &saved);
        Fd probe(::dup(0));
        rlimit low = saved;
        low.rlim_cur = rlim_t(probe.get());
        probe.reset();
        ::setrlimit(RLIMIT_NOFILE, &low);
        for (Fd f(::dup(0)); f.get() >= 0; f = Fd(::dup(0))) fill.push_back(std::move(f));
    }
    ~NoFreeFds() {
        fill.clear();
        ::setrlimit(RLIMIT_NOFILE, &saved);
    }
};

TEST_P(NetTest, BacksOffOnEmfileThenAcceptsAgain) {
    Fd lfd = listener_fd(*SocketAddress::ip("127.0.0.1", 0));
    Fd client = connected_client(lfd.get());
    Rec rec;
    Listener listener(loop, lfd.get(), rec);
    listener.retry_delay = 0.05;
    ASSERT_FALSE(listener.start());
    {
        NoFreeFds exhausted;
        ASSERT_TRUE(run_until([&] { return !rec.accept_errors.empty(); }));
        EXPECT_EQ(rec.accept_errors[0].first, std::errc::too_many_files_open);
        EXPECT_TRUE(rec.accept_errors[0].second);
        EXPECT_TRUE(listener.backing_off());
        EXPECT_TRUE(listener.started());
        EXPECT_TRUE(rec.accepted.empty());
        // While backing off the loop neither watches the listener nor spins on it.
        EXPECT_EQ(loop.fd_count(), 0u);
        spin(3);
        EXPECT_EQ(rec.accept_errors.size(), 1u);
    }
    // Descriptors are free again: after retry_delay the connection is accepted.
    ASSERT_TRUE(run_until([&] { return rec.accepted.size() == 1; }));
    EXPECT_FALSE(listener.backing_off());
    EXPECT_EQ(rec.accept_errors.size(), 1u);
    EXPECT_EQ(loop.fd_count(), 1u);
}

TEST_P(NetTest, StopDuringBackOffCancelsTheRetry) {
    Fd lfd = listener_fd(*SocketAddress::ip("127.0.0.1", 0));
    Fd client = connected_client(lfd.get());
    Rec rec;
    Listener listener(loop, lfd.get(), rec);
    listener.retry_delay = 0.01;
    ASSERT_FALSE(listener.start());
    {
        NoFreeFds exhausted;
        ASSERT_TRUE(run_until([&] { return listener.backing_off(); }));
    }
    const size_t timers = loop.timer_count();  // The retry, and maybe run_until's guard.
    listener.stop();
    EXPECT_FALSE(listener.backing_off());
    EXPECT_EQ(loop.timer_count(), timers - 1);
    EXPECT_EQ(loop.fd_count(), 0u);
    spin(4, 0.01);
    EXPECT_TRUE(rec.accepted.empty());
    // A restart accepts the waiting connection.
    ASSERT_FALSE(listener.start());
    ASSERT_TRUE(run_until([&] { return rec.accepted.size() == 1; }));
}

/// Echoes what it reads on a Stream (accepted side).
struct Echo : StreamHandler {
    char buf[65536];
    Stream* s = nullptr;
    int eofs = 0;
    std::span<char> read_buffer(size_t) noexcept override { return {buf, sizeof buf}; }
    void on_read(size_t n) noexcept override {
        auto* copy = new std::string(buf, n);
        (void)s->write({copy->data(), copy->size(), copy, [](void* o) noexcept { delete static_cast<std::string*>(o); }});
    }
    void on_eof() noexcept override { ++eofs; (void)s->shutdown_write(); }
    void on_error(std::error_code, bool) noexcept override {}
};

/// Collects what it reads (connected side).
struct Sink : StreamHandler {
    char buf[65536];
    std::string data;
    int eofs = 0;
    std::span<char> read_buffer(size_t) noexcept override { return {buf, sizeof buf}; }
    void on_read(size_t n) noexcept override { data.append(buf, n); }
    void on_eof() noexcept override { ++eofs; }
    void on_error(std::error_code, bool) noexcept override {}
};

TEST_P(NetTest, EchoesOverStreamsOnAcceptedAndConnectedSockets) {
    Fd lfd = listener_fd(*SocketAddress::ip("127.0.0.1", 0));
    Rec rec;
    Listener listener(loop, lfd.get(), rec);
    ASSERT_FALSE(listener.start());
    std::error_code ec;
    Fd client(open_socket(AF_INET, SOCK_STREAM, ec));
    Connector conn(loop, rec);
    ASSERT_FALSE(conn.connect(client.get(), *SocketAddress::local_of(lfd.get())));
    ASSERT_TRUE(run_until([&] { return rec.connects.size() == 1 && rec.accepted.size() == 1; }));
    ASSERT_FALSE(rec.connects[0]);

    Echo echo;
    Stream server(loop, rec.accepted[0].get(), echo, true);
    echo.s = &server;
    Sink sink;
    Stream cs(loop, client.get(), sink, true);
    ASSERT_FALSE(server.start_reading());
    ASSERT_FALSE(cs.start_reading());
    std::string payload(1 << 20, 'x');
    for (size_t i = 0; i < payload.size(); ++i) payload[i] = char('a' + i % 26);
    ASSERT_FALSE(cs.write({payload.data(), payload.size(), nullptr, nullptr}));
    ASSERT_FALSE(cs.shutdown_write());
    ASSERT_TRUE(run_until([&] { return sink.eofs == 1; }, 2000));
    EXPECT_EQ(sink.data.size(), payload.size());
    EXPECT_TRUE(sink.data == payload);
    EXPECT_EQ(echo.eofs, 1);
    server.detach();
    cs.detach();
}

INSTANTIATE_TEST_SUITE_P(Backends, NetTest, ::testing::Values("epoll", "poll", "select", "uring"), NameParam());

}  // namespace
