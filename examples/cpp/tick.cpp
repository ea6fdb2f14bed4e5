// tick.cpp: the C++ core used without Python: timers, an fd reader and a wake-up
// from another thread, on the calling thread's loop from the per-thread policy.
#include <unistd.h>

#include <cstdio>
#include <thread>

#include "cxxloop/callback.hpp"
#include "cxxloop/loop.hpp"
#include "cxxloop/policy.hpp"

using namespace cxxloop;

// Reads one line from a pipe when it becomes readable (asyncio's add_reader).
struct PipeReader : Callback {
    int fd;
    EventLoop* loop;
    explicit PipeReader(int f, EventLoop* l) : fd(f), loop(l) {
        run = [](Callback* c) noexcept {
            auto* self = static_cast<PipeReader*>(c);
            char buf[64];
            ssize_t n = read(self->fd, buf, sizeof buf);
            std::printf("reader: got %zd bytes: %.*s", n, int(n > 0 ? n : 0), buf);
            return true;
        };
        retain = release = [](Callback*) noexcept {};  // Owned by main(), outlives the loop's use.
    }
};

int main() {
    EventLoop& loop = get_event_loop_policy()->get_event_loop();
    std::printf("poller: %.*s\n", int(loop.poller_name().size()), loop.poller_name().data());

    int fds[2];
    if (pipe(fds) != 0) return 1;
    PipeReader reader(fds[0], &loop);
    Callback* previous = nullptr;
    if (loop.add_reader(fds[0], &reader, &previous)) return 1;

    const double start = loop.time();
    for (int i = 1; i <= 3; ++i)
        loop.call_later(0.01 * i, [&, i] { std::printf("timer %d after %.3f s\n", i, loop.time() - start); });
    auto cancelled = loop.call_later(0.02, [] { std::printf("never printed\n"); });
    loop.cancel(cancelled);
    loop.call_later(0.015, [&] { (void)!write(fds[1], "hello\n", 6); });

    // Another thread stops the loop; call_soon_threadsafe wakes it from its wait.
    std::thread stopper([&] {
        std::this_thread::sleep_for(std::chrono::milliseconds(50));
        loop.call_soon_threadsafe([&] { std::printf("stopping from another thread\n"); loop.stop(); });
    });
    loop.run();
    stopper.join();

    if (Callback* cb = loop.remove_reader(fds[0])) cb->release(cb);
    close(fds[0]);
    close(fds[1]);
    return 0;
}
