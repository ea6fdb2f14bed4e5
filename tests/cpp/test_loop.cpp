// test_loop.cpp: EventLoop scheduling, timers, fd callbacks, handlers and teardown, per poller.
#include <sys/wait.h>

#include <atomic>
#include <functional>
#include <memory>
#include <thread>
#include <string>
#include <vector>

#include "cxxloop/loop.hpp"
#include "test_util.hpp"

using namespace cxxloop;
using namespace cxxloop::test;
using namespace std::chrono_literals;

namespace {

/// A Callback (and Timer) owned by the test that counts what the loop does with it,
/// so tests can prove every retain is matched by a release.
struct Probe : Timer {
    std::function<bool()> body;
    std::function<void()> on_release;  // Runs on every release (to poke the loop).
    int refs = 0, retains = 0, releases = 0, runs = 0;

    explicit Probe(std::function<bool()> b = {}) : body(std::move(b)) {
        run = [](Callback* c) noexcept {
            auto* p = static_cast<Probe*>(c);
            ++p->runs;
            return p->body ? p->body() : true;
        };
        retain = [](Callback* c) noexcept {
            auto* p = static_cast<Probe*>(c);
            ++p->refs;
            ++p->retains;
        };
        release = [](Callback* c) noexcept {
            auto* p = static_cast<Probe*>(c);
            --p->refs;
            ++p->releases;
            if (p->on_release) p->on_release();
        };
    }
};

/// Records every readiness report routed to it.
struct Recorder : IoHandler {
    std::vector<std::pair<int, uint32_t>> seen;
    bool on_io(int fd, uint32_t events) noexcept override {
        seen.emplace_back(fd, events);
        return true;
    }
};

/// A heap-allocated FnNode running `f`, as a C++ transport or the binding would make.
template <class F>
Callback* fn_node(F f) {
    return new FnNode<Callback, F>(std::move(f));
}

class LoopTest : public ::testing::TestWithParam<const char*> {
protected:
    EventLoop loop{make_test_poller(GetParam())};

    void SetUp() override {
        if (auto why = unavailable_reason(GetParam()); !why.empty()) GTEST_SKIP() << why;
    }

    /// Runs iterations until `done()` or `limit` seconds pass. A short guard timer
    /// keeps each iteration from blocking for long, so a bug fails instead of hanging.
    template <class Pred>
    bool run_until(Pred done, double limit = 5.0) {
        const double end = loop.time() + limit;
        while (!done() && loop.time() < end) {
            TimerRef guard = loop.call_later(0.05, [] {});
            loop.run_once();
            loop.cancel(guard);
        }
        return done();
    }

    /// Runs one non-blocking iteration, which drops the cancelled timers (such as
    /// run_until's guards) sitting at the top of the heap.
    void settle() {
        loop.call_soon([] {});
        loop.run_once();
    }
};

}  // namespace

TEST_P(LoopTest, UsesTheRequestedPoller) { EXPECT_EQ(loop.poller_name(), GetParam()); }

TEST_P(LoopTest, CallSoonRunsInFifoOrder) {
    std::vector<int> order;
    for (int i = 0; i < 5; ++i) loop.call_soon([&order, i] { order.push_back(i); });
    EXPECT_EQ(loop.ready_count(), 5u);
    EXPECT_TRUE(loop.run_once());
    EXPECT_EQ(order, (std::vector<int>{0, 1, 2, 3, 4}));
    EXPECT_EQ(loop.ready_count(), 0u);
}

TEST_P(LoopTest, CallbacksAddedDuringAPassRunInTheNextPass) {
    std::vector<char> order;
    loop.call_soon([&] {
        order.push_back('a');
        loop.call_soon([&] { order.push_back('c'); });
    });
    loop.call_soon([&] { order.push_back('b'); });
    EXPECT_TRUE(loop.run_once());
    EXPECT_EQ(order, (std::vector<char>{'a', 'b'}));
    EXPECT_EQ(loop.ready_count(), 1u);
    EXPECT_TRUE(loop.run_once());
    EXPECT_EQ(order, (std::vector<char>{'a', 'b', 'c'}));
}

