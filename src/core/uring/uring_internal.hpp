// uring_internal.hpp: what the io_uring files share: liburing, user_data encoding, the probe's words.
#pragma once

#include <liburing.h>

#include <cstdint>
#include <string>

#include "cxxloop/uring.hpp"

namespace cxxloop::uring {

// Incrementally consumed buffer rings (Linux 6.12) postdate the distribution headers
// we build against; their values are fixed by the kernel's ABI.
constexpr uint16_t kPbufRingInc = 2;        // IOU_PBUF_RING_INC, in io_uring_buf_reg's flags (`pad` here)
constexpr uint32_t kCqeFBufMore = 1u << 4;  // IORING_CQE_F_BUF_MORE: the kernel keeps the buffer

/// The user_data of an op's entries: the op's address (8-byte aligned, so tag 0).
inline uint64_t op_data(const UringOp& op) noexcept { return uint64_t(reinterpret_cast<uintptr_t>(&op)); }

/// The sentence explaining why io_uring_setup failed with `err`, given the value of
/// /proc/sys/kernel/io_uring_disabled (-1 when unreadable).
std::string setup_refusal(int err, int disabled);

/// The value of /proc/sys/kernel/io_uring_disabled, or -1 when it cannot be read
/// (kernels before 6.6 do not have it).
int read_io_uring_disabled() noexcept;

}  // namespace cxxloop::uring
