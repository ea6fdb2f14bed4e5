// test_uring.cpp: the io_uring engine: probe, each completion op, delivery, teardown, fork, echo.
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/wait.h>

#include <cerrno>
#include <cstring>
#include <functional>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "cxxloop/loop.hpp"
#include "cxxloop/uring.hpp"
#include "test_util.hpp"

using namespace cxxloop;
using namespace cxxloop::test;

namespace {

constexpr int kNone = -1'000'000;  // "No callback yet", distinct from every result.

// --- op wrappers running a std::function (tests may allocate; the engine does not) ----

struct AcceptFn : AcceptOp {
    std::function<void(int, bool)> fn;
    void on_accept(int res, bool more) noexcept override { fn(res, more); }
};
struct RecvFn : RecvOp {
    std::function<void(int)> fn;
    void on_recv(int res) noexcept override { fn(res); }
};
struct SendFn : SendOp {
    std::function<void(int)> fn;
    void on_send(int res) noexcept override { fn(res); }
};
struct ConnectFn : ConnectOp {
    std::function<void(int)> fn;
    void on_connect(int res) noexcept override { fn(res); }
};

/// A listening TCP socket on 127.0.0.1 and its address.
struct Listener {
    Fd fd;
    sockaddr_in addr{};
};

Listener listen_tcp() {
    Listener l;
    l.fd = Fd(::socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0));
    l.addr.sin_family = AF_INET;
    l.addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    EXPECT_EQ(::bind(l.fd.get(), reinterpret_cast<sockaddr*>(&l.addr), sizeof l.addr), 0);
    EXPECT_EQ(::listen(l.fd.get(), 128), 0);
    socklen_t len = sizeof l.addr;
    EXPECT_EQ(::getsockname(l.fd.get(), reinterpret_cast<sockaddr*>(&l.addr), &len), 0);
    return l;
}

Fd tcp_socket() { return Fd(::socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0)); }

/// True when `fd` becomes readable within `ms` milliseconds.
bool readable_within(int fd, int ms) {
    pollfd p{fd, POLLIN, 0};
    return ::poll(&p, 1, ms) == 1;
}

/// Makes syscall `nr` fail with `err` in this process (a seccomp filter).
bool deny_syscall(long nr, int err) {
    sock_filter code[] = {
        BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(seccomp_data, nr)),
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, uint32_t(nr), 0, 1),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | uint32_t(err)),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
    };
    sock_fprog prog{sizeof code / sizeof code[0], code};
    return ::prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) == 0 &&
           ::prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &prog) == 0;
}

/// Runs `child` in a forked process and returns its exit code (77: could not set up).
template <class F>
int in_child(F child) {
    pid_t pid = ::fork();
    if (pid == 0) ::_exit(child());
    int status = 0;
    EXPECT_EQ(::waitpid(pid, &status, 0), pid);
    return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

class UringTest : public ::testing::Test {
protected:
    std::unique_ptr<EventLoop> loop;
    Uring* ring = nullptr;

    void SetUp() override {
        if (auto why = unavailable_reason("uring"); !why.empty()) GTEST_SKIP() << why;
        loop = std::make_unique<EventLoop>(make_poller("uring"));
        ring = loop->uring();
        ASSERT_NE(ring, nullptr);
    }
    void TearDown() override {
        // Every test finishes its ops: one left pending would be a leak (and its
        // object is gone by now, so close() must not have to call it back).
        if (ring) {
            EXPECT_EQ(ring->pending_count(), 0u);
        }
    }

    /// Runs iterations until `done()` or `limit` seconds pass; a guard timer keeps each
    /// iteration short, so a bug fails the test instead of hanging it.
    template <class Pred>
    bool run_until(Pred done, double limit = 5.0) { return run_loop_until(*loop, done, limit); }
};

}  // namespace

// --- probe ------------------------------------------------------------------------------

TEST(UringProbe, IsCachedAndExplainsItself) {
    const UringSupport& a = uring_support();
    EXPECT_EQ(&a, &uring_support());
    UringSupport fresh = detect_uring();
    EXPECT_EQ(fresh.available, a.available);
    if (a.available) {
        EXPECT_EQ(a.error, 0);
        EXPECT_TRUE(a.reason.empty()) << a.reason;
    } else {
        EXPECT_NE(a.error, 0);
        EXPECT_FALSE(a.reason.empty());
        EXPECT_THROW(make_poller("uring"), std::system_error);
    }
}

