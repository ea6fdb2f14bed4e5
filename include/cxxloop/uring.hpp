// uring.hpp: the io_uring engine: a probe, completion operations, and the ring they share.
#pragma once

#include <sys/socket.h>
#include <sys/uio.h>

#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <system_error>
#include <vector>

#include "cxxloop/poller.hpp"

struct io_uring;      // liburing's ring and submission entry; only src/core/uring
struct io_uring_sqe;  // sees their definitions.
struct io_uring_buf_ring;

namespace cxxloop {

// --- probe ---------------------------------------------------------------------------

/// Optional kernel features: the engine works without each, by a slower path.
enum UringFeature : uint32_t {
    /// IORING_POLL_ADD_MULTI (Linux 5.13): the waker's poll is armed once, not per
    /// wake-up. Without it: one-shot polls.
    kUringPollMultishot = 1u << 0,
    /// IORING_RECV_MULTISHOT into a provided-buffer ring (Linux 6.0; the rings came in
    /// 5.19): UringStream. Without it: socket streams use the readiness-based Stream
    /// on ring polls.
    kUringRecvMultishot = 1u << 1,
    /// IOU_PBUF_RING_INC (Linux 6.12): UringStream's buffer ring is consumed
    /// incrementally, a few large buffers that small receives share and a large burst
    /// fills in one completion. Without it: many small whole buffers.
    kUringBufIncremental = 1u << 2,
    kUringAllFeatures = kUringPollMultishot | kUringRecvMultishot | kUringBufIncremental,
};

/// Whether io_uring can be used by this process, and why not.
struct UringSupport {
    bool available = false;
    /// The errno behind the verdict (0 when available): ENOSYS (kernel too old, or
    /// built without liburing), EPERM (seccomp, io_uring_disabled), EOPNOTSUPP
    /// (features or opcodes missing), or what io_uring_setup returned.
    int error = 0;
    /// Empty when available; otherwise a sentence naming the reason.
    std::string reason;
    /// The optional UringFeature bits the kernel has (tested by using each once on a
    /// scratch ring), less those named in the CXXLOOP_URING_DISABLE environment
    /// variable (a comma-separated list of "poll_multishot", "recv_multishot",
    /// "buf_incremental", or "all": forces the fallbacks, for tests). 0 when
    /// unavailable.
    uint32_t features = 0;
    /// Empty when every optional feature is there; otherwise a sentence naming those
    /// missing and why (kernel or CXXLOOP_URING_DISABLE).
    std::string missing_features;
};

/// The name of optional feature `bit` as CXXLOOP_URING_DISABLE spells it
/// ("poll_multishot", ...), or null for a bit that names none (and in a build
/// without liburing).
const char* uring_feature_key(uint32_t bit) noexcept;

/// Probes io_uring once per process and caches the answer (thread-safe).
const UringSupport& uring_support() noexcept;

/// Probes io_uring now, without the cache (tests use it under seccomp filters).
/// `disable` is read like CXXLOOP_URING_DISABLE (null: read the variable).
UringSupport detect_uring(const char* disable = nullptr) noexcept;

// --- operations -------------------------------------------------------------------------

class Uring;
class BufRing;

/// Base of every completion operation: an intrusive node the engine links while the
/// operation is in flight, so starting one allocates nothing.
///
/// Rules for owners: an op must outlive its final callback (the one that leaves it no
/// longer pending; the engine does not touch the op after calling it, so the owner may
/// destroy or restart it there), and must not be moved while pending. Callbacks run in the loop's
/// I/O phase, never inside Poller::wait(); a callback may start, cancel or close
/// anything, including restarting the op it was called for. A cancelled op still gets
/// its final callback, with -ECANCELED or with the result it had already reached.
/// When the engine closes (the loop closes), ops still pending get a final callback
/// with -ECANCELED.
class UringOp {
public:
    UringOp() = default;
    UringOp(const UringOp&) = delete;
    UringOp& operator=(const UringOp&) = delete;
    virtual ~UringOp() = default;

