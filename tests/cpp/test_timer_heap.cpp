// test_timer_heap.cpp: TimerHeap ordering, FIFO ties, lazy-cancellation compaction, clear.
#include <gtest/gtest.h>

#include <algorithm>
#include <random>
#include <vector>

#include "cxxloop/timer_heap.hpp"

using cxxloop::Timer;
using cxxloop::TimerHeap;

namespace {

/// Timers with deadlines `whens`, stored in a vector that never reallocates.
std::vector<Timer> make_timers(const std::vector<double>& whens) {
    std::vector<Timer> ts(whens.size());
    for (size_t i = 0; i < whens.size(); ++i) ts[i].when = whens[i];
    return ts;
}

std::vector<Timer*> drain(TimerHeap& h) {
    std::vector<Timer*> out;
    while (!h.empty()) out.push_back(h.pop());
    return out;
}

}  // namespace

TEST(TimerHeap, PopsInDeadlineOrder) {
    auto ts = make_timers({5, 1, 4, 2, 3, 0.5});
    TimerHeap h;
    for (auto& t : ts) h.push(&t);
    EXPECT_EQ(h.size(), 6u);
    EXPECT_EQ(h.top()->when, 0.5);
    std::vector<double> order;
    for (Timer* t : drain(h)) order.push_back(t->when);
    EXPECT_EQ(order, (std::vector<double>{0.5, 1, 2, 3, 4, 5}));
}

TEST(TimerHeap, EqualDeadlinesPopInInsertionOrder) {
    auto ts = make_timers(std::vector<double>(50, 7.0));
    TimerHeap h;
    for (auto& t : ts) h.push(&t);
    auto out = drain(h);
    for (size_t i = 0; i < ts.size(); ++i) EXPECT_EQ(out[i], &ts[i]) << "position " << i;
}

TEST(TimerHeap, MatchesSortedOrderOnRandomInput) {
    std::mt19937 rng(12345);
    std::uniform_int_distribution<int> dist(0, 40);  // Many ties on purpose.
    std::vector<double> whens(2000);
    for (double& w : whens) w = dist(rng);
    auto ts = make_timers(whens);
    TimerHeap h;
    // Interleave pushes and pops so sift_up and sift_down both see varied shapes.
    std::vector<Timer*> popped;
    for (size_t i = 0; i < ts.size(); ++i) {
        h.push(&ts[i]);
        if (i % 3 == 2) popped.push_back(h.pop());
    }
    auto rest = drain(h);
    // Every timer comes out exactly once and the tail (pure pops) is sorted and stable.
    EXPECT_EQ(popped.size() + rest.size(), ts.size());
    EXPECT_TRUE(std::is_sorted(rest.begin(), rest.end(), [](Timer* a, Timer* b) {
        return a->when < b->when || (a->when == b->when && a < b);
    }));
}

TEST(TimerHeap, RemoveCancelledKeepsOrderOfTheRest) {
    std::vector<double> whens;
    for (int i = 0; i < 200; ++i) whens.push_back(200 - i);
    auto ts = make_timers(whens);
    TimerHeap h;
    for (auto& t : ts) h.push(&t);
    for (size_t i = 0; i < ts.size(); i += 2) ts[i].cancelled = true;
    std::vector<Timer*> removed;
    h.remove_cancelled([&](Timer* t) { removed.push_back(t); });
    EXPECT_EQ(removed.size(), 100u);
    for (Timer* t : removed) EXPECT_TRUE(t->cancelled);
    EXPECT_EQ(h.size(), 100u);
    double last = -1;
    for (Timer* t : drain(h)) {
        EXPECT_FALSE(t->cancelled);
        EXPECT_GT(t->when, last);
        last = t->when;
    }
}

TEST(TimerHeap, RemoveCancelledPreservesFifoTies) {
    auto ts = make_timers(std::vector<double>(30, 1.0));
    TimerHeap h;
    for (auto& t : ts) h.push(&t);
    ts[3].cancelled = ts[17].cancelled = true;
    h.remove_cancelled([](Timer*) {});
    auto out = drain(h);
    ASSERT_EQ(out.size(), 28u);
    EXPECT_TRUE(std::is_sorted(out.begin(), out.end()));  // Addresses follow insertion order.
}