TEST(UringProbe, SeccompRefusalIsNamedAndConstructionThrowsWithIt) {
    // Only meaningful where io_uring works until the filter refuses it.
    if (auto why = unavailable_reason("uring"); !why.empty()) GTEST_SKIP() << why;
    for (int err : {EPERM, ENOSYS}) {
        int code = in_child([err] {
            if (!deny_syscall(SYS_io_uring_setup, err)) return 77;
            UringSupport s = detect_uring();
            if (s.available || s.error != err) return 1;
            const char* word = err == EPERM ? "EPERM" : "ENOSYS";
            if (s.reason.find(word) == std::string::npos) return 2;
            try {
                make_poller("uring");
                return 3;
            } catch (const std::system_error& e) {
                // The cache may predate the filter (then setup fails) or not: either
                // way the message names the errno.
                std::string what = e.what();
                if (what.find("io_uring is unavailable") == std::string::npos) return 4;
                if (what.find(word) == std::string::npos) return 5;
            }
            return 0;
        });
        if (code == 77) GTEST_SKIP() << "cannot install a seccomp filter here";
        EXPECT_EQ(code, 0) << "errno " << err;
    }
}

// --- the uring poller beside the completion ops ----------------------------------------------

TEST_F(UringTest, RemovedFdIsReallyClosedByClose) {
    // A poll holds a reference to its file; remove() must let go of it at once, or a
    // close() right after would not reach the peer.
    auto [a, b] = socket_pair();
    auto poller = make_poller("uring");
    ASSERT_FALSE(poller->add(a.get(), kReadable));
    std::vector<PollEvent> out;
    ASSERT_FALSE(poller->wait(0, out));  // The poll is now in the kernel.
    ASSERT_FALSE(poller->remove(a.get()));
    a.reset();
    ASSERT_TRUE(readable_within(b.get(), 1000));
    char c;
    EXPECT_EQ(::read(b.get(), &c, 1), 0);
}

// --- accept ---------------------------------------------------------------------------------

TEST_F(UringTest, MultishotAcceptTakesSeveralConnections) {
    Listener l = listen_tcp();
    std::vector<int> accepted;
    int final_res = kNone;
    AcceptFn op;
    op.fn = [&](int res, bool more) {
        if (res >= 0) accepted.push_back(res);
        if (!more) final_res = res;
    };
    ASSERT_FALSE(ring->accept(op, l.fd.get()));
    EXPECT_EQ(ring->accept(op, l.fd.get()), std::errc::device_or_resource_busy);
    std::vector<Fd> clients;
    for (int i = 0; i < 5; ++i) {
        clients.push_back(tcp_socket());
        int r = ::connect(clients.back().get(), reinterpret_cast<sockaddr*>(&l.addr), sizeof l.addr);
        ASSERT_TRUE(r == 0 || errno == EINPROGRESS);
    }
    ASSERT_TRUE(run_until([&] { return accepted.size() == 5; }));
    EXPECT_TRUE(op.pending());  // Still accepting.
    for (int fd : accepted) {
        EXPECT_GE(fd, 0);
        EXPECT_TRUE(::fcntl(fd, F_GETFL) & O_NONBLOCK);
        EXPECT_TRUE(::fcntl(fd, F_GETFD) & FD_CLOEXEC);
        ::close(fd);
    }
    ASSERT_FALSE(ring->cancel(op));
    ASSERT_TRUE(run_until([&] { return !op.pending(); }));
    EXPECT_EQ(final_res, -ECANCELED);
}

// --- recv -----------------------------------------------------------------------------------

TEST_F(UringTest, RecvGetsDataThenEof) {
    auto [a, b] = socket_pair();
    char buf[64];
    std::vector<int> results;
    RecvFn op;
    op.fn = [&](int res) {
        results.push_back(res);
        if (res > 0) {
            EXPECT_FALSE(ring->recv(op, a.get(), buf));  // Restart from the callback.
        }
    };
    ASSERT_FALSE(ring->recv(op, a.get(), buf));
    ASSERT_EQ(::write(b.get(), "hello", 5), 5);
    ASSERT_TRUE(run_until([&] { return results.size() == 1; }));
    EXPECT_EQ(results[0], 5);
    EXPECT_EQ(std::string(buf, 5), "hello");
    b.reset();
    ASSERT_TRUE(run_until([&] { return results.size() == 2; }));
    EXPECT_EQ(results[1], 0);
    EXPECT_FALSE(op.pending());
}

// --- multishot recv into a buffer ring -------------------------------------------------------

namespace {
struct MultiFn : RecvMultishotOp {
    std::function<void(int, int, const char*, bool)> fn;
    void on_data(int res, int buf, const char* data, bool more) noexcept override { fn(res, buf, data, more); }
};
}  // namespace

