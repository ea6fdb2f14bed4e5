// stream_recorder.hpp: a StreamHandler for the C++ stream suites (readiness Stream and
// io_uring UringStream) that records everything reported to it.
#pragma once

#include <functional>
#include <span>
#include <string>
#include <system_error>
#include <vector>

#include "cxxloop/stream.hpp"

namespace cxxloop::test {

/// Records what a stream of either engine reports, and the loop's holds on it.
struct Recorder : StreamHandler {
    std::string data;
    char buf[4096];
    size_t buf_size = sizeof buf;
    int eofs = 0, errors = 0, pauses = 0, resumes = 0, drains = 0, loop_closed = 0, holds = 0;
    std::error_code last_error;
    bool error_while_writing = false;
    std::vector<std::string>* order = nullptr;
    std::function<void()> on_data_hook;

    std::span<char> read_buffer(size_t) noexcept override { return {buf, buf_size}; }
    void on_read(size_t n) noexcept override {
        data.append(buf, n);
        if (order) order->push_back("data");
        if (on_data_hook) on_data_hook();
    }
    void on_eof() noexcept override { ++eofs; }
    void on_error(std::error_code ec, bool writing) noexcept override {
        ++errors;
        last_error = ec;
        error_while_writing = writing;
    }
    void on_pause_writing() noexcept override { ++pauses; }
    void on_resume_writing() noexcept override { ++resumes; }
    void on_drained() noexcept override { ++drains; }
    void retain() noexcept override { ++holds; }
    void release() noexcept override { --holds; }
    void on_loop_closed() noexcept override { ++loop_closed; }
};

}  // namespace cxxloop::test
