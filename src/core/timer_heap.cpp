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

void TimerHeap::sift_up(size_t i) noexcept {
    Entry e = items_[i];
    while (i > 0) {
        size_t parent = (i - 1) / 2;
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
        size_t child = 2 * i + 1;
        if (child >= n) break;
        if (child + 1 < n && items_[child + 1] < items_[child]) ++child;
        if (!(items_[child] < e)) break;
        place(i, items_[child]);
        i = child;
    }
    place(i, e);
}

void TimerHeap::heapify() noexcept {
    for (size_t i = items_.size() / 2; i-- > 0;) sift_down(i);
}

}  // namespace cxxloop
