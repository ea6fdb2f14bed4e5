// uring_stream.hpp: a connected stream socket read and written with io_uring completions.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <system_error>

#include "cxxloop/loop.hpp"
#include "cxxloop/ring.hpp"
#include "cxxloop/stream.hpp"
#include "cxxloop/uring.hpp"

namespace cxxloop {

/// The completion-based sibling of Stream, for TCP and Unix stream sockets on a loop
/// running the "uring" poller. It keeps Stream's contract (the same StreamHandler
/// reports, water marks, shutdown_write, abort) with other mechanics:
///
/// - Reading is one multishot receive into the loop's shared provided-buffer ring:
///   the kernel receives while the loop does other work, and a busy connection costs
///   no system call per message. Completions are not delivered in the I/O phase: the
///   stream posts itself to the ready queue (EventLoop::post_io), so
///   read_buffer()/on_read() run where asyncio runs a reader's callback. stop_reading() cancels the receive; data that
///   had already arrived is kept (copied out of the ring) for start_reading().
/// - Writing from a callback of the running loop (a protocol answering in
///   data_received, a task writing) queues the bytes for a SendOp submitted with the
///   loop's next wait, so one io_uring_enter carries the answers of every connection
///   served in the iteration (a loop that stops submits them before it returns).
///   Writes from outside the loop's callbacks try send(2) at once, as Stream does.
///   A send completion that owes the owner nothing (no resume, no drain it waits
///   for) is finished in the I/O phase without a report.
/// - abort() cancels the operations synchronously (the kernel has let go of the
///   socket when it returns, so the owner may close the fd at once). The stream must
///   not be destroyed while registered() is true: that lasts until the cancelled
///   operations have reported, which the owner learns from StreamHandler::proceed()
///   (or on_loop_closed() when the loop closes meanwhile).
class UringStream final : public ByteStream, public IoHandler {
public:
    /// Wraps connected stream socket `fd` (made non-blocking). Throws
    /// std::system_error when the loop has no io_uring engine or the engine cannot
    /// receive into a buffer ring (kernels before 6.0); callers then use Stream.
    UringStream(EventLoop& loop, int fd, StreamHandler& handler);
    ~UringStream() override;
    UringStream(const UringStream&) = delete;
    UringStream& operator=(const UringStream&) = delete;

    /// Whether streams on `loop` can be UringStreams (sets up the shared buffer ring
    /// on first use).
    static bool supported(EventLoop& loop) noexcept;

    int fd() const noexcept { return fd_; }

    std::error_code start_reading() override;
    void stop_reading() noexcept override;
    bool reading() const noexcept override { return reading_; }
    bool registered() const noexcept override { return recv_.pending() || send_.pending(); }
    bool flushing() const noexcept override { return sending() || !queue_.empty(); }
    std::error_code write(WriteChunk c) override;
    size_t write_buffer_size() const noexcept override { return queued_; }
    void set_write_limits(size_t high, size_t low) noexcept override;
    std::error_code shutdown_write() override;
    void abort() noexcept override;
    /// Stops reading and writing, keeping the queue (dropped by the destructor).
    void detach() noexcept;

    /// Bytes received and not yet delivered (tests).
    size_t undelivered() const noexcept;

    bool on_io(int fd, uint32_t events) noexcept override;
    void io_retain() noexcept override { handler_.retain(); }
    void io_release() noexcept override { handler_.release(); }

private:
    struct Recv final : RecvMultishotOp {
        UringStream* s = nullptr;
        void on_data(int res, int buf, const char* data, bool more) noexcept override;
    };
    struct Send final : SendOp {
        UringStream* s = nullptr;
        void on_send(int res) noexcept override;
    };
    /// Received bytes waiting for delivery, at `data`: in ring buffer `buf` (holding a
    /// share of it), or (buf == -1) in `copy`, once copied out of the ring.
    struct Chunk {
        int buf = -1;
        const char* data = nullptr;
        size_t off = 0;
        size_t len = 0;
        std::unique_ptr<char[]> copy;
    };

    // The engine, null once the loop is closed (it goes with the loop's poller).
    Uring* ring() noexcept { return loop_.closed() ? nullptr : uring_; }
    /// A send is in flight, or its result waits for delivery.
    bool sending() const noexcept { return send_.pending() || send_done_; }
    void recycle(Chunk& c) noexcept;
    void drop_inbox() noexcept;
    void copy_inbox() noexcept;
    void arm() noexcept;
    void post() noexcept;
    void after_completion() noexcept;
    /// How a delivery went: `next` (delivered, go on), `declined` (the handler wants
    /// the bytes otherwise), `stop` (it takes none now), `abort` (proceed() said no).
    enum class Step : unsigned char { next, declined, stop, abort };
    bool gather(size_t& count, size_t& total) const noexcept;
    Step deliver_whole() noexcept;
    Step declined_meanwhile() noexcept;
    Step deliver_copied() noexcept;
    bool deliver_reads() noexcept;
    bool hold_burst() noexcept;
    void finish_send() noexcept;
    bool finish_send_now() noexcept;
    std::error_code start_send() noexcept;
    ssize_t send_now(const char* p, size_t n) noexcept;
    void cancel_ops() noexcept;
    void fail(std::error_code ec, bool writing) noexcept;
    void drop_queue() noexcept;
    void consume(size_t n) noexcept;
    void maybe_pause() noexcept;
    void maybe_resume() noexcept;

    EventLoop& loop_;
    StreamHandler& handler_;
    Uring* uring_ = nullptr;  // Cached: EventLoop::uring() asks the poller (a virtual call).
    BufRing* bufs_ = nullptr;
    int fd_;
    Recv recv_;
    Send send_;
    // Usually one chunk, delivered in the iteration it arrived in: that one lives in
    // the stream; more (a burst, or bytes kept while paused) take an array until the
    // inbox empties again. An idle connection allocates nothing.
    Ring<Chunk, 1> inbox_;
    bool reading_ = false;
    bool eof_seen_ = false;
    bool held_ = false;  // A burst waits one pass for its rest (hold_burst()).
    int read_err_ = 0;
    int send_res_ = 0;
    bool send_done_ = false;
    bool broken_ = false;
    bool detached_ = false;
    bool eof_requested_ = false;
    bool eof_done_ = false;
    // Every write from a callback waits here for the next submission: one chunk
    // lives in the stream, so answering costs no allocation and an idle connection
    // holds none.
    Ring<WriteChunk, 1> queue_;
    size_t front_offset_ = 0;  // Bytes of queue_.front() already sent.
    size_t queued_ = 0;
    size_t inflight_ = 0;  // Bytes handed to the SendOp in flight.
    // The iovec array of a send of several chunks, which the SendOp advances in place
    // after a short send: allocated for such a send and freed once the queue drains
    // (a send of one chunk uses the op's own iovec).
    static constexpr int kMaxIov = 64;
    // A delivery joins at most this many received chunks, of at most this many bytes
    // in all (asyncio's max_size: what one recv() of a readiness-based stream takes).
    static constexpr size_t kMaxParts = 32;
    static constexpr size_t kMaxDelivery = 256 * 1024;
    std::unique_ptr<::iovec[]> iov_;
    WaterMarks flow_;
};

}  // namespace cxxloop
