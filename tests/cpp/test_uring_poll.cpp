// test_uring_poll.cpp: the uring Poller's one-shot and multishot polls, and the probe's optional features.
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/wait.h>

#include <cerrno>
#include <cstdint>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "cxxloop/loop.hpp"
#include "cxxloop/poller.hpp"
#include "cxxloop/uring.hpp"
#include "cxxloop/uring_stream.hpp"
#include "test_util.hpp"

using namespace cxxloop;
using namespace cxxloop::test;

namespace {

constexpr int64_t kSecond = 1'000'000'000;

/// True when `fd` becomes readable within `ms` milliseconds.
bool readable_within(int fd, int ms) {
    pollfd p{fd, POLLIN, 0};
    return ::poll(&p, 1, ms) == 1;
}

/// Reads everything `fd` holds.
void drain(int fd) {
    char buf[256];
    while (::read(fd, buf, sizeof buf) > 0) {}
}

Fd make_eventfd() { return Fd(::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC)); }

void bump(int efd) {
    uint64_t one = 1;
    EXPECT_EQ(::write(efd, &one, sizeof one), ssize_t(sizeof one));
}

/// Runs the fixture's tests twice: fds watched with add() (one-shot polls re-armed
/// after each report) and with add_drained() (one multishot poll).
class UringPollerTest : public ::testing::TestWithParam<bool> {
protected:
    std::unique_ptr<Poller> poller = make_test_poller("uring");
    Uring* ring = nullptr;

    void SetUp() override {
        if (auto why = unavailable_reason("uring"); !why.empty()) GTEST_SKIP() << why;
        ring = poller->uring();
        ASSERT_NE(ring, nullptr);
    }
    bool drained() const { return GetParam(); }
    std::error_code watch(int fd, uint32_t interest) {
        return drained() ? poller->add_drained(fd, interest) : poller->add(fd, interest);
    }
    /// Every report of one wait, failing the test on an error.
    std::vector<PollEvent> poll_now(int64_t timeout_ns = 0) {
        std::vector<PollEvent> out;
        EXPECT_FALSE(poller->wait(timeout_ns, out));
        return out;
    }
    /// The events of `fd` in one wait (0: not reported); at most one report per fd.
    uint32_t events_for(int fd, int64_t timeout_ns = 0) {
        uint32_t ev = 0;
        int count = 0;
        for (const PollEvent& e : poll_now(timeout_ns)) {
            if (e.fd != fd) continue;
            ev |= e.events;
            ++count;
        }
        EXPECT_LE(count, 1) << "an fd is reported at most once per wait";
        return ev;
    }
};

}  // namespace

// --- level semantics ---------------------------------------------------------------------

// What asyncio's add_reader promises: a callback that leaves data behind is called again.
TEST(UringPollerLevel, UndrainedFdIsReportedAgainUntilDrained) {
    if (auto why = unavailable_reason("uring"); !why.empty()) GTEST_SKIP() << why;
    auto poller = make_poller("uring");
    auto [a, b] = socket_pair();
    ASSERT_FALSE(poller->add(a.get(), kReadable));
    ASSERT_EQ(::write(b.get(), "xyz", 3), 3);
    for (int i = 0; i < 3; ++i) {
        std::vector<PollEvent> out;
        ASSERT_FALSE(poller->wait(kSecond, out));
        ASSERT_EQ(out.size(), 1u) << "pass " << i;
        EXPECT_EQ(out[0].fd, a.get());
        EXPECT_EQ(out[0].events, kReadable);
        char c;
        ASSERT_EQ(::read(a.get(), &c, 1), 1);  // One byte per report, as a datagram reader does.
    }
    // Drained: the next waits report nothing, however often they look.
    for (int i = 0; i < 3; ++i) {
        std::vector<PollEvent> out;
        ASSERT_FALSE(poller->wait(0, out));
        EXPECT_TRUE(out.empty()) << "pass " << i;
    }
    put_byte(b.get());
    std::vector<PollEvent> out;
    ASSERT_FALSE(poller->wait(kSecond, out));
    ASSERT_EQ(out.size(), 1u);
    EXPECT_EQ(out[0].events, kReadable);
}

