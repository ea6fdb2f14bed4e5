// test_poller.cpp: every Poller backend against the contract documented in poller.hpp.
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <pthread.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/resource.h>
#include <sys/wait.h>

#include <algorithm>
#include <set>
#include <stdexcept>
#include <thread>

#include "cxxloop/poller.hpp"
#include "test_util.hpp"

using namespace cxxloop;
using namespace cxxloop::test;
using namespace std::chrono_literals;

namespace {

class PollerTest : public ::testing::TestWithParam<const char*> {
protected:
    std::unique_ptr<Poller> poller = make_test_poller(GetParam());

    void SetUp() override {
        if (auto why = unavailable_reason(GetParam()); !why.empty()) GTEST_SKIP() << why;
    }

    /// Polls once with `timeout_ns` and returns the events, failing on an error.
    std::vector<PollEvent> poll_now(int64_t timeout_ns = 0) {
        std::vector<PollEvent> out;
        EXPECT_FALSE(poller->wait(timeout_ns, out));
        return out;
    }
    /// The events reported for `fd` by one poll (0 when it is not reported).
    uint32_t events_for(int fd, int64_t timeout_ns = 0) {
        uint32_t ev = 0;
        for (auto& e : poll_now(timeout_ns)) {
            if (e.fd == fd) ev |= e.events;
        }
        return ev;
    }
};

}  // namespace

TEST_P(PollerTest, ReportsItsName) { EXPECT_EQ(poller->name(), GetParam()); }

TEST_P(PollerTest, AddModifyRemoveErrors) {
    auto [a, b] = socket_pair();
    EXPECT_EQ(poller->add(a.get(), 0), std::errc::invalid_argument);
    EXPECT_EQ(poller->modify(a.get(), kReadable), std::errc::no_such_file_or_directory);
    EXPECT_EQ(poller->remove(a.get()), std::errc::no_such_file_or_directory);
    EXPECT_FALSE(poller->add(a.get(), kReadable));
    EXPECT_EQ(poller->add(a.get(), kWritable), std::errc::file_exists);
    EXPECT_EQ(poller->modify(a.get(), 0), std::errc::invalid_argument);
    EXPECT_FALSE(poller->remove(a.get()));
    EXPECT_EQ(poller->add(-1, kReadable), std::errc::bad_file_descriptor);
}

TEST_P(PollerTest, ReadableOnlyWhenDataArrives) {
    auto [a, b] = socket_pair();
    ASSERT_FALSE(poller->add(a.get(), kReadable));
    EXPECT_EQ(events_for(a.get()), 0u);
    put_byte(b.get());
    EXPECT_EQ(events_for(a.get()), kReadable);
    // Level-triggered: still readable until the data is consumed.
    EXPECT_EQ(events_for(a.get()), kReadable);
    char c;
    ASSERT_EQ(::read(a.get(), &c, 1), 1);
    EXPECT_EQ(events_for(a.get()), 0u);
}

TEST_P(PollerTest, ModifySwitchesInterest) {
    auto [a, b] = socket_pair();
    put_byte(b.get());
    ASSERT_FALSE(poller->add(a.get(), kWritable));
    EXPECT_EQ(events_for(a.get()), kWritable);  // Readable too, but not asked for.
    ASSERT_FALSE(poller->modify(a.get(), kReadable | kWritable));
    EXPECT_EQ(events_for(a.get()), kReadable | kWritable);
    ASSERT_FALSE(poller->modify(a.get(), kReadable));
    EXPECT_EQ(events_for(a.get()), kReadable);
    ASSERT_FALSE(poller->remove(a.get()));
    EXPECT_EQ(events_for(a.get()), 0u);
}

TEST_P(PollerTest, OneEventPerFdPerWait) {
    // Callers dispatch per event, so an fd both readable and writable must come back
    // as one event carrying both bits, not as two events.
    auto [a, b] = socket_pair();
    put_byte(b.get());
    ASSERT_FALSE(poller->add(a.get(), kReadable | kWritable));
    auto evs = poll_now();
    ASSERT_EQ(evs.size(), 1u);
    EXPECT_EQ(evs[0].fd, a.get());
    EXPECT_EQ(evs[0].events, kReadable | kWritable);
}

