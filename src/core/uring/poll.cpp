// poll.cpp: the "uring" Poller: level-triggered readiness from POLL_ADDs on the ring.
//
// Each watched fd has at most one poll in the kernel. For an fd added with add() the
// poll is one-shot: when it completes, the fd is reported and its poll is armed again
// at the next wait(), in the same submission batch as everything else; a poll armed
// on an fd that is still ready completes at once, which is what makes the reports
// level-triggered like epoll's. An fd added with add_drained() (its consumer reads
// until EAGAIN at every report: the loop's waker) gets one multishot poll, armed once,
// which reports each wake-up and never needs re-arming; docs/proactor.md says why the
// other fds keep one-shot polls. Changing an fd's interest removes its poll and arms a
// new one. A generation number in the user_data tells a stale completion (from a poll
// since removed) from the current one.
#include <fcntl.h>
#include <poll.h>

#include <cerrno>
#include <chrono>
#include <vector>

#include "syscall.hpp"
#include "uring_internal.hpp"

namespace cxxloop {
namespace {

constexpr uint32_t kAllInterest = kReadable | kWritable;
constexpr uint32_t kGenMask = (1u << 29) - 1;  // 29 bits between the tag and the fd.

uint32_t to_poll(uint32_t interest) noexcept {
    return (interest & kReadable ? POLLIN : 0u) | (interest & kWritable ? POLLOUT : 0u);
}

/// As in epoll.cpp: an error or hangup counts as both readable and writable, limited
/// to what is watched, so the next read or write reports it.
uint32_t from_poll(uint32_t revents, uint32_t interest) noexcept {
    uint32_t out = 0;
    if (revents & (POLLIN | POLLERR | POLLHUP | POLLRDHUP)) out |= kReadable;
    if (revents & (POLLOUT | POLLERR | POLLHUP)) out |= kWritable;
    return out & interest;
}

class UringPoller final : public Poller {
public:
    std::error_code add(int fd, uint32_t interest) override;
    std::error_code add_drained(int fd, uint32_t interest) override;
    std::error_code modify(int fd, uint32_t interest) override;
    std::error_code remove(int fd) override;
    std::error_code wait(int64_t timeout_ns, std::vector<PollEvent>& out) override;
    std::error_code after_fork() override;
    std::string_view name() const noexcept override { return "uring"; }

    bool completion_based() const noexcept override { return true; }
    bool has_completions() const noexcept override { return uring_.busy(); }
    void dispatch_completions() noexcept override { uring_.dispatch(); }
    Uring* uring() noexcept override { return &uring_; }

private:
    struct Watch {
        uint32_t interest = 0;  // 0: not watched.
        uint32_t gen = 0;       // Survives remove(), so stale completions never match.
        uint32_t wait_seq = 0;  // The wait() that last reported it, and at which index
        uint32_t slot = 0;      // of its output (a multishot poll may complete twice).
        bool armed = false;     // A poll of this generation is queued or in the kernel.
        bool dead = false;      // The poll failed (fd closed): dropped, as epoll does.
        bool multishot = false; // add_drained(): one multishot poll, re-armed only when it ends.
    };

    std::error_code add_watch(int fd, uint32_t interest, bool multishot);
    Watch* find(int fd) noexcept { return fd >= 0 && size_t(fd) < watches_.size() && watches_[fd].interest ? &watches_[fd] : nullptr; }
    static uint64_t poll_data(int fd, const Watch& w) noexcept {
        return (uint64_t(uint32_t(fd)) << 32) | (uint64_t(w.gen & kGenMask) << 3) | Uring::kTagPoll;
    }
    std::error_code arm(int fd, Watch& w) noexcept;
    void disarm(int fd, Watch& w) noexcept;
    void rearm_reported() noexcept;
    void report(int fd, Watch& w, uint32_t events) noexcept;
    static void on_poll(void* self, uint64_t data, int res, uint32_t flags) noexcept;
    int enter(int64_t timeout_ns) noexcept;

