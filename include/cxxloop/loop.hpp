// loop.hpp: the event loop core: ready queue, timers, fd watching and the iteration.
#pragma once

#include <atomic>
#include <concepts>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string_view>
#include <system_error>
#include <thread>
#include <utility>
#include <vector>

#include "cxxloop/callback.hpp"
#include "cxxloop/clock.hpp"
#include "cxxloop/poller.hpp"
#include "cxxloop/ready_queue.hpp"
#include "cxxloop/timer_heap.hpp"
#include "cxxloop/waker.hpp"

namespace cxxloop {

/// Receives readiness for an fd registered with EventLoop::watch (C++ transports).
///
/// Readiness is not delivered inside the I/O phase: the loop queues the handler in
/// its ready queue, so on_io runs in the same FIFO order as the callbacks around it,
/// exactly where asyncio would run a reader's or writer's handle. While a report is
/// queued the loop holds the handler through io_retain()/io_release() (no-ops by
/// default; a refcounted owner, such as a Python transport, counts them). A handler
/// watches one fd at a time, and must be unwatched (unwatch() drops a queued
/// report) before it is destroyed.
class IoHandler {
public:
    virtual ~IoHandler() = default;
    /// Called in the ready phase with a mask of kReadable | kWritable (what was
    /// reported since the last call, restricted to the interest registered now).
    /// Return false to abort the iteration, as a Callback's run() may.
    virtual bool on_io(int fd, uint32_t events) noexcept = 0;
    virtual void io_retain() noexcept {}
    virtual void io_release() noexcept {}
    /// The loop was closed while `fd` was watched: the registration is gone.
    virtual void on_loop_closed(int /*fd*/) noexcept {}
    /// add_reader()/add_writer(), or watch() by another handler, was called for `fd`
    /// while this handler watches it.
    /// Return false to refuse (the call fails with EBUSY; the default), or unwatch
    /// `fd` and return true to hand it over; the handler may register reader/writer
    /// callbacks for `fd` itself before returning (the call then proceeds as if they
    /// had been there, replacing one of them if it is for the same direction).
    virtual bool yield_fd(int /*fd*/) noexcept { return false; }

private:
    friend class EventLoop;
    // The ready-queue entry of this handler (at most one queued at a time).
    struct Node : Callback {
        IoHandler* handler = nullptr;
        class EventLoop* loop = nullptr;
        int fd = -1;
        uint32_t events = 0;
        bool queued = false;
    };
    Node node_;
};

/// Hooks the embedder (the Python binding) plugs into the iteration.
class LoopObserver {
public:
    virtual ~LoopObserver() = default;
    /// Called right before the blocking wait (the binding releases the GIL here).
    virtual void before_wait() noexcept {}
    /// Asked right after before_wait(): the longest the wait may last, in
    /// nanoseconds, or -1 for no limit of the embedder's own. The binding uses it to
    /// wake an idle loop once to give back memory a burst left behind.
    virtual int64_t wait_limit_ns() noexcept { return -1; }
    /// Called right after the wait returns (the binding re-acquires the GIL here).
    virtual void after_wait() noexcept {}
    /// The wait was interrupted by a signal. Return false to abort the iteration
    /// (the binding runs Python signal handlers here; one may raise).
    virtual bool on_interrupted() noexcept { return true; }
    /// The poller failed with something other than EINTR. Return false to abort.
    virtual bool on_poll_error(std::error_code) noexcept { return false; }
    /// In debug mode, a callback ran for at least slow_callback_duration seconds.
    virtual void on_slow_callback(Callback*, double) noexcept {}
};

/// An owning reference to a timer, for C++ users of call_later/call_at.
class TimerRef {
public:
    TimerRef() = default;
    explicit TimerRef(Timer* t) noexcept : t_(t) { if (t_) t_->retain(t_); }
    TimerRef(TimerRef&& o) noexcept : t_(std::exchange(o.t_, nullptr)) {}
    TimerRef& operator=(TimerRef&& o) noexcept { std::swap(t_, o.t_); return *this; }
    TimerRef(const TimerRef&) = delete;
    TimerRef& operator=(const TimerRef&) = delete;
    ~TimerRef() { if (t_) t_->release(t_); }
    Timer* get() const noexcept { return t_; }
    double when() const noexcept { return t_->when; }
    bool cancelled() const noexcept { return t_->cancelled; }
private:
    Timer* t_ = nullptr;
};

/// A single-threaded event loop. All methods but the *_threadsafe ones and wake()
/// must be called from the thread that runs the loop (or with the embedder's lock,
/// the GIL, held).
class EventLoop {
public:
    /// Creates a loop over `poller` (the default poller when null). Throws
    /// std::system_error when kernel objects cannot be created.
    explicit EventLoop(std::unique_ptr<Poller> poller = nullptr);
    ~EventLoop();
    EventLoop(const EventLoop&) = delete;
    EventLoop& operator=(const EventLoop&) = delete;

