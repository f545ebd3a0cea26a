// Subcommands of the `duality` CLI. Each registers its flags on the app and returns the action
// to run when it is selected; actions return the process exit code.
#pragma once

#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <CLI/CLI.hpp>

#include "duality/model.h"
#include "duality/tokenizer.h"

namespace duality::cli {

using Action = std::function<int()>;

Action add_logits_command(CLI::App& app);
Action add_tokenize_command(CLI::App& app);
Action add_generate_command(CLI::App& app);
Action add_perplexity_command(CLI::App& app);
Action add_inspect_command(CLI::App& app);
Action add_bench_command(CLI::App& app);
Action add_serve_command(CLI::App& app);
Action add_chat_template_command(CLI::App& app);

// The check of a duration flag: a number of seconds in (0, max_s], or [0, max_s] with
// allow_zero. (CLI::PositiveNumber lets NaN through, and 1e10 s overflowed the server's clock
// arithmetic.)
CLI::Validator seconds_in(double max_s, bool allow_zero);
// The check of a flag that takes a number of `unit` (e.g. "MB") in [lo, hi]; NaN and infinities
// are refused (CLI::Range and CLI::NonNegativeNumber let NaN through).
CLI::Validator number_in(double lo, double hi, const std::string& unit);

// Where a command runs its model (--device, --dtype, --state-dtype, --threads).
struct BackendFlags {
    std::string device;  // empty: $DUALITY_DEVICE, else auto
    std::string dtype;   // empty: $DUALITY_DTYPE, else bf16
    std::string state_dtype = "f32";
    int threads = 0;
};
void add_backend_flags(CLI::App* cmd, BackendFlags* flags);
LoadOptions to_load_options(const BackendFlags& flags);

// A model and its tokenizer, loaded from --model (or the default); errors are printed.
struct TextModel {
    std::unique_ptr<Model> model;
    Tokenizer tokenizer;
};
std::optional<TextModel> load_text_model(const std::string& model_flag, const LoadOptions& options);

// The model folder used when --model is not given (the bundled model; see model_path.cpp).
std::string default_model_dir();

// The name of a model folder: the last component of its canonical path, so that "models/x",
// "./models/x/" and "models/x/." all give "x".
std::string model_folder_name(const std::string& dir);

// Parses "1,2,3", the value of `flag` (named in the error), into ids; false (with a message on
// stderr) on a malformed list.
bool parse_id_list(const std::string& flag, const std::string& text, std::vector<int32_t>* ids);

}  // namespace duality::cli
