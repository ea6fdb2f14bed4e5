// test_uring_poll.cpp: the probe's optional features (and the uring Poller's polls).
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


// --- the probe's optional features ------------------------------------------------------------

TEST(UringFeatures, ProbeFindsThemAndTheOverrideRemovesThem) {
    if (auto why = unavailable_reason("uring"); !why.empty()) GTEST_SKIP() << why;
    UringSupport all = detect_uring("");
    ASSERT_TRUE(all.available);
    EXPECT_EQ(all.features & ~uint32_t(kUringAllFeatures), 0u);
    if (all.features == kUringAllFeatures) EXPECT_TRUE(all.missing_features.empty()) << all.missing_features;
    else EXPECT_NE(all.missing_features.find("the kernel lacks"), std::string::npos) << all.missing_features;

    UringSupport none = detect_uring("poll_multishot,recv_multishot");
    EXPECT_TRUE(none.available) << "optional features never make io_uring unavailable";
    EXPECT_EQ(none.features, 0u);
    EXPECT_NE(none.missing_features.find("poll_multishot"), std::string::npos) << none.missing_features;
    EXPECT_NE(none.missing_features.find("recv_multishot"), std::string::npos) << none.missing_features;
    EXPECT_NE(none.missing_features.find("CXXLOOP_URING_DISABLE"), std::string::npos) << none.missing_features;

    UringSupport some = detect_uring("recv_multishot,unknown");
    EXPECT_EQ(some.features, all.features & ~uint32_t(kUringRecvMultishot));
    EXPECT_EQ(detect_uring("all").features, 0u);
}

TEST(UringFeatures, EngineStartsWithTheProbedFeatures) {
    if (auto why = unavailable_reason("uring"); !why.empty()) GTEST_SKIP() << why;
    EventLoop loop(make_poller("uring"));
    Uring* ring = loop.uring();
    EXPECT_EQ(ring->has(kUringPollMultishot), bool(uring_support().features & kUringPollMultishot));
    EXPECT_EQ(ring->has(kUringRecvMultishot), bool(uring_support().features & kUringRecvMultishot));
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