    // --- scheduling -------------------------------------------------------------
    /// Queues `cb` to run in the next ready phase (retains it; ignored once closed).
    void call_soon(Callback* cb) {
        if (closed_) return;  // A closed loop takes nothing (and so leaks nothing).
        cb->retain(cb);
        ready_.push(cb);
    }
    /// Puts `t` (with t->when set) into the timer heap (retains it; ignored once closed).
    void call_at(Timer* t);
    /// Takes a timer whose `cancelled` flag the owner has just set out of the heap at
    /// once and releases it (the caller must hold its own reference).
    void timer_cancelled(Timer* t) noexcept;
    /// Queues `cb` from any thread and wakes the loop.
    void call_soon_threadsafe(Callback* cb);
    /// Wakes the loop if it is blocked in its poller. Any thread; cheap when awake.
    void wake() noexcept;

    template <std::invocable F> void call_soon(F f) { call_soon(new FnNode<Callback, F>(std::move(f))); }
    template <std::invocable F> TimerRef call_at(double when, F f) {
        auto* t = new FnNode<Timer, F>(std::move(f));
        t->when = when;
        TimerRef ref(t);
        call_at(t);
        return ref;
    }
    template <std::invocable F> TimerRef call_later(double delay, F f) { return call_at(time() + delay, std::move(f)); }
    template <std::invocable F> void call_soon_threadsafe(F f) { call_soon_threadsafe(new FnNode<Callback, F>(std::move(f))); }
    /// Cancels a timer made by call_at/call_later.
    void cancel(const TimerRef& t) noexcept {
        if (t.get() && !t.get()->cancelled) { t.get()->cancelled = true; timer_cancelled(t.get()); }
    }

    /// The loop's clock in seconds (CLOCK_MONOTONIC, like Python's time.monotonic()).
    double time() const noexcept { return monotonic(); }

    // --- fd watching (asyncio's add_reader family) ----------------------------
    /// Makes `cb` the reader of `fd` (retains it) and returns the previous reader
    /// (whose reference passes to the caller) or null. Errors leave nothing changed.
    std::error_code add_reader(int fd, Callback* cb, Callback** previous);
    std::error_code add_writer(int fd, Callback* cb, Callback** previous);
    /// Stops reading `fd`; returns the removed reader (reference passes to the
    /// caller) or null when there was none.
    Callback* remove_reader(int fd);
    Callback* remove_writer(int fd);
    /// The current reader/writer of `fd`, or null (no reference transferred).
    Callback* reader_of(int fd) const noexcept;
    Callback* writer_of(int fd) const noexcept;

    /// Routes readiness of `fd` for `interest` straight to `h` (C++ transports).
    /// An fd has either a handler or reader/writer callbacks, not both. Another
    /// handler watching `fd` is asked to yield it first (IoHandler::yield_fd).
    std::error_code watch(int fd, IoHandler* h, uint32_t interest);
    /// Like watch(), but one-shot: at most one report, after which the kernel disarms
    /// the fd while it stays registered (and routed to `h`) until the next
    /// watch_once() re-arms it with one syscall, watch() makes it level-triggered or
    /// unwatch() drops it. ENOTSUP where the poller has no one-shot registrations
    /// (Poller::arm_once; epoll has them): use watch() there.
    std::error_code watch_once(int fd, IoHandler* h, uint32_t interest);
    /// Stops routing `fd` to its handler (a report already queued is dropped).
    std::error_code unwatch(int fd);
    /// The handler watching `fd`, or null (no ownership transferred). Lets handlers
    /// that multiplex several users of one fd (the binding's sock_* waits) find the
    /// registration already in place instead of failing with EBUSY.
    IoHandler* handler_of(int fd) const noexcept;
    /// Queues a report for `h` that no fd registration produced (completion-based
    /// transports deliver their results this way): `h->on_io(-1, events)` runs in the
    /// ready phase, in FIFO order with the callbacks around it. Ignored once closed.
    void post_io(IoHandler* h, uint32_t events) {
        if (!closed_) queue_io(h, -1, events);
    }
    /// Drops a report queued by post_io() (a handler must do so before it is destroyed).
    void drop_io(IoHandler* h) noexcept {
        if (!closed_) drop_queued_io(h);
    }
    /// The handler a queued callback stands for, when it is an IoHandler's report
    /// (for embedders walking the ready queue), else null.
    static IoHandler* io_handler_of(Callback* cb) noexcept;

