// test_uring_stream.cpp: UringStream: delivery order, pause/resume, EOF, queued sends, errors, teardown.
#include <poll.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "cxxloop/loop.hpp"
#include "cxxloop/uring_stream.hpp"
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

std::string read_some(int fd, size_t want, int ms = 2000) {
    std::string out;
    while (out.size() < want) {
        pollfd p{fd, POLLIN, 0};
        if (::poll(&p, 1, ms) != 1) break;
        char b[65536];
        ssize_t n = ::read(fd, b, sizeof b);
        if (n <= 0) break;
        out.append(b, size_t(n));
    }
    return out;
}

// Every test runs on both kinds of buffer ring: incremental (Linux 6.12) and whole.
class UringStreamTest : public ::testing::TestWithParam<bool> {
protected:
    std::unique_ptr<EventLoop> loop;
    Fd ours, peer;

    void SetUp() override {
        if (auto why = unavailable_reason("uring"); !why.empty()) GTEST_SKIP() << why;
        loop = std::make_unique<EventLoop>(make_poller("uring"));
        if (!GetParam()) loop->uring()->disable(kUringBufIncremental);
        else if (!loop->uring()->has(kUringBufIncremental)) GTEST_SKIP() << uring_support().missing_features;
        if (!UringStream::supported(*loop)) GTEST_SKIP() << "no provided-buffer rings here";
        auto [a, b] = socket_pair();
        ours = std::move(a);
        peer = std::move(b);
    }

    template <class Pred>
    bool run_until(Pred done, double limit = 5.0) { return run_loop_until(*loop, done, limit); }
    void expect_every_buffer_back();
    void spin(int n = 5) {
        for (int i = 0; i < n; ++i) {
            TimerRef guard = loop->call_later(0.005, [] {});
            loop->run_once();
            loop->cancel(guard);
        }
    }
};

TEST_P(UringStreamTest, DeliversInTheReadyPhaseAfterEarlierCallbacks) {
    Recorder r;
    std::vector<std::string> order;
    r.order = &order;
    UringStream s(*loop, ours.get(), r);
    ASSERT_FALSE(s.start_reading());
    EXPECT_TRUE(s.registered());
    spin(1);  // The receive is submitted.
    ASSERT_EQ(::write(peer.get(), "hello", 5), 5);
    // A callback queued before the wait that collects the data runs before it, as a
    // reader's handle queued after it would in asyncio.
    loop->call_soon([&] { order.push_back("soon"); });
    ASSERT_TRUE(run_until([&] { return r.data == "hello"; }));
    ASSERT_EQ(order.size(), 2u);
    EXPECT_EQ(order[0], "soon");
    EXPECT_EQ(order[1], "data");
    s.abort();
    ASSERT_TRUE(run_until([&] { return !s.registered() && r.holds == 0; }));
}

TEST_P(UringStreamTest, PauseKeepsWhatArrivedAndResumeDeliversIt) {
    Recorder r;
    UringStream s(*loop, ours.get(), r);
    ASSERT_FALSE(s.start_reading());
    spin(1);
    // Data arrives while the receive is in flight; reading stops before delivery.
    ASSERT_EQ(::write(peer.get(), "abc", 3), 3);
    r.on_data_hook = [&] { s.stop_reading(); };
    ASSERT_TRUE(run_until([&] { return r.data == "abc"; }));
    ASSERT_EQ(::write(peer.get(), "def", 3), 3);
    spin(5);
    EXPECT_EQ(r.data, "abc");  // Nothing is delivered while paused...
    EXPECT_FALSE(s.reading());
    r.on_data_hook = nullptr;
    ASSERT_FALSE(s.start_reading());  // ...and everything after resuming, in order.
    ASSERT_TRUE(run_until([&] { return r.data == "abcdef"; }));
    ASSERT_EQ(::write(peer.get(), "g", 1), 1);
    ASSERT_TRUE(run_until([&] { return r.data == "abcdefg"; }));
    s.abort();
    ASSERT_TRUE(run_until([&] { return !s.registered(); }));
}

// Several buffers' worth arrives at once: pausing in the delivery of the first
// keeps the rest as an inbox of many chunks (past its inline slot), copied out of
// the shared ring; resuming delivers them all in order, through a reader that takes
// a few bytes at a time.
TEST_P(UringStreamTest, PausedInboxOfManyChunksIsDeliveredInOrder) {
    Recorder r;
    UringStream s(*loop, ours.get(), r);
    ASSERT_FALSE(s.start_reading());
    spin(1);
    std::string sent;
    for (int i = 0; sent.size() < 100 * 1024; ++i) sent += std::to_string(i) + ",";
    r.on_data_hook = [&] {
        if (s.reading()) s.stop_reading();
    };
    ssize_t n = ::send(peer.get(), sent.data(), sent.size(), MSG_DONTWAIT);
    ASSERT_EQ(n, ssize_t(sent.size()));
    ASSERT_TRUE(run_until([&] { return !r.data.empty(); }));
    spin(3);
    EXPECT_FALSE(s.reading());
    EXPECT_GT(s.undelivered(), 16u * 1024) << "more than one ring buffer's worth kept";
    r.on_data_hook = nullptr;
    r.buf_size = 3;
    ASSERT_FALSE(s.start_reading());
    ASSERT_TRUE(run_until([&] { return r.data.size() >= sent.size(); }));
    EXPECT_EQ(r.data, sent);
    EXPECT_EQ(s.undelivered(), 0u);
    s.abort();
    ASSERT_TRUE(run_until([&] { return !s.registered() && r.holds == 0; }));
}

