// libFuzzer target: the restricted unpickler (data.pkl of torch.save) on arbitrary bytes, and the
// zip layer of pytorch_model.bin when the input looks like a zip archive.
#include <cstddef>
#include <cstdint>
#include <cstring>

#include "loader/torch_bin.h"
#include "loader/torch_pickle.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    if (size >= 4 && std::memcmp(data, "PK\x03\x04", 4) == 0) {
        duality::TensorStore store;
        (void)duality::add_torch_bin(data, size, "fuzz.bin", store);
    } else {
        (void)duality::unpickle_state_dict(data, size, "fuzz.pkl");
    }
    return 0;
}