TEST_P(LoopTest, TimersFireInDeadlineOrderWithFifoTies) {
    std::vector<int> order;
    const double now = loop.time();
    std::vector<TimerRef> refs;
    refs.push_back(loop.call_at(now + 0.03, [&] { order.push_back(3); }));
    refs.push_back(loop.call_at(now + 0.01, [&] { order.push_back(1); }));
    refs.push_back(loop.call_at(now + 0.02, [&] { order.push_back(20); }));
    refs.push_back(loop.call_at(now + 0.02, [&] { order.push_back(21); }));
    refs.push_back(loop.call_at(now + 0.02, [&] { order.push_back(22); }));
    EXPECT_EQ(loop.timer_count(), 5u);
    EXPECT_TRUE(run_until([&] { return order.size() == 5; }));
    EXPECT_EQ(order, (std::vector<int>{1, 20, 21, 22, 3}));
    settle();
    EXPECT_EQ(loop.timer_count(), 0u);
}

TEST_P(LoopTest, TimersNeverFireBeforeTheirDeadline) {
    int fired = 0;
    std::vector<TimerRef> refs;
    for (double d : {0.0, 0.0002, 0.0005, 0.001, 0.0015, 0.003, 0.010}) {
        const double when = loop.time() + d;
        refs.push_back(loop.call_at(when, [&, when] {
            EXPECT_GE(loop.time(), when);
            ++fired;
        }));
    }
    // No guard timers here: the loop must sleep until each deadline on its own.
    while (fired < 7) ASSERT_TRUE(loop.run_once());
}

TEST_P(LoopTest, CancelledTimerDoesNotRun) {
    bool ran = false;
    TimerRef t = loop.call_later(0.01, [&] { ran = true; });
    loop.cancel(t);
    EXPECT_TRUE(t.cancelled());
    bool later = false;
    TimerRef t2 = loop.call_later(0.03, [&] { later = true; });
    EXPECT_TRUE(run_until([&] { return later; }));
    EXPECT_FALSE(ran);
    settle();
    EXPECT_EQ(loop.timer_count(), 0u);
}

TEST_P(LoopTest, CancelledTimersLeaveTheHeapAtOnce) {
    // Cancelled timers are removed from anywhere in the heap and released at once,
    // not when they reach the top (the cancelled ones here are not at the top).
    std::vector<std::unique_ptr<Probe>> timers;
    const double far = loop.time() + 100;
    for (int i = 0; i < 150; ++i) {
        timers.push_back(std::make_unique<Probe>());
        timers.back()->when = far + (i < 30 ? 0 : 1);
        loop.call_at(timers.back().get());
    }
    for (int i = 30; i < 150; ++i) {
        timers[i]->cancelled = true;
        loop.timer_cancelled(timers[i].get());
    }
    EXPECT_EQ(loop.timer_count(), 30u);
    Probe tick;
    loop.call_soon(&tick);
    ASSERT_TRUE(loop.run_once());
    EXPECT_EQ(loop.timer_count(), 30u);
    for (int i = 30; i < 150; ++i) {
        EXPECT_EQ(timers[i]->refs, 0) << i;
        EXPECT_FALSE(timers[i]->scheduled) << i;
    }
    // The earliest ones too.
    for (int i = 0; i < 30; ++i) {
        timers[i]->cancelled = true;
        loop.timer_cancelled(timers[i].get());
    }
    loop.call_soon(&tick);
    ASSERT_TRUE(loop.run_once());
    EXPECT_EQ(loop.timer_count(), 0u);
    for (auto& t : timers) {
        EXPECT_EQ(t->runs, 0);
        EXPECT_EQ(t->refs, 0);
    }
}

TEST_P(LoopTest, CancelledTopTimerDoesNotShortenTheWait) {
    // With the only live timer 50 ms out, a cancelled 1 ms timer must not make
    // run_once return early with nothing to do (it would, were it still the top).
    TimerRef early = loop.call_later(0.001, [] {});
    bool fired = false;
    TimerRef late = loop.call_later(0.05, [&] { fired = true; });
    loop.cancel(early);
    ASSERT_TRUE(loop.run_once());
    EXPECT_TRUE(fired);
}

TEST_P(LoopTest, StopBeforeRunRunsOneIteration) {
    bool ran = false;
    loop.call_soon([&] { ran = true; });
    TimerRef far = loop.call_later(30, [] {});
    loop.stop();
    auto start = std::chrono::steady_clock::now();
    EXPECT_TRUE(loop.run());
    EXPECT_LT(since(start), 1.0);
    EXPECT_TRUE(ran);
    EXPECT_FALSE(loop.stopping());
}

TEST_P(LoopTest, StopFromACallbackEndsRun) {
    int n = 0;
    std::function<void()> tick = [&] {
        if (++n == 3) loop.stop();
        else loop.call_soon(tick);
    };
    loop.call_soon(tick);
    EXPECT_TRUE(loop.run());
    EXPECT_EQ(n, 3);
}