// Bytes kept while paused are dropped (not leaked, not delivered) by abort(), by the
// destructor, and after the loop's close.
TEST_P(UringStreamTest, TeardownWithAPausedInboxDropsIt) {
    for (int how = 0; how < 3; ++how) {
        auto [a, b] = socket_pair();
        Recorder r;
        auto s = std::make_unique<UringStream>(*loop, a.get(), r);
        ASSERT_FALSE(s->start_reading());
        r.on_data_hook = [&] { s->stop_reading(); };
        ASSERT_EQ(::write(b.get(), "first", 5), 5);
        ASSERT_TRUE(run_until([&] { return r.data == "first"; }));
        r.on_data_hook = nullptr;
        ASSERT_EQ(::write(b.get(), "kept", 4), 4);
        ASSERT_EQ(::write(b.get(), "more", 4), 4);
        spin(3);
        if (how == 0) {
            s->abort();
            EXPECT_EQ(s->undelivered(), 0u);
            ASSERT_TRUE(run_until([&] { return !s->registered() && r.holds == 0; }));
            EXPECT_TRUE(s->start_reading());  // Aborted: no more reading.
            spin(2);
        } else if (how == 1) {
            ASSERT_FALSE(s->registered()) << "the paused receive was cancelled";
            s.reset();
        } else {
            loop->close();  // The kept bytes go with the stream (a leak shows under ASan).
            EXPECT_FALSE(s->registered());
            EXPECT_TRUE(s->start_reading());
            s.reset();
        }
        EXPECT_EQ(r.data, "first");
        EXPECT_EQ(r.errors, 0);
        EXPECT_EQ(r.holds, 0);
        if (loop->closed()) break;
    }
}

TEST_P(UringStreamTest, EofComesAfterTheDataBeforeIt) {
    Recorder r;
    UringStream s(*loop, ours.get(), r);
    ASSERT_FALSE(s.start_reading());
    ASSERT_EQ(::write(peer.get(), "tail", 4), 4);
    ASSERT_EQ(::shutdown(peer.get(), SHUT_WR), 0);
    ASSERT_TRUE(run_until([&] { return r.eofs == 1; }));
    EXPECT_EQ(r.data, "tail");
    EXPECT_FALSE(s.reading());
    EXPECT_FALSE(s.registered());
    // The write side still works after the peer's EOF.
    Owned o{"reply"};
    ASSERT_FALSE(s.write(o.chunk()));
    EXPECT_EQ(read_some(peer.get(), 5), "reply");
    EXPECT_EQ(r.holds, 0);
}

TEST_P(UringStreamTest, AnswersFromADeliveryGoOutWithTheNextWait) {
    Recorder r;
    UringStream s(*loop, ours.get(), r);
    Owned answer{"pong"};
    r.on_data_hook = [&] {
        ASSERT_FALSE(s.write(answer.chunk()));
        // Queued for the SendOp, not sent by a syscall of its own.
        EXPECT_EQ(s.write_buffer_size(), 4u);
        EXPECT_TRUE(s.flushing());
    };
    ASSERT_FALSE(s.start_reading());
    ASSERT_EQ(::write(peer.get(), "ping", 4), 4);
    ASSERT_TRUE(run_until([&] { return answer.released == 1; }));
    EXPECT_EQ(read_some(peer.get(), 4), "pong");
    EXPECT_EQ(s.write_buffer_size(), 0u);
    EXPECT_EQ(r.drains, 1);
    s.abort();
    ASSERT_TRUE(run_until([&] { return !s.registered(); }));
}

TEST_P(UringStreamTest, WritesFromOutsideTheLoopGoAtOnce) {
    Recorder r;
    UringStream s(*loop, ours.get(), r);
    Owned o{"now"};
    ASSERT_FALSE(s.write(o.chunk()));
    EXPECT_EQ(o.released, 1);  // Sent by send(2) before write() returned.
    EXPECT_EQ(s.write_buffer_size(), 0u);
    EXPECT_FALSE(s.registered());
    EXPECT_EQ(read_some(peer.get(), 3), "now");
}

TEST_P(UringStreamTest, ALoopThatStopsSubmitsTheWritesOfItsLastPass) {
    Recorder r;
    UringStream s(*loop, ours.get(), r);
    Owned o{"before stop"};
    loop->call_soon([&] {
        ASSERT_FALSE(s.write(o.chunk()));
        EXPECT_EQ(s.write_buffer_size(), o.bytes.size());  // Deferred to the ring.
        loop->stop();
    });
    loop->run();
    // The loop is not running now, and the peer gets the bytes all the same.
    EXPECT_EQ(read_some(peer.get(), o.bytes.size()), o.bytes);
    ASSERT_TRUE(run_until([&] { return o.released == 1 && !s.registered(); }));
}

