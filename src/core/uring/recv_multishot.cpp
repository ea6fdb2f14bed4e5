// recv_multishot.cpp: multishot receive into a provided-buffer ring, and the ring itself.
#include <sys/mman.h>

#include <cerrno>
#include <new>

#include "syscall.hpp"
#include "uring_internal.hpp"

namespace cxxloop {

using uring::kCqeFBufMore;
using uring::kPbufRingInc;

// --- the buffer ring ----------------------------------------------------------------------

BufRing::~BufRing() {
    if (ring_) ::munmap(ring_, count_ * sizeof(io_uring_buf));
}

// At registration, and again on the new ring of a child after fork(). A buffer whose
// bytes a stream still holds then stays out until its last share is released.
void BufRing::fill() noexcept {
    io_uring_buf_ring_init(ring_);
    const int mask = io_uring_buf_ring_mask(count_);
    int added = 0;
    for (uint32_t id = 0; id < count_; ++id) {
        if (slots_[id].shares) {
            slots_[id].kernel = false;
            continue;
        }
        slots_[id] = Slot{};
        io_uring_buf_ring_add(ring_, buffer(int(id)), size_, uint16_t(id), mask, added++);
    }
    io_uring_buf_ring_advance(ring_, added);
}

void BufRing::offer(int id) noexcept {
    slots_[id] = Slot{};
    io_uring_buf_ring_add(ring_, buffer(id), size_, uint16_t(id), io_uring_buf_ring_mask(count_), 0);
    io_uring_buf_ring_advance(ring_, 1);
}

char* BufRing::take(int id, uint32_t len, bool kernel_keeps) noexcept {
    Slot& s = slots_[id];
    ++s.shares;
    if (!incremental_) {
        s.kernel = false;
        return buffer(id);
    }
    char* at = buffer(id) + s.next;
    s.next += len;
    if (!kernel_keeps) s.kernel = false;
    return at;
}

void BufRing::release(int id) noexcept {
    if (id < 0 || uint32_t(id) >= count_) return;
    Slot& s = slots_[id];
    if (s.shares == 0) return;
    if (--s.shares == 0 && !s.kernel) offer(id);
}

std::error_code Uring::register_buf_ring(BufRing& br) noexcept {
    br.fill();
    io_uring_buf_reg reg{};
    reg.ring_addr = uint64_t(reinterpret_cast<uintptr_t>(br.ring_));
    reg.ring_entries = br.count_;
    reg.bgid = br.group_;
    if (br.incremental_) reg.pad = kPbufRingInc;
    int r = io_uring_register_buf_ring(ring_.get(), &reg, 0);
    return r < 0 ? sys::make_error(-r) : std::error_code{};
}

BufRing* Uring::buf_ring(uint16_t group) noexcept {
    for (auto& br : buf_rings_)
        if (br->group_ == group) return br.get();
    return nullptr;
}

BufRing* Uring::add_buf_ring(uint16_t group, uint32_t count, uint32_t size, std::error_code& ec, bool incremental) {
    ec = {};
    if (closed_ || !ring_) {
        ec = std::make_error_code(std::errc::bad_file_descriptor);
        return nullptr;
    }
    if (count == 0 || count > 32768 || (count & (count - 1)) || size == 0) {
        ec = std::make_error_code(std::errc::invalid_argument);
        return nullptr;
    }
    // Out of memory is an error code here, not an exception: UringStream::supported()
    // asks from noexcept code.
    std::unique_ptr<BufRing> br(new (std::nothrow) BufRing(group, count, size, incremental));
    if (!br) {
        ec = std::make_error_code(std::errc::not_enough_memory);
        return nullptr;
    }
    // The kernel wants the ring itself page-aligned; mmap gives that.
    void* mem = ::mmap(nullptr, count * sizeof(io_uring_buf), PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (mem == MAP_FAILED) {
        ec = sys::last_error();
        return nullptr;
    }
    br->ring_ = static_cast<io_uring_buf_ring*>(mem);
    br->mem_.reset(new (std::nothrow) char[size_t(count) * size]);
    br->slots_.reset(new (std::nothrow) BufRing::Slot[count]);
    if (!br->mem_ || !br->slots_) {
        ec = std::make_error_code(std::errc::not_enough_memory);
        return nullptr;
    }
    try {
        buf_rings_.reserve(buf_rings_.size() + 1);
    } catch (const std::bad_alloc&) {
        ec = std::make_error_code(std::errc::not_enough_memory);
        return nullptr;
    }
    if ((ec = register_buf_ring(*br))) return nullptr;
    buf_rings_.push_back(std::move(br));
    return buf_rings_.back().get();
}

// --- the receive ----------------------------------------------------------------------------

std::error_code Uring::recv_multishot(RecvMultishotOp& op, int fd, BufRing& bufs) {
    if (auto ec = check_start(op)) return ec;
    io_uring_sqe* s = sqe();
    if (!s) return std::make_error_code(std::errc::resource_unavailable_try_again);
    io_uring_prep_recv_multishot(s, fd, nullptr, 0, 0);
    s->flags |= IOSQE_BUFFER_SELECT;
    s->buf_group = bufs.group();
    op.bufs_ = &bufs;
    start(op, &Uring::recv_multishot_complete, s);
    return {};
}

void Uring::recv_multishot_complete(UringOp* base, Uring& ring, int res, uint32_t flags) noexcept {
    auto& op = static_cast<RecvMultishotOp&>(*base);
    const bool more = flags & IORING_CQE_F_MORE;
    int buf = flags & IORING_CQE_F_BUFFER ? int(flags >> IORING_CQE_BUFFER_SHIFT) : -1;
    const char* data = nullptr;
    if (buf >= 0 && uint32_t(buf) < op.bufs_->count_) {
        if (res > 0) {
            data = op.bufs_->take(buf, uint32_t(res), flags & kCqeFBufMore);
        } else {
            // No bytes: a whole-buffer ring has still used the buffer up, an
            // incremental one has not (kernels before the fix for zero-length
            // completions report it used up without moving past it: either way the
            // kernel keeps it).
            if (!op.bufs_->incremental_) op.bufs_->offer(buf);
            buf = -1;
        }
    } else {
        buf = -1;
    }
    if (!more) ring.finish(op);
    op.on_data(res, buf, data, more);
}

}  // namespace cxxloop