    /// True from a successful start until the final callback has begun.
    bool pending() const noexcept { return pending_; }

private:
    friend class Uring;
    /// An op's complete half: interprets one CQE and calls the owner's callback.
    using CompleteFn = void (*)(UringOp* op, Uring& ring, int res, uint32_t cqe_flags) noexcept;
    CompleteFn complete_ = nullptr;
    UringOp* prev_ = nullptr;
    UringOp* next_ = nullptr;
    bool pending_ = false;
    bool cancelling_ = false;  // Set by Uring::cancel(): a SendOp then stops resubmitting.
};

/// A multishot accept: one callback per accepted connection, until an error or cancel.
class AcceptOp : public UringOp {
public:
    /// `res` is a new connection's fd (non-blocking, close-on-exec; the callee owns it)
    /// or a failure (-errno, e.g. -EMFILE). `more` is false on the last call; the op is
    /// then no longer pending and may be restarted.
    virtual void on_accept(int res, bool more) noexcept = 0;

private:
    friend class Uring;
    int fd_ = -1;
    bool multishot_ = true;  // Cleared where the kernel refuses IORING_ACCEPT_MULTISHOT.
};

/// One receive into a caller buffer.
class RecvOp : public UringOp {
public:
    /// `res` is the byte count (0 at end of stream) or -errno.
    virtual void on_recv(int res) noexcept = 0;
};

/// A send of a whole iovec array. Short sends are resubmitted by the op itself, so
/// the callback sees either every byte sent or the error that stopped it. Only one
/// SendOp may be in flight per stream socket, or bytes could interleave.
class SendOp : public UringOp {
public:
    /// `res` is the total byte count or -errno (bytes before the error may have gone).
    virtual void on_send(int res) noexcept = 0;
    /// The completions the kernel delivered for the current send (> 1 after short sends).
    unsigned completions() const noexcept { return completions_; }

private:
    friend class Uring;
    msghdr msg_{};
    iovec one_{};  // The iovec of a single-buffer send.
    size_t sent_ = 0;
    int fd_ = -1;
    int flags_ = 0;
    unsigned completions_ = 0;
};

/// A multishot receive into buffers the kernel picks from a BufRing, so a connection
/// holds no buffer while it waits (Linux 6.0+).
class RecvMultishotOp : public UringOp {
public:
    /// `res` bytes (> 0) arrived at `data`, inside buffer `buf` of the ring; the callee
    /// holds a share of that buffer until it calls BufRing::release(buf). Otherwise
    /// (`buf` is -1, `data` null) the stream ended (0) or the receive failed (-errno;
    /// -ENOBUFS when the ring ran out of buffers: release some and start again).
    /// `more` is false on the last call.
    virtual void on_data(int res, int buf, const char* data, bool more) noexcept = 0;

private:
    friend class Uring;
    BufRing* bufs_ = nullptr;
};

/// A provided-buffer ring (Linux 5.19+): `count` equal buffers registered with the
/// kernel as one group, for RecvMultishotOp. Made by Uring::add_buf_ring() and owned
/// by that engine.
///
/// A ring is either whole-buffer (each receive takes a buffer of its own) or
/// incremental (IOU_PBUF_RING_INC, Linux 6.12): a receive takes only the bytes it
/// brings from the buffer at the head, and the next receive, of any connection,
/// continues after them. Either way a buffer goes back to the kernel once the kernel
/// has moved past it and every share handed out with its bytes is released.
class BufRing {
public:
    BufRing(const BufRing&) = delete;
    BufRing& operator=(const BufRing&) = delete;
    ~BufRing();

    uint16_t group() const noexcept { return group_; }
    size_t buffer_size() const noexcept { return size_; }
    uint32_t count() const noexcept { return count_; }
    bool incremental() const noexcept { return incremental_; }
    /// The start of buffer `id`.
    char* buffer(int id) noexcept { return mem_.get() + size_t(id) * size_; }
    /// Gives up one share of buffer `id`, as handed out by RecvMultishotOp::on_data.
    void release(int id) noexcept;

private:
    friend class Uring;
    BufRing(uint16_t group, uint32_t count, uint32_t size, bool incremental)
        : group_(group), count_(count), size_(size), incremental_(incremental) {}
    void fill() noexcept;            // Offers every buffer to the kernel.
    void offer(int id) noexcept;     // Puts buffer `id` back at the ring's tail.
    /// `len` bytes arrived in buffer `id`: returns where, and hands out a share.
    /// `kernel_keeps` (incremental rings) says the kernel goes on filling the buffer.
    char* take(int id, uint32_t len, bool kernel_keeps) noexcept;

