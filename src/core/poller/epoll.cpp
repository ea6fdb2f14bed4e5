// epoll.cpp: the Linux epoll(7) backend of Poller, level-triggered.
#include <sys/epoll.h>

#include <cerrno>
#include <ctime>
#include <unordered_map>

#include "cxxloop/poller.hpp"
#include "syscall.hpp"

namespace cxxloop {
namespace {

constexpr uint32_t kAllInterest = kReadable | kWritable;

/// The epoll mask for a kReadable | kWritable interest.
uint32_t to_epoll(uint32_t interest) noexcept {
    return (interest & kReadable ? EPOLLIN : 0u) | (interest & kWritable ? EPOLLOUT : 0u);
}

/// The kReadable | kWritable mask for what epoll reported, limited to `interest`.
/// An error or hangup counts as both, as in Python's selectors: the next read or
/// write then returns the error or EOF instead of the loop never hearing about it.
uint32_t from_epoll(uint32_t ev, uint32_t interest) noexcept {
    uint32_t out = 0;
    if (ev & (EPOLLIN | EPOLLERR | EPOLLHUP)) out |= kReadable;
    if (ev & (EPOLLOUT | EPOLLERR | EPOLLHUP)) out |= kWritable;
    return out & interest;
}

class EpollPoller final : public Poller {
public:
    EpollPoller() {
        if (auto ec = open(); ec) throw std::system_error(ec, "epoll_create1");
    }
    ~EpollPoller() override { sys::close_fd(epfd_); }

    std::error_code add(int fd, uint32_t interest) override;
    std::error_code modify(int fd, uint32_t interest) override;
    std::error_code remove(int fd) override;
    std::error_code arm_once(int fd, uint32_t interest) override;
    std::error_code wait(int64_t timeout_ns, std::vector<PollEvent>& out) override;
    std::error_code after_fork() override;
    std::string_view name() const noexcept override { return "epoll"; }

private:
    std::error_code open() noexcept;
    std::error_code ctl(int op, int fd, uint32_t interest, uint32_t flags = 0) noexcept;
    int wait_kernel(int64_t timeout_ns) noexcept;

