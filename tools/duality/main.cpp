// duality: the command-line front end (run `duality --help`).
#include <malloc.h>
#include <sys/auxv.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <map>
#include <new>
#include <string>

#include "ops/cpu/blas_core.h"
#include "tools/duality/commands.h"

int main(int argc, char** argv) {
    // If OpenBLAS fell back to its generic kernels on a CPU newer than it knows, run again with a
    // kernel set this CPU supports: OpenBLAS reads OPENBLAS_CORETYPE only when it loads
    // (ops/cpu/blas_core.h). Setting OPENBLAS_CORETYPE yourself skips this. Not when started
    // through the dynamic loader (ld.so ./duality ...: AT_BASE is 0, /proc/self/exe is the
    // loader), and if execv fails, on with the slow kernels.
    if (const std::string core = duality::cpu::blas_core_upgrade();
        !core.empty() && getauxval(AT_BASE) != 0) {
        setenv("OPENBLAS_CORETYPE", core.c_str(), 1);
        execv("/proc/self/exe", argv);
        std::fprintf(stderr,
                     "duality: could not run again with OPENBLAS_CORETYPE=%s (%s); OpenBLAS "
                     "keeps its generic kernels (set OPENBLAS_CORETYPE=%s yourself)\n",
                     core.c_str(), std::strerror(errno), core.c_str());
        unsetenv("OPENBLAS_CORETYPE");
    }
    // Keep large freed blocks (per-call activations, logits) in the heap for reuse instead of
    // returning them to the kernel and faulting fresh zeroed pages in on the next call.
    mallopt(M_MMAP_THRESHOLD, 1 << 30);
    mallopt(M_TRIM_THRESHOLD, 1 << 30);
    CLI::App app{"duality: a Mamba-2 inference engine"};
    app.require_subcommand(1);
    app.set_version_flag("--version", std::string("duality 0.1.0"));
    std::map<CLI::App*, duality::cli::Action> actions;
    auto add = [&](duality::cli::Action (*make)(CLI::App&)) {
        const size_t before = app.get_subcommands({}).size();
        duality::cli::Action action = make(app);
        actions[app.get_subcommands({})[before]] = std::move(action);
    };
    add(duality::cli::add_generate_command);
    add(duality::cli::add_perplexity_command);
    add(duality::cli::add_logits_command);
    add(duality::cli::add_tokenize_command);
    add(duality::cli::add_inspect_command);
    add(duality::cli::add_bench_command);
    add(duality::cli::add_serve_command);
    add(duality::cli::add_chat_template_command);

    // Name an unknown command instead of CLI11's generic "A subcommand is required".
    if (argc > 1 && argv[1][0] != '-') {
        bool known = false;
        std::string names;
        for (const CLI::App* sub : app.get_subcommands({})) {
            known |= sub->get_name() == argv[1];
            names += (names.empty() ? "" : ", ") + sub->get_name();
        }
        if (!known) {
            std::fprintf(stderr, "duality: unknown command \"%s\" (commands: %s; see --help)\n",
                         argv[1], names.c_str());
            return 2;
        }
    }
    try {
        app.parse(argc, argv);
    } catch (const CLI::ParseError& e) {
        return app.exit(e);
    }
    for (auto& [sub, action] : actions) {
        if (!sub->parsed()) continue;
        // The last line of defence: a size that passed every check yet does not fit in memory
        // (a model too large for the machine, `logits` over 100k ids) ends with a message and
        // exit 1, not std::terminate.
        try {
            return action();
        } catch (const std::bad_alloc&) {
            std::fprintf(stderr,
                         "duality %s: out of memory (a size given on the command line or "
                         "in the model may be too large for this machine)\n",
                         sub->get_name().c_str());
            return 1;
        }
    }
    return 1;
}
