// ready_queue.hpp: FIFO ring buffer of callbacks ready to run.
#pragma once

#include <cstddef>
#include <cstdlib>
#include <new>

#include "cxxloop/callback.hpp"

namespace cxxloop {

/// A growable power-of-two ring of Callback pointers. Not thread-safe.
class ReadyQueue {
public:
    ReadyQueue() = default;
    ReadyQueue(const ReadyQueue&) = delete;
    ReadyQueue& operator=(const ReadyQueue&) = delete;
    ~ReadyQueue() { std::free(buf_); }

    size_t size() const noexcept { return tail_ - head_; }
    bool empty() const noexcept { return head_ == tail_; }

    /// Appends `c`; throws std::bad_alloc only when growing fails.
    void push(Callback* c) {
        if (size() == cap_) grow();
        buf_[tail_++ & (cap_ - 1)] = c;
    }

    /// Removes and returns the oldest callback; the queue must not be empty.
    Callback* pop() noexcept { return buf_[head_++ & (cap_ - 1)]; }

    /// The i-th queued callback from the front (i < size()).
    Callback* at(size_t i) const noexcept { return buf_[(head_ + i) & (cap_ - 1)]; }

    /// Replaces every queued occurrence of `old` with `with` (O(n); for rare removals).
    void replace(Callback* old, Callback* with) noexcept {
        for (size_t i = head_; i != tail_; ++i)
            if (buf_[i & (cap_ - 1)] == old) buf_[i & (cap_ - 1)] = with;
    }

    /// The oldest callback, without removing it; the queue must not be empty.
    Callback* front() const noexcept { return buf_[head_ & (cap_ - 1)]; }

private:
    void grow() {
        size_t ncap = cap_ ? cap_ * 2 : 64;
        auto* nbuf = static_cast<Callback**>(std::malloc(ncap * sizeof(Callback*)));
        if (!nbuf) throw std::bad_alloc();
        size_t n = size();
        for (size_t i = 0; i < n; ++i) nbuf[i] = buf_[(head_ + i) & (cap_ - 1)];
        std::free(buf_);
        buf_ = nbuf;
        cap_ = ncap;
        head_ = 0;
        tail_ = n;
    }

    Callback** buf_ = nullptr;
    size_t cap_ = 0;
    size_t head_ = 0;  // Monotonic counters; masked on access.
    size_t tail_ = 0;
};

}  // namespace cxxloop
