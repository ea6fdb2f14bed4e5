// test_ring.cpp: Ring, the lazily allocated FIFO behind Stream's write queue.
#include <deque>
#include <random>
#include <vector>

#include <gtest/gtest.h>

#include "cxxloop/ring.hpp"

using cxxloop::Ring;

TEST(Ring, AllocatesNothingUntilTheFirstPush) {
    Ring<int> r;
    EXPECT_TRUE(r.empty());
    EXPECT_EQ(r.capacity(), 0u);
    EXPECT_EQ(r.begin(), r.end());
    r.push_back(1);
    EXPECT_EQ(r.capacity(), 8u);
    EXPECT_EQ(r.front(), 1);
}

TEST(Ring, KeepsFifoOrderAcrossWrapAndGrowth) {
    Ring<int> r;
    std::deque<int> model;
    std::mt19937 rng(7);
    int next = 0;
    for (int step = 0; step < 20000; ++step) {
        if (model.empty() || rng() % 3 != 0) {
            r.push_back(next);
            model.push_back(next++);
        } else {
            ASSERT_EQ(r.front(), model.front());
            r.pop_front();
            model.pop_front();
        }
        ASSERT_EQ(r.size(), model.size());
        if (step % 997 == 0) {
            std::vector<int> seen(r.begin(), r.end());
            ASSERT_EQ(seen, std::vector<int>(model.begin(), model.end()));
            for (size_t i = 0; i < model.size(); ++i) ASSERT_EQ(r[i], model[i]);
        }
    }
}

TEST(Ring, GrowsWhileWrapped) {
    Ring<int> r;
    for (int i = 0; i < 8; ++i) r.push_back(i);
    for (int i = 0; i < 5; ++i) r.pop_front();   // head is now 5
    for (int i = 8; i < 13; ++i) r.push_back(i);  // wraps, then is full (8)
    EXPECT_EQ(r.capacity(), 8u);
    r.push_back(13);                              // grows while wrapped
    EXPECT_EQ(r.capacity(), 16u);
    std::vector<int> seen(r.begin(), r.end());
    EXPECT_EQ(seen, (std::vector<int>{5, 6, 7, 8, 9, 10, 11, 12, 13}));
}

TEST(Ring, SwapClearResetAndMove) {
    Ring<int> a, b;
    a.push_back(1);
    a.push_back(2);
    a.swap(b);
    EXPECT_TRUE(a.empty());
    EXPECT_EQ(b.size(), 2u);
    Ring<int> c(std::move(b));
    EXPECT_TRUE(b.empty());
    EXPECT_EQ(c.front(), 1);
    c.clear();
    EXPECT_TRUE(c.empty());
    EXPECT_EQ(c.capacity(), 8u);
    c.push_back(3);
    EXPECT_EQ(c.front(), 3);
    c.reset();
    EXPECT_EQ(c.capacity(), 0u);
}
