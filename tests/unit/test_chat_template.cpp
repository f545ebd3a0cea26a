// Chat templates (src/server/chat_template.h) and the Jinja subset under them (jinja.h): the plain
// format, parse errors, undefined variables, whitespace control, raise_exception, the safety
// caps, loading from model folders and `duality chat-template`. Outputs of real templates are
// checked against jinja2 itself by tests/server/compare_jinja.py, not here.
#include <gtest/gtest.h>

#include <chrono>
#include <string>
#include <thread>
#include <vector>

#include "server/chat_template.h"
#include "server/jinja.h"
#include "test_util.h"

namespace duality::server {
namespace {

using test::TempDir;
using test::write_file;

std::vector<ChatMessage> conversation() {
    return {{"system", "Be brief."}, {"user", "Hi"}, {"assistant", "Hello!"}, {"user", "Why?"}};
}

// Renders `source` (parsed as a chat template) over `messages`; fails the test on errors.
std::string render(const std::string& source, const std::vector<ChatMessage>& messages = {},
                   bool add_generation_prompt = true) {
    auto t = ChatTemplate::parse(source);
    EXPECT_TRUE(t.is_ok()) << t.status().message();
    if (!t) return "<parse error>";
    auto out = t->render(messages, add_generation_prompt);
    EXPECT_TRUE(out.is_ok()) << out.status().message();
    return out ? *out : "<render error>";
}

Status parse_error(const std::string& source) {
    auto t = ChatTemplate::parse(source);
    EXPECT_FALSE(t.is_ok()) << "parsed: " << source;
    return t.status();
}

Status render_error(const std::string& source, const std::vector<ChatMessage>& messages = {}) {
    auto t = ChatTemplate::parse(source);
    EXPECT_TRUE(t.is_ok()) << t.status().message();
    if (!t) return t.status();
    auto out = t->render(messages, true);
    EXPECT_FALSE(out.is_ok()) << "rendered: " << (out ? *out : "");
    return out.status();
}

bool contains(const std::string& haystack, const std::string& needle) {
    return haystack.find(needle) != std::string::npos;
}

// ---- the plain format ------------------------------------------------------------------------

TEST(ChatTemplate, PlainFormat) {
    const ChatTemplate plain = ChatTemplate::plain();
    EXPECT_TRUE(plain.is_plain());
    const std::vector<ChatMessage> one = {{"user", "Hi"}};
    EXPECT_EQ(*plain.render(one, true), "User: Hi\n\nAssistant:");
    EXPECT_EQ(*plain.render(one, false), "User: Hi\n\n");
    EXPECT_EQ(*plain.render(conversation(), true),
              "System: Be brief.\n\nUser: Hi\n\nAssistant: Hello!\n\nUser: Why?\n\nAssistant:");
    const std::vector<ChatMessage> other = {{"tool", "42"}, {"Narrator", "x"}};
    EXPECT_EQ(*plain.render(other, false), "Tool: 42\n\nNarrator: x\n\n");
    EXPECT_EQ(*plain.render({}, true), "Assistant:");
}

// ---- rendering -------------------------------------------------------------------------------

TEST(ChatTemplate, ChatMl) {
    const std::string chatml =
        "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\\n' + "
        "message['content'] + '<|im_end|>' + '\\n'}}{% endfor %}{% if add_generation_prompt "
        "%}{{ '<|im_start|>assistant\\n' }}{% endif %}";
    const std::vector<ChatMessage> m = {{"user", "Hi"}};
    EXPECT_EQ(render(chatml, m), "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n");
    EXPECT_EQ(render(chatml, m, false), "<|im_start|>user\nHi<|im_end|>\n");
    auto t = ChatTemplate::parse(chatml);
    ASSERT_TRUE(t.is_ok());
    EXPECT_FALSE(t->is_plain());
}

TEST(ChatTemplate, SpecialTokensAndVariables) {
    auto t = ChatTemplate::parse(
        "{{ bos_token }}|{{ eos_token }}|{{ add_generation_prompt }}|"
        "{{ messages | length }}|{{ tools }}");
    ASSERT_TRUE(t.is_ok());
    t->set_bos_token("<s>");
    t->set_eos_token("</s>");
    EXPECT_EQ(*t->render(conversation(), false), "<s>|</s>|False|4|None");
}

TEST(ChatTemplate, UndefinedVariables) {
    EXPECT_EQ(render("[{{ nothing }}]"), "[]");
    EXPECT_EQ(render("{% if nothing %}yes{% else %}no{% endif %}"), "no");
    EXPECT_EQ(render("{{ nothing is defined }} {{ nothing is undefined }}"), "False True");
    EXPECT_EQ(render("{{ nothing | default('fallback') }}"), "fallback");
    EXPECT_EQ(render("{{ nothing ~ 'x' }} {{ nothing | length }}"), "x 0");
    EXPECT_EQ(render("{% for x in nothing %}x{% else %}empty{% endfor %}"), "empty");
    EXPECT_EQ(render("{{ messages[0].missing is defined }}", {{"user", "x"}}), "False");
    // As in Jinja2: using an undefined value (not just printing or testing it) is an error.
    EXPECT_TRUE(contains(render_error("{{ nothing.attr }}").message(), "'nothing' is undefined"));
    EXPECT_TRUE(contains(render_error("{{ nothing + 1 }}").message(), "'nothing' is undefined"));
    EXPECT_TRUE(contains(render_error("{{ messages[5]['role'] }}").message(), "line 1"));
}

TEST(ChatTemplate, WhitespaceControl) {
    EXPECT_EQ(render("a  {{- 'b' -}}  c"), "abc");
    EXPECT_EQ(render("a \n {%- if true -%} \n b {%- endif %}"), "ab");
    EXPECT_EQ(render("a {#- comment -#} b"), "ab");
    // trim_blocks: the newline after a block tag goes; lstrip_blocks: indentation before it.
    EXPECT_EQ(render("{% if true %}\n  x\n  {% endif %}\ny"), "  x\ny");
    EXPECT_EQ(render("{% for m in messages %}\n    {{ m.role }}\n{% endfor %}",
                     {{"user", ""}, {"assistant", ""}}),
              "    user\n    assistant\n");
    // {%+ keeps the indentation, +%} the newline; {{ }} is never stripped implicitly.
    EXPECT_EQ(render("  {%+ if true +%}\nx{% endif %}"), "  \nx");
    EXPECT_EQ(render("  {{ 'v' }}\n"), "  v");  // one trailing newline is dropped, as Jinja does
    EXPECT_EQ(render("a\r\nb"), "a\nb");
}

TEST(ChatTemplate, RaiseException) {
    const Status s = render_error(
        "{% if messages[0]['role'] == 'system' %}{{ raise_exception('System role not supported') "
        "}}{% endif %}",
        {{"system", "x"}});
    EXPECT_EQ(s.code(), StatusCode::kInvalidArgument);
    EXPECT_EQ(s.message(), "System role not supported");
}

TEST(ChatTemplate, ExpressionsAndFilters) {
    EXPECT_EQ(render("{{ 7 // 2 }} {{ -7 % 3 }} {{ 1 / 4 }} {{ 2 ** 10 }} {{ 'ab' * 2 }}"),
              "3 2 0.25 1024 abab");
    EXPECT_EQ(render("{{ '  x '.strip() }}|{{ 'a,b'.split(',') }}|{{ 'Hi' | upper }}|"
                     "{{ [1, 2] | join('-') }}|{{ {'a': 'é'} | tojson }}"),
              "x|['a', 'b']|HI|1-2|{\"a\": \"é\"}");
    EXPECT_EQ(render("{% for m in messages %}{{ loop.index }}{{ m.role[0] }}{% if not loop.last "
                     "%},{% endif %}{% endfor %}",
                     conversation()),
              "1s,2u,3a,4u");
    EXPECT_EQ(render("{% set ns = namespace(n=0) %}{% for m in messages[1:] %}{% set ns.n = ns.n "
                     "+ 1 %}{% endfor %}{{ ns.n }}",
                     conversation()),
              "3");
}

TEST(ChatTemplate, TransformersExtensions) {
    // {% generation %} (transformers' assistant-mask marker) renders its body; strftime_now.
    EXPECT_EQ(render("{% for m in messages %}{% generation %}[{{ m.content }}]{% endgeneration %}"
                     "{% endfor %}",
                     {{"assistant", "a"}}),
              "[a]");
    EXPECT_EQ(render("{{ strftime_now('%Y') | length }} {{ strftime_now is defined }}"), "4 True");
}

TEST(ChatTemplate, FiltersOverTemporaryLists) {
    // Strings and dicts are turned into temporary lists for filters and loops (a fuzzer found a
    // use-after-free here once).
    EXPECT_EQ(render("{{ 'abc' | join('-') }} {{ {'a': 1, 'b': 2} | join(',') }} "
                     "{{ 'abc' | select | list }} {{ 'abc' | reject('eq', 'b') | join }} "
                     "{{ 'abc' | map('upper') | join }} {{ {'x': 1} | list }} {{ 'ab' | reverse }} "
                     "{{ 'abc' | last }} {{ ','.join('xyz') }}"),
              "a-b-c a,b ['a', 'b', 'c'] ac ABC ['x'] ba c x,y,z");
}

TEST(ChatTemplate, ConcurrentRendersShareOneTemplate) {
    auto t = ChatTemplate::parse(
        "{% set ns = namespace(n=0) %}{% for m in messages %}"
        "{% set ns.n = ns.n + 1 %}{{ m.content }}{% endfor %}{{ ns.n }}");
    ASSERT_TRUE(t.is_ok());
    std::vector<std::thread> threads;
    std::vector<std::string> outs(4);
    for (size_t k = 0; k < outs.size(); ++k) {
        threads.emplace_back([&, k] {
            for (int r = 0; r < 200; ++r) outs[k] = *t->render(conversation(), true);
        });
    }
    for (auto& th : threads) th.join();
    for (const std::string& o : outs) EXPECT_EQ(o, "Be brief.HiHello!Why?4");
}

// ---- parse errors ----------------------------------------------------------------------------

TEST(ChatTemplate, ParseErrorsNameTheConstructAndLine) {
    struct Case {
        std::string source, needle;
    };
    const std::vector<Case> cases = {
        {"ok\n{% macro greet(name) %}hi{% endmacro %}",
         "line 2, column 4: unsupported construct {% macro %}"},
        {"{% include 'other.jinja' %}", "{% include %}"},
        {"{% import 'm.jinja' as m %}", "{% import %}"},
        {"{% from 'm.jinja' import x %}", "{% from %}"},
        {"{% extends 'base.jinja' %}", "{% extends %}"},
        {"{% call foo() %}x{% endcall %}", "{% call %}"},
        {"{% raw %}x{% endraw %}", "{% raw %}"},
        {"a\n\n{% if x %}never closed", "line 3, column 1: {% if %} is never closed"},
        {"{% for x in y %}", "{% for %} is never closed"},
        {"{{ 1 + }}", "line 1, column 8: expected an expression"},
        {"{{ x | no_such_filter }}", "unknown filter 'no_such_filter'"},
        {"{{ x is no_such_test }}", "unknown test 'no_such_test'"},
        {"{{ 'unterminated }}", "unterminated string literal"},
        {"{# never closed", "unclosed comment"},
        {"{{ x ", "unclosed {{"},
        {"{% endfor %}", "unexpected {% endfor %}"},
        {"{% break %}", "{% break %} outside a loop"},
        {"{% frobnicate %}", "unknown tag {% frobnicate %}"},
        {"{{ (1, 2) }}", "tuples"},
        {"{{ x ) }}", "unexpected ')'"},
        {"{{ 99999999999999999999 }}", "integer literal too large"},
    };
    for (const Case& c : cases) {
        const Status s = parse_error(c.source);
        EXPECT_EQ(s.code(), StatusCode::kInvalidArgument) << c.source;
        EXPECT_TRUE(contains(s.message(), c.needle))
            << c.source << "\n  message: " << s.message() << "\n  expected: " << c.needle;
    }
}

// ---- limits: hostile templates fail cleanly and quickly ----------------------------------------

TEST(ChatTemplate, LimitsOutputSize) {
    const Status s = render_error("{% for i in range(20000) %}{{ 'x' * 100 }}{% endfor %}");
    EXPECT_EQ(s.code(), StatusCode::kResourceExhausted);
    EXPECT_TRUE(contains(s.message(), "exceeds")) << s.message();
    EXPECT_EQ(render_error("{{ 'x' * 1000000000000 }}").code(), StatusCode::kResourceExhausted);
    EXPECT_EQ(render_error("{% set ns = namespace(s='ab') %}{% for i in range(40) %}"
                           "{% set ns.s = ns.s ~ ns.s %}{% endfor %}{{ ns.s }}")
                  .code(),
              StatusCode::kResourceExhausted);
    // A message larger than the cap cannot be rendered by a template either.
    const std::vector<ChatMessage> huge = {{"user", std::string(2 << 20, 'a')}};
    EXPECT_EQ(render_error("{{ messages[0].content }}", huge).code(),
              StatusCode::kResourceExhausted);
}

// The output cap is the caller's (serve --template-max-output), by parse and by load alike.
TEST(ChatTemplate, OutputCapIsSetByTheCaller) {
    const std::string source = "{% for m in messages %}{{ m.content }}{% endfor %}";
    const std::vector<ChatMessage> msgs = {{"user", std::string(300, 'a')}};
    jinja::Limits small;
    small.max_output_bytes = 256;
    auto capped = ChatTemplate::parse(source, small);
    ASSERT_TRUE(capped.is_ok()) << capped.status().message();
    EXPECT_EQ(capped->max_output_bytes(), 256u);
    auto out = capped->render(msgs, true);
    ASSERT_FALSE(out.is_ok());
    EXPECT_EQ(out.status().code(), StatusCode::kResourceExhausted);
    EXPECT_TRUE(contains(out.status().message(), "exceeds 256 bytes")) << out.status().message();
    const std::vector<ChatMessage> at_cap = {{"user", std::string(256, 'a')}};
    EXPECT_TRUE(capped->render(at_cap, true).is_ok());

    auto fine = ChatTemplate::parse(source);  // the default, 1 MiB
    ASSERT_TRUE(fine.is_ok());
    EXPECT_EQ(fine->max_output_bytes(), size_t{1} << 20);
    EXPECT_TRUE(fine->render(msgs, true).is_ok());

    TempDir dir;
    write_file(dir.path() / "chat_template.jinja", source);
    auto loaded = ChatTemplate::load(dir.path(), small);
    ASSERT_TRUE(loaded.is_ok()) << loaded.status().message();
    EXPECT_FALSE(loaded->render(msgs, true).is_ok());
}

TEST(ChatTemplate, LimitsLoopsAndWork) {
    const auto start = std::chrono::steady_clock::now();
    Status s = render_error(
        "{% for i in range(100000) %}{% for j in range(100000) %}"
        "{% endfor %}{% endfor %}");
    EXPECT_EQ(s.code(), StatusCode::kResourceExhausted);
    EXPECT_TRUE(contains(s.message(), "loop iterations")) << s.message();
    EXPECT_EQ(render_error("{% for i in range(10000000000) %}{% endfor %}").code(),
              StatusCode::kResourceExhausted);
    // Quadratic string building is charged by the bytes it copies.
    s = render_error(
        "{% set ns = namespace(s='') %}{% for i in range(90000) %}"
        "{% set ns.s = ns.s ~ 'abcdefghij' %}{% endfor %}");
    EXPECT_EQ(s.code(), StatusCode::kResourceExhausted);
    const double seconds =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    EXPECT_LT(seconds, 20.0);
}

TEST(ChatTemplate, LimitsNesting) {
    // Parser recursion: parentheses, unary operators, lists, blocks, long operator chains.
    EXPECT_TRUE(contains(
        parse_error("{{ " + std::string(100000, '(') + "1" + std::string(100000, ')') + " }}")
            .message(),
        "nested too deeply"));
    EXPECT_TRUE(contains(parse_error("{{ " + std::string(100000, '-') + "1 }}").message(),
                         "nested too deeply"));
    EXPECT_TRUE(contains(
        parse_error("{{ " + std::string(50000, '[') + std::string(50000, ']') + " }}").message(),
        "nested too deeply"));
    std::string chain = "{{ 1";
    for (int k = 0; k < 100000; ++k) chain += " + 1";
    EXPECT_TRUE(contains(parse_error(chain + " }}").message(), "nested too deeply"));
    std::string ifs;
    for (int k = 0; k < 10000; ++k) ifs += "{% if true %}";
    EXPECT_TRUE(contains(parse_error(ifs).message(), "nested too deeply"));
    std::string nots = "{{ ";
    for (int k = 0; k < 100000; ++k) nots += "not ";
    EXPECT_TRUE(contains(parse_error(nots + "1 }}").message(), "nested too deeply"));
    // Values nested at render time, and namespace cycles.
    Status s = render_error(
        "{% set ns = namespace(a=[]) %}{% for i in range(1000) %}"
        "{% set ns.a = [ns.a] %}{% endfor %}");
    EXPECT_TRUE(contains(s.message(), "nested")) << s.message();
    s = render_error("{% set ns = namespace(a=1) %}{% set ns.a = ns %}");
    EXPECT_TRUE(contains(s.message(), "namespace cannot hold a namespace")) << s.message();
    s = render_error("{% set ns = namespace(a=1) %}{% set ns.a = [[ns]] %}{{ ns }}");
    EXPECT_TRUE(contains(s.message(), "namespace cannot hold a namespace")) << s.message();
}

TEST(ChatTemplate, ArithmeticEdgeCasesAreErrors) {
    EXPECT_TRUE(contains(render_error("{{ 1 // 0 }}").message(), "by zero"));
    EXPECT_TRUE(contains(render_error("{{ 1 / 0 }}").message(), "division by zero"));
    EXPECT_TRUE(contains(render_error("{{ 9223372036854775807 + 1 }}").message(), "overflow"));
    EXPECT_TRUE(contains(render_error("{{ 2 ** 64 }}").message(), "overflow"));
    EXPECT_TRUE(contains(
        render_error("{% set m = -9223372036854775807 - 1 %}{{ m // -1 }}").message(), "overflow"));
    EXPECT_TRUE(contains(render_error("{{ 'a' + 1 }}").message(), "unsupported operand"));
    EXPECT_TRUE(contains(render_error("{{ 'a' < 1 }}").message(), "not supported"));
    EXPECT_TRUE(contains(render_error("{{ [1][::0] }}").message(), "slice step"));
    EXPECT_TRUE(contains(render_error("{{ 'a'.nope() }}").message(), "no attribute 'nope'"));
    EXPECT_TRUE(contains(render_error("{{ 5() }}").message(), "not callable"));
}

TEST(ChatTemplate, JinjaOptionsAreHonoured) {
    // The raw interpreter without transformers' options keeps newlines and indentation.
    auto t = jinja::Template::parse("{% if true %}\n  x\n  {% endif %}");
    ASSERT_TRUE(t.is_ok());
    EXPECT_EQ(*t->render({}), "\n  x\n  ");
    jinja::Limits small;
    small.max_output_bytes = 10;
    auto u = jinja::Template::parse("{{ 'x' * 11 }}", {}, small);
    ASSERT_TRUE(u.is_ok());
    EXPECT_EQ(u->render({}).status().code(), StatusCode::kResourceExhausted);
}

// ---- loading from a model folder ---------------------------------------------------------------

TEST(ChatTemplate, LoadWithoutTokenizerConfigIsPlain) {
    TempDir dir;
    auto t = ChatTemplate::load(dir.path());
    ASSERT_TRUE(t.is_ok()) << t.status().message();
    EXPECT_TRUE(t->is_plain());
    const std::vector<ChatMessage> m = {{"user", "Hi"}};
    EXPECT_EQ(*t->render(m, true), "User: Hi\n\nAssistant:");
}

TEST(ChatTemplate, LoadWithoutTheKeyIsPlainButKeepsTokens) {
    TempDir dir;
    write_file(dir.path() / "tokenizer_config.json",
               R"({"bos_token": {"content": "<s>", "lstrip": false}, "eos_token": "</s>",
                   "chat_template": null})");
    auto t = ChatTemplate::load(dir.path());
    ASSERT_TRUE(t.is_ok()) << t.status().message();
    EXPECT_TRUE(t->is_plain());
    EXPECT_EQ(t->bos_token(), "<s>");
    EXPECT_EQ(t->eos_token(), "</s>");
}

TEST(ChatTemplate, LoadStringTemplate) {
    TempDir dir;
    write_file(dir.path() / "tokenizer_config.json",
               R"({"bos_token": "<s>", "eos_token": {"content": "</s>"},
                   "chat_template": "{{ bos_token }}{% for m in messages %}[{{ m.role }}]{{ m.content }}{{ eos_token }}{% endfor %}"})");
    auto t = ChatTemplate::load(dir.path());
    ASSERT_TRUE(t.is_ok()) << t.status().message();
    EXPECT_FALSE(t->is_plain());
    const std::vector<ChatMessage> m = {{"user", "Hi"}};
    EXPECT_EQ(*t->render(m, true), "<s>[user]Hi</s>");
}

