// stream.hpp: non-blocking byte streams (TCP, Unix sockets, pipes) driven by the loop.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <system_error>

#include <sys/types.h>
#include <sys/uio.h>

#include "cxxloop/loop.hpp"
#include "cxxloop/ring.hpp"

namespace cxxloop {

/// Bytes handed to Stream::write, owned by the writer until `release(owner)` is
/// called: once they are all written, or when the stream drops them (abort, error).
/// A null `release` means the bytes need no release (static or outliving the stream).
struct WriteChunk {
    const char* data = nullptr;
    size_t size = 0;
    void* owner = nullptr;
    void (*release)(void* owner) noexcept = nullptr;
};

/// What a Stream reports to its owner (a transport in the binding, or C++ code).
/// Every callback may call any Stream method, abort() and close() included, but must
/// not destroy the Stream: defer that until the callback has returned.
class StreamHandler {
public:
    virtual ~StreamHandler() = default;
    /// Where the next read goes (`suggested` is a size hint). An empty span skips
    /// this read; reading resumes at the next readiness event.
    virtual std::span<char> read_buffer(size_t suggested) noexcept = 0;
    /// `n` (> 0) bytes were read into the span read_buffer() returned last.
    virtual void on_read(size_t n) noexcept = 0;
    /// Offers `n` (> 0) received bytes at `data` directly (a completion-based stream
    /// has them in memory already; they stay valid during the call). Return false to
    /// have them copied through read_buffer() and on_read() instead (the default).
    virtual bool on_bytes(const char* /*data*/, size_t /*n*/) noexcept { return false; }
    /// Offers `total` (> 0) received bytes held in `count` (> 1) pieces, to be
    /// delivered as one read of their concatenation (a completion-based stream that
    /// received a burst into several buffers). Return false to have them offered
    /// otherwise (the default): the first piece to on_bytes(), or all of them through
    /// read_buffer() and on_read().
    virtual bool on_bytes_parts(const iovec* /*parts*/, size_t /*count*/, size_t /*total*/) noexcept { return false; }
    /// The peer closed its side; reading has stopped.
    virtual void on_eof() noexcept = 0;
    /// A read or write failed; the stream has stopped reading and writing and has
    /// released its queued chunks.
    virtual void on_error(std::error_code ec, bool writing) noexcept = 0;
    /// The write queue went above the high water mark.
    virtual void on_pause_writing() noexcept {}
    /// The write queue went down to the low water mark after a pause.
    virtual void on_resume_writing() noexcept {}
    /// The write queue became empty after having held data (and, after
    /// shutdown_write(), the write side has been shut down).
    virtual void on_drained() noexcept {}
    /// Whether on_drained() would do anything now; a completion-based stream that is
    /// told no finishes its sends without queueing a report.
    virtual bool wants_drained() const noexcept { return true; }
    /// Asked after each readiness report is handled: false aborts the loop's
    /// iteration (the binding lets KeyboardInterrupt out of a protocol this way).
    virtual bool proceed() noexcept { return true; }
    /// The loop holds the stream while a readiness report is queued (see IoHandler):
    /// a refcounted owner counts these; the defaults do nothing.
    virtual void retain() noexcept {}
    virtual void release() noexcept {}
    /// The loop was closed under the stream: it no longer reads or writes.
    virtual void on_loop_closed() noexcept {}
};

/// A write queue's flow control, asyncio's rule: pause the writer when the queue
/// goes above `high`, resume it when it is back at or below `low`.
struct WaterMarks {
    size_t high = 64 * 1024;
    size_t low = 16 * 1024;
    bool paused = false;
    /// Whether `queued` bytes just crossed above high (the writer is now paused).
    bool pause_due(size_t queued) noexcept {
        if (paused || queued <= high) return false;
        return paused = true;
    }
    /// Whether `queued` bytes just came down to low (the writer may resume).
    bool resume_due(size_t queued) noexcept {
        if (!paused || queued > low) return false;
        paused = false;
        return true;
    }
};

/// What a stream transport's owner drives: the readiness-based Stream below, and the
/// completion-based UringStream of the io_uring engine (cxxloop/uring_stream.hpp).
/// Both report to a StreamHandler and keep the same contract.
class ByteStream {
public:
    virtual ~ByteStream() = default;
    virtual std::error_code start_reading() = 0;
    virtual void stop_reading() noexcept = 0;
    virtual bool reading() const noexcept = 0;
    /// Whether the loop holds the stream now (an fd registration, or operations in flight).
    virtual bool registered() const noexcept = 0;
    /// Whether queued data waits to be written.
    virtual bool flushing() const noexcept = 0;
    virtual std::error_code write(WriteChunk c) = 0;
    virtual size_t write_buffer_size() const noexcept = 0;
    virtual void set_write_limits(size_t high, size_t low) noexcept = 0;
    virtual std::error_code shutdown_write() = 0;
    virtual void abort() noexcept = 0;
};

/// A connected, non-blocking fd read and written through the loop. It does not own
/// the fd: the owner closes it after detach() (or abort()).
///
/// Writes are tried at once when nothing is queued; what the kernel does not take is
/// queued by reference and flushed with one writev/send/sendmsg per writable event. Flow
/// control follows asyncio's rule: pause when the queue exceeds the high water mark,
/// resume when it drops to the low one (defaults 64 KiB and 16 KiB).
class Stream final : public ByteStream, public IoHandler {
public:
    /// Wraps `fd` (set non-blocking here). `is_socket` selects send()/sendmsg() with
    /// MSG_NOSIGNAL (one buffer / several) over writev, so a vanished peer gives EPIPE
    /// rather than SIGPIPE; anything else (a pipe) is written with writev.
    Stream(EventLoop& loop, int fd, StreamHandler& handler, bool is_socket);
    ~Stream() override;
    Stream(const Stream&) = delete;
    Stream& operator=(const Stream&) = delete;

