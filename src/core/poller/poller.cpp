// poller.cpp: picks a Poller backend by name, environment variable or platform default.
#include <cstdlib>
#include <stdexcept>
#include <string>

#include "cxxloop/poller.hpp"

namespace cxxloop {
namespace {

#ifdef __linux__
constexpr std::string_view kDefault = "epoll";
constexpr const char* kChoices = "'epoll', 'poll', 'select' or 'uring'";
#else
constexpr std::string_view kDefault = "poll";
constexpr const char* kChoices = "'poll' or 'select'";
#endif

/// The backend asked for by CXXLOOP_POLLER, or the platform default when it is unset
/// or empty. Empty counts as unset so `CXXLOOP_POLLER= prog` means "default".
std::string_view default_name() noexcept {
    const char* env = std::getenv("CXXLOOP_POLLER");
    return env && *env ? std::string_view(env) : kDefault;
}

}  // namespace

std::unique_ptr<Poller> make_poller(std::string_view name) {
    bool from_env = name.empty();
    if (from_env) name = default_name();
#ifdef __linux__
    if (name == "epoll") return make_epoll_poller();
    if (name == "uring") return make_uring_poller();
#endif
    if (name == "poll") return make_poll_poller();
    if (name == "select") return make_select_poller();
    std::string msg = "unknown poller '" + std::string(name) + "'";
    if (from_env) msg += " (from CXXLOOP_POLLER)";
    msg += "; expected ";
    msg += kChoices;
    throw std::invalid_argument(msg);
}

}  // namespace cxxloop