// The tests below run on both kinds of buffer ring: incremental (Linux 6.12) and whole.
class UringBufRingTest : public UringTest, public ::testing::WithParamInterface<bool> {
protected:
    void SetUp() override {
        UringTest::SetUp();
        if (IsSkipped() || HasFatalFailure()) return;
        if (GetParam() && !ring->has(kUringBufIncremental)) GTEST_SKIP() << uring_support().missing_features;
    }
    /// A ring of the kind under test; null where the kernel has no buffer rings (< 5.19).
    BufRing* add_ring(uint16_t group, uint32_t count, uint32_t size, std::error_code& ec) {
        BufRing* bufs = ring->add_buf_ring(group, count, size, ec, GetParam());
        if (bufs) {
            EXPECT_EQ(bufs->incremental(), GetParam());
        }
        return bufs;
    }
};

TEST_P(UringBufRingTest, MultishotRecvFillsRingBuffersUntilEof) {
    std::error_code ec;
    BufRing* bufs = add_ring(7, 8, 64, ec);
    if (ec == std::errc::invalid_argument) GTEST_SKIP() << "no provided-buffer rings (Linux < 5.19)";
    ASSERT_NE(bufs, nullptr) << ec.message();
    EXPECT_EQ(add_ring(7, 8, 64, ec), nullptr);  // The group is taken.
    auto [a, b] = socket_pair();
    std::string got;
    int calls = 0, last = kNone;
    bool ended = false;
    MultiFn op;
    op.fn = [&](int res, int buf, const char* data, bool more) {
        ++calls;
        last = res;
        if (buf >= 0) {
            EXPECT_GT(res, 0);
            got.append(data, size_t(res));
            bufs->release(buf);
        }
        ended = !more;
    };
    ASSERT_FALSE(ring->recv_multishot(op, a.get(), *bufs));
    // 20 writes of 10 bytes through 8 buffers of 64: buffers must come back to be reused.
    std::string want;
    for (int i = 0; i < 20; ++i) {
        std::string chunk(10, char('A' + i));
        want += chunk;
        ASSERT_EQ(::write(b.get(), chunk.data(), chunk.size()), 10);
        ASSERT_TRUE(run_until([&] { return got.size() == want.size(); }));
    }
    EXPECT_EQ(got, want);
    EXPECT_TRUE(op.pending());
    b.reset();
    ASSERT_TRUE(run_until([&] { return ended; }));
    if (last == -EINVAL && calls == 1) GTEST_SKIP() << "no multishot receive (Linux < 6.0)";
    EXPECT_EQ(last, 0);
}

TEST_P(UringBufRingTest, MultishotRecvEndsWithEnobufsWhenBuffersAreKept) {
    std::error_code ec;
    BufRing* bufs = add_ring(8, 2, 16, ec);
    if (ec == std::errc::invalid_argument) GTEST_SKIP() << "no provided-buffer rings (Linux < 5.19)";
    ASSERT_NE(bufs, nullptr) << ec.message();
    auto [a, b] = socket_pair();
    std::vector<int> held;
    std::string got;
    int last = kNone;
    bool ended = false;
    MultiFn op;
    op.fn = [&](int res, int buf, const char* data, bool more) {
        if (buf >= 0) {
            held.push_back(buf);  // Not released.
            got.append(data, size_t(res));
        }
        last = res;
        ended = !more;
    };
    ASSERT_FALSE(ring->recv_multishot(op, a.get(), *bufs));
    // 16-byte writes fill a buffer each (of either kind): two fill the ring, and the
    // third finds none, since a share kept keeps its buffer from the kernel.
    for (int i = 0; i < 3 && !ended; ++i) {
        ASSERT_EQ(::write(b.get(), "0123456789abcdef", 16), 16);
        run_until([&] { return held.size() > size_t(i) || ended; }, 1.0);
    }
    ASSERT_TRUE(run_until([&] { return ended; }));
    EXPECT_EQ(last, -ENOBUFS);
    EXPECT_EQ(held.size(), 2u);
    EXPECT_EQ(got, "0123456789abcdef0123456789abcdef");
    // Released buffers let a restarted receive pick up what waited in the socket.
    for (int id : held) bufs->release(id);
    held.clear();
    ended = false;
    ASSERT_FALSE(ring->recv_multishot(op, a.get(), *bufs));
    ASSERT_TRUE(run_until([&] { return !held.empty(); }));
    EXPECT_EQ(last, 16);
    for (int id : held) bufs->release(id);
    ASSERT_FALSE(ring->cancel(op));
    ASSERT_TRUE(run_until([&] { return ended; }));
}

