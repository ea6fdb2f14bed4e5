// select.cpp: the select(2) backend of Poller, the last resort; fds must be < FD_SETSIZE.
#include <sys/select.h>

#include <map>

#include "cxxloop/poller.hpp"
#include "syscall.hpp"

namespace cxxloop {
namespace {

constexpr uint32_t kAllInterest = kReadable | kWritable;

/// A select(2) timeout for `timeout_ns`, rounded up to whole microseconds so a
/// sub-microsecond wait still sleeps; null means forever.
timeval* to_timeval(int64_t timeout_ns, timeval& tv) noexcept {
    if (timeout_ns < 0) return nullptr;
    int64_t us = timeout_ns / 1000 + (timeout_ns % 1000 != 0);
    tv.tv_sec = time_t(us / 1000000);
    tv.tv_usec = suseconds_t(us % 1000000);
    return &tv;
}

class SelectPoller final : public Poller {
public:
    /// Fails with EINVAL (std::errc::invalid_argument) for fd >= FD_SETSIZE: FD_SET
    /// on such an fd would write past the end of the fd_set.
    std::error_code add(int fd, uint32_t interest) override;
    std::error_code modify(int fd, uint32_t interest) override;
    std::error_code remove(int fd) override;
    /// A watched fd that was closed makes the whole call fail with EBADF, which is
    /// returned as is (select cannot say which fd it was, unlike poll's POLLNVAL).
    std::error_code wait(int64_t timeout_ns, std::vector<PollEvent>& out) override;
    /// select(2) keeps no kernel state between calls, so there is nothing to re-create.
    std::error_code after_fork() override { return {}; }
    std::string_view name() const noexcept override { return "select"; }

private:
    std::map<int, uint32_t> watched_;  // Ordered, so the largest fd is the last key.
};

std::error_code SelectPoller::add(int fd, uint32_t interest) {
    if (interest == 0 || (interest & ~kAllInterest)) return std::make_error_code(std::errc::invalid_argument);
    if (fd < 0) return std::make_error_code(std::errc::bad_file_descriptor);
    if (fd >= FD_SETSIZE) return std::make_error_code(std::errc::invalid_argument);
    if (!watched_.emplace(fd, interest).second) return std::make_error_code(std::errc::file_exists);
    return {};
}

std::error_code SelectPoller::modify(int fd, uint32_t interest) {
    if (interest == 0 || (interest & ~kAllInterest)) return std::make_error_code(std::errc::invalid_argument);
    auto it = watched_.find(fd);
    if (it == watched_.end()) return std::make_error_code(std::errc::no_such_file_or_directory);
    it->second = interest;
    return {};
}

std::error_code SelectPoller::remove(int fd) {
    if (watched_.erase(fd) == 0) return std::make_error_code(std::errc::no_such_file_or_directory);
    return {};
}

std::error_code SelectPoller::wait(int64_t timeout_ns, std::vector<PollEvent>& out) {
    fd_set rd, wr;
    FD_ZERO(&rd);
    FD_ZERO(&wr);
    for (auto [fd, interest] : watched_) {
        if (interest & kReadable) FD_SET(fd, &rd);
        if (interest & kWritable) FD_SET(fd, &wr);
    }
    int nfds = watched_.empty() ? 0 : watched_.rbegin()->first + 1;
    timeval tv;
    int n = ::select(nfds, &rd, &wr, nullptr, to_timeval(timeout_ns, tv));
    if (n < 0) return sys::last_error();
    for (auto it = watched_.begin(); it != watched_.end() && n > 0; ++it) {
        uint32_t events = (FD_ISSET(it->first, &rd) ? kReadable : 0u) | (FD_ISSET(it->first, &wr) ? kWritable : 0u);
        if (!events) continue;
        n -= (events & kReadable ? 1 : 0) + (events & kWritable ? 1 : 0);
        out.push_back({it->first, events});
    }
    return {};
}

}  // namespace

std::unique_ptr<Poller> make_select_poller() { return std::make_unique<SelectPoller>(); }

}  // namespace cxxloop
