// write_queue.hpp: the write-queue steps both stream engines share (the readiness
// Stream and the completion UringStream): gathering queued chunks into an iovec,
// consuming what the kernel took, and dropping the rest. Internal to the core.
#pragma once

#include <cerrno>
#include <cstddef>
#include <sys/uio.h>

#include <utility>

#include "cxxloop/ring.hpp"
#include "cxxloop/stream.hpp"

namespace cxxloop::wq {

/// Hands a chunk back to its owner.
inline void release(const WriteChunk& c) noexcept {
    if (c.release) c.release(c.owner);
}

inline bool would_block(int err) noexcept { return err == EAGAIN || err == EWOULDBLOCK; }

/// Fills `iov` with up to `max` queued chunks, the first one from `offset` (bytes
/// of it already written); returns how many and sets `total` to their byte count.
template <class Queue>
inline int gather(const Queue& q, size_t offset, ::iovec* iov, int max, size_t& total) noexcept {
    int n = 0;
    total = 0;
    for (const WriteChunk& c : q) {
        if (n == max) break;
        iov[n].iov_base = const_cast<char*>(c.data + offset);
        iov[n].iov_len = c.size - offset;
        total += iov[n].iov_len;
        offset = 0;
        ++n;
    }
    return n;
}

/// The kernel took `n` bytes from the front: advances `offset` within the first
/// chunk and releases the chunks that are done. A release may run the owner's code,
/// so the caller's state must be consistent before this is called.
template <class Queue>
inline void consume(Queue& q, size_t& offset, size_t n) noexcept {
    while (n > 0 && !q.empty()) {
        WriteChunk& front = q.front();
        const size_t avail = front.size - offset;
        if (n < avail) {
            offset += n;
            return;
        }
        n -= avail;
        offset = 0;
        WriteChunk done = front;
        q.pop_front();
        release(done);
    }
}

/// Empties `q` and releases every chunk; the queue is empty before the first
/// release runs (a release may re-enter the stream).
template <class Queue>
inline void drop(Queue& q) noexcept {
    Queue dropped(std::move(q));
    for (const WriteChunk& c : dropped) release(c);
}

}  // namespace cxxloop::wq
