#include "loader/torch_bin.h"

#include <zip.h>

#include <cstring>
#include <map>
#include <memory>
#include <vector>

#include "core/mapped_file.h"
#include "loader/torch_pickle.h"

namespace duality {
namespace {

constexpr uint64_t kMaxPickleBytes = 1ull << 30;

struct ZipCloser {
    void operator()(zip_t* z) const { zip_discard(z); }
};
struct ZipFileCloser {
    void operator()(zip_file_t* f) const { zip_fclose(f); }
};

// Reads entry `index`, which must inflate to exactly `expected` bytes.
Status read_entry(zip_t* zip, zip_uint64_t index, uint64_t expected, const std::string& where,
                  std::vector<uint8_t>* out) {
    std::unique_ptr<zip_file_t, ZipFileCloser> f(zip_fopen_index(zip, index, 0));
    if (!f) return corrupt(where + ": cannot open archive entry: " + zip_strerror(zip));
    out->resize(expected);
    uint64_t got = 0;
    while (got < expected) {
        const zip_int64_t n = zip_fread(f.get(), out->data() + got, expected - got);
        if (n < 0) return corrupt(where + ": archive entry is damaged");
        if (n == 0) break;
        got += static_cast<uint64_t>(n);
    }
    uint8_t extra;
    if (got != expected || zip_fread(f.get(), &extra, 1) != 0)
        return corrupt(where + ": archive entry size does not match its directory record");
    return Status::ok();
}

}  // namespace

Status add_torch_bin(const uint8_t* data, size_t size, const std::string& source,
                     TensorStore& store) {
    if (size >= 2 && data[0] == 0x80 && data[1] <= 5) {
        return unsupported(source +
                           ": legacy (pre-1.6) torch.save format; re-save it with a current torch "
                           "or convert it to safetensors");
    }
    if (size < 4 || std::memcmp(data, "PK\x03\x04", 4) != 0)
        return corrupt(source + ": not a zip archive (torch.save files are zip archives)");

    zip_error_t error;
    zip_error_init(&error);
    zip_source_t* src = zip_source_buffer_create(data, size, 0, &error);
    if (!src) {
        zip_error_fini(&error);
        return io_error(source + ": cannot create a zip source");
    }
    std::unique_ptr<zip_t, ZipCloser> zip(zip_open_from_source(src, ZIP_RDONLY, &error));
    if (!zip) {
        const std::string msg = zip_error_strerror(&error);
        zip_source_free(src);
        zip_error_fini(&error);
        return corrupt(source + ": unreadable zip archive: " + msg);
    }
    zip_error_fini(&error);

    // Find `<prefix>data.pkl`; every other entry lives under the same prefix.
    const zip_int64_t n_entries = zip_get_num_entries(zip.get(), 0);
    std::string prefix;
    zip_int64_t pkl_index = -1;
    std::map<std::string, zip_uint64_t> index_of;
    for (zip_int64_t i = 0; i < n_entries; ++i) {
        const char* name = zip_get_name(zip.get(), i, 0);
        if (!name) continue;
        std::string s(name);
        index_of[s] = static_cast<zip_uint64_t>(i);
        const std::string suffix = "data.pkl";
        if (s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0 &&
            pkl_index < 0) {
            prefix = s.substr(0, s.size() - suffix.size());
            pkl_index = i;
        }
    }
    if (pkl_index < 0) return corrupt(source + ": archive has no data.pkl entry");

    auto stat_size = [&](zip_uint64_t index, uint64_t* size_out) -> Status {
        zip_stat_t st;
        zip_stat_init(&st);
        if (zip_stat_index(zip.get(), index, 0, &st) != 0 || !(st.valid & ZIP_STAT_SIZE))
            return corrupt(source + ": cannot stat archive entry");
        *size_out = st.size;
        return Status::ok();
    };

    if (auto it = index_of.find(prefix + "byteorder"); it != index_of.end()) {
        uint64_t n;
        DUALITY_RETURN_IF_ERROR(stat_size(it->second, &n));
        if (n > 16) return corrupt(source + ": byteorder entry is too long");
        std::vector<uint8_t> bo;
        DUALITY_RETURN_IF_ERROR(read_entry(zip.get(), it->second, n, source + ": byteorder", &bo));
        if (std::string(bo.begin(), bo.end()) != "little")
            return unsupported(source + ": big-endian tensors are not supported");
    }

    uint64_t pkl_size;
    DUALITY_RETURN_IF_ERROR(stat_size(static_cast<zip_uint64_t>(pkl_index), &pkl_size));
    if (pkl_size > kMaxPickleBytes) return corrupt(source + ": data.pkl is implausibly large");
    std::vector<uint8_t> pkl;
    DUALITY_RETURN_IF_ERROR(read_entry(zip.get(), static_cast<zip_uint64_t>(pkl_index), pkl_size,
                                       source + ": data.pkl", &pkl));
    DUALITY_ASSIGN_OR_RETURN(auto tensors,
                             unpickle_state_dict(pkl.data(), pkl.size(), source + ": data.pkl"));

    // Read each storage once; tied tensors share it.
    std::map<std::string, std::shared_ptr<std::vector<uint8_t>>> storages;
    for (auto& t : tensors) {
        const std::string where = source + ": tensor \"" + t.name + "\"";
        auto& storage = storages[t.storage_key];
        const uint64_t storage_bytes = static_cast<uint64_t>(t.storage_numel) * dtype_size(t.dtype);
        if (!storage) {
            auto it = index_of.find(prefix + "data/" + t.storage_key);
            if (it == index_of.end())
                return corrupt(where + ": storage data/" + t.storage_key + " is missing");
            uint64_t n;
            DUALITY_RETURN_IF_ERROR(stat_size(it->second, &n));
            if (n != storage_bytes)
                return corrupt(where + ": storage data/" + t.storage_key + " holds " +
                               std::to_string(n) + " bytes, expected " +
                               std::to_string(storage_bytes));
            storage = std::make_shared<std::vector<uint8_t>>();
            DUALITY_RETURN_IF_ERROR(read_entry(zip.get(), it->second, n, where, storage.get()));
            store.keep_alive(storage);
        } else if (storage->size() != storage_bytes) {
            return corrupt(where + ": storage " + t.storage_key + " is used with two sizes");
        }
        RawTensor raw;
        raw.dtype = t.dtype;
        raw.shape = t.shape;
        raw.file = source;
        raw.data = storage->data() + static_cast<uint64_t>(t.offset) * dtype_size(t.dtype);
        int64_t numel = 1;
        for (int64_t d : t.shape) numel *= d;
        raw.nbytes = static_cast<size_t>(numel) * dtype_size(t.dtype);
        DUALITY_RETURN_IF_ERROR(store.add(t.name, std::move(raw)));
    }
    return Status::ok();
}

Status add_torch_bin_file(const std::filesystem::path& path, TensorStore& store) {
    DUALITY_ASSIGN_OR_RETURN(auto file, MappedFile::open(path));
    return add_torch_bin(file->data(), file->size(), path.string(), store);
}

}  // namespace duality
