// uring_echo.cpp: a TCP echo server on the io_uring completion ops, to set beside
// bench/net/echo_server.c (the C epoll reference) under bench/net's client.
//
//   uring_echo [PORT]        (default 0: any free port)
//
// Prints "READY <port>" once listening, like the reference, and runs until SIGINT or
// SIGTERM. Each connection alternates one receive (up to 256 KiB, the reference's
// read size) and one send of what arrived; the listening socket has one multishot
// accept. Every submission of an iteration goes to the kernel in the loop's wait.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>

#include "cxxloop/loop.hpp"
#include "cxxloop/uring.hpp"

using namespace cxxloop;

namespace {

constexpr size_t kBufSize = 256 * 1024;
volatile sig_atomic_t g_stop = 0;

/// One client connection: receive, echo, repeat; deletes itself at EOF or error.
class Connection final : public RecvOp, public SendOp {
public:
    Connection(Uring& ring, int fd) : ring_(ring), fd_(fd), buf_(new char[kBufSize]) {}
    void start() { read_more(); }

private:
    void read_more() {
        if (ring_.recv(*this, fd_, {buf_.get(), kBufSize})) finish();
    }
    void on_recv(int res) noexcept override {
        if (res <= 0 || ring_.send(*this, fd_, {buf_.get(), size_t(res)})) finish();
    }
    void on_send(int res) noexcept override {
        if (res < 0) finish();
        else read_more();
    }
    // Neither op is pending here: they alternate, and this runs from one's final callback.
    void finish() noexcept {
        ring_.close_fd(fd_);
        delete this;
    }

    Uring& ring_;
    int fd_;
    std::unique_ptr<char[]> buf_;
};

/// The listening socket's multishot accept.
class Acceptor final : public AcceptOp {
public:
    explicit Acceptor(Uring& ring) : ring_(ring) {}

private:
    void on_accept(int res, bool more) noexcept override {
        if (res >= 0) {
            int one = 1;
            ::setsockopt(res, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
            (new Connection(ring_, res))->start();
        } else if (res != -ECANCELED) {  // ECANCELED: the loop is closing.
            std::fprintf(stderr, "uring_echo: accept: %s\n", std::strerror(-res));
        }
        if (!more) g_stop = 1;  // The listening socket failed; a real server would retry.
    }
    Uring& ring_;
};

/// Ends run() when a signal interrupts the wait.
struct StopOnSignal : LoopObserver {
    bool on_interrupted() noexcept override { return !g_stop; }
};

int listen_on(int port) {
    int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    int one = 1;
    ::setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    sockaddr_in sa{};
    sa.sin_family = AF_INET;
    sa.sin_port = htons(uint16_t(port));
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (fd < 0 || ::bind(fd, reinterpret_cast<sockaddr*>(&sa), sizeof sa) < 0 || ::listen(fd, 1024) < 0) {
        std::perror("uring_echo: listen");
        std::exit(1);
    }
    socklen_t len = sizeof sa;
    ::getsockname(fd, reinterpret_cast<sockaddr*>(&sa), &len);
    std::printf("READY %d\n", ntohs(sa.sin_port));
    std::fflush(stdout);
    return fd;
}

}  // namespace

int main(int argc, char** argv) {
    if (!uring_support().available) {
        std::fprintf(stderr, "uring_echo: %s\n", uring_support().reason.c_str());
        return 77;
    }
    struct sigaction sa {};
    sa.sa_handler = [](int) { g_stop = 1; };
    ::sigaction(SIGINT, &sa, nullptr);
    ::sigaction(SIGTERM, &sa, nullptr);
    ::signal(SIGPIPE, SIG_IGN);

    EventLoop loop(make_poller("uring"));
    StopOnSignal observer;
    loop.set_observer(&observer);
    Uring& ring = *loop.uring();
    int lfd = listen_on(argc > 1 ? std::atoi(argv[1]) : 0);
    Acceptor acceptor(ring);
    if (auto ec = ring.accept(acceptor, lfd)) {
        std::fprintf(stderr, "uring_echo: accept: %s\n", ec.message().c_str());
        return 1;
    }
    while (!g_stop && loop.run_once()) {
    }
    // Closing the loop cancels the accept and every connection's pending op; their
    // final callbacks close and free the connections.
    loop.close();
    ::close(lfd);
    return 0;
}