// An incremental ring (Linux 6.12): receives share the buffer at the head, each after
// the last, and a buffer goes back to the kernel once the kernel has moved past it and
// every share is released; a zero-length completion (EOF) hands out no buffer.
TEST_F(UringTest, IncrementalRingPacksReceivesIntoOneBuffer) {
    if (!ring->has(kUringBufIncremental)) GTEST_SKIP() << uring_support().missing_features;
    std::error_code ec;
    BufRing* bufs = ring->add_buf_ring(9, 4, 64, ec, true);
    ASSERT_NE(bufs, nullptr) << ec.message();
    EXPECT_TRUE(bufs->incremental());
    auto [a, b] = socket_pair();
    std::string got;
    std::vector<std::pair<int, const char*>> seen;
    int last = kNone;
    bool ended = false;
    MultiFn op;
    op.fn = [&](int res, int buf, const char* data, bool more) {
        last = res;
        ended = !more;
        if (buf < 0) return;
        EXPECT_GT(res, 0);
        EXPECT_GE(data, bufs->buffer(buf));
        EXPECT_LE(data + res, bufs->buffer(buf) + 64);
        got.append(data, size_t(res));
        seen.emplace_back(buf, data);
        bufs->release(buf);
    };
    ASSERT_FALSE(ring->recv_multishot(op, a.get(), *bufs));
    // 30 writes of 10 bytes: 300 bytes through 4 buffers of 64, so buffers must come
    // back; while one is at the head, receives follow one another inside it.
    std::string want;
    for (int i = 0; i < 30; ++i) {
        std::string chunk(10, char('A' + i % 26));
        want += chunk;
        ASSERT_EQ(::write(b.get(), chunk.data(), chunk.size()), 10);
        ASSERT_TRUE(run_until([&] { return got.size() == want.size(); }));
    }
    EXPECT_EQ(got, want);
    ASSERT_GE(seen.size(), 2u);
    EXPECT_EQ(seen[0].second, bufs->buffer(seen[0].first)) << "the first receive starts the buffer";
    EXPECT_EQ(seen[1].first, seen[0].first) << "the second shares it";
    EXPECT_EQ(seen[1].second, seen[0].second + 10);
    EXPECT_TRUE(op.pending());
    b.reset();
    ASSERT_TRUE(run_until([&] { return ended; }));
    EXPECT_EQ(last, 0);
    // Nothing is lost across the EOF: a new receive on another socket is served in full.
    auto [c, d] = socket_pair();
    got.clear();
    ended = false;
    ASSERT_FALSE(ring->recv_multishot(op, c.get(), *bufs));
    const std::string tail(100, 'z');
    ASSERT_EQ(::write(d.get(), tail.data(), tail.size()), 100);
    ASSERT_TRUE(run_until([&] { return got.size() == tail.size(); }));
    EXPECT_EQ(got, tail);
    ASSERT_FALSE(ring->cancel(op));
    ASSERT_TRUE(run_until([&] { return ended; }));
}

// A new ring after fork() gets every buffer again except those whose bytes a stream
// still holds: those come back when released, so the held bytes stay intact.
TEST_P(UringBufRingTest, AfterForkAHeldBufferStaysOutUntilReleased) {
    std::error_code ec;
    BufRing* bufs = add_ring(11, 2, 16, ec);
    if (ec == std::errc::invalid_argument) GTEST_SKIP() << "no provided-buffer rings (Linux < 5.19)";
    ASSERT_NE(bufs, nullptr) << ec.message();
    auto [a, b] = socket_pair();
    std::vector<std::pair<int, const char*>> got;
    int last = kNone;
    bool ended = false;
    MultiFn op;
    op.fn = [&](int res, int buf, const char* data, bool more) {
        if (buf >= 0) got.emplace_back(buf, data);
        last = res;
        ended = !more;
    };
    ASSERT_FALSE(ring->recv_multishot(op, a.get(), *bufs));
    ASSERT_EQ(::write(b.get(), "held-held-held-h", 16), 16);
    ASSERT_TRUE(run_until([&] { return got.size() == 1; }));
    const auto [held, held_data] = got[0];
    got.clear();
    // In a child the parent's ring is gone: its ops end with -ECANCELED.
    ASSERT_FALSE(ring->after_fork());
    ASSERT_TRUE(run_until([&] { return ended; }));
    ended = false;
    ASSERT_FALSE(ring->recv_multishot(op, a.get(), *bufs));
    ASSERT_EQ(::write(b.get(), "0123456789abcdef", 16), 16);
    ASSERT_TRUE(run_until([&] { return !got.empty(); }));
    EXPECT_NE(got[0].first, held) << "the held buffer was offered to the new ring";
    bufs->release(got[0].first);
    EXPECT_EQ(std::string(held_data, 16), "held-held-held-h");
    // Released, the held buffer serves the new ring too.
    bufs->release(held);
    got.clear();
    for (int i = 0; i < 4; ++i) {
        ASSERT_EQ(::write(b.get(), "ffffffffffffffff", 16), 16);
        ASSERT_TRUE(run_until([&] { return got.size() == size_t(i) + 1 || ended; }));
        ASSERT_FALSE(ended) << last;
        bufs->release(got.back().first);
    }
    bool used_held = false;
    for (auto& g : got) used_held |= g.first == held;
    EXPECT_TRUE(used_held);
    ASSERT_FALSE(ring->cancel(op));
    ASSERT_TRUE(run_until([&] { return ended; }));
}