TEST_P(LoopTest, CallSoonThreadsafeWakesASleepingLoop) {
    // The guard timer is far away, so only the waker can end the wait in time.
    TimerRef guard = loop.call_later(10, [&] { loop.stop(); });
    auto start = std::chrono::steady_clock::now();  // Before the thread starts its sleep.
    std::thread t([&] {
        std::this_thread::sleep_for(100ms);
        loop.call_soon_threadsafe([&] { loop.stop(); });
    });
    EXPECT_TRUE(loop.run());
    t.join();
    EXPECT_LT(since(start), 5.0);
    EXPECT_GE(since(start), 0.1);
}

TEST_P(LoopTest, CallSoonThreadsafeFromManyThreadsLosesNothing) {
    constexpr int kThreads = 4, kEach = 2000;
    std::atomic<int> done{0};
    int ran = 0;
    TimerRef guard = loop.call_later(20, [&] { loop.stop(); });
    std::vector<std::thread> threads;
    for (int i = 0; i < kThreads; ++i)
        threads.emplace_back([&] {
            for (int j = 0; j < kEach; ++j) {
                loop.call_soon_threadsafe([&] {
                    if (++ran == kThreads * kEach) loop.stop();
                });
                if (j % 256 == 0) std::this_thread::yield();
            }
            ++done;
        });
    auto start = std::chrono::steady_clock::now();
    loop.run();
    for (auto& t : threads) t.join();
    EXPECT_EQ(ran, kThreads * kEach);
    EXPECT_LT(since(start), 15.0) << "a wake-up was lost: the loop slept until the guard timer";
}

TEST_P(LoopTest, AddReaderRunsOnDataAndRemoveReaderHandsItBack) {
    auto [a, b] = socket_pair();
    int reads = 0;
    auto alive = std::make_shared<int>(0);
    std::weak_ptr<int> watch = alive;
    Callback* reader = fn_node([&, alive] {
        char buf[64];
        while (::read(a.get(), buf, sizeof buf) > 0) {}
        ++reads;
    });
    alive.reset();
    Callback* prev = reader;
    ASSERT_FALSE(loop.add_reader(a.get(), reader, &prev));
    EXPECT_EQ(prev, nullptr);
    EXPECT_EQ(loop.reader_of(a.get()), reader);
    EXPECT_EQ(loop.fd_count(), 1u);
    put_byte(b.get());
    EXPECT_TRUE(run_until([&] { return reads == 1; }));
    put_byte(b.get());
    EXPECT_TRUE(run_until([&] { return reads == 2; }));
    Callback* removed = loop.remove_reader(a.get());
    EXPECT_EQ(removed, reader);
    EXPECT_EQ(loop.fd_count(), 0u);
    EXPECT_EQ(loop.remove_reader(a.get()), nullptr);
    EXPECT_FALSE(watch.expired());
    removed->release(removed);  // The reference passed to us; this frees the node.
    EXPECT_TRUE(watch.expired());
}

TEST_P(LoopTest, AddReaderTwiceReturnsThePrevious) {
    auto [a, b] = socket_pair();
    Probe first, second;
    Callback* prev = nullptr;
    ASSERT_FALSE(loop.add_reader(a.get(), &first, &prev));
    ASSERT_FALSE(loop.add_reader(a.get(), &second, &prev));
    EXPECT_EQ(prev, &first);
    EXPECT_EQ(first.refs, 1);  // Now ours to release.
    first.release(&first);
    EXPECT_EQ(loop.fd_count(), 1u);
    Callback* removed = loop.remove_reader(a.get());
    ASSERT_EQ(removed, &second);
    removed->release(removed);
    EXPECT_EQ(second.refs, 0);
}

TEST_P(LoopTest, AddWriterRunsWhileWritableAndCombinesWithAReader) {
    auto [a, b] = socket_pair();
    int writes = 0, reads = 0;
    Callback* prev = nullptr;
    ASSERT_FALSE(loop.add_writer(a.get(), fn_node([&] { ++writes; }), &prev));
    ASSERT_FALSE(loop.add_reader(a.get(), fn_node([&] { ++reads; }), &prev));
    EXPECT_EQ(loop.fd_count(), 1u);  // One fd, both interests.
    EXPECT_TRUE(run_until([&] { return writes >= 2; }));
    EXPECT_EQ(reads, 0);
    Callback* w = loop.remove_writer(a.get());
    ASSERT_NE(w, nullptr);
    w->release(w);
    EXPECT_NE(loop.reader_of(a.get()), nullptr);
    EXPECT_EQ(loop.writer_of(a.get()), nullptr);
    int before = writes;
    put_byte(b.get());
    EXPECT_TRUE(run_until([&] { return reads >= 1; }));
    EXPECT_EQ(writes, before);
    Callback* r = loop.remove_reader(a.get());
    ASSERT_NE(r, nullptr);
    r->release(r);
    EXPECT_EQ(loop.fd_count(), 0u);
}

