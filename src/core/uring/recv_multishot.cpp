// recv_multishot.cpp: multishot receive into a provided-buffer ring, and the ring itself.
#include <sys/mman.h>

#include <cerrno>
#include <new>

#include "syscall.hpp"
#include "uring_internal.hpp"

namespace cxxloop {

// --- the buffer ring ----------------------------------------------------------------------

BufRing::~BufRing() {
    if (ring_) ::munmap(ring_, count_ * sizeof(io_uring_buf));
}

void BufRing::fill() noexcept {
    io_uring_buf_ring_init(ring_);
    const int mask = io_uring_buf_ring_mask(count_);
    for (uint32_t id = 0; id < count_; ++id) io_uring_buf_ring_add(ring_, buffer(int(id)), size_, uint16_t(id), mask, int(id));
    io_uring_buf_ring_advance(ring_, int(count_));
}

void BufRing::recycle(int id) noexcept {
    io_uring_buf_ring_add(ring_, buffer(id), size_, uint16_t(id), io_uring_buf_ring_mask(count_), 0);
    io_uring_buf_ring_advance(ring_, 1);
}

std::error_code Uring::register_buf_ring(BufRing& br) noexcept {
    br.fill();
    io_uring_buf_reg reg{};
    reg.ring_addr = uint64_t(reinterpret_cast<uintptr_t>(br.ring_));
    reg.ring_entries = br.count_;
    reg.bgid = br.group_;
    int r = io_uring_register_buf_ring(ring_.get(), &reg, 0);
    return r < 0 ? sys::make_error(-r) : std::error_code{};
}

BufRing* Uring::buf_ring(uint16_t group) noexcept {
    for (auto& br : buf_rings_)
        if (br->group_ == group) return br.get();
    return nullptr;
}

BufRing* Uring::add_buf_ring(uint16_t group, uint32_t count, uint32_t size, std::error_code& ec) {
    ec = {};
    if (closed_ || !ring_) {
        ec = std::make_error_code(std::errc::bad_file_descriptor);
        return nullptr;
    }
    if (count == 0 || count > 32768 || (count & (count - 1)) || size == 0) {
        ec = std::make_error_code(std::errc::invalid_argument);
        return nullptr;
    }
    std::unique_ptr<BufRing> br(new BufRing(group, count, size));
    // The kernel wants the ring itself page-aligned; mmap gives that.
    void* mem = ::mmap(nullptr, count * sizeof(io_uring_buf), PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (mem == MAP_FAILED) {
        ec = sys::last_error();
        return nullptr;
    }
    br->ring_ = static_cast<io_uring_buf_ring*>(mem);
    br->mem_.reset(new char[size_t(count) * size]);
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
    start(op, &Uring::recv_multishot_complete, s);
    return {};
}

void Uring::recv_multishot_complete(UringOp* base, Uring& ring, int res, uint32_t flags) noexcept {
    auto& op = static_cast<RecvMultishotOp&>(*base);
    const bool more = flags & IORING_CQE_F_MORE;
    const int buf = flags & IORING_CQE_F_BUFFER ? int(flags >> IORING_CQE_BUFFER_SHIFT) : -1;
    if (!more) ring.finish(op);
    op.on_data(res, buf, more);
}

}  // namespace cxxloop
