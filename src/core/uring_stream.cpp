// uring_stream.cpp: the completion-based stream: multishot receive, queued sends, delivery in the ready phase.
#include "cxxloop/uring_stream.hpp"

#include <sys/socket.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <utility>

#include "syscall.hpp"
#include "write_queue.hpp"

namespace cxxloop {

namespace {

// One buffer ring per engine serves every stream of the loop. A connection holds a
// share of a buffer only between the completion and the delivery in the same
// iteration (or while its reading is paused, when the bytes are copied out).
//
// Where the kernel consumes buffers incrementally (Linux 6.12), the ring is 8 buffers
// of 256 KiB (the most one read delivers): small receives of every connection pack
// one after another into the buffer at the head, and a 100 KiB burst lands in one or
// two completions instead of seven 16 KiB ones. 100 KiB Protocol echo took 34 -> 30
// us per message at 10 connections and 40 -> 31 at 50; 1 KiB and 10 KiB were level.
//
// Otherwise each receive uses a whole buffer: 64 x 16 KiB (1 MiB) keeps the walk
// through them mostly in cache where 256 buffers measured slower on 10 KiB echo.
// Either way, a wait that needs more ends some receives with ENOBUFS, re-armed after
// delivery.
constexpr uint16_t kGroup = 0x5c;
constexpr uint32_t kIncBufCount = 8;
constexpr uint32_t kIncBufSize = 256 * 1024;
constexpr uint32_t kBufCount = 64;
constexpr uint32_t kBufSize = 16 * 1024;
// One send carries at most this many bytes: a submission entry's length is 32 bits
// (the kernel refuses more than INT_MAX) and the SendOp reports its total as an int.
// A larger write goes out in several sends.
constexpr size_t kMaxSend = size_t(1) << 30;

using wq::release;
using wq::would_block;

}  // namespace

bool UringStream::supported(EventLoop& loop) noexcept {
    Uring* r = loop.uring();
    if (!r || !r->has(kUringRecvMultishot)) return false;  // Probed once (probe.cpp).
    if (r->buf_ring(kGroup)) return true;
    std::error_code ec;
    if (r->has(kUringBufIncremental) && r->add_buf_ring(kGroup, kIncBufCount, kIncBufSize, ec, true)) return true;
    return r->add_buf_ring(kGroup, kBufCount, kBufSize, ec) != nullptr;  // Also when the above failed.
}

UringStream::UringStream(EventLoop& loop, int fd, StreamHandler& handler) : loop_(loop), handler_(handler), fd_(fd) {
    if (!supported(loop))
        throw std::system_error(std::make_error_code(std::errc::function_not_supported),
                                "io_uring cannot receive into a buffer ring here");
    uring_ = loop.uring();
    bufs_ = uring_->buf_ring(kGroup);
    if (auto ec = sys::set_nonblocking(fd_)) throw std::system_error(ec, "cannot make the stream non-blocking");
    recv_.s = this;
    send_.s = this;
}

UringStream::~UringStream() {
    loop_.drop_io(this);
    detach();
    drop_queue();
    drop_inbox();
}

// --- the received bytes --------------------------------------------------------------

void UringStream::recycle(Chunk& c) noexcept {
    // Once the engine is closed its buffer ring is gone with it.
    if (c.buf >= 0 && ring()) bufs_->release(c.buf);
    c.buf = -1;
}

void UringStream::drop_inbox() noexcept {
    for (Chunk& c : inbox_) recycle(c);
    inbox_.clear();
}

// Bytes kept while reading is paused leave the shared ring, which other connections need.
void UringStream::copy_inbox() noexcept {
    if (!ring()) {
        // The engine closed with its buffers: nothing in them can be copied, and
        // nothing kept could be delivered (reading does not start again).
        inbox_.clear();
        return;
    }
    for (Chunk& c : inbox_) {
        if (c.buf < 0) continue;
        const size_t n = c.len - c.off;
        std::unique_ptr<char[]> copy(new (std::nothrow) char[n]);
        if (!copy) continue;  // Keeps the ring's buffer instead.
        std::memcpy(copy.get(), c.data + c.off, n);
        recycle(c);
        c.copy = std::move(copy);
        c.data = c.copy.get();
        c.off = 0;
        c.len = n;
    }
}

size_t UringStream::undelivered() const noexcept {
    size_t n = 0;
    for (const Chunk& c : inbox_) n += c.len - c.off;
    return n;
}

// --- reading --------------------------------------------------------------------------

std::error_code UringStream::start_reading() {
    if (detached_ || broken_ || !ring()) return std::make_error_code(std::errc::bad_file_descriptor);
    reading_ = true;
    // What arrived before a pause, EOF or an error are delivered first, in order.
    if (!inbox_.empty() || eof_seen_ || read_err_) post();
    else arm();
    return {};
}

void UringStream::stop_reading() noexcept {
    reading_ = false;
    if (recv_.pending())
        if (Uring* r = ring()) r->cancel(recv_);
    copy_inbox();
}

void UringStream::arm() noexcept {
    if (!reading_ || recv_.pending() || eof_seen_ || read_err_ || detached_ || broken_) return;
    Uring* r = ring();
    if (!r) return;
    if (auto ec = r->recv_multishot(recv_, fd_, *bufs_)) fail(ec, false);
}

void UringStream::Recv::on_data(int res, int buf, const char* data, bool) noexcept {
    UringStream& st = *s;
    if (st.loop_.closed()) {
        st.after_completion();  // The buffer went with the engine.
        return;
    }
    if (buf >= 0) {
        Chunk c;
        c.buf = buf;
        c.data = data;
        c.len = size_t(res);
        if (!st.detached_ && !st.broken_) {
            st.inbox_.push_back(std::move(c));
            if (!st.reading_) st.copy_inbox();
        } else {
            st.recycle(c);
        }
    }
    if (res == 0) st.eof_seen_ = true;
    else if (res < 0 && res != -ECANCELED && res != -ENOBUFS && !st.detached_) st.read_err_ = -res;
    // A receive that ended (cancelled, out of buffers) is started again after delivery.
    st.after_completion();
}

// --- writing --------------------------------------------------------------------------

ssize_t UringStream::send_now(const char* p, size_t n) noexcept {
    return sys::retry_eintr([&] { return ::send(fd_, p, n, MSG_NOSIGNAL | MSG_DONTWAIT); });
}

std::error_code UringStream::write(WriteChunk c) {
    if (broken_ || eof_requested_ || detached_) {
        release(c);
        return std::make_error_code(std::errc::broken_pipe);
    }
    if (c.size == 0) {
        release(c);
        return {};
    }
    size_t written = 0;
    if (queue_.empty() && !sending()) {
        // Written from a callback of the running loop, the bytes go with the next
        // wait (or the submission of a loop that stops), batched with the other
        // connections'; from outside (the loop may not even be running) they go at
        // once, as asyncio's write() does. A deferred write never pauses the writer.
        const bool defer = loop_.in_callbacks() && c.size <= flow_.high && ring();
        if (!defer) {
            ssize_t n = send_now(c.data, c.size);
            if (n < 0) {
                if (!would_block(errno)) {
                    std::error_code ec = sys::last_error();
                    release(c);
                    fail(ec, true);
                    return ec;
                }
                n = 0;
            }
            if (size_t(n) == c.size) {
                release(c);
                return {};
            }
            written = size_t(n);
        }
        front_offset_ = written;
    }
    queue_.push_back(c);
    queued_ += c.size - written;
    if (!sending()) {
        if (auto ec = start_send()) {
            fail(ec, true);
            return ec;
        }
    }
    maybe_pause();
    return {};
}

std::error_code UringStream::start_send() noexcept {
    Uring* r = ring();
    if (!r) return std::make_error_code(std::errc::bad_file_descriptor);
    const WriteChunk& front = queue_.front();
    if (queue_.size() == 1 || front.size - front_offset_ >= kMaxSend) {
        inflight_ = std::min(front.size - front_offset_, kMaxSend);
        return r->send(send_, fd_, std::span<const char>(front.data + front_offset_, inflight_));
    }
    if (!iov_) {
        iov_.reset(new (std::nothrow) ::iovec[kMaxIov]);
        if (!iov_) return std::make_error_code(std::errc::not_enough_memory);
    }
    size_t total = 0;
    int n = wq::gather(queue_, front_offset_, iov_.get(), kMaxIov, total);
    if (total > kMaxSend) {  // The chunk that crosses the limit goes in part.
        total = 0;
        for (int i = 0; i < n; ++i) {
            if (iov_[i].iov_len >= kMaxSend - total) {
                iov_[i].iov_len = kMaxSend - total;
                total = kMaxSend;
                n = i + 1;
                break;
            }
            total += iov_[i].iov_len;
        }
    }
    inflight_ = total;
    return r->send(send_, fd_, iov_.get(), size_t(n));
}

void UringStream::Send::on_send(int res) noexcept {
    UringStream& st = *s;
    if (res >= 0 && !st.loop_.closed() && !st.detached_ && !st.broken_ && st.finish_send_now()) return;
    st.send_res_ = res;
    st.send_done_ = true;
    st.after_completion();
}

// The common case of a send completion, handled in the I/O phase: every byte went,
// and nothing the owner would hear of follows (no resume, no drain it waits for, no
// shutdown, no hold to drop). Then the chunks are released and the next send
// started here, and no report is queued. Returns false, with nothing done, otherwise.
bool UringStream::finish_send_now() noexcept {
    const size_t after = queued_ - inflight_;
    if (flow_.paused && after <= flow_.low) return false;
    if (after == 0 && (!recv_.pending() || eof_requested_ || handler_.wants_drained())) return false;
    consume(inflight_);
    inflight_ = 0;
    if (!queue_.empty())
        if (auto ec = start_send()) {
            send_res_ = -ec.value();
            send_done_ = true;
            after_completion();
        }
    return true;
}

// Drops the first `n` queued bytes, releasing the chunks they finish.
void UringStream::consume(size_t n) noexcept {
    queued_ -= n;
    wq::consume(queue_, front_offset_, n);
    if (queue_.empty() && !send_.pending()) iov_.reset();
}

void UringStream::finish_send() noexcept {
    send_done_ = false;
    const int res = send_res_;
    if (detached_ || broken_) {
        drop_queue();  // Kept only while the kernel could still read them.
        return;
    }
    if (res < 0) {
        fail(sys::make_error(-res), true);
        return;
    }
    consume(inflight_);
    inflight_ = 0;
    if (!queue_.empty()) {
        if (auto ec = start_send()) {
            fail(ec, true);
            return;
        }
        maybe_resume();
        return;
    }
    maybe_resume();
    if (broken_ || detached_ || !queue_.empty() || send_.pending()) return;
    if (eof_requested_ && !eof_done_) {
        eof_done_ = true;
        if (::shutdown(fd_, SHUT_WR) != 0) {
            fail(sys::last_error(), true);
            return;
        }
    }
    handler_.on_drained();
}

std::error_code UringStream::shutdown_write() {
    if (eof_requested_) return {};
    if (broken_ || detached_) return std::make_error_code(std::errc::broken_pipe);
    eof_requested_ = true;
    if (queue_.empty() && !sending()) {
        eof_done_ = true;
        if (::shutdown(fd_, SHUT_WR) != 0) return sys::last_error();
    }
    return {};
}

void UringStream::set_write_limits(size_t high, size_t low) noexcept {
    flow_.high = high;
    flow_.low = low;
    maybe_pause();
}

void UringStream::maybe_pause() noexcept {
    if (flow_.pause_due(queued_)) handler_.on_pause_writing();
}

void UringStream::maybe_resume() noexcept {
    if (flow_.resume_due(queued_)) handler_.on_resume_writing();
}

// --- delivery -------------------------------------------------------------------------

void UringStream::post() noexcept { loop_.post_io(this, kReadable); }

void UringStream::after_completion() noexcept {
    if (!loop_.closed()) {
        post();
        return;
    }
    // The engine is closing under the stream: nothing more is read or written, and
    // the owner hears of it once the last operation has reported.
    detached_ = true;
    reading_ = false;
    inbox_.clear();
    if (!send_.pending()) {
        send_done_ = false;
        drop_queue();
    }
    if (!registered()) handler_.on_loop_closed();  // May destroy the stream: last.
}

// A burst of several chunks is often the front of a larger message whose rest is a
// few microseconds behind: the receive ran as soon as the first segment arrived
// (its task work runs at our next system call), not when the rest did. Delivering
// it one pass later, once, lets the next wait (which does not block: the stream is
// queued) collect the rest, so that the message goes out as one read and one write
// (100 KiB echo: about half of the messages came in two or more reads).
bool UringStream::hold_burst() noexcept {
    if (held_) {
        held_ = false;
        return false;
    }
    if (inbox_.size() < 2 || !reading_ || !recv_.pending() || send_done_ || undelivered() >= kMaxDelivery) return false;
    held_ = true;
    post();
    return true;
}

bool UringStream::on_io(int, uint32_t) noexcept {
    if (hold_burst()) return true;
    if (!deliver_reads()) {
        if (!inbox_.empty() || send_done_) post();  // The rest waits for the next pass.
        return false;
    }
    if (send_done_) {
        finish_send();
        if (!handler_.proceed()) return false;
    }
    arm();
    return handler_.proceed();
}

// What arrived in a burst fills several ring buffers: it is offered as one read of
// up to kMaxDelivery bytes, as a readiness-based stream's single recv() would have
// brought it (one bytes object, one data_received() call, one write of the answer).
bool UringStream::gather(size_t& count, size_t& total) const noexcept {
    count = 0;
    total = 0;
    while (count < inbox_.size() && count < kMaxParts) {
        const Chunk& c = inbox_[count];
        const size_t n = c.len - c.off;
        if (count && total + n > kMaxDelivery) break;
        total += n;
        ++count;
    }
    return count > 1;
}

// Offers the whole chunks at the front of the inbox directly (a plain Protocol's
// bytes object is made from the ring's buffers). They leave the inbox meanwhile, so
// what the protocol does (pause, abort) does not touch them; those the handler does
// not take go back.
UringStream::Step UringStream::deliver_whole() noexcept {
    size_t count, total;
    if (gather(count, total)) {
        Chunk parts[kMaxParts];
        ::iovec iov[kMaxParts];
        for (size_t i = 0; i < count; ++i) {
            parts[i] = std::move(inbox_.front());
            inbox_.pop_front();
            iov[i] = {const_cast<char*>(parts[i].data), parts[i].len};
        }
        const bool taken = handler_.on_bytes_parts(iov, count, total);
        if (taken) {
            for (size_t i = 0; i < count; ++i) recycle(parts[i]);
            return handler_.proceed() ? Step::next : Step::abort;
        }
        for (size_t i = count; i-- > 0;) inbox_.push_front(std::move(parts[i]));
        if (!reading_ || detached_ || broken_) return declined_meanwhile();
    }
    Chunk c = std::move(inbox_.front());
    inbox_.pop_front();
    if (handler_.on_bytes(c.data, c.len)) {
        recycle(c);
        return handler_.proceed() ? Step::next : Step::abort;
    }
    inbox_.push_front(std::move(c));
    if (!reading_ || detached_ || broken_) return declined_meanwhile();
    return Step::declined;
}

// The handler paused, aborted or failed the stream during an offer it then declined:
// the inbox was copied out of the ring or dropped without the bytes offered, which
// are back in it now. They follow (a paused stream's bytes must not hold the shared
// ring's buffers), and nothing more is offered.
UringStream::Step UringStream::declined_meanwhile() noexcept {
    if (detached_ || broken_) drop_inbox();
    else copy_inbox();
    return handler_.proceed() ? Step::stop : Step::abort;
}

// Copies from the front of the inbox into the handler's buffer, across as many
// chunks as it holds, and reports that as one read.
UringStream::Step UringStream::deliver_copied() noexcept {
    size_t count, total;
    gather(count, total);
    std::span<char> buf = handler_.read_buffer(total);
    if (buf.empty() || inbox_.empty() || !reading_ || detached_ || broken_)
        return handler_.proceed() ? Step::stop : Step::abort;
    size_t took = 0;
    while (took < buf.size() && !inbox_.empty()) {
        Chunk& c = inbox_.front();
        const size_t take = std::min(buf.size() - took, c.len - c.off);
        std::memcpy(buf.data() + took, c.data + c.off, take);
        took += take;
        c.off += take;
        if (c.off == c.len) {
            recycle(c);
            inbox_.pop_front();
        }
    }
    handler_.on_read(took);
    return handler_.proceed() ? Step::next : Step::abort;
}

bool UringStream::deliver_reads() noexcept {
    while (reading_ && !detached_ && !broken_ && !inbox_.empty()) {
        Step st = inbox_.front().off == 0 ? deliver_whole() : Step::declined;
        if (st == Step::declined) st = deliver_copied();
        if (st == Step::abort) return false;
        if (st == Step::stop) return true;
    }
    if (!reading_ || detached_ || broken_ || !inbox_.empty()) return true;
    if (read_err_) {
        const int err = std::exchange(read_err_, 0);
        fail(sys::make_error(err), false);
        return handler_.proceed();
    }
    if (eof_seen_ && !recv_.pending()) {
        reading_ = false;
        handler_.on_eof();
        return handler_.proceed();
    }
    return true;
}

// --- errors and teardown ----------------------------------------------------------------

void UringStream::cancel_ops() noexcept {
    Uring* r = ring();
    if (!r || !registered()) return;
    if (send_.pending()) r->cancel(send_);  // No resubmission of a short send's rest.
    // Synchronous, so that the owner's close() of the fd closes the socket now.
    r->cancel_fd_sync(fd_);
}

void UringStream::fail(std::error_code ec, bool writing) noexcept {
    if (broken_) return;
    broken_ = true;
    reading_ = false;
    cancel_ops();
    drop_queue();
    drop_inbox();
    handler_.on_error(ec, writing);
}

void UringStream::drop_queue() noexcept {
    queued_ = 0;
    if (send_.pending()) return;  // The kernel may still read them: released on completion.
    front_offset_ = 0;
    inflight_ = 0;
    iov_.reset();
    wq::drop(queue_);
}

void UringStream::abort() noexcept {
    drop_queue();
    detach();
    drop_queue();  // What the cancelled send held, when it reported at once.
}

void UringStream::detach() noexcept {
    if (detached_) return;
    detached_ = true;
    reading_ = false;
    cancel_ops();
    drop_inbox();
}

}  // namespace cxxloop