    int fd() const noexcept { return fd_; }

    /// Starts or stops delivering reads. Errors come from registering the fd.
    std::error_code start_reading() override;
    void stop_reading() noexcept override;
    bool reading() const noexcept override { return reading_; }
    /// Whether the fd is registered with the loop now (reading, or flushing writes).
    bool registered() const noexcept override { return registered_ != 0; }
    /// Whether a queued write is waiting for the fd to become writable.
    bool flushing() const noexcept override { return watching_write_; }

    /// Writes `c`: as much as possible now, the rest queued. Returns the error of an
    /// immediate write (the stream is then broken and `c` released); would-block is
    /// not an error. Writing after shutdown_write() or once broken returns EPIPE and
    /// releases `c`.
    std::error_code write(WriteChunk c) override;
    /// Bytes queued and not yet written.
    size_t write_buffer_size() const noexcept override { return queued_; }
    /// Sets the water marks (low <= high) and pauses or resumes the writer to match.
    void set_write_limits(size_t high, size_t low) noexcept override;
    size_t high_water() const noexcept { return flow_.high; }
    size_t low_water() const noexcept { return flow_.low; }
    bool writing_paused() const noexcept { return flow_.paused; }

    /// Shuts down the write side (SHUT_WR) once the queue is flushed.
    std::error_code shutdown_write() override;
    bool write_shut() const noexcept { return eof_requested_; }

    /// Drops the write queue (releasing its chunks) and stops watching the fd.
    void abort() noexcept override;
    /// Stops watching the fd, keeping the queue (to be dropped by the destructor).
    void detach() noexcept;

    bool on_io(int fd, uint32_t events) noexcept override;
    void io_retain() noexcept override { handler_.retain(); }
    void io_release() noexcept override { handler_.release(); }
    void on_loop_closed(int fd) noexcept override;

private:
    void update_interest() noexcept;
    void do_read() noexcept;
    void do_flush() noexcept;
    // Writes from the queue until it is empty or the kernel would block. Returns the
    // error that broke the stream, if any.
    std::error_code flush_queue() noexcept;
    ssize_t write_iov(const ::iovec* iov, int n) noexcept;
    void fail(std::error_code ec, bool writing) noexcept;
    void drop_queue() noexcept;
    void maybe_pause() noexcept;
    void maybe_resume() noexcept;

    EventLoop& loop_;
    StreamHandler& handler_;
    int fd_;
    bool is_socket_;
    bool reading_ = false;
    bool watching_write_ = false;
    uint32_t registered_ = 0;  // Interest currently registered with the loop.
    bool broken_ = false;
    bool detached_ = false;
    bool eof_requested_ = false;
    bool eof_done_ = false;
    Ring<WriteChunk> queue_;  // Allocates nothing until a write has to wait.
    size_t front_offset_ = 0;  // Bytes of queue_.front() already written.
    size_t queued_ = 0;
    WaterMarks flow_;
};

}  // namespace cxxloop