// The same with an incremental ring, where the held bytes are at the front of a buffer
// the kernel had not finished: after fork() that buffer stays out (the new ring's
// receives go elsewhere), and once released it comes back whole, filled from its start.
TEST_F(UringTest, AfterForkAPartlyFilledHeldBufferOfAnIncrementalRingStaysOut) {
    if (!ring->has(kUringBufIncremental)) GTEST_SKIP() << uring_support().missing_features;
    std::error_code ec;
    BufRing* bufs = ring->add_buf_ring(12, 2, 32, ec, true);
    ASSERT_NE(bufs, nullptr) << ec.message();
    auto [a, b] = socket_pair();
    struct Got {
        int buf;
        const char* data;
        int len;
    };
    std::vector<Got> got;
    std::string bytes;
    int last = kNone;
    bool ended = false;
    MultiFn op;
    op.fn = [&](int res, int buf, const char* data, bool more) {
        last = res;
        ended = !more;
        if (buf < 0) return;
        EXPECT_GE(data, bufs->buffer(buf));
        EXPECT_LE(data + res, bufs->buffer(buf) + 32);
        got.push_back({buf, data, res});
        bytes.append(data, size_t(res));
    };
    ASSERT_FALSE(ring->recv_multishot(op, a.get(), *bufs));
    ASSERT_EQ(::write(b.get(), "held-held-", 10), 10);
    ASSERT_TRUE(run_until([&] { return got.size() == 1; }));
    const Got held = got[0];
    EXPECT_EQ(held.data, bufs->buffer(held.buf));
    got.clear();
    bytes.clear();
    ASSERT_FALSE(ring->after_fork());
    ASSERT_TRUE(run_until([&] { return ended; }));
    ended = false;
    ASSERT_FALSE(ring->recv_multishot(op, a.get(), *bufs));
    ASSERT_EQ(::write(b.get(), "0123456789", 10), 10);
    ASSERT_TRUE(run_until([&] { return !got.empty(); }));
    EXPECT_NE(got[0].buf, held.buf) << "the held buffer was offered to the new ring";
    EXPECT_EQ(got[0].data, bufs->buffer(got[0].buf)) << "the new ring starts its buffers afresh";
    bufs->release(got[0].buf);
    EXPECT_EQ(std::string(held.data, 10), "held-held-");
    bufs->release(held.buf);
    // 3 x 32 bytes: more than the other buffer has left, so the released one serves
    // too, from its start.
    std::string want = "0123456789";
    got.clear();
    bool refilled = false;
    for (int i = 0; i < 3; ++i) {
        const std::string chunk(32, char('a' + i));
        want += chunk;
        ASSERT_EQ(::write(b.get(), chunk.data(), chunk.size()), 32);
        ASSERT_TRUE(run_until([&] { return bytes.size() == want.size() || ended; }));
        ASSERT_FALSE(ended) << last;
        for (const Got& g : got) bufs->release(g.buf);
        for (const Got& g : got)
            refilled |= g.buf == held.buf && g.data == bufs->buffer(held.buf);
        got.clear();
    }
    EXPECT_EQ(bytes, want);
    EXPECT_TRUE(refilled) << "the released buffer was not filled from its start";
    ASSERT_FALSE(ring->cancel(op));
    ASSERT_TRUE(run_until([&] { return ended; }));
}

INSTANTIATE_TEST_SUITE_P(Rings, UringBufRingTest, ::testing::Bool(),
                         [](const ::testing::TestParamInfo<bool>& info) { return info.param ? "incremental" : "whole"; });

// --- send -----------------------------------------------------------------------------------

TEST_F(UringTest, LargeSendCompletesOverSeveralCompletions) {
    auto [a, b] = socket_pair();
    int small = 32 * 1024;
    ::setsockopt(a.get(), SOL_SOCKET, SO_SNDBUF, &small, sizeof small);
    std::string payload(4 << 20, '\0');
    for (size_t i = 0; i < payload.size(); ++i) payload[i] = char(i % 251);
    std::string got;
    std::thread reader([&, fd = b.get()] {
        char chunk[65536];
        while (got.size() < payload.size() && readable_within(fd, 5000)) {
            ssize_t n = ::read(fd, chunk, sizeof chunk);
            if (n <= 0) break;
            got.append(chunk, size_t(n));
        }
    });
    int result = kNone;
    SendFn op;
    op.fn = [&](int res) { result = res; };
    ASSERT_FALSE(ring->send(op, a.get(), std::span<const char>(payload)));
    bool done = run_until([&] { return result != kNone; }, 20.0);
    reader.join();
    ASSERT_TRUE(done);
    EXPECT_EQ(result, int(payload.size()));
    EXPECT_GT(op.completions(), 1u);
    EXPECT_TRUE(got == payload);
}

