#include "test_util.h"

#include <sys/wait.h>
#include <zip.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdio>

#include <fstream>
#include <random>
#include <stdexcept>

#include <nlohmann/json.hpp>

#include "core/read_file.h"

namespace duality::test {

namespace fs = std::filesystem;

fs::path source_dir() {
    return DUALITY_SOURCE_DIR;
}
fs::path shared_dir() {
    return DUALITY_SHARED_DIR;
}
fs::path golden_dir() {
    return source_dir() / "tests" / "golden";
}
fs::path bundled_model_dir() {
    return source_dir() / "models" / "mamba2-gutenberg-17m";
}

std::string read_file(const fs::path& p) {
    auto bytes = duality::read_file(p);  // core/read_file.h; a test cannot go on without it
    if (!bytes) throw std::runtime_error(bytes.status().message());
    return std::move(*bytes);
}

double rel_max_err(const std::vector<float>& a, const std::vector<float>& b) {
    double err = 0, scale = 1e-30;
    for (size_t i = 0; i < b.size(); ++i) {
        err = std::max(err, static_cast<double>(std::fabs(a[i] - b[i])));
        scale = std::max(scale, static_cast<double>(std::fabs(b[i])));
    }
    return err / scale;
}

void write_file(const fs::path& p, const std::string& bytes) {
    std::ofstream out(p, std::ios::binary | std::ios::trunc);
    out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
    if (!out) throw std::runtime_error("cannot write " + p.string());
}

CliResult run_duality(const std::string& args, bool merge_stderr, const std::string& launcher) {
    // CLI tests compare with CPU references: pin the device unless the test chose one.
    const std::string device =
        args.find("--device") == std::string::npos ? "DUALITY_DEVICE=cpu " : "";
    const std::string cmd = device + (launcher.empty() ? "" : launcher + " ") +
                            std::string(DUALITY_BINARY) + " " + args +
                            (merge_stderr ? " 2>&1" : " 2>/dev/null");
    CliResult r;
    FILE* pipe = popen(cmd.c_str(), "r");
    if (!pipe) return r;
    std::array<char, 4096> buf;
    size_t n;
    while ((n = fread(buf.data(), 1, buf.size(), pipe)) > 0) r.out.append(buf.data(), n);
    const int status = pclose(pipe);
    r.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
    return r;
}

TempDir::TempDir() {
    std::random_device rd;
    path_ = fs::temp_directory_path() /
            ("duality-test-" + std::to_string(rd()) + "-" + std::to_string(rd()));
    fs::create_directories(path_);
}
TempDir::~TempDir() {
    std::error_code ec;
    fs::remove_all(path_, ec);
}

void copy_dir(const fs::path& from, const fs::path& to) {
    fs::create_directories(to);
    for (const auto& e : fs::directory_iterator(from)) {
        if (e.is_regular_file())
            fs::copy_file(e.path(), to / e.path().filename(), fs::copy_options::overwrite_existing);
    }
}

std::string make_safetensors(const std::vector<StEntry>& entries) {
    nlohmann::json header = nlohmann::json::object();
    std::string body;
    for (const auto& e : entries) {
        header[e.name] = {{"dtype", e.dtype},
                          {"shape", e.shape},
                          {"data_offsets", {body.size(), body.size() + e.bytes.size()}}};
        body += e.bytes;
    }
    std::string h = header.dump();
    std::string out(8, '\0');
    uint64_t n = h.size();
    for (int i = 0; i < 8; ++i) out[i] = static_cast<char>((n >> (8 * i)) & 0xff);
    return out + h + body;
}

std::string f32_bytes(const std::vector<float>& v) {
    return std::string(reinterpret_cast<const char*>(v.data()), v.size() * sizeof(float));
}

std::string make_zip(const std::vector<std::pair<std::string, std::string>>& entries) {
    zip_error_t err;
    zip_error_init(&err);
    zip_source_t* out_src = zip_source_buffer_create(nullptr, 0, 0, &err);
    zip_t* z = zip_open_from_source(out_src, ZIP_TRUNCATE, &err);
    if (!z) throw std::runtime_error("zip_open_from_source failed");
    zip_source_keep(out_src);
    for (const auto& [name, bytes] : entries) {
        zip_source_t* s = zip_source_buffer(z, bytes.data(), bytes.size(), 0);
        const zip_int64_t idx = zip_file_add(z, name.c_str(), s, ZIP_FL_ENC_UTF_8);
        if (idx < 0) throw std::runtime_error("zip_file_add failed");
        zip_set_file_compression(z, static_cast<zip_uint64_t>(idx), ZIP_CM_STORE, 0);
    }
    if (zip_close(z) != 0) throw std::runtime_error("zip_close failed");
    zip_source_open(out_src);
    zip_source_seek(out_src, 0, SEEK_END);
    const zip_int64_t size = zip_source_tell(out_src);
    zip_source_seek(out_src, 0, SEEK_SET);
    std::string out(static_cast<size_t>(size), '\0');
    zip_source_read(out_src, out.data(), static_cast<zip_uint64_t>(size));
    zip_source_close(out_src);
    zip_source_free(out_src);
    zip_error_fini(&err);
    return out;
}

std::string read_zip_entry(const std::string& zip_bytes, const std::string& suffix) {
    zip_error_t err;
    zip_error_init(&err);
    zip_source_t* src = zip_source_buffer_create(zip_bytes.data(), zip_bytes.size(), 0, &err);
    zip_t* z = src ? zip_open_from_source(src, ZIP_RDONLY, &err) : nullptr;
    std::string out;
    if (z) {
        for (zip_int64_t i = 0; i < zip_get_num_entries(z, 0); ++i) {
            const std::string name = zip_get_name(z, static_cast<zip_uint64_t>(i), 0);
            if (name.size() < suffix.size() ||
                name.compare(name.size() - suffix.size(), suffix.size(), suffix) != 0)
                continue;
            zip_stat_t st;
            zip_stat_index(z, static_cast<zip_uint64_t>(i), 0, &st);
            zip_file_t* f = zip_fopen_index(z, static_cast<zip_uint64_t>(i), 0);
            out.resize(st.size);
            zip_fread(f, out.data(), st.size);
            zip_fclose(f);
            break;
        }
        zip_discard(z);
    } else if (src) {
        zip_source_free(src);
    }
    zip_error_fini(&err);
    return out;
}

namespace pk {
std::string proto2() {
    return std::string("\x80\x02", 2);
}
std::string global(const std::string& module, const std::string& name) {
    return "c" + module + "\n" + name + "\n";
}
std::string str(const std::string& s) {
    std::string out = "X";
    uint32_t n = static_cast<uint32_t>(s.size());
    for (int i = 0; i < 4; ++i) out += static_cast<char>((n >> (8 * i)) & 0xff);
    return out + s;
}
std::string int1(uint8_t v) {
    return std::string("K") + static_cast<char>(v);
}
std::string mark() {
    return "(";
}
std::string tuple() {
    return "t";
}
std::string empty_dict() {
    return "}";
}
std::string setitems() {
    return "u";
}
std::string reduce() {
    return "R";
}
std::string binpersid() {
    return "Q";
}
std::string stop() {
    return ".";
}
std::string tensor(const std::string& storage_type, const std::string& key, int numel,
                   const std::vector<int>& shape) {
    std::string s = global("torch._utils", "_rebuild_tensor_v2") + mark();
    // persistent id ('storage', type, key, 'cpu', numel)
    s += mark() + str("storage") + global("torch", storage_type) + str(key) + str("cpu") +
         int1(static_cast<uint8_t>(numel)) + tuple() + binpersid();
    s += int1(0);
    s += mark();
    for (int d : shape) s += int1(static_cast<uint8_t>(d));
    s += tuple();
    std::vector<int> stride(shape.size());
    int acc = 1;
    for (size_t i = shape.size(); i-- > 0;) {
        stride[i] = acc;
        acc *= shape[i];
    }
    s += mark();
    for (int d : stride) s += int1(static_cast<uint8_t>(d));
    s += tuple();
    s += "\x89";  // False
    s += global("collections", "OrderedDict") + ")" + reduce();
    s += tuple() + reduce();
    return s;
}
}  // namespace pk

}  // namespace duality::test