TEST_P(UringStreamTest, LargeWritesPauseAndResumeTheWriterAndArriveWhole) {
    Recorder r;
    UringStream s(*loop, ours.get(), r);
    std::vector<std::unique_ptr<Owned>> chunks;
    std::string want;
    for (int i = 0; i < 64; ++i) {
        chunks.push_back(std::make_unique<Owned>(Owned{std::string(64 * 1024, char('a' + i % 26))}));
        want += chunks.back()->bytes;
        ASSERT_FALSE(s.write(chunks.back()->chunk()));
    }
    EXPECT_EQ(r.pauses, 1);
    std::string got;
    ASSERT_TRUE(run_until([&] {
        char b[65536];
        ssize_t n;
        while ((n = ::recv(peer.get(), b, sizeof b, MSG_DONTWAIT)) > 0) got.append(b, size_t(n));
        return got.size() == want.size();
    }, 10.0));
    EXPECT_TRUE(got == want);
    ASSERT_TRUE(run_until([&] { return r.drains == 1; }));
    EXPECT_EQ(r.resumes, 1);
    for (auto& c : chunks) EXPECT_EQ(c->released, 1);
    s.abort();
}

TEST_P(UringStreamTest, ShutdownWriteWaitsForTheQueue) {
    Recorder r;
    UringStream s(*loop, ours.get(), r);
    std::string big(4 << 20, 'z');
    Owned o{big};
    ASSERT_FALSE(s.write(o.chunk()));
    ASSERT_GT(s.write_buffer_size(), 0u);
    ASSERT_FALSE(s.shutdown_write());
    EXPECT_EQ(s.write(Owned{"late"}.chunk()), std::errc::broken_pipe);
    std::string got;
    bool eof = false;
    ASSERT_TRUE(run_until([&] {
        char b[65536];
        ssize_t n;
        while ((n = ::recv(peer.get(), b, sizeof b, MSG_DONTWAIT)) > 0) got.append(b, size_t(n));
        if (n == 0) eof = true;
        return eof;
    }, 10.0));
    EXPECT_EQ(got.size(), big.size());
    EXPECT_EQ(o.released, 1);
}

TEST_P(UringStreamTest, AbortWithASendInFlightReleasesAndClosesAtOnce) {
    Recorder r;
    auto s = std::make_unique<UringStream>(*loop, ours.get(), r);
    ASSERT_FALSE(s->start_reading());
    std::string big(8 << 20, 'q');  // More than the socket buffers hold.
    Owned o{big};
    ASSERT_FALSE(s->write(o.chunk()));
    spin(2);
    ASSERT_TRUE(s->registered());
    s->abort();
    EXPECT_EQ(s->write_buffer_size(), 0u);
    // The kernel has let go of the socket: closing the fd closes it, now.
    ours.reset();
    std::string got = read_some(peer.get(), big.size(), 500);
    EXPECT_LT(got.size(), big.size());
    ASSERT_TRUE(run_until([&] { return !s->registered(); }));
    EXPECT_EQ(o.released, 1);
    EXPECT_EQ(r.errors, 0);
    ASSERT_TRUE(run_until([&] { return r.holds == 0; }));
    s.reset();
}

// A send of several chunks points the kernel at the stream's iovec array (and a
// short send advances it in place): the array must outlive the send, which an
// abort or the loop's close ends only when it reports.
class UringGatheredSendTest : public UringStreamTest {
protected:
    Recorder r;
    std::unique_ptr<UringStream> s;
    std::vector<std::unique_ptr<Owned>> chunks;

    // Writes four 1 MiB chunks and drains the peer until the first is sent: the
    // other three are then one gathered send, stuck on the full socket buffer.
    void start_gathered_send() {
        s = std::make_unique<UringStream>(*loop, ours.get(), r);
        for (int i = 0; i < 4; ++i) {
            chunks.push_back(std::make_unique<Owned>(Owned{std::string(1 << 20, char('a' + i))}));
            ASSERT_FALSE(s->write(chunks.back()->chunk()));
        }
        size_t drained = 0;
        ASSERT_TRUE(run_until([&] {
            char b[65536];
            ssize_t n;
            while (chunks[0]->released == 0 && (n = ::recv(peer.get(), b, sizeof b, MSG_DONTWAIT)) > 0)
                drained += size_t(n);
            return chunks[0]->released == 1;
        }));
        spin(2);
        ASSERT_TRUE(s->registered());
        ASSERT_EQ(chunks[1]->released, 0);
        ASSERT_LT(drained, 4u << 20);
    }
};

TEST_P(UringGatheredSendTest, AbortKeepsTheIovecsUntilTheSendReports) {
    start_gathered_send();
    s->abort();
    ours.reset();
    ASSERT_TRUE(run_until([&] { return !s->registered(); }));
    for (auto& c : chunks) EXPECT_EQ(c->released, 1);
    EXPECT_EQ(r.errors, 0);
    s.reset();
}