    struct Slot {
        uint32_t next = 0;    // Where the kernel's next bytes go (incremental rings).
        uint32_t shares = 0;  // Handed out and not yet released.
        bool kernel = true;   // The kernel may still write into the buffer.
    };
    ::io_uring_buf_ring* ring_ = nullptr;  // Page-aligned (mmap), count_ entries.
    std::unique_ptr<char[]> mem_;
    std::unique_ptr<Slot[]> slots_;
    uint16_t group_;
    uint32_t count_;
    uint32_t size_;
    bool incremental_;
};

/// A connect of a non-blocking stream or datagram socket.
class ConnectOp : public UringOp {
public:
    /// `res` is 0 on success or -errno (e.g. -ECONNREFUSED).
    virtual void on_connect(int res) noexcept = 0;

private:
    friend class Uring;
    sockaddr_storage addr_{};  // The kernel may read the address after submission.
};

// --- the engine --------------------------------------------------------------------------

/// The io_uring ring of one loop: starts completion operations and collects their
/// completions. It is owned by the "uring" Poller, which polls on the same ring, and
/// reached through EventLoop::uring().
///
/// Starting an op only fills a submission entry: entries are submitted in one batch
/// by the next Poller::wait(), which also collects what completed; the loop then
/// delivers completions in its I/O phase (Poller::dispatch_completions()). Every
/// start function returns EBUSY for an op that is already pending and EBADF once the
/// engine is closed; the callback is called only after a successful start.
class Uring {
public:
    /// Sets up a ring; throws std::system_error naming the reason when io_uring is
    /// unusable (see uring_support()).
    Uring();
    ~Uring();
    Uring(const Uring&) = delete;
    Uring& operator=(const Uring&) = delete;

    /// Starts accepting connections on listening socket `fd` (multishot).
    std::error_code accept(AcceptOp& op, int fd);
    /// Starts one receive of up to `buf.size()` bytes; `buf` must stay valid until the
    /// callback.
    std::error_code recv(RecvOp& op, int fd, std::span<char> buf, int flags = 0);
    /// Starts sending every byte of `iov[0..iovcnt)`. The array (not the bytes) is
    /// advanced in place on short sends, so both must stay valid until the callback.
    /// MSG_NOSIGNAL is always added: a closed peer is -EPIPE, never SIGPIPE.
    std::error_code send(SendOp& op, int fd, iovec* iov, size_t iovcnt, int flags = 0);
    /// Starts sending `data`, which must stay valid until the callback.
    std::error_code send(SendOp& op, int fd, std::span<const char> data, int flags = 0);
    /// Starts a multishot receive on `fd` into buffers of `bufs`.
    std::error_code recv_multishot(RecvMultishotOp& op, int fd, BufRing& bufs);
    /// Registers `count` (a power of two, at most 32768) buffers of `size` bytes as
    /// buffer group `group`, consumed incrementally when `incremental` (see BufRing).
    /// Returns null and sets `ec` on failure (EINVAL on kernels without buffer rings,
    /// or without incremental ones, EEXIST for a group already registered).
    BufRing* add_buf_ring(uint16_t group, uint32_t count, uint32_t size, std::error_code& ec,
                          bool incremental = false);
    /// Starts connecting `fd` to `addr` (copied into the op).
    std::error_code connect(ConnectOp& op, int fd, const sockaddr* addr, socklen_t len);

    /// Asks the kernel to cancel `op`; it then completes with -ECANCELED (or with the
    /// result it had already reached; a SendOp cancelled after a short send reports
    /// -ECANCELED instead of resubmitting the rest). ENOENT when the op is not pending.
    std::error_code cancel(UringOp& op);
    /// Asks the kernel to cancel every op on `fd` (kernel 5.19+).
    std::error_code cancel_fd(int fd);
    /// Cancels every op on `fd` and returns once the kernel has let go of them (their
    /// final callbacks still come in the next I/O phase), so that closing `fd` right
    /// after really closes the file. On kernels before 6.0 the cancel is only
    /// submitted. A no-op when no op is pending.
    std::error_code cancel_fd_sync(int fd);
    /// The buffer ring of group `group` made by add_buf_ring(), or null.
    BufRing* buf_ring(uint16_t group) noexcept;
    /// Cancels every op on `fd`, waits until the kernel has let go of them, then
    /// closes `fd`. Pending ops complete with -ECANCELED in the next I/O phase. Use it
    /// instead of close(2): an fd closed with ops in flight stays open in the kernel
    /// until they finish, which for a receive may be never.
    std::error_code close_fd(int fd);

    /// How many ops are pending (started and not yet given their final callback).
    size_t pending_count() const noexcept { return pending_count_; }
    /// True when completions are queued or ops are in flight: the loop must then
    /// enter the poller even when it would otherwise skip a zero-timeout wait.
    bool busy() const noexcept { return pending_count_ != 0 || !done_.empty(); }
    /// How many completions are collected and waiting for dispatch().
    size_t undelivered() const noexcept { return done_.size(); }
    /// True once close() has run.
    bool closed() const noexcept { return closed_; }

