// timer_heap.cpp: the binary heap behind call_later/call_at.
#include "cxxloop/timer_heap.hpp"

#include <utility>

namespace cxxloop {

void TimerHeap::push(Timer* t) {
    items_.push_back(Entry{t->when, seq_++, t});
    sift_up(items_.size() - 1);
}

Timer* TimerHeap::pop() noexcept {
    Timer* t = items_.front().timer;
    remove(t);
    return t;
}

void TimerHeap::remove(Timer* t) noexcept {
    const size_t i = t->heap_index;
    const Entry last = items_.back();
    items_.pop_back();
    if (i < items_.size()) {
        // The last entry fills the hole and moves whichever way restores order.
        place(i, last);
        sift_down(i);
        sift_up(items_[i].timer == last.timer ? i : last.timer->heap_index);
    }
}

// The heap is 4-ary: half the depth of a binary heap, and a node's children share
// one or two cache lines. Every move also updates the timer's heap_index, a write to
// the timer itself, so fewer levels means fewer scattered writes.
constexpr size_t kArity = 4;

void TimerHeap::sift_up(size_t i) noexcept {
    Entry e = items_[i];
    while (i > 0) {
        size_t parent = (i - 1) / kArity;
        if (!(e < items_[parent])) break;
        place(i, items_[parent]);
        i = parent;
    }
    place(i, e);
}

void TimerHeap::sift_down(size_t i) noexcept {
    const size_t n = items_.size();
    Entry e = items_[i];
    for (;;) {
        size_t first = kArity * i + 1;
        if (first >= n) break;
        size_t last = first + kArity < n ? first + kArity : n;
        size_t best = first;
        for (size_t c = first + 1; c < last; ++c)
            if (items_[c] < items_[best]) best = c;
        if (!(items_[best] < e)) break;
        place(i, items_[best]);
        i = best;
    }
    place(i, e);
}

void TimerHeap::heapify() noexcept {
    for (size_t i = items_.size() / kArity + 1; i-- > 0;)
        if (i < items_.size()) sift_down(i);
}

}  // namespace cxxloop
