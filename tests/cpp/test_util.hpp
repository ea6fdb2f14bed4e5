// test_util.hpp: small helpers shared by the C++ tests (fds, pipes, socket pairs, timing).
#pragma once

#include <fcntl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <memory>
#include <string>
#include <string_view>
#include <utility>

#include <gtest/gtest.h>

#include "cxxloop/loop.hpp"
#include "cxxloop/poller.hpp"
#include "cxxloop/uring.hpp"

namespace cxxloop::test {

/// An owned file descriptor, closed on destruction.
class Fd {
public:
    Fd() = default;
    explicit Fd(int fd) noexcept : fd_(fd) {}
    Fd(Fd&& o) noexcept : fd_(std::exchange(o.fd_, -1)) {}
    Fd& operator=(Fd&& o) noexcept { std::swap(fd_, o.fd_); return *this; }
    ~Fd() { reset(); }
    int get() const noexcept { return fd_; }
    /// Gives up ownership: returns the fd and forgets it.
    int release() noexcept { return std::exchange(fd_, -1); }
    void reset() noexcept { if (fd_ >= 0) ::close(fd_); fd_ = -1; }
private:
    int fd_ = -1;
};

/// A connected, non-blocking AF_UNIX stream socket pair.
inline std::pair<Fd, Fd> socket_pair() {
    int sv[2];
    EXPECT_EQ(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, sv), 0);
    return {Fd(sv[0]), Fd(sv[1])};
}

/// A non-blocking pipe: {read end, write end}.
inline std::pair<Fd, Fd> make_pipe() {
    int p[2];
    EXPECT_EQ(::pipe2(p, O_NONBLOCK | O_CLOEXEC), 0);
    return {Fd(p[0]), Fd(p[1])};
}

/// Writes one byte to `fd`, failing the test if it does not go through.
inline void put_byte(int fd) { EXPECT_EQ(::write(fd, "x", 1), 1); }

/// Seconds elapsed on the steady clock since `start`.
inline double since(std::chrono::steady_clock::time_point start) {
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

/// Why backend `name` cannot run on this machine, or empty when it can ("uring"
/// needs a usable io_uring; the others always work).
inline std::string unavailable_reason(std::string_view name) {
    if (name != "uring" || uring_support().available) return {};
    return "io_uring is unavailable: " + uring_support().reason;
}

/// make_poller(name), or a "poll" stand-in when the backend cannot run here, so a
/// fixture member can always be built; the fixture's SetUp() then skips the test.
inline std::unique_ptr<Poller> make_test_poller(const char* name) {
    return make_poller(unavailable_reason(name).empty() ? name : "poll");
}

/// Runs `loop` until `done()` or `limit` seconds pass; a guard timer keeps each
/// iteration short, so a bug fails the test instead of hanging it.
template <class Pred>
bool run_loop_until(EventLoop& loop, Pred done, double limit = 5.0) {
    const double end = loop.time() + limit;
    while (!done() && loop.time() < end) {
        TimerRef guard = loop.call_later(0.02, [] {});
        loop.run_once();
        loop.cancel(guard);
    }
    return done();
}

/// A fixture with a loop on the backend named by the test's parameter, skipped where
/// that backend cannot run here.
class BackendLoopTest : public ::testing::TestWithParam<const char*> {
protected:
    EventLoop loop{make_test_poller(GetParam())};

    void SetUp() override {
        if (auto why = unavailable_reason(GetParam()); !why.empty()) GTEST_SKIP() << why;
    }
    /// Runs iterations until `done()` or `max` iterations passed (each waits at most
    /// `wait` seconds); returns done().
    template <class Pred>
    bool run_until(Pred done, int max = 500, double wait = 0.01) {
        for (int i = 0; i < max && !done(); ++i) {
            auto guard = loop.call_later(wait, [] {});
            loop.run_once();
        }
        return done();
    }
    /// Runs `n` iterations of at most `wait` seconds each.
    void spin(int n, double wait = 0.005) {
        run_until([] { return false; }, n, wait);
    }
};

/// gtest name generator for value-parameterised tests over backend names.
struct NameParam {
    std::string operator()(const ::testing::TestParamInfo<const char*>& info) const { return info.param; }
};

}  // namespace cxxloop::test