TEST(ChatTemplate, LoadTemplateListUsesDefault) {
    TempDir dir;
    write_file(dir.path() / "tokenizer_config.json",
               R"({"chat_template": [{"name": "tool_use", "template": "TOOLS"},
                                     {"name": "default", "template": "DEFAULT"}]})");
    auto t = ChatTemplate::load(dir.path());
    ASSERT_TRUE(t.is_ok()) << t.status().message();
    EXPECT_EQ(*t->render({}, true), "DEFAULT");
}

TEST(ChatTemplate, LoadPrefersChatTemplateJinja) {
    TempDir dir;
    write_file(dir.path() / "tokenizer_config.json", R"({"chat_template": "FROM CONFIG"})");
    write_file(dir.path() / "chat_template.jinja", "FROM FILE\n");
    auto t = ChatTemplate::load(dir.path());
    ASSERT_TRUE(t.is_ok()) << t.status().message();
    EXPECT_EQ(*t->render({}, true), "FROM FILE");
}

TEST(ChatTemplate, LoadErrorsNameTheFileAndField) {
    struct Case {
        std::string config, needle;
    };
    const std::vector<Case> cases = {
        {"{not json", "tokenizer_config.json: not valid JSON"},
        {"[1, 2]", "tokenizer_config.json: expected a JSON object"},
        {R"({"chat_template": 42})",
         "tokenizer_config.json: chat_template: expected a string or a list"},
        {R"({"chat_template": [{"name": "rag", "template": "x"}]})",
         "tokenizer_config.json: chat_template: no template named \"default\" (found: rag)"},
        {R"({"chat_template": [{"name": "default"}]})",
         "tokenizer_config.json: chat_template[0]: expected a string \"template\""},
        {R"({"chat_template": ["x"]})",
         "tokenizer_config.json: chat_template[0]: expected an object"},
        {R"({"bos_token": 7})", "tokenizer_config.json: bos_token: expected a string"},
        {R"({"eos_token": {"id": 2}})", "tokenizer_config.json: eos_token: expected a string"},
        {R"({"chat_template": "a\n{% macro m() %}{% endmacro %}"})",
         "tokenizer_config.json: chat_template: line 2, column 4: unsupported construct {% macro "
         "%}"},
    };
    for (const Case& c : cases) {
        TempDir dir;
        write_file(dir.path() / "tokenizer_config.json", c.config);
        auto t = ChatTemplate::load(dir.path());
        ASSERT_FALSE(t.is_ok()) << c.config;
        EXPECT_TRUE(contains(t.status().message(), c.needle))
            << c.config << "\n  message: " << t.status().message() << "\n  expected: " << c.needle;
    }
    auto missing = ChatTemplate::load("/nonexistent/model/dir");
    ASSERT_FALSE(missing.is_ok());
    EXPECT_TRUE(contains(missing.status().message(), "/nonexistent/model/dir"));
}

