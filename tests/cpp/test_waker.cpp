// test_waker.cpp: Waker coalescing, draining, flags, and cross-thread wake-ups of a poller.
#include <poll.h>

#include <cerrno>
#include <thread>

#include "cxxloop/poller.hpp"
#include "cxxloop/waker.hpp"
#include "test_util.hpp"

using namespace cxxloop;
using namespace cxxloop::test;
using namespace std::chrono_literals;

namespace {

bool readable(int fd) {
    pollfd p{fd, POLLIN, 0};
    return ::poll(&p, 1, 0) == 1 && (p.revents & POLLIN);
}

}  // namespace

TEST(Waker, FdIsNonBlockingAndCloseOnExec) {
    Waker w;
    ASSERT_GE(w.fd(), 0);
    EXPECT_TRUE(::fcntl(w.fd(), F_GETFL) & O_NONBLOCK);
    EXPECT_TRUE(::fcntl(w.fd(), F_GETFD) & FD_CLOEXEC);
}

TEST(Waker, NotReadableUntilWoken) {
    Waker w;
    EXPECT_FALSE(readable(w.fd()));
    w.wake();
    EXPECT_TRUE(readable(w.fd()));
}

TEST(Waker, ManyWakesCoalesceIntoOneEvent) {
    Waker w;
    auto poller = make_poller("poll");
    ASSERT_FALSE(poller->add(w.fd(), kReadable));
    for (int i = 0; i < 1000; ++i) w.wake();
    std::vector<PollEvent> out;
    ASSERT_FALSE(poller->wait(0, out));
    ASSERT_EQ(out.size(), 1u);
    w.drain();
    out.clear();
    ASSERT_FALSE(poller->wait(0, out));
    EXPECT_TRUE(out.empty()) << "one drain() must consume every pending wake-up";
}

TEST(Waker, DrainWithNothingPendingDoesNotBlock) {
    Waker w;
    auto start = std::chrono::steady_clock::now();
    w.drain();
    w.drain();
    EXPECT_LT(since(start), 0.5);
    EXPECT_FALSE(readable(w.fd()));
}

TEST(Waker, WakePreservesErrno) {
    Waker w;
    errno = EDOM;
    w.wake();
    w.wake();
    EXPECT_EQ(errno, EDOM);
}

TEST(Waker, WakeFromAnotherThreadEndsAPollerWait) {
    Waker w;
    auto poller = make_poller();
    ASSERT_FALSE(poller->add(w.fd(), kReadable));
    std::thread t([&] {
        std::this_thread::sleep_for(50ms);
        w.wake();
    });
    std::vector<PollEvent> out;
    auto start = std::chrono::steady_clock::now();
    auto ec = poller->wait(10'000'000'000, out);
    t.join();
    ASSERT_FALSE(ec);
    ASSERT_EQ(out.size(), 1u);
    EXPECT_EQ(out[0].fd, w.fd());
    EXPECT_LT(since(start), 5.0);
}

TEST(Waker, ReopenGivesAFreshQuietFd) {
    Waker w;
    w.wake();
    w.reopen();
    ASSERT_GE(w.fd(), 0);
    EXPECT_FALSE(readable(w.fd()));
    w.wake();
    EXPECT_TRUE(readable(w.fd()));
    w.drain();
    EXPECT_FALSE(readable(w.fd()));
}
