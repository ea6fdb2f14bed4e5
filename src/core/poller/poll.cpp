// poll.cpp: the POSIX poll(2) backend of Poller, for any platform and any fd number.
#include <poll.h>

#include <unordered_map>

#include "cxxloop/poller.hpp"
#include "syscall.hpp"

namespace cxxloop {
namespace {

constexpr uint32_t kAllInterest = kReadable | kWritable;

short to_poll(uint32_t interest) noexcept {
    return short((interest & kReadable ? POLLIN : 0) | (interest & kWritable ? POLLOUT : 0));
}

/// The kReadable | kWritable mask for `revents`, limited to `interest`. POLLERR,
/// POLLHUP and POLLNVAL (an fd closed while watched) count as both, as in Python's
/// selectors, so the owner's next read or write meets the error instead of hanging.
uint32_t from_poll(short revents, uint32_t interest) noexcept {
    uint32_t out = 0;
    if (revents & (POLLIN | POLLERR | POLLHUP | POLLNVAL)) out |= kReadable;
    if (revents & (POLLOUT | POLLERR | POLLHUP | POLLNVAL)) out |= kWritable;
    return out & interest;
}

class PollPoller final : public Poller {
public:
    std::error_code add(int fd, uint32_t interest) override;
    std::error_code modify(int fd, uint32_t interest) override;
    std::error_code remove(int fd) override;
    std::error_code wait(int64_t timeout_ns, std::vector<PollEvent>& out) override;
    /// poll(2) keeps no kernel state between calls, so there is nothing to re-create.
    std::error_code after_fork() override { return {}; }
    std::string_view name() const noexcept override { return "poll"; }

private:
    // The pollfd array passed to the kernel as is, plus each fd's slot in it, so that
    // modify and remove are O(1) (remove moves the last slot into the hole).
    std::vector<pollfd> fds_;
    std::vector<uint32_t> interest_;  // Parallel to fds_.
    std::unordered_map<int, size_t> slot_;
};

std::error_code PollPoller::add(int fd, uint32_t interest) {
    if (interest == 0 || (interest & ~kAllInterest)) return std::make_error_code(std::errc::invalid_argument);
    if (fd < 0) return std::make_error_code(std::errc::bad_file_descriptor);
    if (slot_.count(fd)) return std::make_error_code(std::errc::file_exists);
    slot_.emplace(fd, fds_.size());
    fds_.push_back({fd, to_poll(interest), 0});
    interest_.push_back(interest);
    return {};
}

std::error_code PollPoller::modify(int fd, uint32_t interest) {
    if (interest == 0 || (interest & ~kAllInterest)) return std::make_error_code(std::errc::invalid_argument);
    auto it = slot_.find(fd);
    if (it == slot_.end()) return std::make_error_code(std::errc::no_such_file_or_directory);
    fds_[it->second].events = to_poll(interest);
    interest_[it->second] = interest;
    return {};
}

std::error_code PollPoller::remove(int fd) {
    auto it = slot_.find(fd);
    if (it == slot_.end()) return std::make_error_code(std::errc::no_such_file_or_directory);
    size_t hole = it->second;
    slot_.erase(it);
    if (hole != fds_.size() - 1) {
        fds_[hole] = fds_.back();
        interest_[hole] = interest_.back();
        slot_[fds_[hole].fd] = hole;
    }
    fds_.pop_back();
    interest_.pop_back();
    return {};
}

std::error_code PollPoller::wait(int64_t timeout_ns, std::vector<PollEvent>& out) {
    int n = ::poll(fds_.data(), nfds_t(fds_.size()), sys::timeout_ms_round_up(timeout_ns));
    if (n < 0) return sys::last_error();
    for (size_t i = 0; i < fds_.size() && n > 0; ++i) {
        if (fds_[i].revents == 0) continue;
        --n;
        if (uint32_t events = from_poll(fds_[i].revents, interest_[i])) out.push_back({fds_[i].fd, events});
    }
    return {};
}

}  // namespace

std::unique_ptr<Poller> make_poll_poller() { return std::make_unique<PollPoller>(); }

}  // namespace cxxloop
