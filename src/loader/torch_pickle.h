// A restricted unpickler for the `data.pkl` of a `torch.save` state dict.
//
// It understands only what tensor state dicts use: dicts/OrderedDicts, tuples, lists, strings,
// numbers, typed storages referenced through persistent ids, and the rebuild functions
// `torch._utils._rebuild_tensor_v2` / `_rebuild_parameter`. Any other global (os.system,
// builtins.eval, ...) is refused with an error naming it. Nothing from the file is executed.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "duality/status.h"
#include "duality/types.h"

namespace duality {

// A tensor as the pickle describes it; the bytes live in the archive's `data/<storage_key>`.
struct PickledTensor {
    std::string name;          // the state-dict key
    std::string storage_key;   // archive entry name under data/
    DType dtype = DType::kF32;
    int64_t storage_numel = 0; // elements in the whole storage
    int64_t offset = 0;        // element offset into the storage
    std::vector<int64_t> shape;
    std::vector<int64_t> stride;
};

// Parses a pickle (protocol 2-5) holding a state dict (or {"state_dict"|"model": state dict}).
// Entries whose value is not a tensor are skipped. Non-contiguous tensors are refused.
Result<std::vector<PickledTensor>> unpickle_state_dict(const uint8_t* data, size_t size,
                                                       const std::string& source);

}  // namespace duality
