// test_policy.cpp: EventLoopPolicy per-thread loops and the process-wide policy.
#include <future>
#include <stdexcept>
#include <string>
#include <thread>

#include "cxxloop/policy.hpp"
#include "test_util.hpp"

using namespace cxxloop;

TEST(Policy, MainThreadGetsALoopOnDemand) {
    EventLoopPolicy policy;
    EventLoop& loop = policy.get_event_loop();
    EXPECT_EQ(&policy.get_event_loop(), &loop);
    EXPECT_FALSE(loop.closed());
}

TEST(Policy, SetEventLoopMakesItCurrent) {
    EventLoopPolicy policy;
    auto loop = policy.new_event_loop();
    policy.set_event_loop(loop);
    EXPECT_EQ(&policy.get_event_loop(), loop.get());
}

TEST(Policy, NewEventLoopNeverSetsIt) {
    EventLoopPolicy policy;
    auto a = policy.new_event_loop();
    auto b = policy.new_event_loop();
    EXPECT_NE(a, b);
    EXPECT_NE(&policy.get_event_loop(), a.get());
    EXPECT_NE(&policy.get_event_loop(), b.get());
}

TEST(Policy, SettingNullOnTheMainThreadMeansNoLoop) {
    // As asyncio: once set_event_loop() was called, even with None, no loop is made.
    EventLoopPolicy policy;
    policy.set_event_loop(nullptr);
    try {
        policy.get_event_loop();
        FAIL() << "expected std::runtime_error";
    } catch (const std::runtime_error& e) {
        EXPECT_STREQ(e.what(), "There is no current event loop in thread 'MainThread'.");
    }
}

TEST(Policy, OtherThreadsMustSetALoop) {
    EventLoopPolicy policy;
    EventLoop* main_loop = &policy.get_event_loop();
    std::string message;
    EventLoop* thread_loop = nullptr;
    std::thread t([&] {
        pthread_setname_np(pthread_self(), "worker-7");
        try {
            policy.get_event_loop();
        } catch (const std::runtime_error& e) {
            message = e.what();
        }
        auto mine = policy.new_event_loop();
        policy.set_event_loop(mine);
        thread_loop = &policy.get_event_loop();
        EXPECT_EQ(thread_loop, mine.get());
    });
    t.join();
    EXPECT_EQ(message, "There is no current event loop in thread 'worker-7'.");
    EXPECT_NE(thread_loop, main_loop);
    EXPECT_EQ(&policy.get_event_loop(), main_loop);  // The main thread's is untouched.
}

TEST(Policy, ThreadExitReleasesItsLoop) {
    EventLoopPolicy policy;
    std::weak_ptr<EventLoop> seen;
    std::thread t([&] {
        auto loop = policy.new_event_loop();
        seen = loop;
        policy.set_event_loop(std::move(loop));
    });
    t.join();
    EXPECT_TRUE(seen.expired());
}

TEST(Policy, DestroyingThePolicyReleasesThisThreadsLoop) {
    std::weak_ptr<EventLoop> seen;
    {
        EventLoopPolicy policy;
        auto loop = policy.new_event_loop();
        seen = loop;
        policy.set_event_loop(std::move(loop));
        EXPECT_FALSE(seen.expired());
    }
    EXPECT_TRUE(seen.expired());
}

TEST(Policy, ADestroyedPolicysSlotInAnotherThreadIsPurgedLater) {
    auto policy = std::make_unique<EventLoopPolicy>();
    std::weak_ptr<EventLoop> seen;
    std::promise<void> slot_set, policy_gone;
    bool purged = false;
    std::thread t([&] {
        auto loop = policy->new_event_loop();
        seen = loop;
        policy->set_event_loop(std::move(loop));
        slot_set.set_value();
        policy_gone.get_future().wait();
        // Starting to use another policy on this thread sweeps the dead slot.
        EventLoopPolicy other;
        other.set_event_loop(nullptr);
        purged = seen.expired();
    });
    slot_set.get_future().wait();
    policy.reset();
    EXPECT_FALSE(seen.expired());  // Still held by the other thread's slot.
    policy_gone.set_value();
    t.join();
    EXPECT_TRUE(purged);
}

namespace {

/// Exposes the protected accessor subclasses get.
struct PeekPolicy : EventLoopPolicy {
    using EventLoopPolicy::current_loop;
};

}  // namespace

TEST(Policy, CurrentLoopNeverCreatesOne) {
    PeekPolicy policy;
    EXPECT_EQ(policy.current_loop(), nullptr);
    EventLoop& loop = policy.get_event_loop();
    EXPECT_EQ(policy.current_loop().get(), &loop);
}

TEST(Policy, PoliciesHaveSeparateSlots) {
    EventLoopPolicy p1, p2;
    EXPECT_NE(&p1.get_event_loop(), &p2.get_event_loop());
}

namespace {

/// A subclass that picks the poll backend, as a C++ user might.
class PollPolicy : public EventLoopPolicy {
public:
    std::shared_ptr<EventLoop> new_event_loop() override {
        ++made;
        return std::make_shared<EventLoop>(make_poller("poll"));
    }
    int made = 0;
};

}  // namespace

TEST(Policy, GetEventLoopUsesTheOverriddenFactory) {
    PollPolicy policy;
    EXPECT_EQ(policy.get_event_loop().poller_name(), "poll");
    EXPECT_EQ(policy.get_event_loop().poller_name(), "poll");
    EXPECT_EQ(policy.made, 1);
}

TEST(Policy, ProcessWidePolicyCanBeReplacedAndReset) {
    auto def = get_event_loop_policy();
    ASSERT_NE(def, nullptr);
    EXPECT_EQ(get_event_loop_policy(), def);
    auto mine = std::make_shared<PollPolicy>();
    set_event_loop_policy(mine);
    EXPECT_EQ(get_event_loop_policy(), mine);
    EXPECT_EQ(get_event_loop_policy()->get_event_loop().poller_name(), "poll");
    set_event_loop_policy(nullptr);
    auto fresh = get_event_loop_policy();
    ASSERT_NE(fresh, nullptr);
    EXPECT_NE(fresh, mine);
    EXPECT_EQ(dynamic_cast<PollPolicy*>(fresh.get()), nullptr);
}
