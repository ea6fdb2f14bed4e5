// test_stream.cpp: Stream reads, writes, flow control, EOF, errors and teardown, per poller.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <functional>
#include <string>
#include <vector>

#include "cxxloop/stream.hpp"
#include "stream_recorder.hpp"
#include "test_util.hpp"

using namespace cxxloop;
using namespace cxxloop::test;

namespace {

/// A chunk over a std::string owned by the test, counting its release.
struct Owned {
    std::string bytes;
    int released = 0;
    WriteChunk chunk() {
        return {bytes.data(), bytes.size(), this, [](void* o) noexcept { ++static_cast<Owned*>(o)->released; }};
    }
};

/// Reads everything available from a non-blocking fd.
std::string drain_fd(int fd) {
    std::string out;
    char b[65536];
    for (;;) {
        ssize_t n = ::read(fd, b, sizeof b);
        if (n <= 0) break;
        out.append(b, size_t(n));
    }
    return out;
}

/// A connected TCP pair over the loopback interface.
std::pair<Fd, Fd> tcp_pair() {
    Fd listener(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof addr;
    EXPECT_EQ(::bind(listener.get(), reinterpret_cast<sockaddr*>(&addr), sizeof addr), 0);
    EXPECT_EQ(::listen(listener.get(), 1), 0);
    EXPECT_EQ(::getsockname(listener.get(), reinterpret_cast<sockaddr*>(&addr), &len), 0);
    Fd client(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
    EXPECT_EQ(::connect(client.get(), reinterpret_cast<sockaddr*>(&addr), sizeof addr), 0);
    Fd server(::accept4(listener.get(), nullptr, nullptr, SOCK_CLOEXEC));
    return {std::move(server), std::move(client)};
}

using StreamTest = BackendLoopTest;

TEST_P(StreamTest, ReadsUntilEof) {
    auto [a, b] = socket_pair();
    Recorder rec;
    Stream s(loop, a.get(), rec, true);
    ASSERT_FALSE(s.start_reading());
    ASSERT_EQ(::write(b.get(), "hello", 5), 5);
    ASSERT_TRUE(run_until([&] { return rec.data == "hello"; }));
    ::shutdown(b.get(), SHUT_WR);
    ASSERT_TRUE(run_until([&] { return rec.eofs == 1; }));
    EXPECT_FALSE(s.reading());
    EXPECT_EQ(rec.errors, 0);
}

TEST_P(StreamTest, PausedReadingDeliversNothingUntilResumed) {
    auto [a, b] = socket_pair();
    Recorder rec;
    Stream s(loop, a.get(), rec, true);
    ASSERT_EQ(::write(b.get(), "abc", 3), 3);
    run_until([] { return false; }, 3);
    EXPECT_EQ(rec.data, "");
    ASSERT_FALSE(s.start_reading());
    ASSERT_TRUE(run_until([&] { return rec.data == "abc"; }));
    s.stop_reading();
    ASSERT_EQ(::write(b.get(), "def", 3), 3);
    run_until([] { return false; }, 3);
    EXPECT_EQ(rec.data, "abc");
}

TEST_P(StreamTest, WriteGoesOutAtOnceWithoutTheLoopRunning) {
    auto [a, b] = socket_pair();
    Recorder rec;
    Stream s(loop, a.get(), rec, true);
    Owned o{"ping"};
    ASSERT_FALSE(s.write(o.chunk()));
    EXPECT_EQ(o.released, 1);
    EXPECT_EQ(s.write_buffer_size(), 0u);
    EXPECT_EQ(drain_fd(b.get()), "ping");
}

TEST_P(StreamTest, BackPressureQueuesPausesFlushesAndResumes) {
    auto [a, b] = socket_pair();
    int small = 4096;
    ::setsockopt(a.get(), SOL_SOCKET, SO_SNDBUF, &small, sizeof small);
    Recorder rec;
    Stream s(loop, a.get(), rec, true);
    s.set_write_limits(64 * 1024, 16 * 1024);
    std::vector<Owned> chunks(64);
    for (size_t i = 0; i < chunks.size(); ++i) {
        chunks[i].bytes.assign(8192, char('a' + i % 26));
        ASSERT_FALSE(s.write(chunks[i].chunk()));
    }
    EXPECT_GT(s.write_buffer_size(), 64u * 1024);
    EXPECT_TRUE(s.writing_paused());
    EXPECT_EQ(rec.pauses, 1);
    std::string received;
    ASSERT_TRUE(run_until([&] {
        received += drain_fd(b.get());
        return s.write_buffer_size() == 0 && received.size() == 64u * 8192;
    }, 5000));
    EXPECT_EQ(rec.resumes, 1);
    EXPECT_FALSE(s.writing_paused());
    EXPECT_EQ(rec.drains, 1);
    for (auto& c : chunks) EXPECT_EQ(c.released, 1);
    for (size_t i = 0; i < chunks.size(); ++i) EXPECT_EQ(received[i * 8192], char('a' + i % 26)) << i;
}

TEST_P(StreamTest, ShutdownWriteWaitsForTheQueue) {
    auto [a, b] = socket_pair();
    int small = 4096;
    ::setsockopt(a.get(), SOL_SOCKET, SO_SNDBUF, &small, sizeof small);
    Recorder rec;
    Stream s(loop, a.get(), rec, true);
    Owned big{std::string(200000, 'z')};
    ASSERT_FALSE(s.write(big.chunk()));
    ASSERT_GT(s.write_buffer_size(), 0u);
    ASSERT_FALSE(s.shutdown_write());
    Owned late{"late"};
    EXPECT_EQ(s.write(late.chunk()), std::errc::broken_pipe);
    EXPECT_EQ(late.released, 1);
    std::string received;
    char b1[65536];
    ASSERT_TRUE(run_until([&] {
        for (;;) {
            ssize_t n = ::read(b.get(), b1, sizeof b1);
            if (n == 0) return true;  // EOF: the write side was shut down after the data.
            if (n < 0) return false;
            received.append(b1, size_t(n));
        }
    }, 5000));
    EXPECT_EQ(received.size(), big.bytes.size());
    EXPECT_EQ(big.released, 1);
}

TEST_P(StreamTest, WriteToAVanishedPeerFailsWithoutSigpipe) {
    auto [a, b] = socket_pair();
    Recorder rec;
    Stream s(loop, a.get(), rec, true);
    b.reset();
    Owned o{"x"};
    std::error_code ec = s.write(o.chunk());
    EXPECT_EQ(ec, std::errc::broken_pipe);
    EXPECT_EQ(o.released, 1);
    EXPECT_EQ(rec.errors, 1);
    EXPECT_TRUE(rec.error_while_writing);
    Owned again{"y"};
    EXPECT_EQ(s.write(again.chunk()), std::errc::broken_pipe);
    EXPECT_EQ(again.released, 1);
    EXPECT_EQ(rec.errors, 1);  // Reported once.
}

TEST_P(StreamTest, FlushOfOneChunkToAVanishedPeerFailsWithoutSigpipe) {
    // The flush of a queue with one chunk left goes out with send(): it too must
    // not raise SIGPIPE (this process has the default action) when the peer is gone,
    // over a Unix socket pair and over TCP.
    struct sigaction dfl {}, old {};
    dfl.sa_handler = SIG_DFL;
    ASSERT_EQ(::sigaction(SIGPIPE, &dfl, &old), 0);
    for (bool tcp : {false, true}) {
        auto [a, b] = tcp ? tcp_pair() : socket_pair();
        int small = 4096;
        ::setsockopt(a.get(), SOL_SOCKET, SO_SNDBUF, &small, sizeof small);
        Recorder rec;
        Stream s(loop, a.get(), rec, true);
        Owned big{std::string(400000, 'q')};
        ASSERT_FALSE(s.write(big.chunk()));
        ASSERT_GT(s.write_buffer_size(), 0u) << tcp;
        b.reset();
        ASSERT_TRUE(run_until([&] { return rec.errors == 1; }, 5000)) << tcp;
        EXPECT_TRUE(rec.error_while_writing) << tcp;
        EXPECT_TRUE(rec.last_error == std::errc::broken_pipe || rec.last_error == std::errc::connection_reset)
            << tcp << " " << rec.last_error.message();
        EXPECT_EQ(big.released, 1) << tcp;
        EXPECT_EQ(s.write_buffer_size(), 0u) << tcp;
    }
    ::sigaction(SIGPIPE, &old, nullptr);
}

TEST_P(StreamTest, ResetPeerIsAReadError) {
    auto [a, b] = tcp_pair();
    Recorder rec;
    Stream s(loop, a.get(), rec, true);
    ASSERT_FALSE(s.start_reading());
    linger hard{1, 0};  // close() then sends RST instead of FIN.
    ASSERT_EQ(::setsockopt(b.get(), SOL_SOCKET, SO_LINGER, &hard, sizeof hard), 0);
    b.reset();
    ASSERT_TRUE(run_until([&] { return rec.eofs + rec.errors > 0; }));
    EXPECT_EQ(rec.errors, 1);
    EXPECT_EQ(rec.last_error, std::errc::connection_reset);
    EXPECT_FALSE(rec.error_while_writing);
    EXPECT_EQ(loop.fd_count(), 0u);
}

TEST_P(StreamTest, AbortReleasesTheQueueAndStopsWatching) {
    auto [a, b] = socket_pair();
    int small = 4096;
    ::setsockopt(a.get(), SOL_SOCKET, SO_SNDBUF, &small, sizeof small);
    Recorder rec;
    Stream s(loop, a.get(), rec, true);
    ASSERT_FALSE(s.start_reading());
    Owned big{std::string(300000, 'q')};
    ASSERT_FALSE(s.write(big.chunk()));
    ASSERT_GT(s.write_buffer_size(), 0u);
    s.abort();
    EXPECT_EQ(big.released, 1);
    EXPECT_EQ(s.write_buffer_size(), 0u);
    EXPECT_EQ(loop.fd_count(), 0u);
}

TEST_P(StreamTest, CallbacksMayAbortTheStream) {
    auto [a, b] = socket_pair();
    Recorder rec;
    Stream s(loop, a.get(), rec, true);
    rec.on_data_hook = [&] { s.abort(); };
    ASSERT_FALSE(s.start_reading());
    ASSERT_EQ(::write(b.get(), "bye", 3), 3);
    ASSERT_TRUE(run_until([&] { return rec.data == "bye"; }));
    EXPECT_EQ(loop.fd_count(), 0u);
    Owned o{"after"};
    EXPECT_EQ(s.write(o.chunk()), std::errc::broken_pipe);
    EXPECT_EQ(o.released, 1);
}

TEST_P(StreamTest, PipesUseWritevAndReportEofOnClose) {
    auto [r, w] = make_pipe();
    Recorder reader, writer;
    Stream in(loop, r.get(), reader, false);
    Stream out(loop, w.get(), writer, false);
    ASSERT_FALSE(in.start_reading());
    Owned o{"through a pipe"};
    ASSERT_FALSE(out.write(o.chunk()));
    ASSERT_TRUE(run_until([&] { return reader.data == "through a pipe"; }));
    out.detach();
    w.reset();
    ASSERT_TRUE(run_until([&] { return reader.eofs == 1; }));
}

TEST_P(StreamTest, DestroyingReleasesQueuedChunks) {
    auto [a, b] = socket_pair();
    int small = 4096;
    ::setsockopt(a.get(), SOL_SOCKET, SO_SNDBUF, &small, sizeof small);
    Recorder rec;
    Owned big{std::string(300000, 'd')};
    {
        Stream s(loop, a.get(), rec, true);
        ASSERT_FALSE(s.write(big.chunk()));
        ASSERT_GT(s.write_buffer_size(), 0u);
    }
    EXPECT_EQ(big.released, 1);
    EXPECT_EQ(loop.fd_count(), 0u);
}

INSTANTIATE_TEST_SUITE_P(Backends, StreamTest, ::testing::Values("epoll", "poll", "select", "uring"), NameParam());

}  // namespace
