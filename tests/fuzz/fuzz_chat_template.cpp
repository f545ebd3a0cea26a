// libFuzzer target: chat templates (the Jinja subset of src/server/jinja.h) on arbitrary text.
// The input is a template; after a NUL byte, the rest is the content of a user message. Both the
// ChatTemplate API (default limits) and the interpreter with small limits (more renders per
// second) are exercised; any crash, hang or sanitizer report is a bug.
#include <cstddef>
#include <cstdint>
#include <map>
#include <string>
#include <string_view>
#include <vector>

#include "server/chat_template.h"
#include "server/jinja.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    const std::string_view input(reinterpret_cast<const char*>(data), size);
    const size_t nul = input.find('\0');
    const std::string_view source = input.substr(0, nul);
    const std::string content(nul == std::string_view::npos ? std::string_view("Hi there")
                                                            : input.substr(nul + 1));
    const std::vector<duality::server::ChatMessage> messages = {
        {"system", "Be brief."}, {"user", content}, {"assistant", " ok \n"}, {"user", "Why?"}};

    using duality::server::jinja::Value;
    duality::server::jinja::Options options;
    options.trim_blocks = options.lstrip_blocks = true;
    duality::server::jinja::Limits limits;
    limits.max_work = 1 << 22;
    limits.max_output_bytes = 1 << 16;
    limits.max_loop_iterations = 10000;
    auto t = duality::server::jinja::Template::parse(source, options, limits);
    if (t.is_ok()) {
        duality::server::jinja::ValueList list;
        for (const auto& m : messages)
            list.push_back(Value::make_dict(
                {{"role", Value::string(m.role)}, {"content", Value::string(m.content)}}));
        std::map<std::string, Value> globals = {
            {"messages", Value::make_list(std::move(list))},
            {"bos_token", Value::string("<s>")},
            {"eos_token", Value::string("</s>")},
            {"add_generation_prompt", Value::boolean(true)},
            {"tools", Value::none()}};
        (void)t->render(globals);
    }
    // The public API: parse only when the source is small (rendering above covered the rest).
    if (source.size() < 4096) {
        auto ct = duality::server::ChatTemplate::parse(source);
        if (ct.is_ok() && source.find("range") == std::string_view::npos)
            (void)ct->render(messages, false);
    }
    return 0;
}
