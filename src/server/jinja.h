// A small, safe interpreter for the subset of Jinja2 that Hugging Face chat templates use.
//
// Supported: {{ expr }}, {% if/elif/else/endif %}, {% for a[, b] in seq [if cond] %} ...
// [{% else %}] {% endfor %} (loop.index, index0, revindex, revindex0, first, last, length,
// previtem, nextitem), {% set x = expr %}, {% set ns.attr = expr %}, {% set x %}...{% endset %},
// {% break %}, {% continue %}, {% generation %} (transformers' extension, rendered as is),
// comments, whitespace control ({%- -%} {{- -}} {#- -#}, {%+ +%}), and the environment options
// trim_blocks and lstrip_blocks. Expressions: string/int/float/bool/none literals, lists, dicts,
// attribute and subscript access, slices, `a if c else b`, + - * / // % ** ~, comparisons
// (chained), and/or/not, in/not in, `is [not] test`, filters, method calls, and the globals
// raise_exception, range, namespace, dict and strftime_now.
//   filters: abs capitalize count d default first float int items join last length list lower
//            map (attribute= or string/lower/upper/trim/length/tojson/int) reject rejectattr
//            replace reverse safe select selectattr string title tojson (indent, sort_keys;
//            transformers' json.dumps form) trim upper
//   tests:   boolean callable defined divisibleby eq equalto even false float ge gt in integer
//            iterable le lower lt mapping ne none number odd sameas sequence string true
//            undefined upper
//   methods: str: strip lstrip rstrip startswith endswith upper lower capitalize title split
//            replace find count join; dict: items keys values get
//
// Semantics follow Jinja2 (Python): undefined names render as "" and are falsy, but arithmetic,
// attribute access or method calls on them are errors, as in Jinja2's default Undefined; each
// loop iteration is its own scope (so templates use namespace()); a template's single trailing
// newline is dropped and \r\n becomes \n.
//
// Limits (no input can crash, hang or exhaust memory): template nesting depth, expression depth,
// value nesting depth, total loop iterations, total work (nodes evaluated + bytes and items
// built) and the output size are capped (see Limits); exceeding a cap is an error, never a crash.
// Strings are UTF-8 bytes: lengths, indexing and slicing count code points and strip/split know
// Unicode whitespace, but upper/lower/capitalize/title change ASCII letters only; integers are
// 64-bit (overflow is an error). Not supported (a parse error naming the construct and line):
// macro, call, include, import, from, extends, block, filter blocks, with, raw, autoescape, do,
// recursive loops, tuples (except for-loop targets), *args/**kwargs, unknown filters and tests;
// at render time: loop.cycle()/loop.changed(), Python string formatting (%), list/dict methods
// that mutate (as in transformers' immutable sandbox).
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "duality/status.h"

namespace duality::server::jinja {

struct Value;
using ValueList = std::vector<Value>;
struct ValueDict {
    std::vector<std::pair<std::string, Value>> items;  // insertion order, as Python dicts
    bool is_namespace = false;                         // namespace(): the one mutable object
};

// A Jinja value: Python-like, immutable except namespace attributes.
struct Value {
    enum class Type : uint8_t {
        kUndefined, kNone, kBool, kInt, kFloat, kString, kList, kDict, kFunction
    };
    Type type = Type::kUndefined;
    bool b = false;
    int64_t i = 0;
    double f = 0;
    std::string s;  // kString: the text; kFunction: its name; kUndefined: the name looked up
    std::shared_ptr<const ValueList> list;
    std::shared_ptr<ValueDict> dict;
    int depth = 0;  // container nesting (0 for scalars), capped
    bool tuple = false;  // kList made by items(): shown as Python tuples

    static Value undefined(std::string name = {});
    static Value none();
    static Value boolean(bool v);
    static Value integer(int64_t v);
    static Value number(double v);
    static Value string(std::string v);
    static Value function(std::string name);
    // Containers; their depth is computed from the items (callers check the cap).
    static Value make_list(ValueList items);
    static Value make_dict(std::vector<std::pair<std::string, Value>> items);

    bool is_undefined() const { return type == Type::kUndefined; }
};

struct Options {
    bool trim_blocks = false;    // drop the first newline after a block tag or comment
    bool lstrip_blocks = false;  // drop spaces/tabs before a block tag or comment on its line
};

struct Limits {
    size_t max_output_bytes = 1 << 20;      // rendered text, and any single string built
    int max_template_depth = 64;            // nested if/for/set blocks
    int max_expr_depth = 128;               // expression tree depth
    int max_value_depth = 32;               // nested lists/dicts built by the template
    int64_t max_loop_iterations = 100000;   // over the whole render, range() included
    int64_t max_work = 64 << 20;            // evaluation steps (16 each) + bytes/items copied
};

struct Node;  // the parsed template (jinja.cpp)

class Template {
public:
    // Errors (kInvalidArgument) read "line L, column C: ...".
    static Result<Template> parse(std::string_view source, const Options& options = {},
                                  const Limits& limits = {});

    // Renders with the given global variables. raise_exception('msg') fails with exactly "msg"
    // (kInvalidArgument); other errors read "line L: ..."; caps give kResourceExhausted.
    Result<std::string> render(const std::map<std::string, Value>& globals) const;

private:
    std::shared_ptr<const Node> root_;
    Limits limits_;
};

}  // namespace duality::server::jinja