TEST_P(LoopTest, CancelledReaderIsUnregisteredNotRun) {
    auto [a, b] = socket_pair();
    Probe reader;
    Callback* prev = nullptr;
    ASSERT_FALSE(loop.add_reader(a.get(), &reader, &prev));
    reader.cancelled = true;
    put_byte(b.get());
    EXPECT_TRUE(run_until([&] { return loop.reader_of(a.get()) == nullptr; }));
    EXPECT_EQ(reader.runs, 0);
    EXPECT_EQ(reader.refs, 0);
    EXPECT_EQ(loop.fd_count(), 0u);
}

TEST_P(LoopTest, WatchRoutesReadinessToTheHandler) {
    auto [a, b] = socket_pair();
    Recorder rec;
    EXPECT_EQ(loop.handler_of(a.get()), nullptr);
    ASSERT_FALSE(loop.watch(a.get(), &rec, kReadable));
    EXPECT_EQ(loop.fd_count(), 1u);
    EXPECT_EQ(loop.handler_of(a.get()), &rec);
    EXPECT_EQ(loop.handler_of(-1), nullptr);
    EXPECT_EQ(loop.handler_of(b.get() + 1000), nullptr);
    Callback* prev = nullptr;
    Probe p;
    EXPECT_TRUE(loop.add_reader(a.get(), &p, &prev)) << "an fd has a handler or callbacks, not both";
    EXPECT_EQ(p.refs, 0);
    put_byte(b.get());
    EXPECT_TRUE(run_until([&] { return !rec.seen.empty(); }));
    EXPECT_EQ(rec.seen[0], std::make_pair(a.get(), uint32_t(kReadable)));
    // Changing the interest of a watched fd.
    char c;
    ASSERT_EQ(::read(a.get(), &c, 1), 1);
    rec.seen.clear();
    ASSERT_FALSE(loop.watch(a.get(), &rec, kWritable));
    EXPECT_TRUE(run_until([&] { return !rec.seen.empty(); }));
    EXPECT_EQ(rec.seen[0], std::make_pair(a.get(), uint32_t(kWritable)));
    ASSERT_FALSE(loop.unwatch(a.get()));
    EXPECT_EQ(loop.fd_count(), 0u);
    EXPECT_EQ(loop.handler_of(a.get()), nullptr);
    rec.seen.clear();
    Probe tick;
    loop.call_soon(&tick);
    ASSERT_TRUE(loop.run_once());
    EXPECT_TRUE(rec.seen.empty());
}

/// An IoHandler that counts the loop's holds on it and records what it sees.
struct CountingHandler : IoHandler {
    std::vector<std::string>* log = nullptr;
    int refs = 0, closed = 0;
    bool result = true;
    bool on_io(int, uint32_t) noexcept override {
        if (log) log->push_back("io");
        return result;
    }
    void io_retain() noexcept override { ++refs; }
    void io_release() noexcept override { --refs; }
    void on_loop_closed(int) noexcept override { ++closed; }
};

TEST_P(LoopTest, HandlerReportsRunInFifoOrderWithCallbacks) {
    // As asyncio queues a reader's handle behind the callbacks already ready.
    auto [a, b] = socket_pair();
    std::vector<std::string> log;
    CountingHandler h;
    h.log = &log;
    ASSERT_FALSE(loop.watch(a.get(), &h, kReadable));
    put_byte(b.get());
    loop.call_soon([&] { log.push_back("before"); });
    ASSERT_TRUE(loop.run_once());
    ASSERT_EQ(log, (std::vector<std::string>{"before", "io"}));
    EXPECT_EQ(h.refs, 0);
    ASSERT_FALSE(loop.unwatch(a.get()));
}