TEST_P(UringGatheredSendTest, PeerDrainingAfterAShortGatheredSendGetsEveryByte) {
    start_gathered_send();
    std::string got;
    ASSERT_TRUE(run_until([&] {
        char b[65536];
        ssize_t n;
        while ((n = ::recv(peer.get(), b, sizeof b, MSG_DONTWAIT)) > 0) got.append(b, size_t(n));
        return chunks[3]->released == 1;
    }));
    while (got.size() < (3u << 20)) {
        std::string more = read_some(peer.get(), 1, 500);
        if (more.empty()) break;
        got += more;
    }
    // The tail of chunk 0 (whatever start_gathered_send had not read), then 1..3 whole.
    ASSERT_GE(got.size(), 3u << 20);
    EXPECT_EQ(got.substr(got.size() - (3u << 20)),
              std::string(1 << 20, 'b') + std::string(1 << 20, 'c') + std::string(1 << 20, 'd'));
    s->abort();
    ASSERT_TRUE(run_until([&] { return !s->registered(); }));
    s.reset();
}

TEST_P(UringGatheredSendTest, ClosingTheLoopReleasesTheGatheredChunksOnce) {
    start_gathered_send();
    loop->close();
    EXPECT_FALSE(s->registered());
    EXPECT_EQ(r.loop_closed, 1);
    for (auto& c : chunks) EXPECT_EQ(c->released, 1);
    s.reset();
}

// Writes of more than 2 GiB: a submission entry's length is 32 bits (the kernel
// refuses more than INT_MAX) and the SendOp reports its total as an int, so the
// stream sends such chunks in parts, alone or gathered with others. The big
// chunks are an untouched private mapping (the kernel's zero page): no memory.
TEST_P(UringStreamTest, WritesOfMoreThanTwoGibibytesArriveWhole) {
    constexpr size_t kBig = (size_t(5) << 29) + 123;  // 2.5 GiB and a bit.
    constexpr size_t kBig2 = (size_t(5) << 28) + 7;   // 1.25 GiB and a bit.
    void* mem = ::mmap(nullptr, kBig, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    ASSERT_NE(mem, MAP_FAILED);
    Recorder r;
    UringStream s(*loop, ours.get(), r);
    int released = 0;
    auto count = [](void* o) noexcept { ++*static_cast<int*>(o); };
    const std::string marker = "0123456789";
    ASSERT_FALSE(s.write({static_cast<const char*>(mem), kBig, &released, count}));
    ASSERT_FALSE(s.write({marker.data(), marker.size(), &released, count}));
    ASSERT_FALSE(s.write({static_cast<const char*>(mem), kBig2, &released, count}));
    const size_t want = kBig + marker.size() + kBig2;
    size_t got = 0;
    std::string seen;  // The non-zero bytes and where they were.
    size_t first_nonzero = 0;
    ASSERT_TRUE(run_until([&] {
        static char b[1 << 20];
        static const char zeros[1 << 20] = {};
        ssize_t n;
        while ((n = ::recv(peer.get(), b, sizeof b, MSG_DONTWAIT)) > 0) {
            if (std::memcmp(b, zeros, size_t(n)) != 0)
                for (ssize_t i = 0; i < n; ++i)
                    if (b[i] != 0) {
                        if (seen.empty()) first_nonzero = got + size_t(i);
                        seen.push_back(b[i]);
                    }
            got += size_t(n);
        }
        return got == want || r.errors > 0;
    }, 120.0));
    EXPECT_EQ(r.errors, 0) << r.last_error.message();
    EXPECT_EQ(got, want);
    EXPECT_EQ(seen, marker);
    EXPECT_EQ(first_nonzero, kBig);
    ASSERT_TRUE(run_until([&] { return released == 3; }));
    EXPECT_EQ(s.write_buffer_size(), 0u);
    s.abort();
    ASSERT_TRUE(run_until([&] { return !s.registered(); }));
    ::munmap(mem, kBig);
}

TEST_P(UringStreamTest, PeerResetIsAReadError) {
    Recorder r;
    UringStream s(*loop, ours.get(), r);
    ASSERT_FALSE(s.start_reading());
    linger lg{1, 0};
    ASSERT_EQ(::setsockopt(peer.get(), SOL_SOCKET, SO_LINGER, &lg, sizeof lg), 0);
    ASSERT_EQ(::write(ours.get(), "x", 1), 1);  // Unread data makes close() send RST.
    peer.reset();
    ASSERT_TRUE(run_until([&] { return r.errors + r.eofs > 0; }));
    if (r.errors) {
        EXPECT_EQ(r.last_error, std::errc::connection_reset);
        EXPECT_FALSE(r.error_while_writing);
    }
    ASSERT_TRUE(run_until([&] { return !s.registered(); }));
}

TEST_P(UringStreamTest, WriteToAClosedPeerIsAWriteError) {
    Recorder r;
    UringStream s(*loop, ours.get(), r);
    peer.reset();
    Owned a{"one"}, b{"two"};
    // The first write fails at once (EPIPE); one made while a send is queued fails
    // when the send completes. Either way each chunk is released once.
    bool wrote_b = false;
    if (!s.write(a.chunk())) {
        s.write(b.chunk());
        wrote_b = true;
    }
    ASSERT_TRUE(run_until([&] { return r.errors == 1; }));
    EXPECT_TRUE(r.error_while_writing);
    EXPECT_TRUE(r.last_error == std::errc::broken_pipe || r.last_error == std::errc::connection_reset);
    EXPECT_EQ(a.released, 1);
    EXPECT_EQ(b.released, wrote_b ? 1 : 0);
}

TEST_P(UringStreamTest, ClosingTheLoopReportsToTheOwnerOnce) {
    Recorder r;
    UringStream s(*loop, ours.get(), r);
    ASSERT_FALSE(s.start_reading());
    std::string big(8 << 20, 'w');
    Owned o{big};
    ASSERT_FALSE(s.write(o.chunk()));
    spin(2);
    ASSERT_TRUE(s.registered());
    loop->close();
    EXPECT_FALSE(s.registered());
    EXPECT_EQ(r.loop_closed, 1);
    EXPECT_EQ(o.released, 1);
    EXPECT_EQ(r.holds, 0);
    // Calls after the close fail cleanly.
    EXPECT_TRUE(s.start_reading());
    EXPECT_EQ(s.write(Owned{"x"}.chunk()), std::errc::broken_pipe);
}

TEST_P(UringStreamTest, ManyStreamsShareTheBufferRing) {
    constexpr int kStreams = 40;
    std::vector<std::pair<Fd, Fd>> pairs;
    std::vector<std::unique_ptr<Recorder>> recs;
    std::vector<std::unique_ptr<UringStream>> streams;
    for (int i = 0; i < kStreams; ++i) {
        pairs.push_back(socket_pair());
        recs.push_back(std::make_unique<Recorder>());
        streams.push_back(std::make_unique<UringStream>(*loop, pairs.back().first.get(), *recs.back()));
        ASSERT_FALSE(streams.back()->start_reading());
    }
    // Enough bytes to run the shared ring dry: receives that get ENOBUFS start again.
    std::string blob(256 * 1024, 'b');
    for (int round = 0; round < 4; ++round) {
        for (auto& p : pairs) {
            ssize_t n = ::send(p.second.get(), blob.data(), blob.size(), MSG_DONTWAIT);
            if (round == 0) {
                ASSERT_GT(n, 0);
            }
        }
        spin(2);
    }
    for (auto& p : pairs) ::shutdown(p.second.get(), SHUT_WR);
    ASSERT_TRUE(run_until([&] {
        for (auto& r : recs)
            if (r->eofs == 0) return false;
        return true;
    }, 10.0));
    for (auto& s : streams) s->abort();
    ASSERT_TRUE(run_until([&] {
        for (auto& s : streams)
            if (s->registered()) return false;
        return true;
    }));
}

}  // namespace