TEST(TimerHeap, ClearHandsOverEveryTimer) {
    auto ts = make_timers({3, 1, 2});
    TimerHeap h;
    for (auto& t : ts) h.push(&t);
    std::vector<Timer*> seen;
    h.clear([&](Timer* t) { seen.push_back(t); });
    EXPECT_TRUE(h.empty());
    EXPECT_EQ(seen.size(), 3u);
    // The heap is reusable afterwards.
    h.push(&ts[0]);
    EXPECT_EQ(h.pop(), &ts[0]);
}

TEST(TimerHeap, RemoveFromAnywhereKeepsOrder) {
    TimerHeap heap;
    std::vector<Timer> timers(200);
    for (size_t i = 0; i < timers.size(); ++i) {
        timers[i].when = double((i * 7919) % 200);
        heap.push(&timers[i]);
    }
    for (size_t i = 0; i < timers.size(); i += 3) heap.remove(&timers[i]);
    double last = -1;
    size_t n = 0;
    while (!heap.empty()) {
        Timer* t = heap.pop();
        EXPECT_GE(t->when, last);
        EXPECT_NE((t - timers.data()) % 3, 0);
        last = t->when;
        ++n;
    }
    EXPECT_EQ(n, timers.size() - (timers.size() + 2) / 3);
}

namespace {

// Pops with pop_due(now) for each `now` in turn, checking the order against a
// stable sort of the deadlines, then checks that what is left still pops in
// order and can be removed by index (heap_index stayed consistent).
void check_pop_due(const std::vector<double>& whens, const std::vector<double>& nows) {
    auto ts = make_timers(whens);
    TimerHeap h;
    for (auto& t : ts) h.push(&t);
    std::vector<Timer*> expected;
    for (auto& t : ts) expected.push_back(&t);
    std::stable_sort(expected.begin(), expected.end(), [](Timer* a, Timer* b) { return a->when < b->when; });
    std::vector<Timer*> got;
    for (double now : nows) {
        size_t before = got.size();
        h.pop_due(now, [&](Timer* t) { got.push_back(t); });
        for (size_t i = before; i < got.size(); ++i) {
            EXPECT_LE(got[i]->when, now);
        }
        if (!h.empty()) {
            EXPECT_GT(h.top_when(), now);
        }
    }
    ASSERT_LE(got.size(), expected.size());
    for (size_t i = 0; i < got.size(); ++i) ASSERT_EQ(got[i], expected[i]) << "position " << i;
    // Remove every third remaining timer through its heap_index, drain the rest.
    std::vector<Timer*> rest(expected.begin() + got.size(), expected.end());
    for (size_t i = 0; i < rest.size(); i += 3) h.remove(rest[i]);
    std::vector<Timer*> kept;
    for (size_t i = 0; i < rest.size(); ++i)
        if (i % 3 != 0) kept.push_back(rest[i]);
    EXPECT_EQ(drain(h), kept);
}

}  // namespace

TEST(TimerHeap, PopDueOneByOneWhenFewAreDue) {
    std::vector<double> whens;
    for (int i = 0; i < 1000; ++i) whens.push_back(double((i * 7919) % 1000));
    check_pop_due(whens, {-1, 0, 3, 10, 11});
}

TEST(TimerHeap, PopDueInBulkWhenManyAreDue) {
    std::mt19937 rng(777);
    std::uniform_int_distribution<int> dist(0, 50);  // Many ties on purpose.
    std::vector<double> whens(3000);
    for (double& w : whens) w = dist(rng);
    check_pop_due(whens, {20, 21, 40});
    check_pop_due(whens, {1000});  // Everything due: the heap empties.
}

TEST(TimerHeap, PopDueOnEmptyHeap) {
    TimerHeap h;
    int calls = 0;
    h.pop_due(1e9, [&](Timer*) { ++calls; });
    EXPECT_EQ(calls, 0);
}
