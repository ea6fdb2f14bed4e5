// test_uring_probe.cpp: the probe's sentences for each way io_uring_setup is refused.
#include <cerrno>
#include <string>

#include <gtest/gtest.h>

#include "uring/uring_internal.hpp"

using cxxloop::uring::setup_refusal;

namespace {
bool mentions(const std::string& s, const char* word) { return s.find(word) != std::string::npos; }
}  // namespace

TEST(UringRefusal, EnosysMeansAnOldKernelOrAFilter) {
    std::string s = setup_refusal(ENOSYS, -1);
    EXPECT_TRUE(mentions(s, "ENOSYS")) << s;
    EXPECT_TRUE(mentions(s, "kernel")) << s;
    EXPECT_TRUE(mentions(s, "seccomp")) << s;
}

TEST(UringRefusal, EpermNamesTheSysctlWhenItIsSet) {
    std::string off = setup_refusal(EPERM, 2);
    EXPECT_TRUE(mentions(off, "io_uring_disabled is 2")) << off;
    std::string group = setup_refusal(EPERM, 1);
    EXPECT_TRUE(mentions(group, "io_uring_disabled is 1")) << group;
    EXPECT_TRUE(mentions(group, "io_uring_group")) << group;
}

TEST(UringRefusal, EpermWithoutTheSysctlPointsAtSeccomp) {
    for (int disabled : {0, -1}) {
        std::string s = setup_refusal(EPERM, disabled);
        EXPECT_TRUE(mentions(s, "EPERM")) << s;
        EXPECT_TRUE(mentions(s, "seccomp")) << s;
    }
}

TEST(UringRefusal, OtherErrorsAreSpelledOut) {
    EXPECT_TRUE(mentions(setup_refusal(ENOMEM, 0), "RLIMIT_MEMLOCK"));
    EXPECT_TRUE(mentions(setup_refusal(EMFILE, 0), "io_uring_setup failed"));
}