// ---- the CLI ------------------------------------------------------------------------------------

TEST(ChatTemplateCli, PrintsThePromptExactly) {
    TempDir dir;
    write_file(dir.path() / "t.jinja",
               "{% for m in messages %}<{{ m.role }}>{{ m.content }}{% endfor %}"
               "{% if add_generation_prompt %}<assistant>{% endif %}");
    const std::string messages = R"('[{"role": "user", "content": "Hi"}]')";
    auto r = test::run_duality(
        "chat-template --template " + (dir.path() / "t.jinja").string() + " --messages " + messages,
        /*merge_stderr=*/false);
    EXPECT_EQ(r.exit_code, 0);
    EXPECT_EQ(r.out, "<user>Hi<assistant>");
    r = test::run_duality("chat-template --no-generation-prompt --template " +
                              (dir.path() / "t.jinja").string() + " --messages " + messages,
                          false);
    EXPECT_EQ(r.out, "<user>Hi");
    // A request body works too; a folder without a template gets the plain format.
    write_file(dir.path() / "req.json",
               R"({"model": "m", "messages": [{"role": "user", "content": "Hi"}]})");
    r = test::run_duality("chat-template --model " + dir.path().string() + " --messages " +
                              (dir.path() / "req.json").string(),
                          false);
    EXPECT_EQ(r.exit_code, 0);
    EXPECT_EQ(r.out, "User: Hi\n\nAssistant:");
}