namespace {

/// A Recorder that takes received bytes directly, as the binding's plain-Protocol
/// handler does, and notes the size of every delivery.
struct DirectRecorder : Recorder {
    std::vector<size_t> reads;
    size_t parted = 0;  // Deliveries joined from several received chunks.
    void took(size_t n) {
        reads.push_back(n);
        if (on_data_hook) on_data_hook();
    }
    bool on_bytes(const char* p, size_t n) noexcept override {
        data.append(p, n);
        took(n);
        return true;
    }
    bool on_bytes_parts(const iovec* parts, size_t count, size_t total) noexcept override {
        size_t sum = 0;
        for (size_t i = 0; i < count; ++i) {
            data.append(static_cast<const char*>(parts[i].iov_base), parts[i].iov_len);
            sum += parts[i].iov_len;
        }
        EXPECT_EQ(sum, total);
        ++parted;
        took(total);
        return true;
    }
};

// Aborts every stream and runs the loop until they are all unregistered: streams are
// aborted before they are destroyed, even when an assertion failed.
struct AbortAll {
    EventLoop& loop;
    std::vector<std::unique_ptr<UringStream>>& streams;
    ~AbortAll() {
        for (auto& s : streams) s->abort();
        EXPECT_TRUE(run_loop_until(loop, [&] {
            for (auto& s : streams)
                if (s->registered()) return false;
            return true;
        }));
    }
};

std::string pattern(size_t n) {
    std::string s;
    for (int i = 0; s.size() < n; ++i) s += std::to_string(i) + ",";
    s.resize(n);
    return s;
}

// Sends all of `bytes` from `fd` (made roomy enough first); false when the socket
// cannot hold that much at once.
bool send_all_at_once(int fd, const std::string& bytes) {
    int size = int(bytes.size()) * 2;
    ::setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &size, sizeof size);
    return ::send(fd, bytes.data(), bytes.size(), MSG_DONTWAIT) == ssize_t(bytes.size());
}

}  // namespace

// Every buffer of the ring is back: a new stream, twice, receives 900 KiB (several
// times the ring) in full.
void UringStreamTest::expect_every_buffer_back() {
    for (int round = 0; round < 2; ++round) {
        auto [a, b] = socket_pair();
        DirectRecorder r2;
        UringStream s2(*loop, a.get(), r2);
        const std::string more = pattern(900 * 1024);
        if (!send_all_at_once(b.get(), more)) GTEST_SKIP() << "the socket buffer cannot hold 900 KiB";
        ASSERT_FALSE(s2.start_reading());
        ASSERT_TRUE(run_until([&] { return r2.data.size() >= more.size(); }));
        EXPECT_EQ(r2.data, more);
        s2.abort();
        ASSERT_TRUE(run_until([&] { return !s2.registered() && r2.holds == 0; }));
    }
}

