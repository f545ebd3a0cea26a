#include "loader/tensor_store.h"

#include <set>

#include "loader/json.h"
#include "loader/safetensors.h"
#include "loader/torch_bin.h"

namespace duality {

namespace fs = std::filesystem;

Status TensorStore::add(const std::string& name, RawTensor tensor) {
    const std::string file = tensor.file;
    auto [it, inserted] = tensors_.try_emplace(name, std::move(tensor));
    if (!inserted) {
        return corrupt("tensor \"" + name + "\" appears twice (in " + it->second.file + " and " +
                       file + ")");
    }
    return Status::ok();
}

const RawTensor* TensorStore::find(const std::string& name) const {
    auto it = tensors_.find(name);
    return it == tensors_.end() ? nullptr : &it->second;
}

namespace {

// Loads the shards named by a Hugging Face index file ({"weight_map": {name: file}}).
Status load_sharded(const fs::path& dir, const fs::path& index_path, bool safetensors,
                    TensorStore& store) {
    DUALITY_ASSIGN_OR_RETURN(auto index, read_json_file(index_path.string()));
    const std::string where = index_path.string();
    if (!index.is_object() || !index.contains("weight_map") || !index["weight_map"].is_object())
        return corrupt(where + ": missing object \"weight_map\"");
    std::set<std::string> shards;
    for (const auto& [name, file] : index["weight_map"].items()) {
        if (!file.is_string())
            return corrupt(where + ": weight_map entry \"" + name + "\" is not a file name");
        const std::string f = file.get<std::string>();
        if (f.empty() || f.find_first_of(std::string("/\\\0", 3)) != std::string::npos ||
            f == "." || f == "..")
            return corrupt(where + ": shard name " + json_brief(file) +
                           " must be a plain file name");
        shards.insert(f);
    }
    if (shards.empty()) return corrupt(where + ": weight_map is empty");
    for (const auto& shard : shards) {
        const fs::path p = dir / shard;
        DUALITY_RETURN_IF_ERROR(safetensors ? add_safetensors_file(p, store)
                                            : add_torch_bin_file(p, store));
    }
    for (const auto& [name, file] : index["weight_map"].items()) {
        const RawTensor* t = store.find(name);
        if (!t)
            return corrupt(where + ": tensor \"" + name + "\" is not in " +
                           file.get<std::string>());
        if (fs::path(t->file).filename() != file.get<std::string>())
            return corrupt(where + ": tensor \"" + name + "\" is listed in " +
                           file.get<std::string>() + " but stored in " + t->file);
    }
    return Status::ok();
}

}  // namespace

Result<TensorStore> load_tensor_store(const fs::path& dir) {
    TensorStore store;
    if (fs::exists(dir / "model.safetensors.index.json")) {
        DUALITY_RETURN_IF_ERROR(
            load_sharded(dir, dir / "model.safetensors.index.json", true, store));
    } else if (fs::exists(dir / "model.safetensors")) {
        DUALITY_RETURN_IF_ERROR(add_safetensors_file(dir / "model.safetensors", store));
    } else if (fs::exists(dir / "pytorch_model.bin.index.json")) {
        DUALITY_RETURN_IF_ERROR(
            load_sharded(dir, dir / "pytorch_model.bin.index.json", false, store));
    } else if (fs::exists(dir / "pytorch_model.bin")) {
        DUALITY_RETURN_IF_ERROR(add_torch_bin_file(dir / "pytorch_model.bin", store));
    } else {
        return not_found(dir.string() +
                         ": no weights found (expected model.safetensors, "
                         "model.safetensors.index.json or pytorch_model.bin)");
    }
    return store;
}

}  // namespace duality