TEST_F(UringTest, SendmsgSendsEveryIovecInOrder) {
    auto [a, b] = socket_pair();
    char p1[] = "ab", p3[] = "cdef";
    iovec iov[3] = {{p1, 2}, {nullptr, 0}, {p3, 4}};
    int result = kNone;
    SendFn op;
    op.fn = [&](int res) { result = res; };
    ASSERT_FALSE(ring->send(op, a.get(), iov, 3));
    ASSERT_TRUE(run_until([&] { return result != kNone; }));
    EXPECT_EQ(result, 6);
    char buf[16];
    ASSERT_EQ(::read(b.get(), buf, sizeof buf), 6);
    EXPECT_EQ(std::string(buf, 6), "abcdef");
}

TEST_F(UringTest, SendToAClosedPeerIsEpipeNotSigpipe) {
    auto [a, b] = socket_pair();
    b.reset();
    int result = kNone;
    SendFn op;
    op.fn = [&](int res) { result = res; };
    ASSERT_FALSE(ring->send(op, a.get(), std::span<const char>("x", 1)));
    ASSERT_TRUE(run_until([&] { return result != kNone; }));
    EXPECT_EQ(result, -EPIPE);
}

// --- connect --------------------------------------------------------------------------------

TEST_F(UringTest, ConnectSucceeds) {
    Listener l = listen_tcp();
    Fd s = tcp_socket();
    int result = kNone;
    ConnectFn op;
    op.fn = [&](int res) { result = res; };
    ASSERT_FALSE(ring->connect(op, s.get(), reinterpret_cast<sockaddr*>(&l.addr), sizeof l.addr));
    ASSERT_TRUE(run_until([&] { return result != kNone; }));
    EXPECT_EQ(result, 0);
    Fd server(::accept4(l.fd.get(), nullptr, nullptr, SOCK_CLOEXEC));
    EXPECT_GE(server.get(), 0);
}

TEST_F(UringTest, ConnectRefused) {
    // A bound socket that does not listen answers SYNs with RST; keeping it bound
    // keeps anyone else from taking the port meanwhile.
    Fd bound = tcp_socket();
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    ASSERT_EQ(::bind(bound.get(), reinterpret_cast<sockaddr*>(&addr), sizeof addr), 0);
    socklen_t len = sizeof addr;
    ASSERT_EQ(::getsockname(bound.get(), reinterpret_cast<sockaddr*>(&addr), &len), 0);
    Fd s = tcp_socket();
    int result = kNone;
    ConnectFn op;
    op.fn = [&](int res) { result = res; };
    ASSERT_FALSE(ring->connect(op, s.get(), reinterpret_cast<sockaddr*>(&addr), sizeof addr));
    ASSERT_TRUE(run_until([&] { return result != kNone; }));
    EXPECT_EQ(result, -ECONNREFUSED);
}

// --- cancel, close, timeouts ----------------------------------------------------------------

TEST_F(UringTest, CancelEndsAPendingRecv) {
    auto [a, b] = socket_pair();
    char buf[16];
    int result = kNone;
    RecvFn op;
    op.fn = [&](int res) { result = res; };
    EXPECT_EQ(ring->cancel(op), std::errc::no_such_file_or_directory);  // Not pending.
    ASSERT_FALSE(ring->recv(op, a.get(), buf));
    EXPECT_EQ(ring->recv(op, a.get(), buf), std::errc::device_or_resource_busy);
    loop->call_soon([] {});
    loop->run_once();  // Submitted now, and waiting in the kernel.
    EXPECT_EQ(result, kNone);
    ASSERT_FALSE(ring->cancel(op));
    ASSERT_TRUE(run_until([&] { return result != kNone; }));
    EXPECT_EQ(result, -ECANCELED);
    EXPECT_EQ(ring->pending_count(), 0u);
}

TEST_F(UringTest, CancelFdEndsEveryOpOnIt) {
    auto [a, b] = socket_pair();
    char buf[16];
    std::vector<int> results;
    RecvFn r;
    r.fn = [&](int res) { results.push_back(res); };
    ASSERT_FALSE(ring->recv(r, a.get(), buf));
    loop->call_soon([] {});
    loop->run_once();
    ASSERT_FALSE(ring->cancel_fd(a.get()));
    ASSERT_TRUE(run_until([&] { return !results.empty(); }));
    EXPECT_EQ(results[0], -ECANCELED);
}

