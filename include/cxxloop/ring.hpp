// ring.hpp: a FIFO of trivially copyable values in one growable circular buffer.
#pragma once

#include <cstddef>
#include <cstdlib>
#include <cstring>
#include <iterator>
#include <new>
#include <type_traits>
#include <utility>

namespace cxxloop {

/// A FIFO queue (push_back, front, pop_front, iteration from the front) that
/// allocates nothing until the first push and then one power-of-two array, doubled
/// when full. std::deque allocates a 512-byte block and its map on construction, even
/// when it never holds anything: most streams never queue a write, and thousands of
/// idle connections would each carry that for nothing.
template <class T>
class Ring {
    static_assert(std::is_trivially_copyable_v<T>, "Ring moves values with memcpy");

public:
    Ring() = default;
    Ring(const Ring&) = delete;
    Ring& operator=(const Ring&) = delete;
    Ring(Ring&& o) noexcept { swap(o); }
    Ring& operator=(Ring&& o) noexcept {
        Ring(std::move(o)).swap(*this);
        return *this;
    }
    ~Ring() { std::free(buf_); }

    bool empty() const noexcept { return size_ == 0; }
    size_t size() const noexcept { return size_; }
    size_t capacity() const noexcept { return cap_; }

    T& front() noexcept { return buf_[head_]; }
    const T& front() const noexcept { return buf_[head_]; }
    T& operator[](size_t i) noexcept { return buf_[(head_ + i) & (cap_ - 1)]; }
    const T& operator[](size_t i) const noexcept { return buf_[(head_ + i) & (cap_ - 1)]; }

    /// Appends `v`; throws std::bad_alloc when the array cannot grow.
    void push_back(const T& v) {
        if (size_ == cap_) grow();
        buf_[(head_ + size_) & (cap_ - 1)] = v;
        ++size_;
    }
    void pop_front() noexcept {
        head_ = (head_ + 1) & (cap_ - 1);
        if (--size_ == 0) head_ = 0;
    }
    /// Empties the queue, keeping its array.
    void clear() noexcept { head_ = size_ = 0; }
    /// Empties the queue and frees its array.
    void reset() noexcept {
        std::free(buf_);
        buf_ = nullptr;
        cap_ = head_ = size_ = 0;
    }
    void swap(Ring& o) noexcept {
        std::swap(buf_, o.buf_);
        std::swap(cap_, o.cap_);
        std::swap(head_, o.head_);
        std::swap(size_, o.size_);
    }

    template <class R, class V>
    class Iter {
    public:
        using iterator_category = std::forward_iterator_tag;
        using value_type = std::remove_const_t<V>;
        using difference_type = std::ptrdiff_t;
        using pointer = V*;
        using reference = V&;
        Iter(R* r, size_t i) noexcept : r_(r), i_(i) {}
        V& operator*() const noexcept { return (*r_)[i_]; }
        V* operator->() const noexcept { return &(*r_)[i_]; }
        Iter& operator++() noexcept { ++i_; return *this; }
        Iter operator++(int) noexcept { Iter t = *this; ++i_; return t; }
        bool operator==(const Iter& o) const noexcept { return i_ == o.i_; }
        bool operator!=(const Iter& o) const noexcept { return i_ != o.i_; }
    private:
        R* r_;
        size_t i_;
    };
    using iterator = Iter<Ring, T>;
    using const_iterator = Iter<const Ring, const T>;
    iterator begin() noexcept { return {this, 0}; }
    iterator end() noexcept { return {this, size_}; }
    const_iterator begin() const noexcept { return {this, 0}; }
    const_iterator end() const noexcept { return {this, size_}; }

private:
    void grow() {
        const size_t cap = cap_ ? cap_ * 2 : kFirst;
        T* buf = static_cast<T*>(std::malloc(cap * sizeof(T)));
        if (!buf) throw std::bad_alloc();
        // Unwrap: the values go to the start of the new array, in order.
        const size_t first = cap_ - head_ < size_ ? cap_ - head_ : size_;
        if (size_) {
            std::memcpy(buf, buf_ + head_, first * sizeof(T));
            std::memcpy(buf + first, buf_, (size_ - first) * sizeof(T));
        }
        std::free(buf_);
        buf_ = buf;
        cap_ = cap;
        head_ = 0;
    }

    static constexpr size_t kFirst = 8;
    T* buf_ = nullptr;
    size_t cap_ = 0;
    size_t head_ = 0;
    size_t size_ = 0;
};

}  // namespace cxxloop