TEST(UringPollerLevel, WritableFdIsReportedAtEveryWait) {
    if (auto why = unavailable_reason("uring"); !why.empty()) GTEST_SKIP() << why;
    auto poller = make_poller("uring");
    auto [a, b] = socket_pair();
    ASSERT_FALSE(poller->add(a.get(), kWritable));
    for (int i = 0; i < 4; ++i) {
        std::vector<PollEvent> out;
        ASSERT_FALSE(poller->wait(kSecond, out));
        ASSERT_EQ(out.size(), 1u) << "pass " << i;
        EXPECT_EQ(out[0].events, kWritable);
    }
}

// A consumer that drains at each report sees each new write once, under either poll.
TEST_P(UringPollerTest, DrainedFdIsReportedOncePerNewWrite) {
    auto [a, b] = socket_pair();
    ASSERT_FALSE(watch(a.get(), kReadable));
    EXPECT_EQ(events_for(a.get()), 0u);
    for (int i = 0; i < 5; ++i) {
        put_byte(b.get());
        EXPECT_EQ(events_for(a.get(), kSecond), kReadable) << "write " << i;
        drain(a.get());
        EXPECT_EQ(events_for(a.get()), 0u) << "a drained fd is not reported again";
        EXPECT_EQ(events_for(a.get()), 0u);
    }
}

// Several writes before a wait: one report (a multishot poll may complete once per write).
TEST_P(UringPollerTest, BurstOfWritesIsOneReport) {
    Fd efd = make_eventfd();
    ASSERT_FALSE(watch(efd.get(), kReadable));
    for (int i = 0; i < 4; ++i) bump(efd.get());
    EXPECT_EQ(events_for(efd.get(), kSecond), kReadable);
    drain(efd.get());
    EXPECT_EQ(events_for(efd.get()), 0u);
}

// read -> read|write -> write -> none, each change made while the poll is live.
TEST_P(UringPollerTest, InterestChangesWhileThePollIsLive) {
    auto [a, b] = socket_pair();
    ASSERT_FALSE(watch(a.get(), kReadable));
    put_byte(b.get());
    EXPECT_EQ(events_for(a.get(), kSecond), kReadable);
    ASSERT_FALSE(poller->modify(a.get(), kReadable | kWritable));
    EXPECT_EQ(events_for(a.get(), kSecond), kReadable | kWritable) << "ready for both when re-armed";
    drain(a.get());
    if (!drained()) EXPECT_EQ(events_for(a.get()), kWritable) << "level: still writable";
    else EXPECT_EQ(events_for(a.get()), 0u) << "multishot: no wake-up since the last report";
    put_byte(b.get());
    EXPECT_EQ(events_for(a.get(), kSecond) & kReadable, kReadable);
    drain(a.get());
    ASSERT_FALSE(poller->modify(a.get(), kWritable));
    EXPECT_EQ(events_for(a.get(), kSecond), kWritable) << "the new poll reports the level it finds";
    put_byte(b.get());  // Readable now, but only writing is watched.
    for (int i = 0; i < 2; ++i) EXPECT_EQ(events_for(a.get()) & kReadable, 0u);
    drain(a.get());
    ASSERT_FALSE(poller->remove(a.get()));
    put_byte(b.get());
    EXPECT_EQ(events_for(a.get()), 0u) << "the removed poll's completion is stale";
    EXPECT_EQ(poller->modify(a.get(), kReadable), std::errc::no_such_file_or_directory);
    // Watched again under the same number: the old polls stay stale.
    ASSERT_FALSE(watch(a.get(), kReadable));
    EXPECT_EQ(events_for(a.get(), kSecond), kReadable);
}