    // --- running -----------------------------------------------------------------
    /// One iteration: wait for I/O or the next timer, queue what is ready, run the
    /// callbacks that were ready at the start of the phase. Returns false when a
    /// callback or the observer aborted.
    bool run_once();
    /// Iterates until stop(). Returns false on abort (stopping is reset either way).
    bool run();
    /// Makes run() return after the current iteration (or the next, if idle).
    void stop() noexcept { stopping_ = true; }
    bool stopping() const noexcept { return stopping_; }
    /// True while the ready phase runs callbacks (the loop will wait again, or submit
    /// its completion operations before it stops).
    bool in_callbacks() const noexcept { return in_callbacks_; }
    void clear_stopping() noexcept { stopping_ = false; }

    /// Drops every queued callback, timer and fd registration and closes the poller
    /// and waker. The loop cannot run afterwards. Idempotent.
    void close() noexcept;
    bool closed() const noexcept { return closed_; }

    /// Re-creates the poller's and waker's kernel objects in a child after fork().
    std::error_code after_fork();

    /// Calls `visit(cb, arg)` for every callback the loop holds a reference to, until
    /// one returns non-zero, and returns that value (0 when all were visited). The
    /// binding uses it for the garbage collector's traversal.
    int visit_callbacks(int (*visit)(Callback*, void*), void* arg);

    // --- introspection and settings --------------------------------------------------
    size_t ready_count() const noexcept { return ready_.size(); }
    size_t timer_count() const noexcept { return timers_.size(); }
    size_t fd_count() const noexcept { return nfds_; }
    std::string_view poller_name() const noexcept { return poller_name_; }
    /// The io_uring engine of a loop running on the "uring" poller (null for any other
    /// poller, and once closed). Its ops complete in this loop's I/O phase.
    Uring* uring() noexcept { return closed_ ? nullptr : poller_->uring(); }
    void set_observer(LoopObserver* o) noexcept { observer_ = o ? o : &default_observer_; }
    void set_debug(bool on) noexcept { debug_ = on; }
    bool debug() const noexcept { return debug_; }
    void set_slow_callback_duration(double s) noexcept { slow_callback_duration_ = s; }
    /// How many bytes of its owner before a Callback node running it touches (the
    /// binding embeds nodes at the end of Python handles, after the header and
    /// slots). In large batches the ready phase prefetches that span with each
    /// upcoming node. 0 by default; only a performance hint.
    void set_callback_lead(size_t bytes) noexcept { callback_lead_ = bytes; }
    double slow_callback_duration() const noexcept { return slow_callback_duration_; }

private:
    struct FdEntry {
        Callback* reader = nullptr;
        Callback* writer = nullptr;
        IoHandler* handler = nullptr;
        uint32_t mask = 0;  // Interest registered with the poller.
    };
    FdEntry* entry(int fd) noexcept { return fd >= 0 && size_t(fd) < fds_.size() ? &fds_[fd] : nullptr; }
    const FdEntry* entry(int fd) const noexcept { return fd >= 0 && size_t(fd) < fds_.size() ? &fds_[fd] : nullptr; }
    std::error_code set_interest(int fd, FdEntry& e, uint32_t mask);
    std::error_code add_callback(int fd, Callback* cb, Callback** previous, bool write);
    Callback* remove_callback(int fd, bool write);
    int64_t compute_timeout_ns() noexcept;
    bool poll_io(int64_t timeout_ns);
    void dispatch(const PollEvent& ev);
    void queue_due_timers() noexcept;
    void drop_cancelled_timers() noexcept;
    void drain_threadsafe();
    bool run_ready();
    void queue_io(IoHandler* h, int fd, uint32_t events);
    void drop_queued_io(IoHandler* h) noexcept;
    static bool run_io(Callback* cb) noexcept;

    std::unique_ptr<Poller> poller_;
    std::unique_ptr<Waker> waker_;
    std::string_view poller_name_;
    int waker_fd_ = -1;
    int pid_ = 0;  // The process that created the kernel objects (fork detection).
    ReadyQueue ready_;
    TimerHeap timers_;
    std::vector<FdEntry> fds_;
    std::vector<PollEvent> events_;
    size_t nfds_ = 0;
    bool completions_ = false;  // poller_->completion_based(), asked once.
    bool stopping_ = false;
    bool in_callbacks_ = false;
    bool closed_ = false;
    bool debug_ = false;
    double slow_callback_duration_ = 0.1;
    size_t callback_lead_ = 0;
    LoopObserver default_observer_;
    LoopObserver* observer_ = &default_observer_;

    // Cross-thread state. `sleeping_` is set (seq_cst) before the wait and
    // `ts_pending_` is checked after it, so a producer either sees the loop asleep
    // and wakes it, or the loop sees the producer's callback before sleeping.
    std::mutex ts_mu_;
    std::vector<Callback*> ts_queue_;
    bool ts_closed_ = false;  // Guarded by ts_mu_: producers may race with close().
    std::atomic<bool> ts_pending_{false};
    std::atomic<bool> sleeping_{false};
    std::atomic<bool> wake_sent_{false};
};

}  // namespace cxxloop