TEST(ChatTemplateCli, ErrorsNameTheFileOrField) {
    TempDir dir;
    write_file(dir.path() / "t.jinja", "{{ raise_exception('no system messages') }}");
    auto r = test::run_duality("chat-template --template " + (dir.path() / "t.jinja").string() +
                               R"( --messages '[{"role": "user", "content": "x"}]')");
    EXPECT_NE(r.exit_code, 0);
    EXPECT_TRUE(contains(r.out, "no system messages")) << r.out;
    r = test::run_duality("chat-template --template " + (dir.path() / "t.jinja").string() +
                          R"( --messages '[{"role": "user", "content": 5}]')");
    EXPECT_NE(r.exit_code, 0);
    EXPECT_TRUE(contains(r.out, "--messages[0]: \"content\" must be a string")) << r.out;
    r = test::run_duality("chat-template --template " + (dir.path() / "missing.jinja").string() +
                          R"( --messages '[]')");
    EXPECT_NE(r.exit_code, 0);
    EXPECT_TRUE(contains(r.out, "missing.jinja")) << r.out;
    write_file(dir.path() / "bad.jinja", "{% include 'x' %}");
    r = test::run_duality("chat-template --template " + (dir.path() / "bad.jinja").string() +
                          R"( --messages '[]')");
    EXPECT_NE(r.exit_code, 0);
    EXPECT_TRUE(contains(r.out, "bad.jinja: line 1, column 4: unsupported construct")) << r.out;
}

}  // namespace
}  // namespace duality::server
