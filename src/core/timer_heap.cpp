// timer_heap.cpp: the binary heap behind call_later/call_at.
#include "cxxloop/timer_heap.hpp"

#include <algorithm>
#include <utility>

namespace cxxloop {

void TimerHeap::push(Timer* t) {
    items_.push_back(Entry{t->when, seq_++, t});
    sift_up(items_.size() - 1);
}

Timer* TimerHeap::pop() noexcept {
    Timer* t = items_.front().timer;
    remove_at(0);
    return t;
}

void TimerHeap::remove(Timer* t) noexcept { remove_at(t->heap_index); }

void TimerHeap::remove_at(size_t i) noexcept {
    const Entry last = items_.back();
    items_.pop_back();
    if (i < items_.size()) {
        // The last entry fills the hole and moves whichever way restores order.
        // Moved down, it sits below a smaller entry already; only if it stayed
        // can it belong further up.
        place(i, last);
        sift_down(i);
        if (items_[i].timer == last.timer) sift_up(i);
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

// Counts the due timers, up to `limit`. They form a subtree at the root (a due
// timer's parent is due too), so only that subtree and its fringe are visited.
size_t TimerHeap::count_due(double now, size_t limit) {
    size_t count = 0;
    stack_.clear();
    stack_.push_back(0);
    while (!stack_.empty() && count < limit) {
        const size_t i = stack_.back();
        stack_.pop_back();
        if (items_[i].when > now) continue;
        ++count;
        const size_t first = kArity * i + 1;
        for (size_t c = first; c < first + kArity && c < items_.size(); ++c) stack_.push_back(c);
    }
    return count;
}

// Moves every due entry to due_, sorted, and rebuilds the heap from the rest.
void TimerHeap::take_due(double now) {
    size_t j = 0;
    for (size_t i = 0; i < items_.size(); ++i) {
        if (items_[i].when <= now) due_.push_back(items_[i]);
        else if (j != i) place(j++, items_[i]);
        else ++j;
    }
    items_.resize(j);
    heapify();
    std::sort(due_.begin(), due_.end());
}

void TimerHeap::heapify() noexcept {
    for (size_t i = items_.size() / kArity + 1; i-- > 0;)
        if (i < items_.size()) sift_down(i);
}

}  // namespace cxxloop
