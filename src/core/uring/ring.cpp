// ring.cpp: the Uring engine's ring: setup, submission entries, reaping, delivery, teardown, fork.
#include <unistd.h>

#include <cerrno>
#include <new>
#include <string>

#include "syscall.hpp"
#include "uring_internal.hpp"

namespace cxxloop {
namespace {

// One iteration rarely queues more than a few hundred entries; when it does, sqe()
// flushes the queue early. The completion ring is larger because multishot accepts and
// polls can complete in bursts; an overflow is not lost (IORING_FEAT_NODROP) but costs
// an extra syscall to flush.
constexpr unsigned kSqEntries = 256;
constexpr unsigned kCqEntries = 2048;

/// Sets up `ring` with the cheapest task-work mode the kernel offers. COOP_TASKRUN
/// (5.19) runs completions' task work when we next enter the kernel instead of
/// interrupting us; TASKRUN_FLAG tells io_uring_submit() when entering is needed, so a
/// zero-timeout wait costs no syscall when nothing has happened. Older kernels refuse
/// the flags with EINVAL, and get the plain setup.
int init_ring(io_uring* ring) noexcept {
    io_uring_params p{};
    p.flags = IORING_SETUP_CQSIZE | IORING_SETUP_SUBMIT_ALL | IORING_SETUP_COOP_TASKRUN |
              IORING_SETUP_TASKRUN_FLAG;
    p.cq_entries = kCqEntries;
    int r = io_uring_queue_init_params(kSqEntries, ring, &p);
    if (r != -EINVAL) return r;
    p = io_uring_params{};
    p.flags = IORING_SETUP_CQSIZE;
    p.cq_entries = kCqEntries;
    return io_uring_queue_init_params(kSqEntries, ring, &p);
}

}  // namespace

void Uring::RingDeleter::operator()(io_uring* r) const noexcept {
    io_uring_queue_exit(r);
    delete r;
}

Uring::Uring() {
    const UringSupport& s = uring_support();
    if (!s.available) throw std::system_error(sys::make_error(s.error), "io_uring is unavailable: " + s.reason);
    if (auto ec = setup())
        throw std::system_error(ec, "io_uring is unavailable: " + uring::setup_refusal(ec.value(), uring::read_io_uring_disabled()));
    features_ = s.features;
    done_.reserve(256);
}

Uring::~Uring() { close(); }

std::error_code Uring::setup() noexcept {
    auto* r = new (std::nothrow) io_uring{};
    if (!r) return std::make_error_code(std::errc::not_enough_memory);
    if (int err = init_ring(r); err < 0) {
        delete r;
        return sys::make_error(-err);
    }
    ring_.reset(r);
    return {};
}

// --- submission -------------------------------------------------------------------------

io_uring_sqe* Uring::sqe() noexcept {
    if (closed_ || !ring_) return nullptr;
    io_uring_sqe* s = io_uring_get_sqe(ring_.get());
    if (!s) {
        // The queue is full: hand it to the kernel now and take a fresh entry.
        io_uring_submit(ring_.get());
        s = io_uring_get_sqe(ring_.get());
    }
    stats_.sqes += s != nullptr;
    return s;
}

int Uring::flush() noexcept { return ring_ && io_uring_sq_ready(ring_.get()) ? io_uring_submit(ring_.get()) : 0; }

std::error_code Uring::check_start(const UringOp& op) const noexcept {
    if (closed_ || !ring_) return std::make_error_code(std::errc::bad_file_descriptor);
    if (op.pending_) return std::make_error_code(std::errc::device_or_resource_busy);
    return {};
}

void Uring::start(UringOp& op, UringOp::CompleteFn complete, io_uring_sqe* s) noexcept {
    io_uring_sqe_set_data64(s, uring::op_data(op));
    op.complete_ = complete;
    op.pending_ = true;
    op.cancelling_ = false;
    op.prev_ = nullptr;
    op.next_ = head_;
    if (head_) head_->prev_ = &op;
    head_ = &op;
    ++pending_count_;
}

void Uring::finish(UringOp& op) noexcept {
    if (!op.pending_) return;
    if (op.prev_) op.prev_->next_ = op.next_;
    else head_ = op.next_;
    if (op.next_) op.next_->prev_ = op.prev_;
    op.prev_ = op.next_ = nullptr;
    op.pending_ = false;
    --pending_count_;
}

// --- completion -------------------------------------------------------------------------

size_t Uring::reap(void (*on_poll)(void* ctx, uint64_t user_data, int res, uint32_t flags), void* ctx) noexcept {
    if (!ring_) return 0;
    io_uring* r = ring_.get();
    size_t total = 0;
    for (;;) {
        unsigned head, seen = 0;
        io_uring_cqe* cqe;
        io_uring_for_each_cqe(r, head, cqe) {
            ++seen;
            const uint64_t data = cqe->user_data;
            const uint64_t tag = data & kTagMask;
            if (tag == 0 && data != 0) done_.push_back({reinterpret_cast<UringOp*>(uintptr_t(data)), cqe->res, cqe->flags});
            else if (tag == kTagPoll) on_poll(ctx, data, cqe->res, cqe->flags);
            // Anything else is the engine's own (cancels, poll removals): no owner to tell.
        }
        io_uring_cq_advance(r, seen);
        total += seen;
        stats_.cqes += seen;
        // Completions that did not fit wait in the kernel's overflow list; entering
        // the kernel moves them into the ring.
        if (!io_uring_cq_has_overflow(r)) return total;
        io_uring_get_events(r);
    }
}

size_t Uring::dispatch() noexcept {
    // By index: a completion half may queue more (a synthetic result never reaches the
    // kernel), and the vector may grow under us.
    size_t i = 0;
    for (; i < done_.size(); ++i) {
        const Completion c = done_[i];
        c.op->complete_(c.op, *this, c.res, c.flags);
    }
    done_.clear();
    return i;
}

// --- teardown and fork --------------------------------------------------------------------

/// Cancels every op in the kernel and collects their completions; the kernel has let go
/// of every buffer when this returns (unless the kernel is too old to say so).
void Uring::cancel_all() noexcept {
    if (!ring_ || pending_count_ == 0) return;
    io_uring* r = ring_.get();
    io_uring_submit(r);  // Entries still queued must not start after the cancel.
    io_uring_sync_cancel_reg reg{};
    reg.flags = IORING_ASYNC_CANCEL_ANY;
    reg.timeout.tv_sec = -1;
    reg.timeout.tv_nsec = -1;
    int ret = sync_cancel_ ? io_uring_register_sync_cancel(r, &reg) : -EINVAL;
    if (ret == -EINVAL || ret == -ENOSYS || ret == -EOPNOTSUPP) {
        // Before 6.0: an asynchronous cancel of everything, then wait (bounded) for
        // the ops to report.
        sync_cancel_ = false;
        if (io_uring_sqe* s = io_uring_get_sqe(r)) {
            io_uring_prep_cancel64(s, 0, IORING_ASYNC_CANCEL_ANY);
            io_uring_sqe_set_data64(s, kTagIgnore);
        }
        io_uring_submit(r);
    }
    auto ignore = [](void*, uint64_t, int, uint32_t) {};
    for (int round = 0; round < 50; ++round) {
        io_uring_get_events(r);
        reap(ignore, nullptr);
        size_t finals = 0;  // Results that end an op (a short send's does not, but
        for (const Completion& c : done_) finals += !(c.flags & IORING_CQE_F_MORE);  // it cannot restart now).
        if (finals >= pending_count_) break;
        __kernel_timespec ts{0, 20'000'000};
        io_uring_cqe* cqe;
        io_uring_wait_cqe_timeout(r, &cqe, &ts);
    }
}

void Uring::close() noexcept {
    if (closed_) return;
    closed_ = true;  // From here on, starting an op fails with EBADF.
    cancel_all();
    dispatch();
    // Whatever the kernel did not report (a kernel too old to cancel synchronously, or
    // an engine re-created after fork) still gets its final callback.
    while (head_) {
        done_.push_back({head_, -ECANCELED, 0});
        dispatch();
    }
    ring_.reset();
}

std::error_code Uring::after_fork() noexcept {
    if (closed_) return {};
    // Only our mapping and descriptor go: the parent's ring and its requests live on.
    ring_.reset();
    // Results collected but not delivered belong to ops that are void here; accepted
    // connections among them would leak.
    for (const Completion& c : done_)
        if (c.op->complete_ == &Uring::accept_complete && c.res >= 0) ::close(c.res);
    done_.clear();
    for (UringOp* op = head_; op; op = op->next_) done_.push_back({op, -ECANCELED, 0});
    if (auto ec = setup()) return ec;
    // Buffer rings belong to a ring: offer every buffer again, to the new one.
    for (auto& br : buf_rings_)
        if (auto ec = register_buf_ring(*br)) return ec;
    return {};
}

}  // namespace cxxloop
