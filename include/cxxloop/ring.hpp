// ring.hpp: a FIFO in one growable circular buffer, optionally with inline slots.
#pragma once

#include <cstddef>
#include <cstdlib>
#include <cstring>
#include <iterator>
#include <memory>
#include <new>
#include <type_traits>
#include <utility>

namespace cxxloop {

/// A FIFO queue (push_back, push_front, front, pop_front, iteration from the front)
/// that allocates nothing until it needs room and then one power-of-two array,
/// doubled when full. std::deque allocates a 512-byte block and its map on
/// construction, even when it never holds anything: most streams never queue a
/// write, and thousands of idle connections would each carry that for nothing.
///
/// `Inline` (0 or a power of two) values live in the object itself: a ring that
/// rarely holds more than that never allocates, and one that outgrew them returns to
/// them (freeing its array) whenever it becomes empty. With Inline == 0 an emptied
/// ring keeps its array for the next burst.
///
/// T may be move-only. Trivially copyable values are moved with memcpy.
template <class T, size_t Inline = 0>
class Ring {
    static_assert((Inline & (Inline - 1)) == 0, "Inline must be 0 or a power of two");
    static constexpr bool kTrivial = std::is_trivially_copyable_v<T>;

public:
    Ring() noexcept { use_inline(); }
    Ring(const Ring&) = delete;
    Ring& operator=(const Ring&) = delete;
    Ring(Ring&& o) noexcept(std::is_nothrow_move_constructible_v<T>) : Ring() { take(o); }
    Ring& operator=(Ring&& o) noexcept(std::is_nothrow_move_constructible_v<T>) {
        if (this != &o) {
            reset();
            take(o);
        }
        return *this;
    }
    ~Ring() { reset(); }

    bool empty() const noexcept { return size_ == 0; }
    size_t size() const noexcept { return size_; }
    size_t capacity() const noexcept { return cap_; }
    /// True while the values live in an allocated array (not in the inline slots).
    bool allocated() const noexcept { return buf_ != nullptr && buf_ != slots(); }

    T& front() noexcept { return buf_[head_]; }
    const T& front() const noexcept { return buf_[head_]; }
    T& operator[](size_t i) noexcept { return buf_[(head_ + i) & (cap_ - 1)]; }
    const T& operator[](size_t i) const noexcept { return buf_[(head_ + i) & (cap_ - 1)]; }

    /// Appends a value; throws std::bad_alloc when the array cannot grow.
    void push_back(const T& v) { emplace_back(v); }
    void push_back(T&& v) { emplace_back(std::move(v)); }
    template <class... A>
    T& emplace_back(A&&... a) {
        if (size_ == cap_) return grow_with(false, std::forward<A>(a)...);
        T* p = buf_ + ((head_ + size_) & (cap_ - 1));
        ::new (static_cast<void*>(p)) T(std::forward<A>(a)...);
        ++size_;
        return *p;
    }
    /// Puts a value back at the front (before everything queued).
    void push_front(T&& v) {
        if (size_ == cap_) {
            grow_with(true, std::move(v));
            return;
        }
        const size_t h = (head_ + cap_ - 1) & (cap_ - 1);
        ::new (static_cast<void*>(buf_ + h)) T(std::move(v));
        head_ = h;
        ++size_;
    }
    void pop_front() noexcept {
        std::destroy_at(buf_ + head_);
        head_ = (head_ + 1) & (cap_ - 1);
        if (--size_ == 0) emptied();
    }
    /// Empties the queue (keeping its array when Inline == 0).
    void clear() noexcept {
        destroy_all();
        emptied();
    }
    /// Empties the queue and frees its array.
    void reset() noexcept {
        destroy_all();
        free_array();
    }
    void swap(Ring& o) noexcept
        requires(Inline == 0)
    {
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
    // The inline slots, as raw storage (no T is constructed until pushed).
    struct NoSlots {};
    struct alignas(T) SomeSlots {
        unsigned char bytes[sizeof(T) * (Inline ? Inline : 1)];
    };
    using Slots = std::conditional_t<Inline == 0, NoSlots, SomeSlots>;

    T* slots() noexcept {
        if constexpr (Inline == 0) return nullptr;
        else return std::launder(reinterpret_cast<T*>(&slots_));
    }
    const T* slots() const noexcept {
        if constexpr (Inline == 0) return nullptr;
        else return std::launder(reinterpret_cast<const T*>(&slots_));
    }
    void use_inline() noexcept {
        buf_ = slots();
        cap_ = Inline;
        head_ = size_ = 0;
    }
    void destroy_all() noexcept {
        if constexpr (!std::is_trivially_destructible_v<T>)
            for (size_t i = 0; i < size_; ++i) std::destroy_at(&(*this)[i]);
        size_ = 0;
    }
    void free_array() noexcept {
        if (allocated()) std::free(buf_);
        use_inline();
    }
    // The last value left: an outgrown inline ring returns to its slots.
    void emptied() noexcept {
        if constexpr (Inline != 0) {
            if (allocated()) {
                free_array();
                return;
            }
        }
        head_ = 0;
    }
    // Moves every value of `o` here (this is empty and on its inline slots); `o` is
    // left empty.
    void take(Ring& o) {
        if (o.allocated()) {
            buf_ = o.buf_;
            cap_ = o.cap_;
            head_ = o.head_;
            size_ = o.size_;
            o.use_inline();
            return;
        }
        for (size_t i = 0; i < o.size_; ++i) emplace_back(std::move(o[i]));
        o.clear();
    }
    // A full ring takes one more value: a new array twice the size, where the new
    // value is made first (last slot for the front, after the old values for the
    // back) and the old values are then moved to its start, in order. Made first
    // because the arguments may name a value of this ring, which the move destroys
    // (or the old array's free takes away); if making it throws, nothing changed.
    template <class... A>
    T& grow_with(bool front, A&&... a) {
        const size_t cap = cap_ > Inline ? cap_ * 2 : kFirst;
        T* buf = static_cast<T*>(std::malloc(cap * sizeof(T)));
        if (!buf) throw std::bad_alloc();
        T* p = buf + (front ? cap - 1 : size_);
        try {
            ::new (static_cast<void*>(p)) T(std::forward<A>(a)...);
        } catch (...) {
            std::free(buf);
            throw;
        }
        if constexpr (kTrivial) {
            const size_t first = cap_ - head_ < size_ ? cap_ - head_ : size_;
            if (size_) {
                std::memcpy(static_cast<void*>(buf), buf_ + head_, first * sizeof(T));
                std::memcpy(static_cast<void*>(buf + first), buf_, (size_ - first) * sizeof(T));
            }
        } else {
            for (size_t i = 0; i < size_; ++i) {
                T& v = (*this)[i];
                ::new (static_cast<void*>(buf + i)) T(std::move(v));
                std::destroy_at(&v);
            }
        }
        if (allocated()) std::free(buf_);
        buf_ = buf;
        cap_ = cap;
        head_ = front ? cap - 1 : 0;
        ++size_;
        return *p;
    }

    static constexpr size_t kFirst = Inline * 2 > 8 ? Inline * 2 : 8;
    T* buf_ = nullptr;
    size_t cap_ = 0;
    size_t head_ = 0;
    size_t size_ = 0;
    [[no_unique_address]] Slots slots_;
};

}  // namespace cxxloop
