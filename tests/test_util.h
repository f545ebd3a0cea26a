// Helpers shared by the tests: paths to fixtures, and writers for small safetensors / pickle /
// zip images so that parsers can be fed valid and deliberately broken files.
#pragma once

#include <cstdint>
#include <filesystem>
#include <string>
#include <utility>
#include <vector>

namespace duality::test {

std::filesystem::path source_dir();  // the repository
std::filesystem::path shared_dir();  // ../shared beside it
std::filesystem::path golden_dir();  // tests/golden
std::filesystem::path bundled_model_dir();

std::string read_file(const std::filesystem::path& p);
void write_file(const std::filesystem::path& p, const std::string& bytes);

// max |a[i] - b[i]| over max |b[i]| (b the reference; a and b of one size).
double rel_max_err(const std::vector<float>& a, const std::vector<float>& b);

// Runs the built `duality` binary with `args` (shell-quoted by the caller).
struct CliResult {
    int exit_code = -1;
    std::string out;  // stdout and stderr together
};
// With merge_stderr false, stderr is discarded and `out` is stdout alone.
// launcher: a program to start the binary with (the dynamic loader, for example), or empty.
CliResult run_duality(const std::string& args, bool merge_stderr = true,
                      const std::string& launcher = "");

// A fresh, empty temporary directory removed when the object dies.
class TempDir {
  public:
    TempDir();
    ~TempDir();
    const std::filesystem::path& path() const { return path_; }

  private:
    std::filesystem::path path_;
};

// Copies every file of `from` into `to`.
void copy_dir(const std::filesystem::path& from, const std::filesystem::path& to);

// A safetensors image from (name, dtype string, shape, raw bytes).
struct StEntry {
    std::string name, dtype;
    std::vector<int64_t> shape;
    std::string bytes;
};
std::string make_safetensors(const std::vector<StEntry>& entries);
std::string f32_bytes(const std::vector<float>& v);

// A zip archive (stored, uncompressed) with the given (name, bytes) entries, via libzip.
// The bytes of the first entry of a zip image whose name ends with `suffix` (empty if none).
std::string read_zip_entry(const std::string& zip_bytes, const std::string& suffix);

std::string make_zip(const std::vector<std::pair<std::string, std::string>>& entries);

// Pickle building blocks (protocol 2 opcodes) for hand-made state dicts.
namespace pk {
std::string proto2();
std::string global(const std::string& module, const std::string& name);
std::string str(const std::string& s);
std::string int1(uint8_t v);
std::string mark();
std::string tuple();
std::string empty_dict();
std::string setitems();
std::string reduce();
std::string binpersid();
std::string stop();
// A full `_rebuild_tensor_v2(storage(key, numel), 0, shape, stride, False, OrderedDict())`.
std::string tensor(const std::string& storage_type, const std::string& key, int numel,
                   const std::vector<int>& shape);
}  // namespace pk

}  // namespace duality::test
