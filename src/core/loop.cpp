// loop.cpp: the event loop core: one iteration, timers, fd registrations, wake-ups.
#include "cxxloop/loop.hpp"
#include "cxxloop/uring.hpp"

#include <unistd.h>

#include <cerrno>
#include <cmath>

namespace cxxloop {

namespace {
// asyncio never sleeps longer than a day in one wait; neither do we.
constexpr double kMaxWaitSeconds = 24 * 3600.0;

// Stands in the ready queue for an I/O report dropped by unwatch().
bool run_nothing(Callback*) noexcept { return true; }
void ref_nothing(Callback*) noexcept {}
Callback dropped_io{run_nothing, ref_nothing, ref_nothing, false};
}  // namespace

EventLoop::EventLoop(std::unique_ptr<Poller> poller)
    : poller_(poller ? std::move(poller) : make_poller()),
      waker_(std::make_unique<Waker>()),
      poller_name_(poller_->name()),
      waker_fd_(waker_->fd()),
      pid_(getpid()),
      completions_(poller_->completion_based()) {
    if (auto ec = poller_->add_drained(waker_fd_, kReadable)) throw std::system_error(ec, "cannot watch the waker");
}

EventLoop::~EventLoop() { close(); }

// --- scheduling --------------------------------------------------------------------

void EventLoop::call_at(Timer* t) {
    if (closed_) return;
    t->retain(t);
    t->scheduled = true;
    timers_.push(t);
}

void EventLoop::timer_cancelled(Timer* t) noexcept {
    // asyncio leaves cancelled timers in its heap until they surface (or compacts it
    // when they dominate); removing them now frees their memory at once instead.
    if (!t->scheduled) return;
    timers_.remove(t);
    t->scheduled = false;
    t->release(t);
}

void EventLoop::call_soon_threadsafe(Callback* cb) {
    {
        std::lock_guard<std::mutex> lock(ts_mu_);
        if (ts_closed_) return;
        cb->retain(cb);
        ts_queue_.push_back(cb);
    }
    ts_pending_.store(true);
    wake();
}

void EventLoop::wake() noexcept {
    // Only a sleeping loop needs the syscall, and one pending write is enough.
    if (sleeping_.load() && !wake_sent_.exchange(true) && waker_) waker_->wake();
}

void EventLoop::drain_threadsafe() {
    if (!ts_pending_.load(std::memory_order_relaxed)) return;
    std::lock_guard<std::mutex> lock(ts_mu_);
    ts_pending_.store(false);
    for (Callback* cb : ts_queue_) ready_.push(cb);  // The reference moves with it.
    ts_queue_.clear();
}

// --- fd watching ----------------------------------------------------------------------

std::error_code EventLoop::set_interest(int fd, FdEntry& e, uint32_t mask) {
    if (e.mask == mask) return {};
    std::error_code ec;
    if (e.mask == 0) ec = poller_->add(fd, mask);
    else if (mask == 0) ec = poller_->remove(fd);
    else ec = poller_->modify(fd, mask);
    if (ec) return ec;
    if (e.mask == 0) ++nfds_;
    else if (mask == 0) --nfds_;
    e.mask = mask;
    return {};
}

std::error_code EventLoop::add_callback(int fd, Callback* cb, Callback** previous, bool write) {
    *previous = nullptr;
    if (closed_) return std::make_error_code(std::errc::bad_file_descriptor);
    if (fd < 0) return std::make_error_code(std::errc::invalid_argument);
    if (size_t(fd) >= fds_.size()) fds_.resize(size_t(fd) + 1);
    if (IoHandler* h = fds_[fd].handler) {
        // The handler may give the fd up (and register callbacks on it meanwhile).
        if (!h->yield_fd(fd) || closed_ || fds_[fd].handler)
            return std::make_error_code(std::errc::device_or_resource_busy);
    }
    FdEntry& e = fds_[fd];
    if (auto ec = set_interest(fd, e, e.mask | (write ? kWritable : kReadable))) return ec;
    cb->retain(cb);
    Callback*& slot = write ? e.writer : e.reader;
    *previous = slot;
    slot = cb;
    return {};
}

Callback* EventLoop::remove_callback(int fd, bool write) {
    FdEntry* e = entry(fd);
    if (closed_ || !e || e->handler) return nullptr;
    Callback*& slot = write ? e->writer : e->reader;
    Callback* old = slot;
    if (!old) return nullptr;
    // A failure to unregister (the fd was closed behind our back) still forgets it.
    if (set_interest(fd, *e, e->mask & ~(write ? kWritable : kReadable))) {
        if (e->mask) --nfds_;
        e->mask = 0;
    }
    slot = nullptr;
    return old;
}

std::error_code EventLoop::add_reader(int fd, Callback* cb, Callback** previous) {
    return add_callback(fd, cb, previous, false);
}
std::error_code EventLoop::add_writer(int fd, Callback* cb, Callback** previous) {
    return add_callback(fd, cb, previous, true);
}
Callback* EventLoop::remove_reader(int fd) { return remove_callback(fd, false); }
Callback* EventLoop::remove_writer(int fd) { return remove_callback(fd, true); }
Callback* EventLoop::reader_of(int fd) const noexcept {
    const FdEntry* e = entry(fd);
    return e ? e->reader : nullptr;
}
Callback* EventLoop::writer_of(int fd) const noexcept {
    const FdEntry* e = entry(fd);
    return e ? e->writer : nullptr;
}

std::error_code EventLoop::watch(int fd, IoHandler* h, uint32_t interest) {
    if (closed_) return std::make_error_code(std::errc::bad_file_descriptor);
    if (fd < 0) return std::make_error_code(std::errc::invalid_argument);
    if (size_t(fd) >= fds_.size()) fds_.resize(size_t(fd) + 1);
    if (IoHandler* other = fds_[fd].handler; other && other != h) {
        if (!other->yield_fd(fd) || closed_ || fds_[fd].handler)
            return std::make_error_code(std::errc::device_or_resource_busy);
    }
    FdEntry& e = fds_[fd];
    if (e.reader || e.writer) return std::make_error_code(std::errc::device_or_resource_busy);
    if (interest == 0) return unwatch(fd);
    if (auto ec = set_interest(fd, e, interest)) return ec;
    e.handler = h;
    return {};
}

std::error_code EventLoop::watch_once(int fd, IoHandler* h, uint32_t interest) {
    if (closed_) return std::make_error_code(std::errc::bad_file_descriptor);
    if (fd < 0 || interest == 0) return std::make_error_code(std::errc::invalid_argument);
    if (size_t(fd) >= fds_.size()) fds_.resize(size_t(fd) + 1);
    FdEntry& e = fds_[fd];
    if (e.reader || e.writer || (e.handler && e.handler != h))
        return std::make_error_code(std::errc::device_or_resource_busy);
    if (auto ec = poller_->arm_once(fd, interest)) return ec;
    if (e.mask == 0) ++nfds_;
    e.mask = interest;
    e.handler = h;
    return {};
}

std::error_code EventLoop::unwatch(int fd) {
    FdEntry* e = entry(fd);
    if (!e || !e->handler) return {};
    // During close() (a handler destroyed by a callback's release) the entry is
    // only forgotten: close() unregisters the fds itself.
    std::error_code ec = closed_ ? std::error_code{} : set_interest(fd, *e, 0);
    if (ec || closed_) {
        if (e->mask) --nfds_;
        e->mask = 0;
    }
    IoHandler* h = e->handler;
    e->handler = nullptr;
    drop_queued_io(h);
    return ec;
}

IoHandler* EventLoop::handler_of(int fd) const noexcept {
    const FdEntry* e = entry(fd);
    return e ? e->handler : nullptr;
}

IoHandler* EventLoop::io_handler_of(Callback* cb) noexcept {
    return cb->run == &EventLoop::run_io ? static_cast<IoHandler::Node*>(cb)->handler : nullptr;
}

void EventLoop::queue_io(IoHandler* h, int fd, uint32_t events) {
    IoHandler::Node& n = h->node_;
    n.events |= events;
    if (n.queued) return;
    n.run = &EventLoop::run_io;
    n.retain = [](Callback* c) noexcept { static_cast<IoHandler::Node*>(c)->handler->io_retain(); };
    n.release = [](Callback* c) noexcept { static_cast<IoHandler::Node*>(c)->handler->io_release(); };
    n.handler = h;
    n.loop = this;
    n.fd = fd;
    ready_.push(&n);
    n.queued = true;
    h->io_retain();
}

void EventLoop::drop_queued_io(IoHandler* h) noexcept {
    IoHandler::Node& n = h->node_;
    if (!n.queued) return;
    ready_.replace(&n, &dropped_io);
    n.queued = false;
    n.events = 0;
    h->io_release();
}

bool EventLoop::run_io(Callback* cb) noexcept {
    auto& n = *static_cast<IoHandler::Node*>(cb);
    n.queued = false;
    uint32_t events = n.events;
    n.events = 0;
    // A posted report (fd -1) stands for itself; a readiness report is void when the
    // handler was unwatched or re-registered since.
    if (n.fd < 0) return n.handler->on_io(-1, events);
    FdEntry* e = n.loop->entry(n.fd);
    if (!e || e->handler != n.handler) return true;
    events &= e->mask;
    if (!events) return true;
    return n.handler->on_io(n.fd, events);
}

// --- the iteration ----------------------------------------------------------------

bool EventLoop::run_once() {
    if (closed_) return false;
    // Callbacks queued from other threads join the ready queue first, in order.
    drain_threadsafe();
    // Cancelled timers at the top of the heap must not shorten the wait.
    drop_cancelled_timers();
    // Wait for I/O (the only place the loop blocks) and queue what became ready.
    if (!poll_io(compute_timeout_ns())) return false;
    // Timers whose deadline has passed join the ready queue after the I/O callbacks.
    queue_due_timers();
    // Run what is ready now; callbacks scheduled meanwhile wait for the next pass.
    in_callbacks_ = true;
    const bool ok = run_ready();
    in_callbacks_ = false;
    // Completion operations the callbacks started go to the kernel with the next
    // wait; a loop about to stop submits them now, or writes made before stopping
    // would wait for the loop to run again.
    if (completions_ && (stopping_ || !ok))
        if (Uring* u = poller_->uring()) u->flush();
    return ok;
}

bool EventLoop::run() {
    bool ok = true;
    while (!closed_) {
        if (!run_once()) {
            ok = false;
            break;
        }
        if (stopping_) break;
    }
    stopping_ = false;
    return ok;
}

int64_t EventLoop::compute_timeout_ns() noexcept {
    if (!ready_.empty() || stopping_) return 0;
    if (timers_.empty()) return -1;
    double delay = timers_.top_when() - time();
    if (delay <= 0) return 0;
    if (delay > kMaxWaitSeconds) delay = kMaxWaitSeconds;
    return int64_t(std::ceil(delay * 1e9));
}

bool EventLoop::poll_io(int64_t timeout_ns) {
    events_.clear();
    if (timeout_ns != 0) {
        // Announce the sleep before the last look at the cross-thread queue (see
        // sleeping_ in loop.hpp for the pairing with call_soon_threadsafe).
        sleeping_.store(true);
        if (ts_pending_.load()) {
            timeout_ns = 0;
            sleeping_.store(false);
        }
    }
    std::error_code ec;
    if (timeout_ns != 0) {
        observer_->before_wait();
        if (int64_t limit = observer_->wait_limit_ns(); limit >= 0 && (timeout_ns < 0 || limit < timeout_ns))
            timeout_ns = limit > 0 ? limit : 1;
        ec = poller_->wait(timeout_ns, events_);
        observer_->after_wait();
        sleeping_.store(false);
    } else if (nfds_ != 0 || (completions_ && poller_->has_completions())) {
        ec = poller_->wait(0, events_);
    }
    // With nothing but the waker registered, a zero-timeout poll can only find a
    // stale wake-up (the waker is written only while the loop sleeps), so the
    // syscall is skipped; the next real sleep drains it. Completion operations in
    // flight rule that out: their submissions and results go through wait().
    if (ec) {
        if (ec == std::errc::interrupted) return observer_->on_interrupted();
        return observer_->on_poll_error(ec);
    }
    for (const PollEvent& ev : events_) dispatch(ev);
    // Completion callbacks run here, in the I/O phase with the embedder's lock held,
    // after readiness callbacks were queued (the epoll path pays one bool test).
    if (completions_) poller_->dispatch_completions();
    return true;
}

void EventLoop::dispatch(const PollEvent& ev) {
    if (ev.fd == waker_fd_) {
        // Drain before clearing the flag: a wake that lands in between only
        // costs a spurious wake-up, never a lost one.
        waker_->drain();
        wake_sent_.store(false);
        return;
    }
    FdEntry* e = entry(ev.fd);
    if (!e || !e->mask) return;
    if (e->handler) {
        if (uint32_t events = ev.events & e->mask) queue_io(e->handler, ev.fd, events);
        return;
    }
    // As asyncio does: a cancelled reader or writer is unregistered, not run.
    for (bool write : {false, true}) {
        e = entry(ev.fd);
        Callback* cb = write ? e->writer : e->reader;
        if (!cb || !(ev.events & (write ? kWritable : kReadable))) continue;
        if (cb->cancelled) {
            Callback* old = remove_callback(ev.fd, write);
            if (old) old->release(old);
        } else {
            call_soon(cb);
        }
    }
}

void EventLoop::drop_cancelled_timers() noexcept {
    // Timers cancelled through timer_cancelled() are already gone; this catches
    // ones whose owner only set the flag.
    while (!timers_.empty() && timers_.top()->cancelled) {
        Timer* t = timers_.pop();
        t->scheduled = false;
        t->release(t);
    }
}

void EventLoop::queue_due_timers() noexcept {
    if (timers_.empty()) return;
    timers_.pop_due(time(), [this](Timer* t) {
        t->scheduled = false;
        ready_.push(t);  // The heap's reference moves to the ready queue.
    });
}

namespace {
// How many callbacks ahead the ready phase prefetches. Far enough for a cache miss
// to complete while the callbacks in between run, near enough that the lines are
// still cached when their turn comes.
constexpr size_t kPrefetchAhead = 8;
// Smaller batches were queued recently enough to be cached still.
constexpr size_t kPrefetchMinBatch = 256;

// Fetches a node and the `lead` bytes of its owner before it. Prefetching is only
// a hint: it never faults, whatever the address.
void prefetch_callback(const Callback* cb, size_t lead) noexcept {
    const char* node = reinterpret_cast<const char*>(cb);
    for (const char* p = node - lead; p < node + sizeof(Timer); p += 64) __builtin_prefetch(p, 1);
    __builtin_prefetch(node + sizeof(Timer) - 1, 1);
}
}  // namespace

bool EventLoop::run_ready() {
    const size_t n = ready_.size();
    // A large batch is mostly callbacks whose memory left the cache long ago (a
    // burst, or a heap of due timers): fetch each a few callbacks before its turn.
    const bool prefetch = n >= kPrefetchMinBatch;
    for (size_t i = 0; prefetch && i < kPrefetchAhead; ++i) prefetch_callback(ready_.at(i), callback_lead_);
    for (size_t i = 0; i < n && !ready_.empty(); ++i) {
        if (prefetch && ready_.size() > kPrefetchAhead) prefetch_callback(ready_.at(kPrefetchAhead), callback_lead_);
        Callback* cb = ready_.pop();
        bool ok = true;
        if (!cb->cancelled) {
            if (debug_) {
                const double t0 = time();
                ok = cb->run(cb);
                const double dt = time() - t0;
                if (dt >= slow_callback_duration_) observer_->on_slow_callback(cb, dt);
            } else {
                ok = cb->run(cb);
            }
        }
        cb->release(cb);
        if (!ok) return false;
    }
    return true;
}

int EventLoop::visit_callbacks(int (*visit)(Callback*, void*), void* arg) {
    for (size_t i = 0; i < ready_.size(); ++i)
        if (int r = visit(ready_.at(i), arg)) return r;
    for (size_t i = 0; i < timers_.size(); ++i)
        if (int r = visit(timers_.at(i), arg)) return r;
    for (const FdEntry& e : fds_) {
        if (e.reader)
            if (int r = visit(e.reader, arg)) return r;
        if (e.writer)
            if (int r = visit(e.writer, arg)) return r;
    }
    std::lock_guard<std::mutex> lock(ts_mu_);
    for (Callback* cb : ts_queue_)
        if (int r = visit(cb, arg)) return r;
    return 0;
}

// --- teardown and fork ------------------------------------------------------------------

void EventLoop::close() noexcept {
    if (closed_) return;
    closed_ = true;
    timers_.clear([](Timer* t) {
        t->scheduled = false;
        t->release(t);
    });
    // After fork the poller's kernel object is shared with the parent: touching
    // its registrations would change the parent's loop, so only close our fd.
    const bool forked = getpid() != pid_;
    for (size_t fd = 0; fd < fds_.size(); ++fd) {
        FdEntry& e = fds_[fd];
        if (e.mask && !forked) poller_->remove(int(fd));
        if (e.reader) e.reader->release(e.reader);
        if (e.writer) e.writer->release(e.writer);
        IoHandler* h = e.handler;
        e = FdEntry{};
        if (h) {
            // The queue's hold on the handler is let go only after the handler has
            // heard of the close (which may drop the owner's own hold on it).
            const bool queued = h->node_.queued;
            if (queued) {
                ready_.replace(&h->node_, &dropped_io);
                h->node_.queued = false;
                h->node_.events = 0;
            }
            h->on_loop_closed(int(fd));
            if (queued) h->io_release();
        }
    }
    nfds_ = 0;
    // Handlers' queued reports were dropped above; what remains are callbacks.
    while (!ready_.empty()) {
        Callback* cb = ready_.pop();
        cb->release(cb);
    }
    {
        std::lock_guard<std::mutex> lock(ts_mu_);
        ts_closed_ = true;
        for (Callback* cb : ts_queue_) cb->release(cb);
        ts_queue_.clear();
        ts_pending_.store(false);
    }
    poller_.reset();
    waker_.reset();
    waker_fd_ = -1;
}

std::error_code EventLoop::after_fork() {
    if (closed_) return {};
    // The inherited poller object is shared with the parent, so it is replaced
    // before anything is unregistered; only then is the waker swapped for a new one.
    if (auto ec = poller_->after_fork()) return ec;
    poller_->remove(waker_fd_);
    try {
        waker_->reopen();
    } catch (const std::system_error& e) {
        return e.code();
    }
    waker_fd_ = waker_->fd();
    pid_ = getpid();
    // A wake-up in flight at fork() belongs to the parent's waker.
    sleeping_.store(false);
    wake_sent_.store(false);
    return poller_->add_drained(waker_fd_, kReadable);
}

}  // namespace cxxloop
