// kernel_trace: a CUPTI injection library that writes when every kernel ran, for machines without
// Nsight Systems (the device machines). The CUDA driver loads it into any process that runs with
//
//   CUDA_INJECTION64_PATH=build-gpu/libduality_kernel_trace.so DUALITY_KERNEL_TRACE=trace.csv cmd
//
// and calls InitializeInjection() before the process's first CUDA call. It turns on CUPTI's
// concurrent kernel records (GPU timestamps, kernels inside CUDA graphs included, one record per
// graph node launch; nothing is serialized) and, at exit, writes one CSV line per kernel:
// start and end in ns on the GPU's clock, the stream, the graph node (0 outside graphs), the grid
// and block sizes, and the demangled name without its parameter list. A kernel's start is when its
// first block started, which under programmatic dependent launch can be long before the kernel in
// front ended (its blocks then wait in griddepcontrol.wait). scripts/kernel_trace_summary.py reads
// the file. Used by `scripts/gpu-check.sh trace`.
//
// CUPTI's buffer callbacks take no user pointer, so the records collected so far live in one
// object owned by this library (the one piece of process-wide state here, which an injected
// library cannot avoid).
#include <cupti.h>
#include <cxxabi.h>

#include <cstdio>
#include <cstdlib>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

namespace {

struct KernelRecord {
    uint64_t start = 0, end = 0, graph_node = 0;
    uint32_t stream = 0;
    int32_t grid = 0, block = 0;
    std::string name;
};

struct Trace {
    std::mutex mu;
    std::vector<KernelRecord> kernels;
    uint64_t dropped = 0;
};

Trace& trace() {
    static Trace t;
    return t;
}

// "void duality::cuda::(anonymous namespace)::foo<float, 4>(int, ...)" -> the part before the
// parameter list, without the return type.
std::string short_name(const char* mangled) {
    if (!mangled) return "?";
    int status = 0;
    std::unique_ptr<char, decltype(&std::free)> full(
        abi::__cxa_demangle(mangled, nullptr, nullptr, &status), &std::free);
    std::string s = status == 0 && full ? full.get() : mangled;
    // Cut the parameter list: the last '(' at template depth 0.
    int depth = 0;
    size_t cut = std::string::npos;
    for (size_t i = 0; i < s.size(); ++i) {
        if (s[i] == '<') ++depth;
        if (s[i] == '>') --depth;
        if (s[i] == '(' && depth == 0 && s.compare(i, 21, "(anonymous namespace)") != 0) cut = i;
    }
    if (cut != std::string::npos) s.resize(cut);
    if (s.rfind("void ", 0) == 0) s.erase(0, 5);
    for (char& c : s)
        if (c == ',') c = ';';  // keep the CSV's columns
    return s;
}

void CUPTIAPI buffer_requested(uint8_t** buffer, size_t* size, size_t* max_records) {
    constexpr size_t kBytes = size_t{8} << 20;
    *buffer = static_cast<uint8_t*>(std::aligned_alloc(8, kBytes));
    *size = *buffer ? kBytes : 0;
    *max_records = 0;
}

void CUPTIAPI buffer_completed(CUcontext, uint32_t, uint8_t* buffer, size_t, size_t valid) {
    Trace& t = trace();
    CUpti_Activity* rec = nullptr;
    std::lock_guard<std::mutex> lock(t.mu);
    while (cuptiActivityGetNextRecord(buffer, valid, &rec) == CUPTI_SUCCESS) {
        if (rec->kind != CUPTI_ACTIVITY_KIND_CONCURRENT_KERNEL) continue;
        const auto* k = reinterpret_cast<const CUpti_ActivityKernel10*>(rec);
        t.kernels.push_back({k->start, k->end, k->graphNodeId, k->streamId,
                             k->gridX * k->gridY * k->gridZ, k->blockX * k->blockY * k->blockZ,
                             short_name(k->name)});
    }
    size_t dropped = 0;
    if (cuptiActivityGetNumDroppedRecords(nullptr, 0, &dropped) == CUPTI_SUCCESS)
        t.dropped += dropped;
    std::free(buffer);
}

void write_trace() {
    cuptiActivityFlushAll(1);
    const char* path = std::getenv("DUALITY_KERNEL_TRACE");
    if (!path || !*path) path = "kernel-trace.csv";
    Trace& t = trace();
    std::lock_guard<std::mutex> lock(t.mu);
    FILE* f = std::fopen(path, "w");
    if (!f) {
        std::fprintf(stderr, "kernel_trace: cannot write %s\n", path);
        return;
    }
    std::fprintf(f, "start_ns,end_ns,stream,graph_node,grid,block,name\n");
    for (const KernelRecord& k : t.kernels)
        std::fprintf(f, "%llu,%llu,%u,%llu,%d,%d,%s\n", static_cast<unsigned long long>(k.start),
                     static_cast<unsigned long long>(k.end), k.stream,
                     static_cast<unsigned long long>(k.graph_node), k.grid, k.block,
                     k.name.c_str());
    std::fclose(f);
    std::fprintf(stderr, "kernel_trace: %zu kernels (%llu records dropped) in %s\n",
                 t.kernels.size(), static_cast<unsigned long long>(t.dropped), path);
}

bool check(CUptiResult r, const char* what) {
    if (r == CUPTI_SUCCESS) return true;
    const char* msg = nullptr;
    cuptiGetResultString(r, &msg);
    std::fprintf(stderr, "kernel_trace: %s failed: %s\n", what, msg ? msg : "?");
    return false;
}

}  // namespace

// Called by the CUDA driver (CUDA_INJECTION64_PATH); returns 1 when tracing is on.
extern "C" __attribute__((visibility("default"))) int InitializeInjection() {
    trace();  // constructed before write_trace is registered, so destroyed after it runs
    if (!check(cuptiActivityRegisterCallbacks(buffer_requested, buffer_completed),
               "cuptiActivityRegisterCallbacks") ||
        !check(cuptiActivityEnable(CUPTI_ACTIVITY_KIND_CONCURRENT_KERNEL),
               "cuptiActivityEnable(CONCURRENT_KERNEL)"))
        return 0;
    std::atexit(write_trace);
    return 1;
}