TEST_P(LoopTest, UnwatchDropsAQueuedReport) {
    auto [a, b] = socket_pair();
    std::vector<std::string> log;
    CountingHandler h;
    h.log = &log;
    ASSERT_FALSE(loop.watch(a.get(), &h, kReadable));
    put_byte(b.get());
    // The callback ahead of the report unwatches the fd: the report must not run.
    loop.call_soon([&] {
        log.push_back("unwatch");
        EXPECT_EQ(h.refs, 1) << "the queued report holds the handler";
        loop.unwatch(a.get());
    });
    ASSERT_TRUE(loop.run_once());
    EXPECT_EQ(log, (std::vector<std::string>{"unwatch"}));
    EXPECT_EQ(h.refs, 0);
}

// A handler that hands its fd over when asked, registering a reader of its own first
// (as the binding's sock_* waits do when add_reader()/add_writer() claims their fd).
struct YieldingHandler : Recorder {
    EventLoop* loop = nullptr;
    Callback* own_reader = nullptr;
    int asked = 0;
    bool yield_fd(int fd) noexcept override {
        ++asked;
        if (!own_reader) return false;
        EXPECT_FALSE(loop->unwatch(fd));
        Callback* prev = nullptr;
        EXPECT_FALSE(loop->add_reader(fd, own_reader, &prev));
        EXPECT_EQ(prev, nullptr);
        return true;
    }
};

TEST_P(LoopTest, AddCallbackAsksTheWatchingHandlerToYield) {
    auto [a, b] = socket_pair();
    YieldingHandler h;
    h.loop = &loop;
    ASSERT_FALSE(loop.watch(a.get(), &h, kReadable));
    Probe writer;
    Callback* prev = nullptr;
    // By default a handler keeps its fd.
    EXPECT_EQ(loop.add_writer(a.get(), &writer, &prev), std::errc::device_or_resource_busy);
    EXPECT_EQ(h.asked, 1);
    EXPECT_EQ(writer.refs, 0);
    // A yielding handler's own reader stays next to the new writer...
    Probe own;
    h.own_reader = &own;
    ASSERT_FALSE(loop.add_writer(a.get(), &writer, &prev));
    EXPECT_EQ(prev, nullptr);
    EXPECT_EQ(loop.handler_of(a.get()), nullptr);
    EXPECT_EQ(loop.reader_of(a.get()), &own);
    EXPECT_EQ(loop.writer_of(a.get()), &writer);
    EXPECT_EQ(loop.fd_count(), 1u);
    EXPECT_TRUE(run_until([&] { return writer.runs > 0; }));
    put_byte(b.get());
    EXPECT_TRUE(run_until([&] { return own.runs > 0; }));
    EXPECT_TRUE(h.seen.empty());
    EXPECT_TRUE(loop.watch(a.get(), &h, kReadable)) << "no handler while callbacks exist";
    Callback* r = loop.remove_writer(a.get());
    EXPECT_EQ(r, &writer);
    r->release(r);
    r = loop.remove_reader(a.get());
    EXPECT_EQ(r, &own);
    r->release(r);
    EXPECT_EQ(own.refs, 0);
    EXPECT_EQ(writer.refs, 0);
    EXPECT_EQ(loop.fd_count(), 0u);
}

TEST_P(LoopTest, WatchAsksAnotherWatchingHandlerToYield) {
    auto [a, b] = socket_pair();
    YieldingHandler first;
    first.loop = &loop;
    Recorder second;
    ASSERT_FALSE(loop.watch(a.get(), &first, kReadable));
    EXPECT_EQ(loop.watch(a.get(), &second, kReadable), std::errc::device_or_resource_busy);
    EXPECT_EQ(first.asked, 1);
    EXPECT_EQ(loop.handler_of(a.get()), &first);
    ASSERT_FALSE(loop.unwatch(a.get()));
}