    /// True when every UringFeature bit of `features` may be used on this engine:
    /// the probe found it (uring_support().features) and disable() was not called.
    bool has(uint32_t features) const noexcept { return (features_ & features) == features; }
    /// Stops using the optional `features` on this engine (tests force the fallbacks
    /// with it). Call it before starting what depends on them: the uring Poller reads
    /// kUringPollMultishot when it is made, UringStream reads kUringRecvMultishot per stream.
    void disable(uint32_t features) noexcept { features_ &= ~features; }

    /// Counters for measurements and tests: submission entries handed out, and
    /// completions reaped, since the engine was made.
    struct Stats {
        uint64_t sqes = 0;
        uint64_t cqes = 0;
    };
    const Stats& stats() const noexcept { return stats_; }

    // --- used by the uring Poller --------------------------------------------------
    /// Runs the callbacks of the completions collected by reap(). Returns how many.
    size_t dispatch() noexcept;
    /// Cancels every pending op, delivers their final callbacks and tears the ring
    /// down. Idempotent; the destructor calls it.
    void close() noexcept;
    /// In a child after fork(): replaces the ring with a new one without touching the
    /// parent's, and queues -ECANCELED for every op that was in flight (those belong
    /// to the parent's ring and will never complete here).
    std::error_code after_fork() noexcept;
    /// The ring (for the Poller's own poll operations).
    ::io_uring* ring() noexcept { return ring_.get(); }

    /// user_data tags: an op pointer (8-byte aligned) has tag 0; the Poller's polls
    /// and the engine's own entries (cancels) carry the tags below in the low bits.
    static constexpr uint64_t kTagMask = 7, kTagPoll = 1, kTagIgnore = 2;

    /// A free submission entry, flushing the queue to the kernel when it is full;
    /// null only when the engine is closed. The return type is liburing's
    /// io_uring_sqe (opaque here).
    ::io_uring_sqe* sqe() noexcept;
    /// Submits queued entries, if any (no wait). Returns the io_uring_submit result.
    int flush() noexcept;
    /// Moves every available CQE out of the completion ring: op completions into the
    /// dispatch queue, polls to `on_poll(ctx, user_data, res, cqe_flags)`; other tags
    /// are dropped. Returns how many CQEs there were.
    size_t reap(void (*on_poll)(void* ctx, uint64_t user_data, int res, uint32_t flags), void* ctx) noexcept;

private:
    struct Completion {
        UringOp* op;
        int res;
        uint32_t flags;
    };
    struct RingDeleter {
        void operator()(::io_uring* r) const noexcept;
    };

    std::error_code setup() noexcept;
    std::error_code check_start(const UringOp& op) const noexcept;
    void start(UringOp& op, UringOp::CompleteFn complete, ::io_uring_sqe* sqe) noexcept;
    void finish(UringOp& op) noexcept;
    void cancel_all() noexcept;

    static void accept_complete(UringOp*, Uring&, int, uint32_t) noexcept;
    static void recv_complete(UringOp*, Uring&, int, uint32_t) noexcept;
    static void send_complete(UringOp*, Uring&, int, uint32_t) noexcept;
    static void connect_complete(UringOp*, Uring&, int, uint32_t) noexcept;
    static void recv_multishot_complete(UringOp*, Uring&, int, uint32_t) noexcept;
    std::error_code register_buf_ring(BufRing& br) noexcept;
    std::error_code submit_accept(AcceptOp& op) noexcept;
    std::error_code arm_send(SendOp& op, int fd, ::iovec* iov, size_t iovcnt, int flags) noexcept;
    std::error_code submit_send(SendOp& op) noexcept;

    std::unique_ptr<::io_uring, RingDeleter> ring_;
    UringOp* head_ = nullptr;  // Pending ops, most recent first.
    size_t pending_count_ = 0;
    std::vector<Completion> done_;
    std::vector<std::unique_ptr<BufRing>> buf_rings_;  // Freed after the ring is gone.
    Stats stats_;
    uint32_t features_ = 0;  // UringFeature bits in use (set from the probe).
    bool closed_ = false;
    bool sync_cancel_ = true;  // Cleared where IORING_REGISTER_SYNC_CANCEL is missing (< 6.0).
};

}  // namespace cxxloop