TEST_P(PollerTest, PipeEnds) {
    auto [r, w] = make_pipe();
    ASSERT_FALSE(poller->add(r.get(), kReadable));
    ASSERT_FALSE(poller->add(w.get(), kWritable));
    auto evs = poll_now();
    ASSERT_EQ(evs.size(), 1u);
    EXPECT_EQ(evs[0].fd, w.get());
    EXPECT_EQ(evs[0].events, kWritable);
    put_byte(w.get());
    EXPECT_EQ(events_for(r.get()), kReadable);
}

TEST_P(PollerTest, ReadyFdReturnsAtOnceDespiteLongTimeout) {
    auto [a, b] = socket_pair();
    ASSERT_FALSE(poller->add(a.get(), kWritable));
    auto start = std::chrono::steady_clock::now();
    EXPECT_EQ(events_for(a.get(), 10'000'000'000), kWritable);
    EXPECT_LT(since(start), 1.0);
}

TEST_P(PollerTest, TimeoutNeverReturnsEarly) {
    auto [a, b] = socket_pair();
    ASSERT_FALSE(poller->add(a.get(), kReadable));
    // Whole milliseconds, a sub-millisecond wait (which must sleep, not spin), and
    // an odd nanosecond count that a truncating conversion would shorten.
    for (int64_t ns : {20'000'000LL, 300'000LL, 1'500'001LL}) {
        auto start = std::chrono::steady_clock::now();
        EXPECT_TRUE(poll_now(ns).empty());
        EXPECT_GE(since(start), double(ns) * 1e-9) << "timeout " << ns << " ns";
    }
}

TEST_P(PollerTest, EmptySetStillSleeps) {
    auto start = std::chrono::steady_clock::now();
    EXPECT_TRUE(poll_now(10'000'000).empty());
    EXPECT_GE(since(start), 0.010);
}

TEST_P(PollerTest, InterruptedWaitReturnsEintr) {
    // A handler without SA_RESTART: the wait must come back with EINTR (pollers are
    // never restarted by the kernel anyway) instead of retrying on its own.
    struct sigaction sa {}, old{};
    sa.sa_handler = [](int) {};
    sigemptyset(&sa.sa_mask);
    ASSERT_EQ(::sigaction(SIGUSR1, &sa, &old), 0);
    pthread_t self = ::pthread_self();
    std::thread killer([self] {
        std::this_thread::sleep_for(50ms);
        ::pthread_kill(self, SIGUSR1);
    });
    std::vector<PollEvent> out;
    auto start = std::chrono::steady_clock::now();
    auto ec = poller->wait(5'000'000'000, out);
    killer.join();
    ::sigaction(SIGUSR1, &old, nullptr);
    EXPECT_EQ(ec, std::errc::interrupted);
    EXPECT_LT(since(start), 4.0);
}

TEST_P(PollerTest, PeerCloseIsReadable) {
    auto [a, b] = socket_pair();
    ASSERT_FALSE(poller->add(a.get(), kReadable));
    b.reset();
    EXPECT_EQ(events_for(a.get()), kReadable);
}

TEST_P(PollerTest, BrokenPipeFoldsIntoTheRegisteredInterest) {
    // The write end of a pipe whose reader is gone is in error: reported as writable
    // when writing is watched and as readable when only reading is (so a read-only
    // watcher still hears about it), like Python's selectors.
    auto [r1, w1] = make_pipe();
    auto [r2, w2] = make_pipe();
    ASSERT_FALSE(poller->add(w1.get(), kWritable));
    ASSERT_FALSE(poller->add(w2.get(), kReadable));
    r1.reset();
    r2.reset();
    uint32_t ev1 = 0, ev2 = 0;
    for (auto& e : poll_now()) {
        if (e.fd == w1.get()) ev1 |= e.events;
        if (e.fd == w2.get()) ev2 |= e.events;
    }
    EXPECT_EQ(ev1, kWritable);
    EXPECT_EQ(ev2, kReadable);
}

TEST_P(PollerTest, ClosedWatchedFdThenRemoveIsNotAnError) {
    auto [a, b] = socket_pair();
    int fd = a.get();
    ASSERT_FALSE(poller->add(fd, kReadable));
    a.reset();
    std::vector<PollEvent> out;
    auto ec = poller->wait(0, out);
    // Each mechanism reacts differently to an fd closed while watched: epoll drops it
    // silently, poll reports POLLNVAL (folded into readable), select fails with EBADF.
    if (std::string_view(GetParam()) == "select") {
        EXPECT_EQ(ec, std::errc::bad_file_descriptor);
    } else {
        EXPECT_FALSE(ec);
        bool reported = std::any_of(out.begin(), out.end(), [&](auto& e) { return e.fd == fd; });
        EXPECT_EQ(reported, std::string_view(GetParam()) == "poll");
    }
    EXPECT_FALSE(poller->remove(fd));
    EXPECT_TRUE(poll_now().empty());
}

TEST_P(PollerTest, ManyReadyFdsAreAllReported) {
    std::vector<std::pair<Fd, Fd>> pipes;
    std::set<int> want;
    for (int i = 0; i < 150; ++i) {
        pipes.push_back(make_pipe());
        put_byte(pipes.back().second.get());
        ASSERT_FALSE(poller->add(pipes.back().first.get(), kReadable));
        want.insert(pipes.back().first.get());
    }
    // A backend may report them over several waits (epoll's buffer grows), never lose one.
    std::set<int> got;
    for (int round = 0; round < 4 && got != want; ++round)
        for (auto& e : poll_now()) got.insert(e.fd);
    EXPECT_EQ(got, want);
}

TEST_P(PollerTest, LargeFdNumbers) {
    rlimit rl{};
    ASSERT_EQ(::getrlimit(RLIMIT_NOFILE, &rl), 0);
    const rlim_t need = FD_SETSIZE + 64;
    if (rl.rlim_cur < need) {
        if (rl.rlim_max < need) GTEST_SKIP() << "RLIMIT_NOFILE too low for an fd >= FD_SETSIZE";
        rl.rlim_cur = need;
        ASSERT_EQ(::setrlimit(RLIMIT_NOFILE, &rl), 0);
    }
    auto [a, b] = socket_pair();
    Fd big(::fcntl(a.get(), F_DUPFD_CLOEXEC, FD_SETSIZE + 10));
    ASSERT_GE(big.get(), FD_SETSIZE);
    auto ec = poller->add(big.get(), kWritable);
    if (std::string_view(GetParam()) == "select") {
        EXPECT_EQ(ec, std::errc::invalid_argument);
    } else {
        ASSERT_FALSE(ec);
        EXPECT_EQ(events_for(big.get()), kWritable);
        EXPECT_FALSE(poller->remove(big.get()));
    }
}

TEST_P(PollerTest, AfterForkInSameProcessKeepsWatchedSet) {
    auto [a, b] = socket_pair();
    ASSERT_FALSE(poller->add(a.get(), kReadable | kWritable));
    ASSERT_FALSE(poller->after_fork());
    EXPECT_EQ(events_for(a.get()), kWritable);
    put_byte(b.get());
    EXPECT_EQ(events_for(a.get()), kReadable | kWritable);
    EXPECT_EQ(poller->add(a.get(), kReadable), std::errc::file_exists);
}

TEST_P(PollerTest, AfterForkChildHasItsOwnPoller) {
    auto [r1, w1] = make_pipe();
    auto [r2, w2] = make_pipe();
    ASSERT_FALSE(poller->add(r1.get(), kReadable));
    ASSERT_FALSE(poller->add(r2.get(), kReadable));
    pid_t pid = ::fork();
    ASSERT_GE(pid, 0);
    if (pid == 0) {
        // The child re-creates its kernel state, still sees the watched set, and then
        // unregisters r1, which must not affect the parent's registrations.
        int code = 0;
        if (poller->after_fork()) code = 1;
        put_byte(w2.get());
        std::vector<PollEvent> out;
        if (!code && (poller->wait(1'000'000'000, out) || out.size() != 1 || out[0].fd != r2.get())) code = 2;
        if (!code && poller->remove(r1.get())) code = 3;
        ::_exit(code);
    }
    int status = 0;
    ASSERT_EQ(::waitpid(pid, &status, 0), pid);
    ASSERT_TRUE(WIFEXITED(status));
    EXPECT_EQ(WEXITSTATUS(status), 0);
    char c;
    ASSERT_EQ(::read(r2.get(), &c, 1), 1);  // Consume the child's byte.
    put_byte(w1.get());
    EXPECT_EQ(events_for(r1.get(), 1'000'000'000), kReadable);
}

INSTANTIATE_TEST_SUITE_P(Backends, PollerTest, ::testing::Values("epoll", "poll", "select", "uring"), NameParam());

// --- epoll without epoll_pwait2 -------------------------------------------------------

namespace {

/// Makes epoll_pwait2 fail with ENOSYS in this process, as on kernels before 5.11.
bool hide_epoll_pwait2() {
    sock_filter code[] = {
        BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(seccomp_data, nr)),
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, SYS_epoll_pwait2, 0, 1),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | ENOSYS),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
    };
    sock_fprog prog{sizeof code / sizeof code[0], code};
    return ::prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) == 0 &&
           ::prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &prog) == 0;
}

}  // namespace

TEST(EpollPoller, FallsBackToEpollWaitRoundingUpWithoutPwait2) {
    pid_t pid = ::fork();
    ASSERT_GE(pid, 0);
    if (pid == 0) {
        // Exit codes say which step failed: the child cannot report through gtest.
        if (!hide_epoll_pwait2()) ::_exit(77);
        auto poller = make_poller("epoll");
        auto [a, b] = socket_pair();
        if (poller->add(a.get(), kReadable)) ::_exit(1);
        std::vector<PollEvent> out;
        // 300 us must round up to a 1 ms sleep, never down to a 0 ms busy poll.
        auto start = std::chrono::steady_clock::now();
        if (poller->wait(300'000, out) || !out.empty()) ::_exit(2);
        if (since(start) < 0.001) ::_exit(3);
        put_byte(b.get());
        if (poller->wait(1'000'000'000, out) || out.size() != 1) ::_exit(4);
        ::_exit(0);
    }
    int status = 0;
    ASSERT_EQ(::waitpid(pid, &status, 0), pid);
    ASSERT_TRUE(WIFEXITED(status));
    if (WEXITSTATUS(status) == 77) GTEST_SKIP() << "cannot install a seccomp filter here";
    EXPECT_EQ(WEXITSTATUS(status), 0);
}

// --- make_poller --------------------------------------------------------------------

namespace {

/// Sets CXXLOOP_POLLER for one test and restores the previous state afterwards.
class PollerEnv {
public:
    explicit PollerEnv(const char* value) {
        if (const char* v = std::getenv("CXXLOOP_POLLER")) saved_ = v, had_ = true;
        value ? ::setenv("CXXLOOP_POLLER", value, 1) : ::unsetenv("CXXLOOP_POLLER");
    }
    ~PollerEnv() { had_ ? ::setenv("CXXLOOP_POLLER", saved_.c_str(), 1) : ::unsetenv("CXXLOOP_POLLER"); }
private:
    std::string saved_;
    bool had_ = false;
};

}  // namespace

TEST(MakePoller, DefaultIsEpollOnLinux) {
    PollerEnv env(nullptr);
    EXPECT_EQ(make_poller()->name(), "epoll");
}

TEST(MakePoller, EnvironmentVariableChoosesTheDefault) {
    {
        PollerEnv env("select");
        EXPECT_EQ(make_poller()->name(), "select");
        EXPECT_EQ(make_poller("poll")->name(), "poll");  // An explicit name wins.
    }
    {
        PollerEnv env("");
        EXPECT_EQ(make_poller()->name(), "epoll");  // Empty means unset.
    }
}

TEST(MakePoller, UnknownNameThrowsNamingTheChoices) {
    try {
        make_poller("kqueue-ish");
        FAIL() << "expected std::invalid_argument";
    } catch (const std::invalid_argument& e) {
        std::string msg = e.what();
        EXPECT_NE(msg.find("kqueue-ish"), std::string::npos) << msg;
        for (const char* choice : {"epoll", "poll", "select"}) EXPECT_NE(msg.find(choice), std::string::npos) << msg;
    }
    PollerEnv env("bogus");
    EXPECT_THROW(make_poller(), std::invalid_argument);
}
