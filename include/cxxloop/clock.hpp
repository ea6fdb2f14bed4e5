// clock.hpp: the loop's monotonic clock, the same one as Python's time.monotonic().
#pragma once

#include <cstdint>
#include <ctime>

namespace cxxloop {

/// Nanoseconds on CLOCK_MONOTONIC.
inline int64_t monotonic_ns() noexcept {
    timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return int64_t(ts.tv_sec) * 1000000000 + ts.tv_nsec;
}

/// Seconds on CLOCK_MONOTONIC, as a double (what loop.time() returns).
inline double monotonic() noexcept {
    timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return double(ts.tv_sec) + double(ts.tv_nsec) * 1e-9;
}

}  // namespace cxxloop