// A burst that fills several ring buffers in one wait is delivered as one read.
TEST_P(UringStreamTest, ABurstIsDeliveredAsOneRead) {
    DirectRecorder r;
    UringStream s(*loop, ours.get(), r);
    const std::string sent = pattern(100 * 1024);
    ASSERT_TRUE(send_all_at_once(peer.get(), sent));
    ASSERT_FALSE(s.start_reading());
    ASSERT_TRUE(run_until([&] { return r.data.size() >= sent.size(); }));
    EXPECT_EQ(r.data, sent);
    ASSERT_EQ(r.reads.size(), 1u) << "one delivery for what one wait brought";
    // An incremental ring takes the burst into one buffer; whole buffers need several.
    EXPECT_EQ(r.parted, GetParam() ? 0u : 1u);
    // A handler that copies (a BufferedProtocol's) gets a burst in as few reads as its
    // buffer allows, each filled across the chunks.
    Recorder c;
    auto [a, b] = socket_pair();
    UringStream s2(*loop, a.get(), c);
    ASSERT_TRUE(send_all_at_once(b.get(), sent));
    ASSERT_FALSE(s2.start_reading());
    ASSERT_TRUE(run_until([&] { return c.data.size() >= sent.size(); }));
    EXPECT_EQ(c.data, sent);
    s.abort();
    s2.abort();
    ASSERT_TRUE(run_until([&] { return !s.registered() && !s2.registered() && r.holds == 0 && c.holds == 0; }));
}

// One delivery takes at most asyncio's max_size (256 KiB); a protocol that pauses in
// it gets nothing more until it resumes, and then the rest, in order.
TEST_P(UringStreamTest, PauseInsideAJoinedDeliveryKeepsTheRest) {
    DirectRecorder r;
    UringStream s(*loop, ours.get(), r);
    const std::string sent = pattern(400 * 1024);
    if (!send_all_at_once(peer.get(), sent)) GTEST_SKIP() << "the socket buffer cannot hold 400 KiB";
    r.on_data_hook = [&] { s.stop_reading(); };
    ASSERT_FALSE(s.start_reading());
    ASSERT_TRUE(run_until([&] { return !r.reads.empty(); }));
    spin(5);
    ASSERT_EQ(r.reads.size(), 1u) << "nothing after the pause";
    EXPECT_GT(r.reads[0], 16u * 1024) << "joined from several chunks";
    EXPECT_LE(r.reads[0], 256u * 1024);
    EXPECT_EQ(r.data, sent.substr(0, r.reads[0]));
    EXPECT_FALSE(s.reading());
    r.on_data_hook = nullptr;
    ASSERT_FALSE(s.start_reading());
    ASSERT_TRUE(run_until([&] { return r.data.size() >= sent.size(); }));
    EXPECT_EQ(r.data, sent);
    for (size_t n : r.reads) EXPECT_LE(n, 256u * 1024);
    s.abort();
    ASSERT_TRUE(run_until([&] { return !s.registered() && r.holds == 0; }));
}

// EOF right behind a burst: the joined data first, then EOF, once.
TEST_P(UringStreamTest, EofComesAfterAJoinedDelivery) {
    DirectRecorder r;
    UringStream s(*loop, ours.get(), r);
    const std::string sent = pattern(100 * 1024);
    ASSERT_TRUE(send_all_at_once(peer.get(), sent));
    ASSERT_EQ(::shutdown(peer.get(), SHUT_WR), 0);
    ASSERT_FALSE(s.start_reading());
    ASSERT_TRUE(run_until([&] { return r.eofs == 1; }));
    EXPECT_EQ(r.data, sent);
    EXPECT_EQ(r.reads.size(), 1u);
    spin(2);
    EXPECT_EQ(r.eofs, 1);
    EXPECT_FALSE(s.reading());
    EXPECT_FALSE(s.registered());
    EXPECT_EQ(r.holds, 0);
}

// Aborting inside a joined delivery drops nothing twice and leaves no buffer taken:
// the ring serves later streams in full.
TEST_P(UringStreamTest, AbortInsideAJoinedDelivery) {
    DirectRecorder r;
    auto s = std::make_unique<UringStream>(*loop, ours.get(), r);
    const std::string sent = pattern(400 * 1024);
    if (!send_all_at_once(peer.get(), sent)) GTEST_SKIP() << "the socket buffer cannot hold 400 KiB";
    r.on_data_hook = [&] { s->abort(); };
    ASSERT_FALSE(s->start_reading());
    ASSERT_TRUE(run_until([&] { return !r.reads.empty() && !s->registered() && r.holds == 0; }));
    EXPECT_EQ(r.reads.size(), 1u);
    EXPECT_EQ(s->undelivered(), 0u);
    s.reset();
    // Every buffer is back: another stream receives a full ring's worth.
    expect_every_buffer_back();
}

// Bytes a handler declines wait in the inbox while their receive has ended (here at
// EOF): closing the loop frees the ring's buffers, and a pause asked for after that
// must not copy out of them.
TEST_P(UringStreamTest, PauseAfterTheLoopClosedUnderHeldBytesReadsNoFreedBuffer) {
    Recorder r;
    r.buf_size = 0;  // Takes nothing for now.
    auto s = std::make_unique<UringStream>(*loop, ours.get(), r);
    ASSERT_EQ(::write(peer.get(), "declined", 8), 8);
    ASSERT_EQ(::shutdown(peer.get(), SHUT_WR), 0);
    ASSERT_FALSE(s->start_reading());
    ASSERT_TRUE(run_until([&] { return !s->registered() && s->undelivered() == 8; }));
    spin(2);
    EXPECT_EQ(r.data, "");
    loop->close();
    s->stop_reading();
    EXPECT_FALSE(s->reading());
    EXPECT_TRUE(s->start_reading());
    s.reset();
    EXPECT_EQ(r.holds, 0);
}