// The loop removes an fd before closing it: the file must really close (the poll held a
// reference), and the number, reused, is a new watch with nothing of the old one.
TEST_P(UringPollerTest, ClosedFdNumberReusedWhileWatchedAgain) {
    auto [a, b] = socket_pair();
    const int num = a.get();
    ASSERT_FALSE(watch(num, kReadable));
    EXPECT_EQ(events_for(num), 0u);
    ASSERT_FALSE(poller->remove(num));
    a.reset();
    ASSERT_TRUE(readable_within(b.get(), 1000)) << "the peer sees the close at once";
    char c;
    EXPECT_EQ(::read(b.get(), &c, 1), 0);
    auto [x, y] = socket_pair();
    Fd other, spare;
    if (x.get() == num) other = std::move(x);
    else if (y.get() == num) other = std::move(y);
    ASSERT_EQ(other.get(), num) << "the lowest free number is reused";
    Fd peer = x.get() >= 0 ? std::move(x) : std::move(y);
    ASSERT_FALSE(watch(num, kReadable));
    EXPECT_EQ(events_for(num), 0u);
    put_byte(peer.get());
    EXPECT_EQ(events_for(num, kSecond), kReadable);
    drain(num);
    EXPECT_EQ(events_for(num), 0u);
}

// A watched fd closed without remove(): its poll fails or keeps the old file; either way
// remove() forgets it and the number can be watched again.
TEST_P(UringPollerTest, ClosedBehindOurBackThenRemovedAndReused) {
    auto [a, b] = socket_pair();
    const int num = a.get();
    ASSERT_FALSE(watch(num, kReadable));
    EXPECT_EQ(events_for(num), 0u);
    a.reset();
    EXPECT_FALSE(poller->remove(num));
    Fd efd = make_eventfd();
    ASSERT_EQ(efd.get(), num);
    ASSERT_FALSE(watch(num, kReadable));
    bump(num);
    EXPECT_EQ(events_for(num, kSecond), kReadable);
}

TEST_P(UringPollerTest, AfterForkInTheSameProcessKeepsTheWatch) {
    Fd efd = make_eventfd();
    ASSERT_FALSE(watch(efd.get(), kReadable));
    ASSERT_FALSE(poller->after_fork());
    EXPECT_EQ(events_for(efd.get()), 0u);
    bump(efd.get());
    EXPECT_EQ(events_for(efd.get(), kSecond), kReadable);
    drain(efd.get());
    EXPECT_EQ(events_for(efd.get()), 0u);
    bump(efd.get());
    EXPECT_EQ(events_for(efd.get(), kSecond), kReadable);
}

TEST_P(UringPollerTest, AfterForkTheChildPollsOnItsOwnRing) {
    Fd efd = make_eventfd();
    auto [r, w] = make_pipe();
    ASSERT_FALSE(watch(efd.get(), kReadable));
    ASSERT_FALSE(watch(r.get(), kReadable));
    pid_t pid = ::fork();
    ASSERT_GE(pid, 0);
    if (pid == 0) {
        int code = 0;
        if (poller->after_fork()) code = 1;
        uint64_t one = 1;
        if (!code && ::write(efd.get(), &one, sizeof one) != sizeof one) code = 2;
        std::vector<PollEvent> out;
        if (!code && (poller->wait(kSecond, out) || out.size() != 1 || out[0].fd != efd.get())) code = 3;
        uint64_t v;
        if (!code && ::read(efd.get(), &v, sizeof v) != sizeof v) code = 4;
        out.clear();
        if (!code && (poller->wait(0, out) || !out.empty())) code = 5;
        if (!code && poller->remove(r.get())) code = 6;
        ::_exit(code);
    }
    int status = 0;
    ASSERT_EQ(::waitpid(pid, &status, 0), pid);
    ASSERT_TRUE(WIFEXITED(status));
    EXPECT_EQ(WEXITSTATUS(status), 0);
    // The parent's polls are its own: the child's write woke the shared eventfd (the
    // child read it back), and the child's remove() did not touch the parent's pipe poll.
    poll_now();
    drain(efd.get());
    poll_now();
    put_byte(w.get());
    EXPECT_EQ(events_for(r.get(), kSecond), kReadable);
    bump(efd.get());
    EXPECT_EQ(events_for(efd.get(), kSecond), kReadable);
}

INSTANTIATE_TEST_SUITE_P(Polls, UringPollerTest, ::testing::Values(false, true),
                         [](const ::testing::TestParamInfo<bool>& info) { return info.param ? "Multishot" : "OneShot"; });

// --- what each form costs ------------------------------------------------------------

