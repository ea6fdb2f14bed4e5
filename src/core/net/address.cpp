// address.cpp: SocketAddress: numeric IPv4/IPv6 (scope ids kept) and Unix addresses.
#include <arpa/inet.h>
#include <net/if.h>
#include <netinet/in.h>
#include <sys/un.h>

#include <cstddef>
#include <cstring>

#include "cxxloop/net.hpp"

namespace cxxloop {

SocketAddress::SocketAddress(const sockaddr* sa, socklen_t len) noexcept {
    if (len > socklen_t(sizeof storage_)) len = sizeof storage_;
    std::memcpy(&storage_, sa, len);
    len_ = len;
}

std::optional<SocketAddress> SocketAddress::ip(std::string_view host, uint16_t port) {
    SocketAddress a;
    if (host.empty()) host = "0.0.0.0";
    if (host.size() >= 2 && host.front() == '[' && host.back() == ']') host = host.substr(1, host.size() - 2);
    std::string text(host);
    auto* v4 = reinterpret_cast<sockaddr_in*>(&a.storage_);
    if (::inet_pton(AF_INET, text.c_str(), &v4->sin_addr) == 1) {
        v4->sin_family = AF_INET;
        v4->sin_port = htons(port);
        a.len_ = sizeof(sockaddr_in);
        return a;
    }
    std::string scope;
    if (auto pct = text.find('%'); pct != std::string::npos) {
        scope = text.substr(pct + 1);
        text.resize(pct);
        if (scope.empty()) return std::nullopt;
    }
    auto* v6 = reinterpret_cast<sockaddr_in6*>(&a.storage_);
    if (::inet_pton(AF_INET6, text.c_str(), &v6->sin6_addr) != 1) return std::nullopt;
    if (!scope.empty()) {
        // A number, or an interface name (which must exist).
        char* end = nullptr;
        unsigned long id = std::strtoul(scope.c_str(), &end, 10);
        if (end && *end == '\0') {
            v6->sin6_scope_id = uint32_t(id);
        } else {
            unsigned idx = ::if_nametoindex(scope.c_str());
            if (idx == 0) return std::nullopt;
            v6->sin6_scope_id = idx;
        }
    }
    v6->sin6_family = AF_INET6;
    v6->sin6_port = htons(port);
    a.len_ = sizeof(sockaddr_in6);
    return a;
}

std::optional<SocketAddress> SocketAddress::unix_path(std::string_view path) {
    SocketAddress a;
    auto* un = reinterpret_cast<sockaddr_un*>(&a.storage_);
    // A path needs its terminating NUL to fit; an abstract name does not.
    const bool abstract = !path.empty() && path.front() == '\0';
    if (path.size() + (abstract ? 0 : 1) > sizeof un->sun_path) return std::nullopt;
    un->sun_family = AF_UNIX;
    std::memcpy(un->sun_path, path.data(), path.size());
    a.len_ = socklen_t(offsetof(sockaddr_un, sun_path) + path.size() + (abstract ? 0 : 1));
    return a;
}

std::optional<SocketAddress> SocketAddress::local_of(int fd) noexcept {
    SocketAddress a;
    a.len_ = sizeof a.storage_;
    if (::getsockname(fd, a.get(), &a.len_) != 0) return std::nullopt;
    return a;
}

std::optional<SocketAddress> SocketAddress::peer_of(int fd) noexcept {
    SocketAddress a;
    a.len_ = sizeof a.storage_;
    if (::getpeername(fd, a.get(), &a.len_) != 0) return std::nullopt;
    return a;
}

uint16_t SocketAddress::port() const noexcept {
    switch (family()) {
    case AF_INET: return ntohs(reinterpret_cast<const sockaddr_in*>(&storage_)->sin_port);
    case AF_INET6: return ntohs(reinterpret_cast<const sockaddr_in6*>(&storage_)->sin6_port);
    default: return 0;
    }
}

std::string SocketAddress::host() const {
    char buf[INET6_ADDRSTRLEN + IF_NAMESIZE + 2] = {};
    switch (family()) {
    case AF_INET:
        ::inet_ntop(AF_INET, &reinterpret_cast<const sockaddr_in*>(&storage_)->sin_addr, buf, sizeof buf);
        return buf;
    case AF_INET6: {
        const auto* v6 = reinterpret_cast<const sockaddr_in6*>(&storage_);
        ::inet_ntop(AF_INET6, &v6->sin6_addr, buf, sizeof buf);
        std::string s = buf;
        if (v6->sin6_scope_id) {
            // Interface names where the scope is one, as getnameinfo() prints them.
            char name[IF_NAMESIZE] = {};
            s += '%';
            s += ::if_indextoname(v6->sin6_scope_id, name) ? std::string(name) : std::to_string(v6->sin6_scope_id);
        }
        return s;
    }
    case AF_UNIX: {
        const auto* un = reinterpret_cast<const sockaddr_un*>(&storage_);
        size_t n = len_ > offsetof(sockaddr_un, sun_path) ? len_ - offsetof(sockaddr_un, sun_path) : 0;
        if (n && un->sun_path[0] != '\0') n = ::strnlen(un->sun_path, n);  // A path: up to its NUL.
        return std::string(un->sun_path, n);
    }
    default: return {};
    }
}

std::string SocketAddress::to_string() const {
    switch (family()) {
    case AF_INET: return host() + ':' + std::to_string(port());
    case AF_INET6: return '[' + host() + "]:" + std::to_string(port());
    default: return host();
    }
}

}  // namespace cxxloop