TEST_F(UringTest, CloseFdWithAPendingOpCancelsItAndReallyCloses) {
    auto [a, b] = socket_pair();
    char buf[16];
    int result = kNone;
    RecvFn op;
    op.fn = [&](int res) { result = res; };
    ASSERT_FALSE(ring->recv(op, a.get(), buf));
    loop->call_soon([] {});
    loop->run_once();
    // close(2) alone would leave the socket open in the kernel for as long as the
    // receive waits; close_fd() cancels first.
    ASSERT_FALSE(ring->close_fd(a.release()));
    ASSERT_TRUE(readable_within(b.get(), 1000));
    char c;
    EXPECT_EQ(::read(b.get(), &c, 1), 0);  // The peer sees EOF.
    ASSERT_TRUE(run_until([&] { return result != kNone; }));
    EXPECT_EQ(result, -ECANCELED);
}

TEST_F(UringTest, LoopTimerCancelsARecvAsATimeout) {
    auto [a, b] = socket_pair();
    char buf[16];
    int result = kNone;
    RecvFn op;
    op.fn = [&](int res) { result = res; };
    ASSERT_FALSE(ring->recv(op, a.get(), buf));
    const double start = loop->time();
    TimerRef timeout = loop->call_later(0.05, [&] { ring->cancel(op); });
    ASSERT_TRUE(run_until([&] { return result != kNone; }));
    EXPECT_EQ(result, -ECANCELED);
    EXPECT_GE(loop->time() - start, 0.05);
}

// --- delivery -------------------------------------------------------------------------------

namespace {
struct WaitTracker : LoopObserver {
    bool in_wait = false;
    void before_wait() noexcept override { in_wait = true; }
    void after_wait() noexcept override { in_wait = false; }
};
}  // namespace

TEST_F(UringTest, CompletionsRunInTheIoPhaseNotInsideTheWait) {
    WaitTracker tracker;
    loop->set_observer(&tracker);
    auto [a, b] = socket_pair();
    char buf[16];
    int result = kNone;
    bool ran_in_wait = true;
    RecvFn op;
    op.fn = [&](int res) {
        result = res;
        ran_in_wait = tracker.in_wait;
    };
    ASSERT_FALSE(ring->recv(op, a.get(), buf));
    std::thread writer([fd = b.get()] {
        std::this_thread::sleep_for(std::chrono::milliseconds(30));
        EXPECT_EQ(::write(fd, "x", 1), 1);
    });
    loop->run_once();  // Blocks (no timers, nothing ready) until the byte arrives.
    writer.join();
    loop->set_observer(nullptr);
    EXPECT_EQ(result, 1);
    EXPECT_FALSE(ran_in_wait);
}

TEST_F(UringTest, BusyLoopDoesNotSkipTheWaitWhileOpsArePending) {
    // Every iteration has a ready callback, so the loop polls with a zero timeout; with
    // only the waker registered it would skip the poller altogether, were an op not
    // pending.
    auto [a, b] = socket_pair();
    ASSERT_EQ(::write(b.get(), "y", 1), 1);
    char buf[16];
    int result = kNone;
    RecvFn op;
    op.fn = [&](int res) { result = res; };
    ASSERT_FALSE(ring->recv(op, a.get(), buf));
    for (int i = 0; i < 1000 && result == kNone; ++i) {
        loop->call_soon([] {});
        loop->run_once();
    }
    EXPECT_EQ(result, 1);
}

TEST_F(UringTest, ClosingTheLoopCancelsPendingOps) {
    auto [a, b] = socket_pair();
    char buf[16];
    int result = kNone;
    RecvFn op;
    op.fn = [&](int res) { result = res; };
    ASSERT_FALSE(ring->recv(op, a.get(), buf));
    loop->call_soon([] {});
    loop->run_once();
    loop->close();
    EXPECT_EQ(result, -ECANCELED);
    EXPECT_FALSE(op.pending());
    EXPECT_EQ(loop->uring(), nullptr);
    ring = nullptr;
}

TEST_F(UringTest, StartingOnAClosedEngineFails) {
    Uring* r = ring;
    RecvFn op;
    op.fn = [](int) { ADD_FAILURE() << "callback of an op that never started"; };
    // The engine lives as long as the poller; EventLoop::close() destroys both, so
    // test on a standalone engine instead.
    Uring standalone;
    standalone.close();
    char buf[4];
    EXPECT_EQ(standalone.recv(op, 0, buf), std::errc::bad_file_descriptor);
    EXPECT_FALSE(op.pending());
    (void)r;
}