// Makes the eventfd `efd` (watched by `poller`) readable `n` times, each reported once
// and drained; returns how many submission entries the engine handed out meanwhile.
uint64_t entries_for_reports(Poller& poller, int efd, int n) {
    std::vector<PollEvent> out;
    EXPECT_FALSE(poller.wait(0, out));
    const uint64_t sqes = poller.uring()->stats().sqes;
    for (int i = 0; i < n; ++i) {
        bump(efd);
        out.clear();
        EXPECT_FALSE(poller.wait(kSecond, out));
        EXPECT_EQ(out.size(), 1u);
        drain(efd);
    }
    return poller.uring()->stats().sqes - sqes;
}

// One multishot poll is armed once: reports cost no submission entry.
TEST(UringPollerCost, MultishotPollIsArmedOnce) {
    if (auto why = unavailable_reason("uring"); !why.empty()) GTEST_SKIP() << why;
    auto poller = make_poller("uring");
    Uring* ring = poller->uring();
    if (!ring->has(kUringPollMultishot)) GTEST_SKIP() << uring_support().missing_features;
    Fd efd = make_eventfd();
    ASSERT_FALSE(poller->add_drained(efd.get(), kReadable));
    EXPECT_EQ(entries_for_reports(*poller, efd.get(), 20), 0u);
}

// One-shot polls cost one entry per report (the re-arm), and multishot ones do too
// where the feature is disabled (the forced fallback).
TEST(UringPollerCost, OneShotPollIsArmedAgainPerReport) {
    if (auto why = unavailable_reason("uring"); !why.empty()) GTEST_SKIP() << why;
    for (bool drained : {false, true}) {
        auto poller = make_poller("uring");
        Uring* ring = poller->uring();
        ring->disable(kUringPollMultishot);
        EXPECT_FALSE(ring->has(kUringPollMultishot));
        Fd efd = make_eventfd();
        ASSERT_FALSE(drained ? poller->add_drained(efd.get(), kReadable) : poller->add(efd.get(), kReadable));
        // The 20th re-arm is queued for the next wait, not yet handed out.
        EXPECT_EQ(entries_for_reports(*poller, efd.get(), 20), 19u) << (drained ? "add_drained" : "add");
    }
}

// --- the loop's waker --------------------------------------------------------------------

// Wake-ups from another thread end each sleep at once, and the waker's poll is not
// re-armed for them (where multishot polls exist).
TEST(UringWaker, WakeUpsEndTheSleepWithoutRearming) {
    if (auto why = unavailable_reason("uring"); !why.empty()) GTEST_SKIP() << why;
    EventLoop loop(make_poller("uring"));
    Uring* ring = loop.uring();
    const bool multishot = ring->has(kUringPollMultishot);
    loop.call_soon([] {});
    loop.run_once();
    const uint64_t sqes = ring->stats().sqes;
    for (int i = 0; i < 10; ++i) {
        int ran = 0;
        TimerRef guard = loop.call_later(5.0, [] {});
        std::thread t([&] {
            std::this_thread::sleep_for(std::chrono::milliseconds(5));
            loop.call_soon_threadsafe([&] { ++ran; });
        });
        const auto start = std::chrono::steady_clock::now();
        while (ran == 0 && since(start) < 5.0) loop.run_once();
        t.join();
        loop.cancel(guard);
        EXPECT_EQ(ran, 1);
        EXPECT_LT(since(start), 2.0) << "the wake-up was lost";
    }
    if (multishot) {
        EXPECT_EQ(ring->stats().sqes, sqes) << "a wake-up costs no submission";
    }
    // Drained: a sleep after the wake-ups is a real sleep, not a spin on the waker.
    const uint64_t cqes = ring->stats().cqes;
    bool fired = false;
    loop.call_later(0.03, [&] { fired = true; });
    const auto start = std::chrono::steady_clock::now();
    loop.run_once();
    EXPECT_TRUE(fired);
    EXPECT_GE(since(start), 0.025);
    EXPECT_EQ(ring->stats().cqes, cqes) << "no report from a drained waker";
}