TEST_P(LoopTest, WatchOnceReportsOnceAndReArms) {
    auto [a, b] = socket_pair();
    Recorder rec;
    auto ec = loop.watch_once(a.get(), &rec, kReadable);
    if (std::string(GetParam()) != "epoll") {
        EXPECT_EQ(ec, std::errc::not_supported);
        EXPECT_EQ(loop.handler_of(a.get()), nullptr);
        EXPECT_EQ(loop.fd_count(), 0u);
        return;
    }
    ASSERT_FALSE(ec);
    EXPECT_EQ(loop.fd_count(), 1u);
    put_byte(b.get());
    EXPECT_TRUE(run_until([&] { return !rec.seen.empty(); }));
    EXPECT_EQ(rec.seen.size(), 1u);
    // Still readable, but disarmed: no second report, and still registered.
    for (int i = 0; i < 3; ++i) {
        Probe tick;
        loop.call_soon(&tick);
        ASSERT_TRUE(loop.run_once());
    }
    EXPECT_EQ(rec.seen.size(), 1u);
    EXPECT_EQ(loop.handler_of(a.get()), &rec);
    EXPECT_EQ(loop.fd_count(), 1u);
    // Re-armed: the data still there is reported again.
    ASSERT_FALSE(loop.watch_once(a.get(), &rec, kReadable | kWritable));
    EXPECT_TRUE(run_until([&] { return rec.seen.size() == 2; }));
    EXPECT_EQ(rec.seen[1].second, uint32_t(kReadable | kWritable));
    // Level-triggered again through watch().
    ASSERT_FALSE(loop.watch(a.get(), &rec, kReadable));
    EXPECT_TRUE(run_until([&] { return rec.seen.size() == 4; }));
    // Another handler or callbacks are refused.
    Recorder other;
    EXPECT_EQ(loop.watch_once(a.get(), &other, kReadable), std::errc::device_or_resource_busy);
    ASSERT_FALSE(loop.unwatch(a.get()));
    EXPECT_EQ(loop.fd_count(), 0u);
}

TEST_P(LoopTest, WatchOnceReAddsAnFdTheKernelDropped) {
    if (std::string(GetParam()) != "epoll") GTEST_SKIP() << "one-shot registrations are epoll's";
    Recorder rec;
    int number;
    {
        auto [a, b] = socket_pair();
        number = a.get();
        ASSERT_FALSE(loop.watch_once(a.get(), &rec, kReadable));
        put_byte(b.get());
        EXPECT_TRUE(run_until([&] { return !rec.seen.empty(); }));
    }  // Closed while registered (disarmed): the kernel drops it, the loop cannot know.
    auto [c, d] = socket_pair();
    if (c.get() != number && d.get() == number) std::swap(c, d);
    ASSERT_EQ(c.get(), number) << "the fd number is reused";
    ASSERT_FALSE(loop.watch_once(c.get(), &rec, kReadable));
    put_byte(d.get());
    EXPECT_TRUE(run_until([&] { return rec.seen.size() == 2; }));
    EXPECT_EQ(rec.seen[1].first, number);
    ASSERT_FALSE(loop.unwatch(c.get()));
}

TEST_P(LoopTest, HandlerReturningFalseAbortsTheIteration) {
    auto [a, b] = socket_pair();
    CountingHandler h;
    h.result = false;
    ASSERT_FALSE(loop.watch(a.get(), &h, kReadable));
    put_byte(b.get());
    EXPECT_FALSE(loop.run_once());  // The byte is there: the report runs now.
    EXPECT_EQ(h.refs, 0);
    bool later = false;
    loop.call_soon([&] { later = true; });
    ASSERT_FALSE(loop.unwatch(a.get()));
    ASSERT_TRUE(loop.run_once());
    EXPECT_TRUE(later);
}

TEST_P(LoopTest, CloseTellsWatchingHandlersAndDropsTheirReports) {
    auto [a, b] = socket_pair();
    CountingHandler h;
    ASSERT_FALSE(loop.watch(a.get(), &h, kReadable));
    put_byte(b.get());
    // Queue the report without running it: a callback ahead of it closes the loop.
    loop.call_soon([&] {
        EXPECT_EQ(h.refs, 1);
        loop.close();
    });
    loop.run_once();
    EXPECT_EQ(h.closed, 1);
    EXPECT_EQ(h.refs, 0);
}

TEST_P(LoopTest, CloseReleasesEveryRetainedCallback) {
    auto [a, b] = socket_pair();
    Probe ready, timer, cancelled_timer, reader, writer, threadsafe;
    loop.call_soon(&ready);
    timer.when = loop.time() + 100;
    loop.call_at(&timer);
    cancelled_timer.when = loop.time() + 50;
    loop.call_at(&cancelled_timer);
    cancelled_timer.cancelled = true;
    loop.timer_cancelled(&cancelled_timer);
    Callback* prev = nullptr;
    ASSERT_FALSE(loop.add_reader(a.get(), &reader, &prev));
    ASSERT_FALSE(loop.add_writer(b.get(), &writer, &prev));
    loop.call_soon_threadsafe(&threadsafe);
    auto alive = std::make_shared<int>(0);
    std::weak_ptr<int> node_alive = alive;
    loop.call_soon([alive] {});
    alive.reset();

    loop.close();
    EXPECT_TRUE(loop.closed());
    for (Probe* p : {&ready, &timer, &cancelled_timer, &reader, &writer, &threadsafe}) {
        EXPECT_EQ(p->refs, 0);
        EXPECT_EQ(p->retains, p->releases);
        EXPECT_GE(p->retains, 1);
        EXPECT_EQ(p->runs, 0);
    }
    EXPECT_TRUE(node_alive.expired());
    EXPECT_EQ(loop.fd_count(), 0u);
    EXPECT_EQ(loop.ready_count(), 0u);
    EXPECT_EQ(loop.timer_count(), 0u);
    loop.close();  // Idempotent.
}

