// probe.cpp: decides once whether io_uring is usable here, and if not, says why.
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <string>

#include "uring_internal.hpp"

namespace cxxloop {
namespace uring {

int read_io_uring_disabled() noexcept {
    FILE* f = std::fopen("/proc/sys/kernel/io_uring_disabled", "re");
    if (!f) return -1;
    int value = -1;
    if (std::fscanf(f, "%d", &value) != 1) value = -1;
    std::fclose(f);
    return value;
}

std::string setup_refusal(int err, int disabled) {
    switch (err) {
    case ENOSYS:
        return "io_uring_setup is not implemented (ENOSYS): the kernel is older than 5.1, "
               "was built without CONFIG_IO_URING, or a seccomp filter hides the call";
    case EPERM:
        if (disabled == 2)
            return "io_uring is disabled system-wide (EPERM: /proc/sys/kernel/io_uring_disabled is 2)";
        if (disabled == 1)
            return "io_uring is restricted (EPERM: /proc/sys/kernel/io_uring_disabled is 1) and this "
                   "process is neither in kernel.io_uring_group nor CAP_SYS_ADMIN";
        return "io_uring_setup was refused (EPERM), most likely by a seccomp filter or a security "
               "module (container runtimes often block io_uring)";
    case ENOMEM:
        return "io_uring_setup failed (ENOMEM): out of memory, or RLIMIT_MEMLOCK is too low for "
               "the rings on kernels before 5.12";
    default:
        return std::string("io_uring_setup failed: ") + std::strerror(err);
    }
}

}  // namespace uring

namespace {

using uring::setup_refusal;

/// Kernel features the engine relies on, with the release that brought each.
struct Feature {
    unsigned bit;
    const char* name;
};
constexpr Feature kFeatures[] = {
    {IORING_FEAT_NODROP, "IORING_FEAT_NODROP (5.5)"},
    {IORING_FEAT_FAST_POLL, "IORING_FEAT_FAST_POLL (5.7)"},
    {IORING_FEAT_EXT_ARG, "IORING_FEAT_EXT_ARG (5.11)"},
};

/// Opcodes the engine uses.
struct Opcode {
    int op;
    const char* name;
};
constexpr Opcode kOpcodes[] = {
    {IORING_OP_POLL_ADD, "POLL_ADD"},   {IORING_OP_POLL_REMOVE, "POLL_REMOVE"},
    {IORING_OP_ASYNC_CANCEL, "ASYNC_CANCEL"}, {IORING_OP_ACCEPT, "ACCEPT"},
    {IORING_OP_CONNECT, "CONNECT"},     {IORING_OP_RECV, "RECV"},
    {IORING_OP_SEND, "SEND"},           {IORING_OP_SENDMSG, "SENDMSG"},
};

UringSupport refused(int err, std::string reason) {
    UringSupport s;
    s.error = err;
    s.reason = std::move(reason);
    return s;
}

/// The missing features and opcodes of `ring`, as a sentence, or empty.
std::string missing_parts(io_uring& ring) {
    std::string missing;
    for (const Feature& f : kFeatures)
        if (!(ring.features & f.bit)) missing += std::string(missing.empty() ? "" : ", ") + f.name;
    if (!missing.empty()) return "the kernel's io_uring lacks " + missing + "; Linux 5.11 or later is needed";
    io_uring_probe* probe = io_uring_get_probe_ring(&ring);
    if (!probe) return "the kernel cannot list its io_uring opcodes (IORING_REGISTER_PROBE, Linux 5.6+)";
    for (const Opcode& o : kOpcodes)
        if (!io_uring_opcode_supported(probe, o.op)) missing += std::string(missing.empty() ? "" : ", ") + o.name;
    io_uring_free_probe(probe);
    if (!missing.empty()) return "the kernel's io_uring lacks required operations: " + missing;
    return {};
}

}  // namespace

UringSupport detect_uring() noexcept {
    try {
        io_uring ring{};
        int r = io_uring_queue_init(4, &ring, 0);
        if (r < 0) return refused(-r, setup_refusal(-r, uring::read_io_uring_disabled()));
        std::string missing = missing_parts(ring);
        io_uring_queue_exit(&ring);
        if (!missing.empty()) return refused(EOPNOTSUPP, std::move(missing));
        UringSupport ok;
        ok.available = true;
        return ok;
    } catch (...) {  // std::bad_alloc while building a reason.
        return refused(ENOMEM, "out of memory while probing io_uring");
    }
}

const UringSupport& uring_support() noexcept {
    static const UringSupport support = detect_uring();
    return support;
}

}  // namespace cxxloop