TEST(UringWaker, ChildAfterForkIsWokenThroughItsNewWaker) {
    if (auto why = unavailable_reason("uring"); !why.empty()) GTEST_SKIP() << why;
    EventLoop loop(make_poller("uring"));
    loop.call_soon([] {});
    loop.run_once();
    pid_t pid = ::fork();
    ASSERT_GE(pid, 0);
    if (pid == 0) {
        if (loop.after_fork()) ::_exit(1);
        int ran = 0;
        TimerRef guard = loop.call_later(5.0, [] {});
        std::thread t([&] {
            std::this_thread::sleep_for(std::chrono::milliseconds(5));
            loop.call_soon_threadsafe([&] { ++ran; });
        });
        const auto start = std::chrono::steady_clock::now();
        while (ran == 0 && since(start) < 5.0) loop.run_once();
        t.join();
        ::_exit(ran == 1 && since(start) < 2.0 ? 0 : 2);
    }
    int status = 0;
    ASSERT_EQ(::waitpid(pid, &status, 0), pid);
    ASSERT_TRUE(WIFEXITED(status));
    EXPECT_EQ(WEXITSTATUS(status), 0);
    // The parent's waker still works.
    int ran = 0;
    std::thread t([&] {
        std::this_thread::sleep_for(std::chrono::milliseconds(5));
        loop.call_soon_threadsafe([&] { ++ran; });
    });
    TimerRef guard = loop.call_later(5.0, [] {});
    const auto start = std::chrono::steady_clock::now();
    while (ran == 0 && since(start) < 5.0) loop.run_once();
    t.join();
    loop.cancel(guard);
    EXPECT_EQ(ran, 1);
    EXPECT_LT(since(start), 2.0);
}

// --- the probe's optional features ------------------------------------------------------------

TEST(UringFeatures, ProbeFindsThemAndTheOverrideRemovesThem) {
    if (auto why = unavailable_reason("uring"); !why.empty()) GTEST_SKIP() << why;
    UringSupport all = detect_uring("");
    ASSERT_TRUE(all.available);
    EXPECT_EQ(all.features & ~uint32_t(kUringAllFeatures), 0u);
    if (all.features == kUringAllFeatures) EXPECT_TRUE(all.missing_features.empty()) << all.missing_features;
    else EXPECT_NE(all.missing_features.find("the kernel lacks"), std::string::npos) << all.missing_features;

    UringSupport none = detect_uring("poll_multishot,recv_multishot,buf_incremental");
    EXPECT_TRUE(none.available) << "optional features never make io_uring unavailable";
    EXPECT_EQ(none.features, 0u);
    EXPECT_NE(none.missing_features.find("poll_multishot"), std::string::npos) << none.missing_features;
    EXPECT_NE(none.missing_features.find("recv_multishot"), std::string::npos) << none.missing_features;
    EXPECT_NE(none.missing_features.find("buf_incremental"), std::string::npos) << none.missing_features;
    EXPECT_NE(none.missing_features.find("CXXLOOP_URING_DISABLE"), std::string::npos) << none.missing_features;

    UringSupport some = detect_uring("recv_multishot,unknown");
    EXPECT_EQ(some.features, all.features & ~uint32_t(kUringRecvMultishot));
    EXPECT_EQ(detect_uring("buf_incremental").features, all.features & ~uint32_t(kUringBufIncremental));
    EXPECT_EQ(detect_uring("all").features, 0u);
}

TEST(UringFeatures, EngineStartsWithTheProbedFeatures) {
    if (auto why = unavailable_reason("uring"); !why.empty()) GTEST_SKIP() << why;
    EventLoop loop(make_poller("uring"));
    Uring* ring = loop.uring();
    EXPECT_EQ(ring->has(kUringPollMultishot), bool(uring_support().features & kUringPollMultishot));
    EXPECT_EQ(ring->has(kUringRecvMultishot), bool(uring_support().features & kUringRecvMultishot));
    EXPECT_EQ(ring->has(kUringBufIncremental), bool(uring_support().features & kUringBufIncremental));
}

// Without multishot receive, socket streams fall back to the readiness-based Stream
// (the binding asks UringStream::supported() per socket).
TEST(UringFeatures, StreamsFallBackWithoutMultishotReceive) {
    if (auto why = unavailable_reason("uring"); !why.empty()) GTEST_SKIP() << why;
    EventLoop loop(make_poller("uring"));
    EXPECT_EQ(UringStream::supported(loop), loop.uring()->has(kUringRecvMultishot));
    loop.uring()->disable(kUringRecvMultishot);
    EXPECT_FALSE(UringStream::supported(loop));
}
