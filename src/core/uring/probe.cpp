// probe.cpp: decides once whether io_uring is usable here, and if not, says why; finds the optional features.
#include <poll.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <string_view>

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

/// Optional features: the name CXXLOOP_URING_DISABLE uses, what the kernel needs, and
/// what the engine does without it.
struct Optional {
    uint32_t bit;
    const char* key;
    const char* needs;
    const char* fallback;
};
constexpr Optional kOptional[] = {
    {kUringPollMultishot, "poll_multishot", "IORING_POLL_ADD_MULTI (Linux 5.13)",
     "the loop's waker is polled one-shot"},
    {kUringRecvMultishot, "recv_multishot", "IORING_RECV_MULTISHOT into provided-buffer rings (Linux 6.0)",
     "socket streams use readiness polls instead of completion receives"},
    {kUringBufIncremental, "buf_incremental", "incrementally consumed buffer rings (IOU_PBUF_RING_INC, Linux 6.12)",
     "socket streams receive into many small whole buffers"},
};

using uring::kCqeFBufMore;
using uring::kPbufRingInc;

/// What the optional probe needs until the scratch ring is gone: the kernel may touch
/// the buffer ring and holds the sockets until io_uring_queue_exit() has cancelled the
/// multishot requests, so this is destroyed after the ring.
struct Scratch {
    int sv[2] = {-1, -1};
    void* bufs = MAP_FAILED;
    static constexpr size_t kBufBytes = 4096;  // One page: the ring (2 entries) and its 2 buffers.
    ~Scratch() {
        for (int fd : sv)
            if (fd >= 0) ::close(fd);
        if (bufs != MAP_FAILED) ::munmap(bufs, kBufBytes);
    }
};

/// Tests the optional features on `ring` by using them once: a multishot poll and a
/// multishot receive into a registered buffer ring, on a socket with a byte waiting.
/// Each must report the byte and stay armed (IORING_CQE_F_MORE); a kernel without
/// the feature fails the request with EINVAL (or the registration). The buffer ring
/// is registered as incrementally consumed where the kernel takes the flag (older
/// ones refuse it with EINVAL, and it is registered again without): the one byte
/// must then leave the rest of its buffer to the kernel (IORING_CQE_F_BUF_MORE).
uint32_t probe_optional(io_uring& ring, Scratch& sc) noexcept {
    if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, sc.sv) < 0) return 0;
    if (::write(sc.sv[1], "x", 1) != 1) return 0;
    unsigned want = 0;
    if (io_uring_sqe* s = io_uring_get_sqe(&ring)) {
        io_uring_prep_poll_multishot(s, sc.sv[0], POLLIN);
        io_uring_sqe_set_data64(s, kUringPollMultishot);
        ++want;
    }
    constexpr uint16_t kGroup = 1;
    constexpr unsigned kEntries = 2;
    sc.bufs = ::mmap(nullptr, Scratch::kBufBytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (sc.bufs != MAP_FAILED) {
        auto* br = static_cast<io_uring_buf_ring*>(sc.bufs);
        char* data = static_cast<char*>(sc.bufs) + 1024;  // Past the ring's entries.
        io_uring_buf_ring_init(br);
        for (unsigned i = 0; i < kEntries; ++i)
            io_uring_buf_ring_add(br, data + i * 512, 512, uint16_t(i), io_uring_buf_ring_mask(kEntries), int(i));
        io_uring_buf_ring_advance(br, kEntries);
        io_uring_buf_reg reg{};
        reg.ring_addr = uint64_t(reinterpret_cast<uintptr_t>(br));
        reg.ring_entries = kEntries;
        reg.bgid = kGroup;
        reg.pad = kPbufRingInc;  // `flags` in newer headers.
        int r = io_uring_register_buf_ring(&ring, &reg, 0);
        if (r == -EINVAL) {
            reg.pad = 0;
            r = io_uring_register_buf_ring(&ring, &reg, 0);
        }
        const bool incremental = r == 0 && reg.pad;
        io_uring_sqe* s = r == 0 ? io_uring_get_sqe(&ring) : nullptr;
        if (s) {
            io_uring_prep_recv_multishot(s, sc.sv[0], nullptr, 0, 0);
            s->flags |= IOSQE_BUFFER_SELECT;
            s->buf_group = kGroup;
            io_uring_sqe_set_data64(s, uint64_t(kUringRecvMultishot) | (incremental ? uint64_t(kUringBufIncremental) : 0));
            ++want;
        }
    }
    if (want == 0) return 0;
    uint32_t found = 0;
    __kernel_timespec ts{1, 0};  // Both complete at once; the bound only guards a broken kernel.
    io_uring_cqe* cqe = nullptr;
    if (io_uring_submit_and_wait_timeout(&ring, &cqe, want, &ts, nullptr) < 0 && !io_uring_cq_ready(&ring)) return 0;
    unsigned head, seen = 0;
    io_uring_for_each_cqe(&ring, head, cqe) {
        ++seen;
        if (cqe->res <= 0 || !(cqe->flags & IORING_CQE_F_MORE)) continue;
        uint32_t bits = uint32_t(cqe->user_data) & kUringAllFeatures;
        if (!(cqe->flags & kCqeFBufMore)) bits &= ~uint32_t(kUringBufIncremental);
        found |= bits;
    }
    io_uring_cq_advance(&ring, seen);
    return found;
}

/// The UringFeature bits named in `list` (comma-separated keys of kOptional).
uint32_t parse_disable(const char* list) noexcept {
    uint32_t bits = 0;
    std::string_view rest = list ? list : "";
    while (!rest.empty()) {
        const size_t comma = rest.find(',');
        const std::string_view key = rest.substr(0, comma);
        for (const Optional& o : kOptional)
            if (key == o.key) bits |= o.bit;
        if (key == "all") bits |= kUringAllFeatures;
        rest = comma == std::string_view::npos ? std::string_view{} : rest.substr(comma + 1);
    }
    return bits;
}

/// The sentence naming the optional features missing from `found` or `disabled`.
std::string describe_missing(uint32_t found, uint32_t disabled) {
    std::string out;
    for (const Optional& o : kOptional) {
        if ((found & o.bit) && !(disabled & o.bit)) continue;
        if (!out.empty()) out += "; ";
        out += (disabled & o.bit) ? std::string(o.key) + " is disabled by CXXLOOP_URING_DISABLE"
                                  : std::string("the kernel lacks ") + o.needs;
        out += std::string(": ") + o.fallback;
    }
    return out;
}

}  // namespace

const char* uring_feature_key(uint32_t bit) noexcept {
    for (const Optional& o : kOptional)
        if (o.bit == bit) return o.key;
    return nullptr;
}

UringSupport detect_uring(const char* disable) noexcept {
    try {
        io_uring ring{};
        int r = io_uring_queue_init(4, &ring, 0);
        if (r < 0) return refused(-r, setup_refusal(-r, uring::read_io_uring_disabled()));
        Scratch scratch;  // Declared before the guard, so it goes after the ring.
        struct RingGuard {
            io_uring* r;
            ~RingGuard() { io_uring_queue_exit(r); }
        } guard{&ring};
        std::string missing = missing_parts(ring);
        if (!missing.empty()) return refused(EOPNOTSUPP, std::move(missing));
        UringSupport ok;
        ok.available = true;
        const uint32_t found = probe_optional(ring, scratch);
        const uint32_t off = parse_disable(disable ? disable : std::getenv("CXXLOOP_URING_DISABLE"));
        ok.features = found & ~off;
        ok.missing_features = describe_missing(found, off);
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