// A handler may pause in an offer of bytes and then decline them (to take them later
// through read_buffer()). What was offered then waits for the resume like any bytes
// kept while paused: out of the shared ring, which other connections need. Here each
// of several streams pauses that way on a burst; every later stream must still get
// buffers, and every stream its bytes in order once resumed.
TEST_P(UringStreamTest, PausingInAnOfferThenDecliningKeepsNoRingBuffer) {
    struct PauseThenDecline : Recorder {
        UringStream* s = nullptr;
        bool paused = false;
        bool decline() {
            if (paused) return !s->reading();
            paused = true;
            s->stop_reading();
            return true;
        }
        bool on_bytes(const char* p, size_t n) noexcept override {
            if (decline()) return false;
            data.append(p, n);
            return true;
        }
        bool on_bytes_parts(const iovec* parts, size_t count, size_t) noexcept override {
            if (decline()) return false;
            for (size_t i = 0; i < count; ++i) data.append(static_cast<const char*>(parts[i].iov_base), parts[i].iov_len);
            return true;
        }
    };
    constexpr int kStreams = 12;
    const std::string sent = pattern(400 * 1024);
    std::vector<std::pair<Fd, Fd>> pairs;
    std::vector<std::unique_ptr<PauseThenDecline>> recs;
    std::vector<std::unique_ptr<UringStream>> streams;
    AbortAll teardown{*loop, streams};
    for (int i = 0; i < kStreams; ++i) {
        pairs.push_back(socket_pair());
        if (!send_all_at_once(pairs.back().second.get(), sent)) GTEST_SKIP() << "the socket buffer cannot hold 400 KiB";
        recs.push_back(std::make_unique<PauseThenDecline>());
        streams.push_back(std::make_unique<UringStream>(*loop, pairs.back().first.get(), *recs.back()));
        recs.back()->s = streams.back().get();
        ASSERT_FALSE(streams.back()->start_reading());
        ASSERT_TRUE(run_until([&] { return recs.back()->paused; }, 2.0))
            << "stream " << i << " got no ring buffer: the paused streams before it keep them";
        spin(2);
        EXPECT_EQ(recs.back()->data, "");
        EXPECT_GT(streams.back()->undelivered(), 0u);
    }
    for (int i = 0; i < kStreams; ++i) ASSERT_FALSE(streams[i]->start_reading());
    ASSERT_TRUE(run_until([&] {
        for (auto& r : recs)
            if (r->data.size() < sent.size()) return false;
        return true;
    }, 10.0));
    for (int i = 0; i < kStreams; ++i) EXPECT_EQ(recs[i]->data, sent) << "stream " << i;
}

// A handler that aborts the stream in an offer and declines the bytes leaves none
// of them held: the stream keeps nothing, and the ring serves later streams in full.
TEST_P(UringStreamTest, AbortingInAnOfferThenDecliningKeepsNothing) {
    struct AbortThenDecline : Recorder {
        UringStream* s = nullptr;
        int offers = 0;
        bool on_bytes(const char*, size_t) noexcept override {
            ++offers;
            s->abort();
            return false;
        }
        bool on_bytes_parts(const iovec*, size_t, size_t) noexcept override {
            ++offers;
            s->abort();
            return false;
        }
    };
    AbortThenDecline r;
    auto s = std::make_unique<UringStream>(*loop, ours.get(), r);
    r.s = s.get();
    const std::string sent = pattern(400 * 1024);
    if (!send_all_at_once(peer.get(), sent)) GTEST_SKIP() << "the socket buffer cannot hold 400 KiB";
    ASSERT_FALSE(s->start_reading());
    ASSERT_TRUE(run_until([&] { return r.offers > 0 && !s->registered() && r.holds == 0; }));
    EXPECT_EQ(r.offers, 1) << "nothing is offered after the abort";
    EXPECT_EQ(r.data, "");
    EXPECT_EQ(s->undelivered(), 0u);
    // Every buffer is back (not only once the stream is gone).
    expect_every_buffer_back();
    s.reset();
}

// The loop closes while bytes a handler declined are held in the ring with the
// receive still pending: the cancelled receive's report drops them (the ring goes
// with the loop), and nothing of them is read afterwards.
TEST_P(UringStreamTest, ClosingTheLoopUnderHeldBytesWithAPendingReceiveDropsThem) {
    Recorder r;
    r.buf_size = 0;  // Takes nothing for now.
    auto s = std::make_unique<UringStream>(*loop, ours.get(), r);
    ASSERT_FALSE(s->start_reading());
    ASSERT_EQ(::write(peer.get(), "declined", 8), 8);
    ASSERT_TRUE(run_until([&] { return s->undelivered() == 8; }));
    spin(2);
    ASSERT_TRUE(s->registered());
    loop->close();
    EXPECT_FALSE(s->registered());
    EXPECT_EQ(r.loop_closed, 1);
    EXPECT_EQ(s->undelivered(), 0u);
    s->stop_reading();
    s.reset();
    EXPECT_EQ(r.data, "");
    EXPECT_EQ(r.holds, 0);
}

