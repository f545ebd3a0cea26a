// Subcommands of the `duality` CLI. Each registers its flags on the app and returns the action
// to run when it is selected; actions return the process exit code.
#pragma once

#include <functional>
#include <string>
#include <vector>

#include <CLI/CLI.hpp>

namespace duality::cli {

using Action = std::function<int()>;

Action add_logits_command(CLI::App& app);
Action add_tokenize_command(CLI::App& app);
Action add_generate_command(CLI::App& app);
Action add_perplexity_command(CLI::App& app);
Action add_inspect_command(CLI::App& app);

// The model folder used when --model is not given (the bundled model; see model_path.cpp).
std::string default_model_dir();

// Parses "1,2,3" into ids; false (with a message on stderr) on a malformed list.
bool parse_id_list(const std::string& text, std::vector<int32_t>* ids);

}  // namespace duality::cli
