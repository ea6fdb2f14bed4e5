// tcp_echo.cpp: a TCP echo server on the readiness engine, using the core's
// sockets (Listener, SocketAddress) and Stream without Python; compare with
// bench/net/echo_server.c (the C epoll reference) under bench/net's client.
//
//   tcp_echo [PORT] [HOST]      (default: any free port on 127.0.0.1)
//
// Prints "READY <port>" once listening and runs until SIGINT or SIGTERM. Each
// connection's Stream reads into a 256 KiB buffer (the reference's read size) and
// writes back what arrived; the Stream queues what the kernel does not take.
#include <signal.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <string>

#include "cxxloop/loop.hpp"
#include "cxxloop/net.hpp"
#include "cxxloop/stream.hpp"

using namespace cxxloop;

namespace {

constexpr size_t kBufSize = 256 * 1024;
volatile sig_atomic_t g_stop = 0;

/// One client connection; deletes itself (from a loop callback) at EOF or error.
class Connection final : public StreamHandler {
public:
    Connection(EventLoop& loop, int fd) : loop_(loop), fd_(fd), stream_(loop, fd, *this, true) {}
    ~Connection() override { ::close(fd_); }
    bool start() { return !stream_.start_reading(); }

    std::span<char> read_buffer(size_t) noexcept override { return {buf_.get(), kBufSize}; }
    void on_read(size_t n) noexcept override {
        // The bytes are copied: the read buffer is reused before a queued write drains.
        auto* copy = new std::string(buf_.get(), n);
        WriteChunk c{copy->data(), copy->size(), copy, [](void* o) noexcept { delete static_cast<std::string*>(o); }};
        if (stream_.write(c)) finish();
    }
    void on_eof() noexcept override { finish(); }
    void on_error(std::error_code, bool) noexcept override { finish(); }

private:
    // The Stream must not be destroyed inside its own callback: defer it.
    void finish() noexcept {
        if (done_) return;
        done_ = true;
        stream_.abort();
        loop_.call_soon([this] { delete this; });
    }

    EventLoop& loop_;
    int fd_;
    Stream stream_;
    std::unique_ptr<char[]> buf_{new char[kBufSize]};
    bool done_ = false;
};

struct Acceptor final : ListenerHandler {
    EventLoop& loop;
    explicit Acceptor(EventLoop& l) : loop(l) {}
    void on_accept(int fd, const SocketAddress&) noexcept override {
        auto* c = new Connection(loop, fd);
        if (!c->start()) delete c;
    }
    void on_accept_error(std::error_code ec, bool backing_off) noexcept override {
        std::fprintf(stderr, "tcp_echo: accept: %s%s\n", ec.message().c_str(),
                     backing_off ? " (accepting again in 1 s)" : "");
    }
};

/// Ends run() when a signal interrupts the wait.
struct StopOnSignal : LoopObserver {
    EventLoop& loop;
    explicit StopOnSignal(EventLoop& l) : loop(l) {}
    bool on_interrupted() noexcept override {
        if (g_stop) loop.stop();
        return true;
    }
};

}  // namespace

int main(int argc, char** argv) {
    const int port = argc > 1 ? std::atoi(argv[1]) : 0;
    const char* host = argc > 2 ? argv[2] : "127.0.0.1";
    struct sigaction sa {};
    sa.sa_handler = [](int) { g_stop = 1; };
    sigaction(SIGINT, &sa, nullptr);
    sigaction(SIGTERM, &sa, nullptr);
    signal(SIGPIPE, SIG_IGN);

    auto addr = SocketAddress::ip(host, uint16_t(port));
    if (!addr) {
        std::fprintf(stderr, "tcp_echo: %s is not a numeric address\n", host);
        return 2;
    }
    std::error_code ec;
    int lfd = listen_socket(*addr, ListenOptions{.backlog = 1024}, ec);
    if (lfd < 0) {
        std::fprintf(stderr, "tcp_echo: listen on %s: %s\n", addr->to_string().c_str(), ec.message().c_str());
        return 1;
    }
    EventLoop loop;
    StopOnSignal observer(loop);
    loop.set_observer(&observer);
    Acceptor acceptor(loop);
    Listener listener(loop, lfd, acceptor, 1024);
    if ((ec = listener.start())) return 1;
    std::printf("READY %u\n", SocketAddress::local_of(lfd)->port());
    std::fflush(stdout);
    while (!g_stop) loop.run();
    listener.stop();
    ::close(lfd);
    loop.close();  // Connections still open are leaked to process exit, like the reference.
    return 0;
}
