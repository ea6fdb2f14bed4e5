// uring_internal.hpp: what the io_uring files share: liburing, user_data encoding, the probe's words.
#pragma once

#include <liburing.h>

#include <cstdint>
#include <string>

#include "cxxloop/uring.hpp"

namespace cxxloop::uring {

/// The user_data of an op's entries: the op's address (8-byte aligned, so tag 0).
inline uint64_t op_data(const UringOp& op) noexcept { return uint64_t(reinterpret_cast<uintptr_t>(&op)); }

/// The sentence explaining why io_uring_setup failed with `err`, given the value of
/// /proc/sys/kernel/io_uring_disabled (-1 when unreadable).
std::string setup_refusal(int err, int disabled);

/// The value of /proc/sys/kernel/io_uring_disabled, or -1 when it cannot be read
/// (kernels before 6.6 do not have it).
int read_io_uring_disabled() noexcept;

}  // namespace cxxloop::uring