TEST_P(LoopTest, CallbackReturningFalseAbortsLeavingTheRestQueued) {
    Probe first, aborter([] { return false; }), third;
    loop.call_soon(&first);
    loop.call_soon(&aborter);
    loop.call_soon(&third);
    EXPECT_FALSE(loop.run_once());
    EXPECT_EQ(first.runs, 1);
    EXPECT_EQ(aborter.runs, 1);
    EXPECT_EQ(aborter.refs, 0);
    EXPECT_EQ(third.runs, 0);
    EXPECT_EQ(loop.ready_count(), 1u);
    EXPECT_TRUE(loop.run_once());
    EXPECT_EQ(third.runs, 1);
    // run() reports the abort too, and resets stopping.
    loop.call_soon(&aborter);
    loop.stop();
    EXPECT_FALSE(loop.run());
    EXPECT_FALSE(loop.stopping());
    for (Probe* p : {&first, &aborter, &third}) EXPECT_EQ(p->refs, 0);
}

TEST_P(LoopTest, AfterForkTheChildLoopWorksAndTheParentIsUntouched) {
    auto [r, w] = make_pipe();
    int reads = 0;
    Callback* prev = nullptr;
    ASSERT_FALSE(loop.add_reader(r.get(), fn_node([&, fd = r.get()] {
        char c;
        while (::read(fd, &c, 1) > 0) ++reads;
    }), &prev));
    pid_t pid = ::fork();
    ASSERT_GE(pid, 0);
    if (pid == 0) {
        // Exit codes say which step failed: the child cannot report through gtest.
        if (loop.after_fork()) ::_exit(1);
        put_byte(w.get());
        if (!run_until([&] { return reads == 1; }, 2.0)) ::_exit(2);
        // The new waker must work: a thread's call_soon_threadsafe ends a long sleep.
        TimerRef guard = loop.call_later(10, [&] { loop.stop(); });
        std::thread t([&] { loop.call_soon_threadsafe([&] { loop.stop(); }); });
        auto start = std::chrono::steady_clock::now();
        loop.run();
        t.join();
        if (since(start) > 5.0) ::_exit(3);
        // Unregistering in the child must not unregister in the parent.
        Callback* cb = loop.remove_reader(r.get());
        if (!cb) ::_exit(4);
        cb->release(cb);
        loop.close();
        ::_exit(0);
    }
    int status = 0;
    ASSERT_EQ(::waitpid(pid, &status, 0), pid);
    ASSERT_TRUE(WIFEXITED(status));
    EXPECT_EQ(WEXITSTATUS(status), 0);
    put_byte(w.get());
    EXPECT_TRUE(run_until([&] { return reads == 1; }));
}

TEST_P(LoopTest, FdNumberIsReusableAfterClosingAWatchedFd) {
    // An fd closed while it has a reader and a writer: removing one of them makes the
    // poller's modify() fail (EBADF on epoll). Neither the loop nor the poller may go
    // on believing the fd is watched, or a new fd with the same number is refused.
    auto [a, b] = socket_pair();
    int fd = a.get();
    Probe reader, writer;
    Callback* prev = nullptr;
    ASSERT_FALSE(loop.add_reader(fd, &reader, &prev));
    ASSERT_FALSE(loop.add_writer(fd, &writer, &prev));
    a.reset();
    for (Callback* cb : {loop.remove_writer(fd), loop.remove_reader(fd)}) {
        ASSERT_NE(cb, nullptr);
        cb->release(cb);
    }
    auto [c, d] = socket_pair();
    ASSERT_EQ(c.get(), fd) << "the test relies on fd numbers being reused";
    Probe again;
    EXPECT_FALSE(loop.add_reader(fd, &again, &prev));
    if (Callback* cb = loop.remove_reader(fd)) cb->release(cb);
}

