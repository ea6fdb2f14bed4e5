// test_ring.cpp: Ring, the lazily allocated FIFO behind the write queues and UringStream's inbox.
#include <deque>
#include <memory>
#include <random>
#include <stdexcept>
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

namespace {
// Drives `r` and a std::deque model with the same random pushes and pops (a pop one
// step in `pop_odds`, never on an empty model), comparing fronts and sizes; after each
// step, `check(step, model)`.
template <class R, class Check>
void random_fifo(R& r, unsigned seed, int steps, unsigned pop_odds, Check check) {
    std::deque<int> model;
    std::mt19937 rng(seed);
    int next = 0;
    for (int step = 0; step < steps && !::testing::Test::HasFatalFailure(); ++step) {
        if (model.empty() || rng() % pop_odds != 0) {
            r.push_back(next);
            model.push_back(next++);
        } else {
            ASSERT_EQ(r.front(), model.front());
            r.pop_front();
            model.pop_front();
        }
        ASSERT_EQ(r.size(), model.size());
        check(step, model);
    }
}
}  // namespace

TEST(Ring, KeepsFifoOrderAcrossWrapAndGrowth) {
    Ring<int> r;
    random_fifo(r, 7, 20000, 3, [&](int step, const std::deque<int>& model) {
        if (step % 997 != 0) return;
        std::vector<int> seen(r.begin(), r.end());
        ASSERT_EQ(seen, std::vector<int>(model.begin(), model.end()));
        for (size_t i = 0; i < model.size(); ++i) ASSERT_EQ(r[i], model[i]);
    });
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

// A move-only value that counts how many are alive, so leaks and double
// destructions show.
struct Owned {
    static inline int alive = 0;
    std::unique_ptr<int> v;
    explicit Owned(int x) : v(std::make_unique<int>(x)) { ++alive; }
    Owned(Owned&& o) noexcept : v(std::move(o.v)) { ++alive; }
    Owned& operator=(Owned&&) = delete;
    ~Owned() { --alive; }
};

TEST(Ring, HoldsMoveOnlyValuesAcrossGrowthAndWrap) {
    Owned::alive = 0;
    {
        Ring<Owned> r;
        std::deque<int> model;
        std::mt19937 rng(11);
        int next = 0;
        for (int step = 0; step < 5000; ++step) {
            if (model.empty() || rng() % 3 != 0) {
                r.emplace_back(next);
                model.push_back(next++);
            } else {
                ASSERT_EQ(*r.front().v, model.front());
                r.pop_front();
                model.pop_front();
            }
            ASSERT_EQ(size_t(Owned::alive), model.size());
        }
        for (size_t i = 0; i < model.size(); ++i) ASSERT_EQ(*r[i].v, model[i]);
        Ring<Owned> moved(std::move(r));
        EXPECT_TRUE(r.empty());
        EXPECT_EQ(moved.size(), model.size());
        EXPECT_EQ(size_t(Owned::alive), model.size());
    }
    EXPECT_EQ(Owned::alive, 0);  // The destructor destroyed what was left.
}

TEST(Ring, PushFrontPutsAValueBackFirst) {
    Ring<Owned> r;
    r.emplace_back(2);
    r.emplace_back(3);
    Owned one(1);
    r.push_front(std::move(one));
    for (int i = 4; i < 12; ++i) r.emplace_back(i);  // grows with the head wrapped
    int want = 1;
    for (Owned& o : r) EXPECT_EQ(*o.v, want++);
    EXPECT_EQ(want, 12);
    r.clear();
    EXPECT_TRUE(r.empty());
}

TEST(Ring, InlineSlotsAllocateNothingUntilOutgrown) {
    Owned::alive = 0;
    {
        Ring<Owned, 1> r;
        EXPECT_EQ(r.capacity(), 1u);
        for (int round = 0; round < 3; ++round) {
            r.emplace_back(round);
            EXPECT_FALSE(r.allocated());
            EXPECT_EQ(*r.front().v, round);
            r.pop_front();
        }
        Owned zero(0);
        r.push_front(std::move(zero));
        EXPECT_FALSE(r.allocated());
        r.emplace_back(1);  // outgrows the slot
        r.emplace_back(2);
        EXPECT_TRUE(r.allocated());
        EXPECT_EQ(r.capacity(), 8u);
        EXPECT_EQ(*r[0].v, 0);
        EXPECT_EQ(*r[2].v, 2);
        r.pop_front();
        r.pop_front();
        EXPECT_TRUE(r.allocated());
        r.pop_front();  // empty again: back to the slot, the array freed
        EXPECT_FALSE(r.allocated());
        EXPECT_EQ(r.capacity(), 1u);
        EXPECT_EQ(Owned::alive, 1);  // `zero`, moved from
        r.emplace_back(5);
        r.emplace_back(6);
        r.clear();
        EXPECT_FALSE(r.allocated());
        r.emplace_back(7);
        Ring<Owned, 1> m(std::move(r));  // an inline value moves over
        EXPECT_TRUE(r.empty());
        EXPECT_EQ(*m.front().v, 7);
        r = std::move(m);
        EXPECT_EQ(*r.front().v, 7);
    }
    EXPECT_EQ(Owned::alive, 0);
}

TEST(Ring, TrivialValuesWithInlineSlots) {
    Ring<int, 2> r;
    random_fifo(r, 3, 3000, 2, [&](int, const std::deque<int>& model) {
        ASSERT_EQ(r.allocated(), r.capacity() > 2);
        if (model.empty()) {
            ASSERT_FALSE(r.allocated());
        }
        for (size_t i = 0; i < model.size(); ++i) ASSERT_EQ(r[i], model[i]);
    });
}

// A push of one of the ring's own values when the ring is full: the new value is
// made before the old array (or the moved-from values) go, as std::vector does.
TEST(Ring, PushOfItsOwnValueWhileFullGrowsSafely) {
    Ring<int> trivial;
    for (int i = 0; i < 8; ++i) trivial.push_back(i);
    trivial.push_back(trivial.front());  // Full: grows while reading from the old array.
    EXPECT_EQ(trivial.size(), 9u);
    EXPECT_EQ(trivial[8], 0);

    Ring<std::shared_ptr<int>> shared;
    for (int i = 0; i < 8; ++i) shared.push_back(std::make_shared<int>(i));
    shared.push_back(shared[3]);  // A copy of a value the growth moves.
    ASSERT_TRUE(shared[8]);
    EXPECT_EQ(*shared[8], 3);
    EXPECT_EQ(shared[3].use_count(), 2);

    Ring<std::shared_ptr<int>> front;
    for (int i = 0; i < 8; ++i) front.push_back(std::make_shared<int>(i));
    std::shared_ptr<int> last = front[7];
    front.push_front(std::move(front[7]));  // Moved out of its own slot while full.
    ASSERT_TRUE(front.front());
    EXPECT_EQ(front.front(), last);
    EXPECT_EQ(front.size(), 9u);
    EXPECT_FALSE(front[8]);  // The slot it was moved from.

    Ring<std::shared_ptr<int>, 2> inl;
    inl.push_back(std::make_shared<int>(1));
    inl.push_back(std::make_shared<int>(2));
    inl.push_back(inl.front());  // Outgrows the inline slots.
    ASSERT_TRUE(inl[2]);
    EXPECT_EQ(*inl[2], 1);
    EXPECT_TRUE(inl.allocated());
}

// A value whose construction throws leaves a full ring as it was.
TEST(Ring, AThrowingConstructionWhileFullChangesNothing) {
    struct Boom {
        int v;
        explicit Boom(int x) : v(x) {
            if (x < 0) throw std::runtime_error("boom");
        }
    };
    Ring<Boom, 1> r;
    r.emplace_back(1);
    EXPECT_THROW(r.emplace_back(-1), std::runtime_error);
    EXPECT_EQ(r.size(), 1u);
    EXPECT_FALSE(r.allocated());
    EXPECT_EQ(r.front().v, 1);
    r.emplace_back(2);
    EXPECT_EQ(r[1].v, 2);
}
