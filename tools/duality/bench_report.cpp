#include "tools/duality/bench_report.h"

#include <algorithm>
#include <cstdarg>
#include <cstdio>
#include <utility>

#include <nlohmann/json.hpp>

namespace duality::cli {

namespace {

std::string fmt(const char* f, ...) __attribute__((format(printf, 1, 2)));
std::string fmt(const char* f, ...) {
    char buf[512];
    va_list ap;
    va_start(ap, f);
    std::vsnprintf(buf, sizeof buf, f, ap);
    va_end(ap);
    return buf;
}

std::string human_bytes(double b) {
    const char* units[] = {"B", "KiB", "MiB", "GiB", "TiB"};
    int u = 0;
    while (b >= 1024 && u < 4) {
        b /= 1024;
        ++u;
    }
    return fmt("%.2f %s", b, units[u]);
}

std::optional<double> ratio(double num, std::optional<double> den) {
    if (!den || *den <= 0) return std::nullopt;
    return num / *den;
}

std::string percent(std::optional<double> f) {
    return f ? fmt("%9.1f%%", 100.0 * *f) : std::string("      n/a");
}

// The roofline fraction of a prefill: achieved FLOP/s over the peak.
std::optional<double> prefill_fraction(const BenchReport& r, const PrefillResult& p) {
    return ratio(p.flops / p.seconds, r.flops_per_s);
}
// Decode: measured tokens/s over the bandwidth bound batch / (bytes per step / bandwidth).
std::optional<double> decode_bound(const BenchReport& r, const DecodeResult& d) {
    if (!r.bytes_per_s) return std::nullopt;
    return static_cast<double>(d.batch) * *r.bytes_per_s / d.bytes_per_step;
}
double decode_tokens_per_s(const DecodeResult& d) {
    return static_cast<double>(d.batch) * d.steps / d.seconds;
}
// An op: the time its bytes and FLOPs need at the peaks (the larger) over the time it took.
std::optional<double> op_fraction(const BenchReport& r, const OpBenchRow& o) {
    if (!r.bytes_per_s || !r.flops_per_s) return std::nullopt;
    return std::max(o.bytes / *r.bytes_per_s, o.flops / *r.flops_per_s) / o.seconds;
}

nlohmann::json opt_json(std::optional<double> v) {
    return v ? nlohmann::json(*v) : nlohmann::json(nullptr);
}

}  // namespace

std::string render_table(const BenchReport& r) {
    const DeviceInfo& dev = r.info;
    std::string s;
    s += fmt("model    %s%s\n", r.model.c_str(), r.random_weights ? " (random weights)" : "");
    s += fmt("device   %s: %s, weights %s, SSM state %s\n", r.backend.c_str(), dev.name.c_str(),
             r.dtype.c_str(), r.state_dtype.c_str());
    if (r.bytes_per_s || r.flops_per_s) {
        s += "peaks    ";
        s += r.bytes_per_s ? fmt("%.0f GB/s HBM", *r.bytes_per_s / 1e9) : "HBM n/a";
        s += r.flops_per_s ? fmt(", %.0f TFLOP/s dense bf16", *r.flops_per_s / 1e12)
                           : ", FLOP/s n/a";
        s += " (" + r.peak_source + ")\n";
    } else {
        s += "peaks    n/a (no table entry for this device: give --hbm-gbps and --peak-tflops)\n";
    }
    if (r.n_slots > 0) {
        const double total =
            static_cast<double>(dev.weight_bytes + dev.state_bytes + dev.workspace_bytes);
        s += fmt("memory   weights %s + states %s (%d slots) + workspace %s = %s",
                 human_bytes(static_cast<double>(dev.weight_bytes)).c_str(),
                 human_bytes(static_cast<double>(dev.state_bytes)).c_str(), r.n_slots,
                 human_bytes(static_cast<double>(dev.workspace_bytes)).c_str(),
                 human_bytes(total).c_str());
        if (dev.memory_total > 0)
            s += fmt(" of %s on the device",
                     human_bytes(static_cast<double>(dev.memory_total)).c_str());
        s += "\n";
        if (dev.decode_stack) s += "decode   batch 1 as one persistent kernel (decode_stack)\n";
        if (dev.device_loop)
            s += "decode   steps fed their ids on the device, queued back to back "
                 "(DUALITY_DEVICE_LOOP)\n";
        if (dev.z_fork == "none")
            s += "decode   in_proj as one product (DUALITY_SPLIT_IN_PROJ=0)\n";
        else if (!dev.z_fork.empty())
            s += fmt("decode   z product forked %s (DUALITY_Z_FORK)\n", dev.z_fork.c_str());
        // The decode forms that are on, one line each.
        const std::pair<bool DeviceInfo::*, const char*> forms[] = {
            {&DeviceInfo::decode_gate,
             "the gated norm's first half in the step (DUALITY_DECODE_GATE)"},
            {&DeviceInfo::gemv_epilogues,
             "batch 1: norms and conv1d in the products' epilogues (DUALITY_GEMV_EPILOGUES)"},
            {&DeviceInfo::batch1_whole,
             "batch 1: in_proj whole and the gate in the step, three kernels a layer"},
            {&DeviceInfo::argmax_in_head,
             "batch 1: the greedy argmax folded into the LM head (DUALITY_ARGMAX_IN_HEAD)"},
            {&DeviceInfo::gemv_bulk,
             "batch 1: the products' rows of w by bulk copies (DUALITY_GEMV_BULK)"},
        };
        for (const auto& [on, line] : forms)
            if (dev.*on) s += fmt("decode   %s\n", line);
        if (dev.gemv_prefetch_bytes > 0)
            s +=
                fmt("decode   batch 1: %.0f MiB of each product's weights prefetched into L2 "
                    "(DUALITY_GEMM_PREFETCH_MB)\n",
                    static_cast<double>(dev.gemv_prefetch_bytes) / (1 << 20));
        else if (dev.gemv_prefetch_bytes < 0)
            s += "decode   batch 1: all of each product's weights prefetched into L2 "
                 "(DUALITY_GEMM_PREFETCH_MB)\n";
        if (dev.out_proj_split > 1)
            s +=
                fmt("decode   %lld+ sequences: out_proj in %d k-parts summed by the next norm "
                    "(DUALITY_OUT_PROJ_SPLIT)\n",
                    static_cast<long long>(dev.out_proj_split_rows), dev.out_proj_split);
        if (dev.ssd_conv)
            s += "prefill  x's conv1d in the fused SSD's head blocks (DUALITY_SSD_CONV)\n";
        if (dev.ssd_dt) s += "prefill  Δ in the fused SSD's head blocks (DUALITY_SSD_DT)\n";
        if (dev.prefill_z_side)
            s += "prefill  in_proj's z product beside conv1d (DUALITY_PREFILL_Z_SIDE)\n";
        if (dev.trim_last)
            s += "prefill  the last out_proj on the wanted rows only (DUALITY_TRIM_LAST)\n";
        if (!dev.ssd_prefill.empty())
            s += fmt("prefill  SSD: %s, chunks of %lld tokens%s (DUALITY_SSD_PATH)\n",
                     dev.ssd_prefill.c_str(), static_cast<long long>(dev.ssd_chunk),
                     dev.ssd_passed_f16 ? ", f16 states between chunks" : "");
    }
    if (!r.prefill.empty()) {
        s += fmt("\n%-8s %6s %8s %10s %12s %9s %10s\n", "prefill", "batch", "seq_len", "ms",
                 "tokens/s", "TFLOP/s", "of peak");
        for (const PrefillResult& p : r.prefill) {
            s += fmt("%-8s %6lld %8lld ", "", static_cast<long long>(p.batch),
                     static_cast<long long>(p.seq_len));
            if (!p.skipped.empty()) {
                s += "skipped: " + p.skipped + "\n";
                continue;
            }
            const double tokens = static_cast<double>(p.batch * p.seq_len);
            s += fmt("%10.3f %12.1f %9.2f %s\n", p.seconds * 1e3, tokens / p.seconds,
                     p.flops / p.seconds / 1e12, percent(prefill_fraction(r, p)).c_str());
        }
    }
    if (!r.decode.empty()) {
        s += fmt("\n%-8s %6s %10s %12s %9s %12s %10s\n", "decode", "batch", "ms/step", "tokens/s",
                 "GB/s", "bound tok/s", "of bound");
        for (const DecodeResult& d : r.decode) {
            s += fmt("%-8s %6lld ", "", static_cast<long long>(d.batch));
            if (!d.skipped.empty()) {
                s += "skipped: " + d.skipped + "\n";
                continue;
            }
            const double step_s = d.seconds / d.steps;
            const auto bound = decode_bound(r, d);
            const double tps = decode_tokens_per_s(d);
            s += fmt("%10.3f %12.1f %9.1f %12s %s\n", step_s * 1e3, tps,
                     d.bytes_per_step / step_s / 1e9, bound ? fmt("%.1f", *bound).c_str() : "n/a",
                     percent(ratio(tps, bound)).c_str());
        }
    }
    if (!r.ops.empty()) {
        s += fmt("\n%-12s %-8s %10s %9s %9s %12s\n", "op (layer)", "shape", "us/call", "GB/s",
                 "TFLOP/s", "of roofline");
        for (const OpBenchRow& o : r.ops) {
            s += fmt("%-12s %-8s ", o.op.c_str(), o.shape.c_str());
            if (!o.skipped.empty()) {
                s += "skipped: " + o.skipped + "\n";
                continue;
            }
            s += fmt("%10.2f %9.1f %9.2f %12s\n", o.seconds * 1e6, o.bytes / o.seconds / 1e9,
                     o.flops / o.seconds / 1e12, percent(op_fraction(r, o)).c_str());
        }
    }
    return s;
}

std::string render_json(const BenchReport& r) {
    const DeviceInfo& dev = r.info;
    using nlohmann::json;
    json j;
    j["model"] = r.model;
    j["random_weights"] = r.random_weights;
    j["backend"] = r.backend;
    j["device"] = dev.name;
    j["dtype"] = r.dtype;
    j["state_dtype"] = r.state_dtype;
    j["peak"] = {{"hbm_bytes_per_s", opt_json(r.bytes_per_s)},
                 {"flops_per_s", opt_json(r.flops_per_s)},
                 {"source", r.peak_source}};
    if (r.n_slots > 0) {
        j["memory"] = {{"weight_bytes", dev.weight_bytes},
                       {"state_bytes", dev.state_bytes},
                       {"workspace_bytes", dev.workspace_bytes},
                       {"total_bytes", dev.weight_bytes + dev.state_bytes + dev.workspace_bytes},
                       {"device_total_bytes", dev.memory_total},
                       {"n_slots", r.n_slots}};
        j["decode_stack"] = dev.decode_stack;
        j["device_loop"] = dev.device_loop;
        j["z_fork"] = dev.z_fork;
        j["gemv_epilogues"] = dev.gemv_epilogues;
        j["decode_gate"] = dev.decode_gate;
        j["batch1_whole"] = dev.batch1_whole;
        j["gemv_bulk"] = dev.gemv_bulk;
        j["argmax_in_head"] = dev.argmax_in_head;
        j["gemv_prefetch_bytes"] = dev.gemv_prefetch_bytes;
        j["out_proj_split"] = dev.out_proj_split;
        j["out_proj_split_rows"] = dev.out_proj_split_rows;
        j["ssd_conv"] = dev.ssd_conv;
        j["ssd_dt"] = dev.ssd_dt;
        j["prefill_z_side"] = dev.prefill_z_side;
        j["trim_last"] = dev.trim_last;
        j["ssd_prefill"] = dev.ssd_prefill;
        j["ssd_chunk"] = dev.ssd_chunk;
        j["ssd_passed_f16"] = dev.ssd_passed_f16;
    }
    j["prefill"] = json::array();
    for (const PrefillResult& p : r.prefill) {
        json e = {{"batch", p.batch}, {"seq_len", p.seq_len}, {"tokens", p.batch * p.seq_len}};
        if (!p.skipped.empty()) {
            e["skipped"] = p.skipped;
        } else {
            const double tokens = static_cast<double>(p.batch * p.seq_len);
            e["seconds"] = p.seconds;
            e["ms"] = p.seconds * 1e3;
            e["tokens_per_s"] = tokens / p.seconds;
            e["flops"] = p.flops;
            e["flops_per_s"] = p.flops / p.seconds;
            e["roofline_fraction"] = opt_json(prefill_fraction(r, p));
        }
        j["prefill"].push_back(e);
    }
    j["decode"] = json::array();
    for (const DecodeResult& d : r.decode) {
        json e = {{"batch", d.batch}};
        if (!d.skipped.empty()) {
            e["skipped"] = d.skipped;
        } else {
            const double step_s = d.seconds / d.steps;
            const auto bound = decode_bound(r, d);
            const double tps = decode_tokens_per_s(d);
            e["steps"] = d.steps;
            e["seconds"] = d.seconds;
            e["ms_per_step"] = step_s * 1e3;
            e["tokens_per_s"] = tps;
            e["bytes_per_step"] = d.bytes_per_step;
            e["bytes_per_s"] = d.bytes_per_step / step_s;
            e["bound_tokens_per_s"] = opt_json(bound);
            e["roofline_fraction"] = opt_json(ratio(tps, bound));
        }
        j["decode"].push_back(e);
    }
    if (!r.ops.empty()) {
        j["ops"] = json::array();
        for (const OpBenchRow& o : r.ops) {
            json e = {{"op", o.op}, {"shape", o.shape}};
            if (!o.skipped.empty()) {
                e["skipped"] = o.skipped;
            } else {
                e["seconds"] = o.seconds;
                e["bytes"] = o.bytes;
                e["flops"] = o.flops;
                e["bytes_per_s"] = o.bytes / o.seconds;
                e["flops_per_s"] = o.flops / o.seconds;
                e["roofline_fraction"] = opt_json(op_fraction(r, o));
            }
            j["ops"].push_back(e);
        }
    }
    return j.dump(2) + "\n";
}

}  // namespace duality::cli
