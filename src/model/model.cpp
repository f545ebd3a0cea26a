#include <omp.h>

#include "duality/model.h"
#include "loader/tensor_store.h"
#include "model/cpu_model.h"
#include "model/weights.h"

namespace duality {

Result<std::unique_ptr<Model>> Model::load(const std::filesystem::path& dir,
                                           const LoadOptions& options) {
    DUALITY_ASSIGN_OR_RETURN(ModelConfig config, load_model_config(dir));
    DUALITY_ASSIGN_OR_RETURN(TensorStore store, load_tensor_store(dir));
    DUALITY_ASSIGN_OR_RETURN(ModelWeights weights, load_weights(store, config));
    const int n_threads = options.n_threads > 0 ? options.n_threads : omp_get_max_threads();
    return make_cpu_model(std::move(config), std::move(weights), n_threads);
}

}  // namespace duality
