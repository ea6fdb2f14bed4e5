// timer_heap.hpp: 4-ary min-heap of timers keyed by (deadline, insertion order).
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

#include "cxxloop/callback.hpp"

namespace cxxloop {

/// Min-heap of Timer pointers. Equal deadlines pop in insertion order. Each timer
/// knows its position (Timer::heap_index), so a cancelled one is removed at once in
/// O(log n) instead of lingering, with its memory, until it reaches the top.
class TimerHeap {
public:
    size_t size() const noexcept { return items_.size(); }
    bool empty() const noexcept { return items_.empty(); }

    /// Inserts `t` (which must not already be in a heap).
    void push(Timer* t);
    /// The earliest timer; the heap must not be empty.
    Timer* top() const noexcept { return items_.front().timer; }
    /// The i-th timer in heap order (i < size()), for visiting all of them.
    Timer* at(size_t i) const noexcept { return items_[i].timer; }
    /// Removes and returns the earliest timer; the heap must not be empty.
    Timer* pop() noexcept;
    /// Removes `t`, which must be in this heap.
    void remove(Timer* t) noexcept;
    /// Removes every cancelled timer, handing each to `sink(Timer*)`, and re-heapifies.
    template <class Sink>
    void remove_cancelled(Sink&& sink) {
        size_t j = 0;
        for (size_t i = 0; i < items_.size(); ++i) {
            if (items_[i].timer->cancelled) sink(items_[i].timer);
            else items_[j++] = items_[i];
        }
        items_.resize(j);
        heapify();
    }
    /// Hands every timer to `sink(Timer*)` and empties the heap.
    template <class Sink>
    void clear(Sink&& sink) {
        auto items = std::move(items_);
        items_.clear();
        for (auto& e : items) sink(e.timer);
    }

private:
    struct Entry {
        double when;
        uint64_t seq;
        Timer* timer;
        bool operator<(const Entry& o) const noexcept {
            return when < o.when || (when == o.when && seq < o.seq);
        }
    };
    void place(size_t i, const Entry& e) noexcept {
        items_[i] = e;
        e.timer->heap_index = i;
    }
    void sift_up(size_t i) noexcept;
    void sift_down(size_t i) noexcept;
    void heapify() noexcept;

    std::vector<Entry> items_;
    uint64_t seq_ = 0;
};

}  // namespace cxxloop
