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
    /// The earliest deadline, read from the heap itself (the timer is not touched).
    double top_when() const noexcept { return items_.front().when; }
    /// The i-th timer in heap order (i < size()), for visiting all of them.
    Timer* at(size_t i) const noexcept { return items_[i].timer; }
    /// Removes and returns the earliest timer; the heap must not be empty.
    Timer* pop() noexcept;
    /// Removes `t`, which must be in this heap.
    void remove(Timer* t) noexcept;
    /// Removes every timer due at `now` (deadline <= now) and hands each to
    /// `sink(Timer*)` in (deadline, insertion) order. Many due timers at once (a
    /// backlog after a long callback or a stall) are taken out in one pass and
    /// sorted, instead of sifting the heap once per timer.
    template <class Sink>
    void pop_due(double now, Sink&& sink) {
        if (items_.empty() || items_.front().when > now) return;
        if (count_due(now, items_.size() / kBulkFraction + 1) > items_.size() / kBulkFraction) {
            take_due(now);
            // The sink touches each timer; fetch them a few ahead, they are cold.
            for (size_t i = 0; i < due_.size(); ++i) {
                if (i + 8 < due_.size()) __builtin_prefetch(due_[i + 8].timer, 1);
                sink(due_[i].timer);
            }
            due_.clear();
            return;
        }
        while (!items_.empty() && items_.front().when <= now) sink(pop());
    }
    /// Removes every cancelled timer, handing each to `sink(Timer*)`, and re-heapifies.
    template <class Sink>
    void remove_cancelled(Sink&& sink) {
        size_t j = 0;
        for (size_t i = 0; i < items_.size(); ++i) {
            if (items_[i].timer->cancelled) sink(items_[i].timer);
            else place(j++, items_[i]);
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
    void remove_at(size_t i) noexcept;
    void sift_up(size_t i) noexcept;
    void sift_down(size_t i) noexcept;
    void heapify() noexcept;
    size_t count_due(double now, size_t limit);
    void take_due(double now);

    // pop_due takes the due timers out in bulk when more than 1/kBulkFraction of
    // the heap is due: one pass, a sort and a re-heapify of the rest then cost less
    // than a sift per timer, each of which writes heap_index into timers scattered
    // across memory.
    static constexpr size_t kBulkFraction = 8;

    std::vector<Entry> items_;
    std::vector<Entry> due_;      // Scratch for pop_due, kept to avoid reallocating.
    std::vector<size_t> stack_;   // Scratch for count_due.
    uint64_t seq_ = 0;
};

}  // namespace cxxloop
