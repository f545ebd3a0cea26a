// The renderer of the Jinja subset (jinja.h), private to the interpreter: the Renderer class
// that walks the tree jinja_parse.cpp builds. Its core (bookkeeping, scopes, statements,
// expressions) is defined in jinja_eval.cpp; the calls, methods, filters and tests in
// jinja_builtins.cpp.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

#include "server/jinja_internal.h"

namespace duality::server::jinja {
namespace detail {

using VT = Value::Type;

enum class Flow { kNormal, kBreak, kContinue };

constexpr int64_t kItemCost = 16;  // work units per value created in a container (as per node)

class Renderer {
  public:
    Renderer(const Limits& limits, const std::map<std::string, Value>& globals);

    std::string run(const Node& root);

  private:
    // ---- bookkeeping ----
    [[noreturn]] void fail(int line, const std::string& message) const;
    void charge(int64_t units);
    void charge_bytes(size_t n);
    size_t max_bytes() const;
    void check_string(const std::string& s);
    Value checked(Value v, int line);
    void count_iterations(int64_t n, int line);
    void emit(const std::string& s);
    std::string str(const Value& v);
    [[noreturn]] void undefined_error(const Value& v, int line) const;

    // ---- variables ----
    Value lookup(const std::string& name) const;
    void assign(const std::string& name, Value v);

    // ---- statements ----
    Flow exec_body(const std::vector<Node>& body);
    Flow exec(const Node& node);

    // A namespace attribute may not hold a namespace (no cycles) nor deep values.
    void check_namespace_value(const Value& v, int line);
    void scan_for_namespace(const Value& v, int line);

    // The items a for loop (or a filter) walks; lists are shared, not copied.
    std::shared_ptr<const ValueList> iterate(const Value& v, int line);

    // Charges for copying a value (strings are copied with it).
    void charge_copy(const Value& v);
    void bind(const std::vector<std::string>& targets, const Value& item, int line);
    Flow exec_for(const Node& node);

    // ---- expressions ----
    Value eval(const Expr& e);
    bool compare_op(const std::string& op, const Value& a, const Value& b, int line);
    bool contains(const Value& container, const Value& item, int line);
    static bool mul_overflows(int64_t a, int64_t b, int64_t* r);
    Value repeat(const Value& seq, int64_t times, int line);
    Value binary(const std::string& op, const Value& a, const Value& b, int line);
    Value get_attr(const Value& obj, const std::string& name, int line);
    static bool normalize_index(int64_t* idx, size_t size);
    Value get_item(const Value& obj, const Value& key, int line);
    Value eval_slice(const Expr& e);

    // ---- calls and methods (from here on defined in jinja_builtins.cpp) ----
    // Arguments of a call, filter or test: positional, then keyword.
    struct Args {
        std::vector<Value> pos;
        std::vector<std::pair<std::string, Value>> kw;
        // The argument at position `index` or named `name`; `def` when neither is given.
        Value get(size_t index, const char* name, Value def = {}) const {
            if (index < pos.size()) return pos[index];
            for (const auto& kv : kw)
                if (kv.first == name) return kv.second;
            return def;
        }
    };
    Args eval_args(const Expr& e, size_t first);
    std::string string_arg(const Value& v, const char* what, int line);
    int64_t int_arg(const Value& v, const char* what, int line);

    Value eval_call(const Expr& e);
    Value call_function(const std::string& name, const Args& args, int line);
    Value call_method(const Value& obj, const std::string& name, const Args& args, int line);

    static std::string capitalize(const std::string& s);
    static std::string title(const std::string& s);
    Value split(const std::string& s, const Args& args, int line);
    Value replace(const std::string& s, const std::string& from, const std::string& to,
                  int64_t count);

    // ---- filters ----
    Value eval_filter(const Expr& e);
    Value simple_filter(const std::string& f, const Value& x, int line);

    // Attribute lookup that yields undefined instead of failing on undefined objects (filters).
    Value get_attr_soft(const Value& obj, const std::string& name, int line);

    // ---- tests ----
    bool run_test(const std::string& t, const Value& v, const std::vector<Value>& args, int line);

    Limits limits_;
    const std::map<std::string, Value>& globals_;
    std::vector<std::unordered_map<std::string, Value>> scopes_;
    std::string out_;
    size_t captured_ = 0;
    int64_t work_ = 0, iterations_ = 0;
};

}  // namespace detail
}  // namespace duality::server::jinja