// fork() (here the engine's after_fork() in this process) while a stream holds bytes
// in a ring buffer: the held bytes survive, are delivered first, and the buffer
// serves the new ring once they are; everything after arrives intact and in order.
TEST_P(UringStreamTest, AfterForkHeldBytesComeFirstAndTheirBufferReturns) {
    Recorder r;
    r.buf_size = 0;  // Takes nothing for now.
    UringStream s(*loop, ours.get(), r);
    ASSERT_FALSE(s.start_reading());
    ASSERT_EQ(::write(peer.get(), "before-fork,", 12), 12);
    ASSERT_TRUE(run_until([&] { return s.undelivered() == 12; }));
    spin(2);
    ASSERT_FALSE(loop->after_fork());
    // The new ring receives while the bytes are still held.
    ASSERT_EQ(::write(peer.get(), "after-fork,", 11), 11);
    ASSERT_TRUE(run_until([&] { return s.undelivered() == 23; }));
    r.buf_size = sizeof r.buf;
    ASSERT_EQ(::write(peer.get(), "!", 1), 1);  // A completion, to deliver them all.
    ASSERT_TRUE(run_until([&] { return r.data.size() >= 24; }));
    EXPECT_EQ(r.data, "before-fork,after-fork,!");
    // Several rings' worth, to cycle through every buffer (the one held included).
    const std::string more = pattern(5 * 1024 * 1024);
    std::string want = r.data + more;
    size_t sent = 0;
    ASSERT_TRUE(run_until([&] {
        if (sent < more.size()) {
            ssize_t n = ::send(peer.get(), more.data() + sent, std::min<size_t>(64 * 1024, more.size() - sent), MSG_DONTWAIT);
            if (n > 0) sent += size_t(n);
        }
        return r.data.size() >= want.size();
    }, 20.0));
    EXPECT_TRUE(r.data == want) << "the bytes after fork() arrived damaged or out of order";
    s.abort();
    ASSERT_TRUE(run_until([&] { return !s.registered() && r.holds == 0; }));
}

// Many connections' receives interleave in the shared ring (with an incremental one,
// inside the same buffers) and run it dry, so that receives end with ENOBUFS and
// start again: every stream still gets exactly its own bytes, in order, whether its
// handler takes them directly or copies them.
TEST_P(UringStreamTest, InterleavedReceivesThroughARingRunDryKeepEachStreamsBytes) {
    constexpr int kStreams = 24;
    constexpr size_t kBytes = 600 * 1024;
    std::vector<std::pair<Fd, Fd>> pairs;
    std::vector<std::unique_ptr<Recorder>> recs;
    std::vector<std::unique_ptr<UringStream>> streams;
    std::vector<std::string> want;
    std::vector<size_t> sent(kStreams, 0);
    AbortAll teardown{*loop, streams};
    for (int i = 0; i < kStreams; ++i) {
        pairs.push_back(socket_pair());
        if (i % 2) recs.push_back(std::make_unique<DirectRecorder>());
        else recs.push_back(std::make_unique<Recorder>());
        streams.push_back(std::make_unique<UringStream>(*loop, pairs.back().first.get(), *recs.back()));
        std::string w;
        for (int k = 0; w.size() < kBytes; ++k) {
            w += 's';
            w += std::to_string(i);
            w += '.';
            w += std::to_string(k);
            w += ';';
        }
        w.resize(kBytes);
        want.push_back(std::move(w));
        // What waits before the first receive: together several times the ring.
        int size = 512 * 1024;
        ::setsockopt(pairs.back().second.get(), SOL_SOCKET, SO_SNDBUF, &size, sizeof size);
        ssize_t n = ::send(pairs.back().second.get(), want.back().data(), 256 * 1024, MSG_DONTWAIT);
        ASSERT_GT(n, 0);
        sent[i] = size_t(n);
    }
    for (auto& s : streams) ASSERT_FALSE(s->start_reading());
    ASSERT_TRUE(run_until([&] {
        bool done = true;
        for (int i = 0; i < kStreams; ++i) {
            if (sent[i] < kBytes) {
                // Uneven pieces, so that receives end at every offset of a buffer.
                const size_t piece = std::min(kBytes - sent[i], size_t(1 + (i * 7919 + sent[i]) % 40000));
                ssize_t n = ::send(pairs[i].second.get(), want[i].data() + sent[i], piece, MSG_DONTWAIT);
                if (n > 0) sent[i] += size_t(n);
            }
            done &= recs[i]->data.size() >= kBytes;
        }
        return done;
    }, 30.0));
    for (int i = 0; i < kStreams; ++i) EXPECT_TRUE(recs[i]->data == want[i]) << "stream " << i << " got other bytes";
}

namespace {
std::string ring_kind(const ::testing::TestParamInfo<bool>& info) { return info.param ? "incremental" : "whole"; }
}  // namespace
INSTANTIATE_TEST_SUITE_P(Rings, UringStreamTest, ::testing::Bool(), ring_kind);
INSTANTIATE_TEST_SUITE_P(Rings, UringGatheredSendTest, ::testing::Bool(), ring_kind);
