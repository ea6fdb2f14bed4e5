// test_ready_queue.cpp: ReadyQueue FIFO order, including growth while the ring wraps.
#include <gtest/gtest.h>

#include <vector>

#include "cxxloop/ready_queue.hpp"

using cxxloop::Callback;
using cxxloop::ReadyQueue;

TEST(ReadyQueue, StartsEmpty) {
    ReadyQueue q;
    EXPECT_TRUE(q.empty());
    EXPECT_EQ(q.size(), 0u);
}

TEST(ReadyQueue, IsFifo) {
    std::vector<Callback> cbs(10);
    ReadyQueue q;
    for (auto& c : cbs) q.push(&c);
    EXPECT_EQ(q.size(), 10u);
    EXPECT_EQ(q.front(), &cbs[0]);
    for (auto& c : cbs) EXPECT_EQ(q.pop(), &c);
    EXPECT_TRUE(q.empty());
}

TEST(ReadyQueue, GrowsWhileWrappedAroundAndKeepsOrder) {
    // 64 is the first capacity: advance the head so that the contents wrap past the
    // end of the buffer, then fill it completely to force a grow mid-wrap.
    std::vector<Callback> cbs(1000);
    ReadyQueue q;
    size_t next_in = 0, next_out = 0;
    for (int i = 0; i < 50; ++i) q.push(&cbs[next_in++]);
    for (int i = 0; i < 40; ++i) ASSERT_EQ(q.pop(), &cbs[next_out++]);
    while (next_in < 50 + 64) q.push(&cbs[next_in++]);  // Wraps, then grows.
    EXPECT_EQ(q.size(), next_in - next_out);
    // Keep interleaving across several more growths.
    while (next_in < cbs.size()) {
        q.push(&cbs[next_in++]);
        if (next_in % 3 == 0) {
            ASSERT_EQ(q.pop(), &cbs[next_out++]);
        }
    }
    while (!q.empty()) ASSERT_EQ(q.pop(), &cbs[next_out++]);
    EXPECT_EQ(next_out, cbs.size());
}

TEST(ReadyQueue, ReusableAfterDraining) {
    std::vector<Callback> cbs(3);
    ReadyQueue q;
    for (int round = 0; round < 100; ++round) {
        for (auto& c : cbs) q.push(&c);
        for (auto& c : cbs) ASSERT_EQ(q.pop(), &c);
    }
    EXPECT_TRUE(q.empty());
}