TEST(LoopDefaults, DefaultPollerFollowsCxxloopPoller) {
    const char* saved = std::getenv("CXXLOOP_POLLER");
    std::string old = saved ? saved : "";
    ::setenv("CXXLOOP_POLLER", "select", 1);
    {
        EventLoop loop;
        EXPECT_EQ(loop.poller_name(), "select");
    }
    saved ? ::setenv("CXXLOOP_POLLER", old.c_str(), 1) : ::unsetenv("CXXLOOP_POLLER");
}

// --- regressions: closed loops and fork ---------------------------------------------

TEST_P(LoopTest, RunOnceOnAClosedLoopDoesNotCrash) {
    // run_once() once dereferenced poller_ after close() had reset it.
    loop.close();
    EXPECT_FALSE(loop.run_once());
}

TEST_P(LoopTest, SchedulingOnAClosedLoopDoesNotLeak) {
    // loop.cpp: call_soon/call_at/call_soon_threadsafe retain even when closed, and
    // close() is idempotent, so nothing ever releases those references.
    Probe ready, timer, threadsafe;
    {
        EventLoop l(make_poller(GetParam()));
        l.close();
        l.call_soon(&ready);
        timer.when = l.time();
        l.call_at(&timer);
        l.call_soon_threadsafe(&threadsafe);
    }
    for (Probe* p : {&ready, &timer, &threadsafe}) EXPECT_EQ(p->refs, 0);
}

TEST_P(LoopTest, ThreadsafeWakeupsWorkInAChildForkedWithAWakePending) {
    // loop.cpp, two steps. (1) When poll_io() sees ts_pending_ after announcing the
    // sleep, it polls with timeout 0 but never clears sleeping_, so producers keep
    // writing the waker while the loop runs. (2) after_fork() reopens the waker but
    // keeps wake_sent_, so if a wake was pending at fork() the child's producers
    // never write the new waker again and the child sleeps through them.
    //
    // Step 1, deterministically: a timer whose owner only set its cancelled flag is
    // released inside drop_cancelled_timers(), after drain_threadsafe(), and its
    // release hook queues threadsafe work.
    Probe t;
    t.when = loop.time() + 100;
    loop.call_at(&t);
    t.cancelled = true;
    t.on_release = [&] { loop.call_soon_threadsafe([] {}); };
    ASSERT_TRUE(loop.run_once());
    t.on_release = nullptr;
    // The loop is awake, yet this write goes to the waker and sets wake_sent_.
    loop.call_soon_threadsafe([] {});
    pid_t pid = ::fork();
    ASSERT_GE(pid, 0);
    if (pid == 0) {
        if (loop.after_fork()) ::_exit(1);
        TimerRef guard = loop.call_later(3, [&] { loop.stop(); });
        std::thread producer([&] {
            std::this_thread::sleep_for(50ms);
            loop.call_soon_threadsafe([&] { loop.stop(); });
        });
        auto start = std::chrono::steady_clock::now();
        loop.run();
        producer.join();
        ::_exit(since(start) < 2.0 ? 0 : 2);
    }
    int status = 0;
    ASSERT_EQ(::waitpid(pid, &status, 0), pid);
    ASSERT_TRUE(WIFEXITED(status));
    EXPECT_EQ(WEXITSTATUS(status), 0) << "2: the child slept until its guard timer";
}

INSTANTIATE_TEST_SUITE_P(Backends, LoopTest, ::testing::Values("epoll", "poll", "select", "uring"), NameParam());

namespace {
/// Limits every wait to 20 ms and counts the waits.
struct CappingObserver : LoopObserver {
    int waits = 0;
    int64_t limit = 20'000'000;
    void before_wait() noexcept override { ++waits; }
    int64_t wait_limit_ns() noexcept override { return limit; }
};
}  // namespace

TEST_P(LoopTest, TheObserverCanCapAnOtherwiseEndlessWait) {
    CappingObserver obs;
    loop.set_observer(&obs);
    std::vector<int> fired;
    loop.call_soon([] {});
    loop.run_once();  // Runs the callback (no wait: it was ready).
    const auto start = std::chrono::steady_clock::now();
    loop.run_once();  // Nothing ready, no timer: would block forever without the cap.
    const double took = since(start);
    EXPECT_GE(took, 0.015);
    EXPECT_LT(took, 2.0);
    EXPECT_GE(obs.waits, 1);
    // A timer due sooner than the cap still wins.
    obs.limit = 5'000'000'000;
    loop.call_later(0.01, [&] { fired.push_back(1); });
    loop.run_once();
    EXPECT_EQ(fired, std::vector<int>{1});
    loop.set_observer(nullptr);
}
