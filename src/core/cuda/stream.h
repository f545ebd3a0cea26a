// RAII owners for a CUDA stream, an event, page-locked host memory and an instantiated CUDA graph.
#pragma once

#include <cuda_runtime.h>

#include <cstddef>
#include <utility>

#include "core/cuda/check.h"

namespace duality::cuda {

class Stream {
  public:
    Stream() { DUALITY_CUDA_CHECK(cudaStreamCreateWithFlags(&s_, cudaStreamNonBlocking)); }
    ~Stream() {
        if (s_) cudaStreamDestroy(s_);
    }
    Stream(Stream&& o) noexcept : s_(std::exchange(o.s_, nullptr)) {}
    Stream& operator=(Stream&&) = delete;
    Stream(const Stream&) = delete;
    cudaStream_t get() const { return s_; }
    void sync() const { DUALITY_CUDA_CHECK(cudaStreamSynchronize(s_)); }

  private:
    cudaStream_t s_ = nullptr;
};

// An event without timing: orders work between streams (also inside a stream capture, where a
// record on the capturing stream and a wait on another one fork the graph, and the reverse joins
// it).
class Event {
  public:
    Event() { DUALITY_CUDA_CHECK(cudaEventCreateWithFlags(&e_, cudaEventDisableTiming)); }
    ~Event() {
        if (e_) cudaEventDestroy(e_);
    }
    Event(Event&& o) noexcept : e_(std::exchange(o.e_, nullptr)) {}
    Event& operator=(Event&&) = delete;
    Event(const Event&) = delete;
    // `waiter` runs nothing enqueued after this call until `signaller`'s work so far is done.
    void order(cudaStream_t signaller, cudaStream_t waiter) const {
        DUALITY_CUDA_CHECK(cudaEventRecord(e_, signaller));
        DUALITY_CUDA_CHECK(cudaStreamWaitEvent(waiter, e_, 0));
    }
    // Marks the point of `stream` that sync() waits for (none recorded yet: sync() returns).
    void record(cudaStream_t stream) const { DUALITY_CUDA_CHECK(cudaEventRecord(e_, stream)); }
    void sync() const { DUALITY_CUDA_CHECK(cudaEventSynchronize(e_)); }

  private:
    cudaEvent_t e_ = nullptr;
};

// Page-locked host memory: the staging area of asynchronous copies.
class PinnedBuffer {
  public:
    PinnedBuffer() = default;
    explicit PinnedBuffer(size_t bytes) : bytes_(bytes) {
        if (bytes) DUALITY_CUDA_CHECK(cudaMallocHost(&p_, bytes));
    }
    ~PinnedBuffer() {
        if (p_) cudaFreeHost(p_);
    }
    PinnedBuffer(PinnedBuffer&& o) noexcept
        : p_(std::exchange(o.p_, nullptr)), bytes_(std::exchange(o.bytes_, 0)) {}
    PinnedBuffer& operator=(PinnedBuffer&& o) noexcept {
        std::swap(p_, o.p_);
        std::swap(bytes_, o.bytes_);
        return *this;
    }
    PinnedBuffer(const PinnedBuffer&) = delete;
    template <typename T>
    T* as() const {
        return static_cast<T*>(p_);
    }
    size_t bytes() const { return bytes_; }

  private:
    void* p_ = nullptr;
    size_t bytes_ = 0;
};

// An instantiated graph, captured from the work a callable enqueues on `stream`.
class Graph {
  public:
    Graph() = default;
    template <typename F>
    static Graph capture(cudaStream_t stream, F&& enqueue) {
        Graph g;
        DUALITY_CUDA_CHECK(cudaStreamBeginCapture(stream, cudaStreamCaptureModeThreadLocal));
        enqueue();
        cudaGraph_t graph = nullptr;
        DUALITY_CUDA_CHECK(cudaStreamEndCapture(stream, &graph));
        DUALITY_CUDA_CHECK(cudaGraphInstantiate(&g.exec_, graph, 0));
        cudaGraphDestroy(graph);
        return g;
    }
    ~Graph() {
        if (exec_) cudaGraphExecDestroy(exec_);
    }
    Graph(Graph&& o) noexcept : exec_(std::exchange(o.exec_, nullptr)) {}
    Graph& operator=(Graph&& o) noexcept {
        std::swap(exec_, o.exec_);
        return *this;
    }
    Graph(const Graph&) = delete;
    explicit operator bool() const { return exec_ != nullptr; }
    void launch(cudaStream_t stream) const { DUALITY_CUDA_CHECK(cudaGraphLaunch(exec_, stream)); }

  private:
    cudaGraphExec_t exec_ = nullptr;
};

}  // namespace duality::cuda