    Uring uring_;  // Throws when io_uring is unusable, so nothing below is built then.
    std::vector<Watch> watches_;  // Indexed by fd.
    std::vector<int> reported_;   // Fds reported by the last wait(), to arm again.
    std::vector<PollEvent>* out_ = nullptr;  // The wait() in progress, for on_poll.
    uint32_t wait_seq_ = 0;                  // Counts wait() calls, for Watch::wait_seq.
    bool multishot_ok_ = true;               // Cleared if the kernel refuses IORING_POLL_ADD_MULTI.
};

/// Queues a poll for `fd` with its current interest, under a new generation.
std::error_code UringPoller::arm(int fd, Watch& w) noexcept {
    io_uring_sqe* s = uring_.sqe();
    if (!s) return std::make_error_code(std::errc::resource_unavailable_try_again);
    w.gen = (w.gen + 1) & kGenMask;
    if (w.multishot) io_uring_prep_poll_multishot(s, fd, to_poll(w.interest));
    else io_uring_prep_poll_add(s, fd, to_poll(w.interest));
    io_uring_sqe_set_data64(s, poll_data(fd, w));
    w.armed = true;
    w.dead = false;
    return {};
}

/// Queues the removal of `fd`'s poll, if one is armed.
void UringPoller::disarm(int fd, Watch& w) noexcept {
    if (!w.armed) return;
    if (io_uring_sqe* s = uring_.sqe()) {
        io_uring_prep_poll_remove(s, poll_data(fd, w));
        io_uring_sqe_set_data64(s, Uring::kTagIgnore);
    }
    w.armed = false;
    w.gen = (w.gen + 1) & kGenMask;
}

std::error_code UringPoller::add_watch(int fd, uint32_t interest, bool multishot) {
    if (interest == 0 || (interest & ~kAllInterest)) return std::make_error_code(std::errc::invalid_argument);
    if (find(fd)) return std::make_error_code(std::errc::file_exists);
    // The poll itself would only fail at the next wait(); epoll refuses a bad fd here.
    if (fd < 0 || ::fcntl(fd, F_GETFD) < 0) return std::make_error_code(std::errc::bad_file_descriptor);
    if (size_t(fd) >= watches_.size()) watches_.resize(size_t(fd) + 1);
    Watch& w = watches_[fd];
    w.interest = interest;
    w.multishot = multishot && multishot_ok_ && uring_.has(kUringPollMultishot);
    if (auto ec = arm(fd, w)) {
        w.interest = 0;
        return ec;
    }
    return {};
}

std::error_code UringPoller::add(int fd, uint32_t interest) { return add_watch(fd, interest, false); }

/// A multishot poll reports every wake-up of the fd (several wake-ups before the
/// kernel runs its task work make one report), and nothing while the fd merely stays
/// ready: exact for a consumer that drains the fd at each report, as a new write after
/// the drain is a new wake-up. Such an fd costs no submission per report.
std::error_code UringPoller::add_drained(int fd, uint32_t interest) { return add_watch(fd, interest, true); }

std::error_code UringPoller::modify(int fd, uint32_t interest) {
    if (interest == 0 || (interest & ~kAllInterest)) return std::make_error_code(std::errc::invalid_argument);
    Watch* w = find(fd);
    if (!w) return std::make_error_code(std::errc::no_such_file_or_directory);
    if (w->interest == interest && !w->dead) return {};  // Armed, or re-armed at the next wait().
    if (w->dead && ::fcntl(fd, F_GETFD) < 0) {
        // Closed behind our back: forget it, as epoll does, so the number can be added again.
        *w = Watch{0, w->gen, w->wait_seq};
        return std::make_error_code(std::errc::bad_file_descriptor);
    }
    disarm(fd, *w);
    w->interest = interest;
    return arm(fd, *w);
}

std::error_code UringPoller::remove(int fd) {
    Watch* w = find(fd);
    if (!w) return std::make_error_code(std::errc::no_such_file_or_directory);
    const bool was_armed = w->armed;
    disarm(fd, *w);
    *w = Watch{0, w->gen, w->wait_seq};
    // A poll holds a reference to the file: submit its removal now, so that closing
    // the fd right after this (the usual reason to remove it) really closes it.
    if (was_armed) uring_.flush();
    return {};
}

void UringPoller::rearm_reported() noexcept {
    for (int fd : reported_)
        if (Watch* w = find(fd); w && !w->armed && !w->dead) arm(fd, *w);
    reported_.clear();
}

/// Adds `events` for `fd` to the wait's output, once per fd and wait.
void UringPoller::report(int fd, Watch& w, uint32_t events) noexcept {
    if (!events) return;
    if (w.wait_seq == wait_seq_ && w.slot < out_->size() && (*out_)[w.slot].fd == fd) {
        (*out_)[w.slot].events |= events;
        return;
    }
    w.wait_seq = wait_seq_;
    w.slot = uint32_t(out_->size());
    out_->push_back({fd, events});
}

void UringPoller::on_poll(void* self, uint64_t data, int res, uint32_t flags) noexcept {
    auto* p = static_cast<UringPoller*>(self);
    const int fd = int(uint32_t(data >> 32));
    Watch* w = p->find(fd);
    if (!w || !w->armed || ((data >> 3) & kGenMask) != w->gen) return;  // Stale.
    if (flags & IORING_CQE_F_MORE) {
        // A multishot poll reporting and staying armed.
        if (res > 0) p->report(fd, *w, from_poll(uint32_t(res), w->interest));
        return;
    }
    // The poll is over: one-shot, or a multishot one the kernel ended (cancelled, or
    // the completion queue was full); it is armed again at the next wait().
    w->armed = false;
    if (res == -ECANCELED) {
        p->reported_.push_back(fd);  // Cancelled by cancel_fd(): arm again, report nothing.
        return;
    }
    if (res == -EINVAL && w->multishot) {
        // A kernel before 5.13 refuses IORING_POLL_ADD_MULTI (the probe should have
        // said so): one-shot polls from now on.
        p->multishot_ok_ = false;
        w->multishot = false;
        p->reported_.push_back(fd);
        return;
    }
    if (res < 0) {
        w->dead = true;  // EBADF: the fd was closed before its poll started.
        return;
    }
    p->reported_.push_back(fd);
    p->report(fd, *w, from_poll(uint32_t(res), w->interest));
}

/// Submits what is queued and waits as asked; returns liburing's result (-errno on
/// failure, -ETIME on timeout). A zero timeout enters the kernel only when there is
/// something to submit or the kernel flagged pending work (IORING_SQ_TASKRUN).
int UringPoller::enter(int64_t timeout_ns) noexcept {
    io_uring* r = uring_.ring();
    if (timeout_ns == 0) return io_uring_submit(r);
    if (timeout_ns < 0) return io_uring_submit_and_wait(r, 1);
    __kernel_timespec ts{timeout_ns / 1'000'000'000, timeout_ns % 1'000'000'000};
    io_uring_cqe* cqe = nullptr;
    return io_uring_submit_and_wait_timeout(r, &cqe, 1, &ts, nullptr);
}

// Long for a backend function, like every backend's wait(): the retry rules below
// are what keeps the EINTR and timeout contracts of Poller::wait() exact.
std::error_code UringPoller::wait(int64_t timeout_ns, std::vector<PollEvent>& out) {
    if (!uring_.ring()) return std::make_error_code(std::errc::bad_file_descriptor);
    // Results collected but not yet delivered (after fork) must not wait behind a sleep.
    if (uring_.undelivered()) timeout_ns = 0;
    using Clock = std::chrono::steady_clock;
    const auto deadline = Clock::now() + std::chrono::nanoseconds(timeout_ns > 0 ? timeout_ns : 0);
    ++wait_seq_;
    for (;;) {
        rearm_reported();
        const int r = enter(timeout_ns);
        const size_t before = out.size() + uring_.undelivered();
        out_ = &out;
        const size_t seen = uring_.reap(&UringPoller::on_poll, this);
        out_ = nullptr;
        if (out.size() + uring_.undelivered() != before || timeout_ns == 0) return {};
        if (r == -EINTR) return sys::make_error(EINTR);
        if (r < 0 && r != -ETIME && r != -EAGAIN && r != -EBUSY) return sys::make_error(-r);
        const auto now = Clock::now();
        if (timeout_ns > 0 && now >= deadline) return {};
        // Back early with nothing at all: a signal arrived while the same call submitted
        // entries, and the kernel then reports the submission count instead of EINTR
        // (and liburing reports -ETIME). The caller must still see EINTR.
        if (seen == 0) return sys::make_error(EINTR);
        // Only stale or internal completions: sleep for what is left.
        if (timeout_ns > 0) timeout_ns = std::chrono::duration_cast<std::chrono::nanoseconds>(deadline - now).count();
    }
}

std::error_code UringPoller::after_fork() {
    if (auto ec = uring_.after_fork()) return ec;
    // The new ring has no polls: arm every watched fd the child still has.
    reported_.clear();
    std::error_code first;
    for (size_t fd = 0; fd < watches_.size(); ++fd) {
        Watch& w = watches_[fd];
        if (!w.interest) continue;
        w.armed = false;
        if (::fcntl(int(fd), F_GETFD) < 0) {
            w = Watch{0, w.gen, w.wait_seq};  // Closed in the child: no longer watched.
            continue;
        }
        if (auto ec = arm(int(fd), w); ec && !first) first = ec;
    }
    return first;
}

}  // namespace

std::unique_ptr<Poller> make_uring_poller() { return std::make_unique<UringPoller>(); }

}  // namespace cxxloop