    int epfd_ = -1;
    // The watched set, kept here so after_fork() can rebuild a fresh epoll instance:
    // the child must not touch the one it shares with its parent.
    std::unordered_map<int, uint32_t> watched_;
    std::vector<epoll_event> buf_ = std::vector<epoll_event>(64);
    // Cleared the first time epoll_pwait2 turns out to be missing (kernels < 5.11, or
    // a seccomp filter that does not know it); epoll_wait with ms rounding is then used.
    bool have_pwait2_ = true;
};

std::error_code EpollPoller::open() noexcept {
    epfd_ = ::epoll_create1(EPOLL_CLOEXEC);
    return epfd_ < 0 ? sys::last_error() : std::error_code{};
}

/// One epoll_ctl call. The fd and its interest both ride in the event's data, so wait()
/// can report without a map lookup per event.
std::error_code EpollPoller::ctl(int op, int fd, uint32_t interest, uint32_t flags) noexcept {
    epoll_event ev{};
    ev.events = to_epoll(interest) | flags;
    ev.data.u64 = uint64_t(uint32_t(fd)) | (uint64_t(interest) << 32);
    return sys::check(::epoll_ctl(epfd_, op, fd, &ev));
}

std::error_code EpollPoller::add(int fd, uint32_t interest) {
    if (interest == 0 || (interest & ~kAllInterest)) return std::make_error_code(std::errc::invalid_argument);
    if (watched_.count(fd)) return std::make_error_code(std::errc::file_exists);
    if (auto ec = ctl(EPOLL_CTL_ADD, fd, interest)) return ec;
    watched_.emplace(fd, interest);
    return {};
}

std::error_code EpollPoller::modify(int fd, uint32_t interest) {
    if (interest == 0 || (interest & ~kAllInterest)) return std::make_error_code(std::errc::invalid_argument);
    auto it = watched_.find(fd);
    if (it == watched_.end()) return std::make_error_code(std::errc::no_such_file_or_directory);
    auto ec = ctl(EPOLL_CTL_MOD, fd, interest);
    // ENOENT means the fd was closed (dropping the kernel's registration) and its
    // number reused before remove() was called; register the new file instead.
    if (ec == std::errc::no_such_file_or_directory) ec = ctl(EPOLL_CTL_ADD, fd, interest);
    // EBADF: the fd is closed, so the kernel has dropped it; forget it too, so that a
    // later add() of a new fd with the same number is not refused with EEXIST.
    if (ec == std::errc::bad_file_descriptor) watched_.erase(it);
    else if (!ec) it->second = interest;
    return ec;
}

/// EPOLLONESHOT: one MOD re-arms a registration the last report disarmed (where a
/// level-triggered reader added and removed per wait costs an ADD and a DEL). MOD
/// failing with ENOENT means the kernel dropped the fd (closed, number reused): ADD.
std::error_code EpollPoller::arm_once(int fd, uint32_t interest) {
    if (interest == 0 || (interest & ~kAllInterest)) return std::make_error_code(std::errc::invalid_argument);
    auto it = watched_.find(fd);
    std::error_code ec = std::make_error_code(std::errc::no_such_file_or_directory);
    if (it != watched_.end()) ec = ctl(EPOLL_CTL_MOD, fd, interest, EPOLLONESHOT);
    if (ec == std::errc::no_such_file_or_directory) ec = ctl(EPOLL_CTL_ADD, fd, interest, EPOLLONESHOT);
    if (ec == std::errc::bad_file_descriptor) {
        if (it != watched_.end()) watched_.erase(it);
    } else if (!ec) {
        watched_[fd] = interest;
    }
    return ec;
}

std::error_code EpollPoller::remove(int fd) {
    if (watched_.erase(fd) == 0) return std::make_error_code(std::errc::no_such_file_or_directory);
    // EBADF: the fd is closed already. ENOENT: it was closed and its number reused, so
    // the kernel dropped the registration itself. Neither leaves anything to undo.
    auto ec = ctl(EPOLL_CTL_DEL, fd, 0);
    if (ec == std::errc::bad_file_descriptor || ec == std::errc::no_such_file_or_directory) return {};
    return ec;
}

/// Blocks in the kernel; returns epoll_wait's result. Uses epoll_pwait2 for nanosecond
/// timeouts when the kernel has it, else rounds up to milliseconds so a sub-millisecond
/// timeout sleeps briefly instead of returning at once and spinning.
int EpollPoller::wait_kernel(int64_t timeout_ns) noexcept {
    int max = int(buf_.size());
    if (have_pwait2_) {
        timespec ts{time_t(timeout_ns / 1000000000), long(timeout_ns % 1000000000)};
        int n = ::epoll_pwait2(epfd_, buf_.data(), max, timeout_ns < 0 ? nullptr : &ts, nullptr);
        if (n >= 0 || (errno != ENOSYS && errno != EPERM)) return n;
        have_pwait2_ = false;
    }
    return ::epoll_wait(epfd_, buf_.data(), max, sys::timeout_ms_round_up(timeout_ns));
}

std::error_code EpollPoller::wait(int64_t timeout_ns, std::vector<PollEvent>& out) {
    int n = wait_kernel(timeout_ns);
    if (n < 0) return sys::last_error();
    for (int i = 0; i < n; ++i) {
        uint64_t data = buf_[i].data.u64;
        uint32_t events = from_epoll(buf_[i].events, uint32_t(data >> 32));
        if (events) out.push_back({int(uint32_t(data)), events});
    }
    // A full buffer suggests more fds were ready than fit; grow so the next wait can
    // report them all in one go (the rest are not lost: epoll is level-triggered).
    if (size_t(n) == buf_.size() && buf_.size() < watched_.size()) buf_.resize(buf_.size() * 2);
    return {};
}

std::error_code EpollPoller::after_fork() {
    // Closing our descriptor does not affect the parent's registrations; deleting fds
    // from the shared instance would, so the old one is only closed, never edited.
    sys::close_fd(epfd_);
    if (auto ec = open()) return ec;
    std::error_code first;
    for (auto it = watched_.begin(); it != watched_.end();) {
        auto ec = ctl(EPOLL_CTL_ADD, it->first, it->second);
        // An fd the child has already closed is simply no longer watched.
        if (ec == std::errc::bad_file_descriptor) { it = watched_.erase(it); continue; }
        if (ec && !first) first = ec;
        ++it;
    }
    return first;
}

}  // namespace

std::unique_ptr<Poller> make_epoll_poller() { return std::make_unique<EpollPoller>(); }

}  // namespace cxxloop