TEST_F(UringTest, ForkedChildCancelsInheritedOpsAndTheParentKeepsThem) {
    auto [a, b] = socket_pair();
    char buf[16];
    int result = kNone;
    RecvFn op;
    op.fn = [&](int res) { result = res; };
    ASSERT_FALSE(ring->recv(op, a.get(), buf));
    auto [c, d] = socket_pair();
    loop->call_soon([] {});
    loop->run_once();
    int code = in_child([&, &c = c, &d = d] {
        if (loop->after_fork()) return 1;
        for (int i = 0; i < 10 && result == kNone; ++i) {
            loop->call_soon([] {});
            loop->run_once();
        }
        if (result != -ECANCELED) return 2;
        // The child's ring works.
        RecvFn again;
        int r2 = kNone;
        again.fn = [&](int res) { r2 = res; };
        if (ring->recv(again, c.get(), buf)) return 3;
        if (::write(d.get(), "c", 1) != 1) return 4;
        if (!run_until([&] { return r2 != kNone; }) || r2 != 1) return 5;
        return 0;
    });
    EXPECT_EQ(code, 0);
    // The parent's receive is still waiting, in the parent's ring.
    EXPECT_TRUE(op.pending());
    ASSERT_EQ(::write(b.get(), "p", 1), 1);
    ASSERT_TRUE(run_until([&] { return result != kNone; }));
    EXPECT_EQ(result, 1);
    EXPECT_EQ(buf[0], 'p');
}

// --- echo -----------------------------------------------------------------------------------

namespace {

/// The server side of one connection: receive, send it back, repeat; frees itself at EOF.
struct EchoConn final : RecvOp, SendOp {
    EchoConn(Uring& r, int f, int& live) : ring(r), fd(f), open(live) { ++open; }
    void read_more() {
        if (ring.recv(*this, fd, buf)) done();
    }
    void on_recv(int n) noexcept override {
        if (n <= 0 || ring.send(*this, fd, std::span<const char>(buf, size_t(n)))) done();
    }
    void on_send(int n) noexcept override {
        if (n < 0) done();
        else read_more();
    }
    void done() noexcept {
        ring.close_fd(fd);
        --open;
        delete this;
    }
    Uring& ring;
    int fd;
    int& open;
    char buf[4096];
};

/// A client: connect, then `rounds` times send a message and read the echo back.
struct EchoClient final : ConnectOp, SendOp, RecvOp {
    EchoClient(Uring& r, int id, int rounds) : ring(r), fd(tcp_socket()), id(id), rounds_left(rounds) {}
    void on_connect(int res) noexcept override {
        if (res) fail(res);
        else send_round();
    }
    void send_round() {
        msg.assign(1024, '\0');
        for (size_t i = 0; i < msg.size(); ++i) msg[i] = char('a' + (id + rounds_left + int(i)) % 26);
        got.clear();
        if (auto ec = ring.send(*this, fd.get(), std::span<const char>(msg))) fail(-ec.value());
    }
    void on_send(int res) noexcept override {
        if (res < 0) fail(res);
        else read_more();
    }
    void read_more() {
        if (auto ec = ring.recv(*this, fd.get(), buf)) fail(-ec.value());
    }
    void on_recv(int n) noexcept override {
        if (n <= 0) return fail(n == 0 ? -ECONNRESET : n);
        got.append(buf, size_t(n));
        if (got.size() < msg.size()) return read_more();
        if (got != msg) return fail(-EBADMSG);
        if (--rounds_left > 0) return send_round();
        finished = true;
        fd.reset();  // The server sees EOF and frees its side.
    }
    void fail(int res) noexcept {
        error = res;
        finished = true;
        fd.reset();
    }
    Uring& ring;
    Fd fd;
    int id;
    int rounds_left;
    std::string msg, got;
    char buf[2048];
    bool finished = false;
    int error = 0;
};

}  // namespace

TEST_F(UringTest, EchoOverFiftyConnections) {
    constexpr int kConns = 50, kRounds = 20;
    Listener l = listen_tcp();
    int server_open = 0, accepted = 0, accept_error = 0;
    AcceptFn acceptor;
    acceptor.fn = [&](int res, bool more) {
        if (res >= 0) {
            ++accepted;
            (new EchoConn(*ring, res, server_open))->read_more();
        } else if (more || res != -ECANCELED) {
            accept_error = res;
        }
    };
    ASSERT_FALSE(ring->accept(acceptor, l.fd.get()));
    std::vector<std::unique_ptr<EchoClient>> clients;
    for (int i = 0; i < kConns; ++i) {
        clients.push_back(std::make_unique<EchoClient>(*ring, i, kRounds));
        ASSERT_FALSE(ring->connect(*clients.back(), clients.back()->fd.get(), reinterpret_cast<sockaddr*>(&l.addr), sizeof l.addr));
    }
    auto all_finished = [&] {
        for (auto& c : clients)
            if (!c->finished) return false;
        return true;
    };
    ASSERT_TRUE(run_until(all_finished, 20.0));
    for (auto& c : clients) EXPECT_EQ(c->error, 0) << "client " << c->id;
    EXPECT_EQ(accepted, kConns);
    EXPECT_EQ(accept_error, 0);
    ASSERT_TRUE(run_until([&] { return server_open == 0; }));
    ASSERT_FALSE(ring->cancel(acceptor));
    ASSERT_TRUE(run_until([&] { return !acceptor.pending(); }));
}
