// Evaluator of the Jinja subset: walks the tree jinja_parse.cpp builds, with Jinja2's scoping
// (each loop iteration is its own scope; if blocks are not), Python operator semantics, the
// filters, tests, methods and globals listed in jinja.h, and transformers' tojson
// (json.dumps with ensure_ascii=False). Limits: every node evaluated and every byte or item
// copied is charged against Limits::max_work; loop iterations, value nesting and output size are
// capped; recursion follows the parsed tree, whose depth the parser caps.
#include <algorithm>
#include <climits>
#include <cmath>
#include <ctime>
#include <unordered_map>
#include <unordered_set>

#include "server/jinja_internal.h"

namespace duality::server::jinja {
namespace {

using detail::Error;
using detail::truthy;
using VT = Value::Type;

enum class Flow { kNormal, kBreak, kContinue };

constexpr int64_t kItemCost = 16;  // work units per value created in a container (as per node)

// Python's str.strip(chars): code points in `chars`, or whitespace (str.isspace) when null.
std::string strip(const std::string& s, const std::string* chars, bool left, bool right) {
    std::unordered_set<uint32_t> set;
    size_t n = 0;
    if (chars)
        for (size_t p = 0; p < chars->size(); p += n) set.insert(detail::decode_at(*chars, p, &n));
    const auto strippable = [&](size_t p) {
        const uint32_t cp = detail::decode_at(s, p, &n);
        return chars ? set.count(cp) > 0 : detail::is_py_space(cp);
    };
    const std::vector<size_t> offs = detail::char_offsets(s);
    size_t b = 0, e = offs.size() - 1;
    if (left)
        while (b < e && strippable(offs[b])) ++b;
    if (right)
        while (e > b && strippable(offs[e - 1])) --e;
    return s.substr(offs[b], offs[e] - offs[b]);
}
std::string strip_ws(const std::string& s) { return strip(s, nullptr, true, true); }
std::string ascii_upper(std::string s) {
    for (char& c : s)
        if (c >= 'a' && c <= 'z') c = static_cast<char>(c - 32);
    return s;
}
std::string ascii_lower(std::string s) {
    for (char& c : s)
        if (c >= 'A' && c <= 'Z') c = static_cast<char>(c + 32);
    return s;
}
bool is_alpha(char c) { return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z'); }

class Renderer {
public:
    Renderer(const Limits& limits, const std::map<std::string, Value>& globals)
        : limits_(limits), globals_(globals) {
        scopes_.emplace_back();
    }

    std::string run(const Node& root) {
        exec_body(root.body);
        return std::move(out_);
    }

private:
    // ---- bookkeeping ----
    [[noreturn]] void fail(int line, const std::string& message) const {
        throw Error(StatusCode::kInvalidArgument, "line " + std::to_string(line) + ": " + message);
    }
    void charge(int64_t units) {
        work_ += units;
        if (work_ > limits_.max_work)
            throw Error(StatusCode::kResourceExhausted,
                        "the template needs too much work to render (limit " +
                            std::to_string(limits_.max_work) + " units)");
    }
    void charge_bytes(size_t n) { charge(static_cast<int64_t>(n >> 3)); }
    size_t max_bytes() const { return limits_.max_output_bytes; }
    void check_string(const std::string& s) {
        if (s.size() > max_bytes())
            throw Error(StatusCode::kResourceExhausted,
                        "a string exceeds " + std::to_string(max_bytes()) + " bytes");
        charge_bytes(s.size());
    }
    Value checked(Value v, int line) {
        if (v.depth > limits_.max_value_depth)
            fail(line, "values nested too deeply (limit " +
                           std::to_string(limits_.max_value_depth) + ")");
        // Building a container costs per item (and its strings were charged where built).
        if (v.type == VT::kList) charge(static_cast<int64_t>(v.list->size()) * kItemCost);
        if (v.type == VT::kDict) charge(static_cast<int64_t>(v.dict->items.size()) * kItemCost);
        return v;
    }
    void count_iterations(int64_t n, int line) {
        iterations_ += n;
        if (iterations_ > limits_.max_loop_iterations)
            throw Error(StatusCode::kResourceExhausted,
                        "line " + std::to_string(line) + ": more than " +
                            std::to_string(limits_.max_loop_iterations) + " loop iterations");
        charge(n);
    }
    void emit(const std::string& s) {
        out_ += s;
        if (out_.size() + captured_ > max_bytes())
            throw Error(StatusCode::kResourceExhausted,
                        "the rendered text exceeds " + std::to_string(max_bytes()) + " bytes");
        charge_bytes(s.size());
    }
    std::string str(const Value& v) { return detail::to_str(v, max_bytes()); }
    [[noreturn]] void undefined_error(const Value& v, int line) const {
        fail(line, v.s.empty() ? std::string("a value is undefined") : v.s);
    }

    // ---- variables ----
    Value lookup(const std::string& name) const {
        for (auto it = scopes_.rbegin(); it != scopes_.rend(); ++it) {
            const auto found = it->find(name);
            if (found != it->end()) return found->second;
        }
        const auto g = globals_.find(name);
        if (g != globals_.end()) return g->second;
        if (name == "raise_exception" || name == "range" || name == "namespace" ||
            name == "dict" || name == "strftime_now")
            return Value::function(name);
        return Value::undefined("'" + name + "' is undefined");
    }
    void assign(const std::string& name, Value v) { scopes_.back()[name] = std::move(v); }

    // ---- statements ----
    Flow exec_body(const std::vector<Node>& body) {
        for (const Node& node : body) {
            const Flow f = exec(node);
            if (f != Flow::kNormal) return f;
        }
        return Flow::kNormal;
    }

    Flow exec(const Node& node) {
        charge(16);
        switch (node.kind) {
            case NodeKind::kText: emit(node.text); return Flow::kNormal;
            case NodeKind::kOutput: {
                const Value v = eval(*node.expr);
                if (v.type == VT::kString)
                    emit(v.s);
                else
                    emit(str(v));
                return Flow::kNormal;
            }
            case NodeKind::kIf:
                for (size_t k = 0; k < node.branches.size(); ++k) {
                    if (!node.conds[k] || truthy(eval(*node.conds[k])))
                        return exec_body(node.branches[k]);
                }
                return Flow::kNormal;
            case NodeKind::kFor: return exec_for(node);
            case NodeKind::kSet: assign(node.targets[0], eval(*node.expr)); return Flow::kNormal;
            case NodeKind::kSetAttr: {
                Value ns = lookup(node.targets[0]);
                if (ns.type != VT::kDict || !ns.dict->is_namespace)
                    fail(node.line, "cannot assign attribute '" + node.targets[1] + "' of '" +
                                        node.targets[0] + "': not a namespace()");
                Value v = eval(*node.expr);
                check_namespace_value(v, node.line);
                for (auto& kv : ns.dict->items) {
                    if (kv.first == node.targets[1]) {
                        kv.second = std::move(v);
                        return Flow::kNormal;
                    }
                }
                ns.dict->items.emplace_back(node.targets[1], std::move(v));
                return Flow::kNormal;
            }
            case NodeKind::kSetBlock: {
                std::string saved = std::move(out_);
                out_.clear();
                captured_ += saved.size();
                exec_body(node.body);
                captured_ -= saved.size();
                std::string captured = std::move(out_);
                out_ = std::move(saved);
                assign(node.targets[0], Value::string(std::move(captured)));
                return Flow::kNormal;
            }
            case NodeKind::kBreak: return Flow::kBreak;
            case NodeKind::kContinue: return Flow::kContinue;
            case NodeKind::kBlock: return exec_body(node.body);
        }
        return Flow::kNormal;
    }

    // A namespace attribute may not hold a namespace (no cycles) nor deep values.
    void check_namespace_value(const Value& v, int line) {
        scan_for_namespace(v, line);
        if (v.depth >= limits_.max_value_depth / 2)
            fail(line, "value too deeply nested for a namespace attribute");
    }
    void scan_for_namespace(const Value& v, int line) {
        charge(1);
        if (v.type == VT::kDict) {
            if (v.dict->is_namespace) fail(line, "a namespace cannot hold a namespace");
            for (const auto& kv : v.dict->items) scan_for_namespace(kv.second, line);
        } else if (v.type == VT::kList) {
            for (const Value& x : *v.list) scan_for_namespace(x, line);
        }
    }

    // The items a for loop (or a filter) walks; lists are shared, not copied.
    std::shared_ptr<const ValueList> iterate(const Value& v, int line) {
        switch (v.type) {
            case VT::kUndefined: return std::make_shared<const ValueList>();
            case VT::kList: charge(static_cast<int64_t>(v.list->size())); return v.list;
            case VT::kDict: {
                if (v.dict->is_namespace) break;
                ValueList keys;
                for (const auto& kv : v.dict->items) keys.push_back(Value::string(kv.first));
                charge(static_cast<int64_t>(keys.size()) * kItemCost);
                return std::make_shared<const ValueList>(std::move(keys));
            }
            case VT::kString: {
                ValueList chars;
                const std::vector<size_t> offs = detail::char_offsets(v.s);
                charge(static_cast<int64_t>(offs.size()) * kItemCost);
                for (size_t k = 0; k + 1 < offs.size(); ++k)
                    chars.push_back(Value::string(v.s.substr(offs[k], offs[k + 1] - offs[k])));
                return std::make_shared<const ValueList>(std::move(chars));
            }
            default: break;
        }
        fail(line, std::string("'") + detail::type_name(v) + "' object is not iterable");
    }

    // Charges for copying a value (strings are copied with it).
    void charge_copy(const Value& v) {
        charge(1);
        if (v.type == VT::kString || v.type == VT::kUndefined) charge_bytes(v.s.size());
    }

    void bind(const std::vector<std::string>& targets, const Value& item, int line) {
        charge_copy(item);
        if (targets.size() == 1) {
            assign(targets[0], item);
            return;
        }
        if (item.type != VT::kList || item.list->size() != targets.size())
            fail(line, "cannot unpack a " + std::string(detail::type_name(item)) + " into " +
                           std::to_string(targets.size()) + " loop variables");
        for (size_t k = 0; k < targets.size(); ++k) assign(targets[k], (*item.list)[k]);
    }

    Flow exec_for(const Node& node) {
        std::shared_ptr<const ValueList> all = iterate(eval(*node.expr), node.line);
        if (node.filter) {
            ValueList kept;
            for (const Value& item : *all) {
                count_iterations(1, node.line);
                scopes_.emplace_back();
                bind(node.targets, item, node.line);
                const bool keep = truthy(eval(*node.filter));
                scopes_.pop_back();
                if (keep) kept.push_back(item);
            }
            all = std::make_shared<const ValueList>(std::move(kept));
        }
        const ValueList& items = *all;
        if (items.empty()) {
            scopes_.emplace_back();
            exec_body(node.else_body);
            scopes_.pop_back();
            return Flow::kNormal;
        }
        const auto n = static_cast<int64_t>(items.size());
        for (int64_t k = 0; k < n; ++k) {
            count_iterations(1, node.line);
            std::vector<std::pair<std::string, Value>> loop = {
                {"index", Value::integer(k + 1)},
                {"index0", Value::integer(k)},
                {"revindex", Value::integer(n - k)},
                {"revindex0", Value::integer(n - k - 1)},
                {"first", Value::boolean(k == 0)},
                {"last", Value::boolean(k == n - 1)},
                {"length", Value::integer(n)},
                {"previtem", k > 0 ? items[static_cast<size_t>(k - 1)]
                                   : Value::undefined("there is no previous item")},
                {"nextitem", k + 1 < n ? items[static_cast<size_t>(k + 1)]
                                       : Value::undefined("there is no next item")},
            };
            if (k > 0) charge_copy(items[static_cast<size_t>(k - 1)]);
            if (k + 1 < n) charge_copy(items[static_cast<size_t>(k + 1)]);
            scopes_.emplace_back();
            assign("loop", Value::make_dict(std::move(loop)));
            bind(node.targets, items[static_cast<size_t>(k)], node.line);
            const Flow f = exec_body(node.body);
            scopes_.pop_back();
            if (f == Flow::kBreak) break;
        }
        return Flow::kNormal;
    }

    // ---- expressions ----
    Value eval(const Expr& e) {
        charge(16);
        switch (e.kind) {
            case ExprKind::kLiteral:
                if (e.literal.type == VT::kString) charge_bytes(e.literal.s.size());
                return e.literal;
            case ExprKind::kName: {
                Value v = lookup(e.name);
                if (v.type == VT::kString) charge_bytes(v.s.size());
                return v;
            }
            case ExprKind::kList: {
                ValueList items;
                for (const auto& a : e.args) items.push_back(eval(*a));
                return checked(Value::make_list(std::move(items)), e.line);
            }
            case ExprKind::kDict: {
                std::vector<std::pair<std::string, Value>> items;
                for (size_t k = 0; k + 1 < e.args.size(); k += 2) {
                    const Value key = eval(*e.args[k]);
                    if (key.type != VT::kString) fail(e.line, "dict keys must be strings");
                    Value val = eval(*e.args[k + 1]);
                    charge(static_cast<int64_t>(items.size()));
                    auto it = std::find_if(items.begin(), items.end(),
                                           [&](const auto& kv) { return kv.first == key.s; });
                    if (it != items.end())
                        it->second = std::move(val);
                    else
                        items.emplace_back(key.s, std::move(val));
                }
                return checked(Value::make_dict(std::move(items)), e.line);
            }
            case ExprKind::kAttr: return get_attr(eval(*e.args[0]), e.name, e.line);
            case ExprKind::kItem: return get_item(eval(*e.args[0]), eval(*e.args[1]), e.line);
            case ExprKind::kSlice: return eval_slice(e);
            case ExprKind::kCall: return eval_call(e);
            case ExprKind::kFilter: return eval_filter(e);
            case ExprKind::kTest: {
                const Value subject = eval(*e.args[0]);
                std::vector<Value> args;
                for (size_t k = 1; k < e.args.size(); ++k) args.push_back(eval(*e.args[k]));
                for (const auto& kv : e.kwargs) args.push_back(eval(*kv.second));
                return Value::boolean(run_test(e.name, subject, args, e.line) != e.negated);
            }
            case ExprKind::kNeg:
            case ExprKind::kPos: {
                const Value v = eval(*e.args[0]);
                if (v.is_undefined()) undefined_error(v, e.line);
                if (!detail::is_number(v))
                    fail(e.line, std::string("bad operand type for unary ") +
                                     (e.kind == ExprKind::kNeg ? "-" : "+") + ": '" +
                                     detail::type_name(v) + "'");
                if (e.kind == ExprKind::kPos) return detail::is_integral(v) ? Value::integer(detail::as_int(v)) : v;
                if (v.type == VT::kFloat) return Value::number(-v.f);
                const int64_t x = detail::as_int(v);
                if (x == INT64_MIN) fail(e.line, "integer overflow");
                return Value::integer(-x);
            }
            case ExprKind::kNot: return Value::boolean(!truthy(eval(*e.args[0])));
            case ExprKind::kAnd: {
                Value l = eval(*e.args[0]);
                return truthy(l) ? eval(*e.args[1]) : l;
            }
            case ExprKind::kOr: {
                Value l = eval(*e.args[0]);
                return truthy(l) ? l : eval(*e.args[1]);
            }
            case ExprKind::kBinary:
                return binary(e.name, eval(*e.args[0]), eval(*e.args[1]), e.line);
            case ExprKind::kCompare: {
                Value left = eval(*e.args[0]);
                for (size_t k = 0; k < e.ops.size(); ++k) {
                    Value right = eval(*e.args[k + 1]);
                    if (!compare_op(e.ops[k], left, right, e.line)) return Value::boolean(false);
                    left = std::move(right);
                }
                return Value::boolean(true);
            }
            case ExprKind::kCond:
                if (truthy(eval(*e.args[0]))) return eval(*e.args[1]);
                return e.args[2] ? eval(*e.args[2]) : Value::undefined("the inline if was false");
        }
        return {};
    }

    bool compare_op(const std::string& op, const Value& a, const Value& b, int line) {
        if (op == "==") return detail::equals(a, b);
        if (op == "!=") return !detail::equals(a, b);
        if (op == "in") return contains(b, a, line);
        if (op == "notin") return !contains(b, a, line);
        try {
            const int c = detail::compare(a, b, op.c_str());
            if (op == "<") return c < 0;
            if (op == ">") return c > 0;
            if (op == "<=") return c <= 0;
            return c >= 0;
        } catch (const Error& err) {
            fail(line, err.message);
        }
    }

    bool contains(const Value& container, const Value& item, int line) {
        switch (container.type) {
            case VT::kUndefined: return false;
            case VT::kString:
                if (item.type != VT::kString)
                    fail(line, std::string("'in <string>' requires string as left operand, not ") +
                                   detail::type_name(item));
                charge_bytes(container.s.size());
                return container.s.find(item.s) != std::string::npos;
            case VT::kList:
                charge(static_cast<int64_t>(container.list->size()));
                for (const Value& x : *container.list)
                    if (detail::equals(x, item)) return true;
                return false;
            case VT::kDict:
                charge(static_cast<int64_t>(container.dict->items.size()));
                return item.type == VT::kString && detail::dict_find(*container.dict, item.s);
            default:
                fail(line, std::string("argument of type '") + detail::type_name(container) +
                               "' is not iterable");
        }
    }

    static bool mul_overflows(int64_t a, int64_t b, int64_t* r) {
        return __builtin_mul_overflow(a, b, r);
    }

    Value repeat(const Value& seq, int64_t times, int line) {
        if (times < 0) times = 0;
        if (seq.type == VT::kString) {
            int64_t total = 0;
            if (mul_overflows(static_cast<int64_t>(seq.s.size()), times, &total) ||
                total > static_cast<int64_t>(max_bytes()))
                throw Error(StatusCode::kResourceExhausted,
                            "line " + std::to_string(line) + ": a string exceeds " +
                                std::to_string(max_bytes()) + " bytes");
            std::string out;
            out.reserve(static_cast<size_t>(total));
            for (int64_t k = 0; k < times; ++k) out += seq.s;
            check_string(out);
            return Value::string(std::move(out));
        }
        int64_t total = 0;
        if (mul_overflows(static_cast<int64_t>(seq.list->size()), times, &total) ||
            total > limits_.max_loop_iterations)
            throw Error(StatusCode::kResourceExhausted,
                        "line " + std::to_string(line) + ": a list exceeds " +
                            std::to_string(limits_.max_loop_iterations) + " items");
        ValueList out;
        for (int64_t k = 0; k < times; ++k) out.insert(out.end(), seq.list->begin(), seq.list->end());
        return checked(Value::make_list(std::move(out)), line);
    }

    Value binary(const std::string& op, const Value& a, const Value& b, int line) {
        if (op == "~") {
            std::string s = str(a);
            s += str(b);
            check_string(s);
            return Value::string(std::move(s));
        }
        if (a.is_undefined()) undefined_error(a, line);
        if (b.is_undefined()) undefined_error(b, line);
        const bool num = detail::is_number(a) && detail::is_number(b);
        const bool ints = num && detail::is_integral(a) && detail::is_integral(b);
        if (op == "+") {
            if (ints) {
                int64_t r;
                if (__builtin_add_overflow(detail::as_int(a), detail::as_int(b), &r))
                    fail(line, "integer overflow");
                return Value::integer(r);
            }
            if (num) return Value::number(detail::as_double(a) + detail::as_double(b));
            if (a.type == VT::kString && b.type == VT::kString) {
                if (a.s.size() + b.s.size() > max_bytes()) check_string(a.s + b.s);
                std::string s = a.s + b.s;
                check_string(s);
                return Value::string(std::move(s));
            }
            if (a.type == VT::kList && b.type == VT::kList) {
                if (a.list->size() + b.list->size() > static_cast<size_t>(limits_.max_loop_iterations))
                    throw Error(StatusCode::kResourceExhausted,
                                "line " + std::to_string(line) + ": a list exceeds " +
                                    std::to_string(limits_.max_loop_iterations) + " items");
                ValueList items = *a.list;
                items.insert(items.end(), b.list->begin(), b.list->end());
                return checked(Value::make_list(std::move(items)), line);
            }
        } else if (op == "-") {
            if (ints) {
                int64_t r;
                if (__builtin_sub_overflow(detail::as_int(a), detail::as_int(b), &r))
                    fail(line, "integer overflow");
                return Value::integer(r);
            }
            if (num) return Value::number(detail::as_double(a) - detail::as_double(b));
        } else if (op == "*") {
            if (ints) {
                int64_t r;
                if (mul_overflows(detail::as_int(a), detail::as_int(b), &r)) fail(line, "integer overflow");
                return Value::integer(r);
            }
            if (num) return Value::number(detail::as_double(a) * detail::as_double(b));
            if ((a.type == VT::kString || a.type == VT::kList) && detail::is_integral(b))
                return repeat(a, detail::as_int(b), line);
            if ((b.type == VT::kString || b.type == VT::kList) && detail::is_integral(a))
                return repeat(b, detail::as_int(a), line);
        } else if (op == "/") {
            if (num) {
                if (detail::as_double(b) == 0) fail(line, "division by zero");
                return Value::number(detail::as_double(a) / detail::as_double(b));
            }
        } else if (op == "//" || op == "%") {
            if (ints) {
                const int64_t x = detail::as_int(a), y = detail::as_int(b);
                if (y == 0) fail(line, "integer division or modulo by zero");
                if (x == INT64_MIN && y == -1) fail(line, "integer overflow");
                int64_t q = x / y, r = x % y;
                if (r != 0 && ((r < 0) != (y < 0))) {
                    --q;
                    r += y;
                }
                return Value::integer(op == "//" ? q : r);
            }
            if (num) {
                const double x = detail::as_double(a), y = detail::as_double(b);
                if (y == 0) fail(line, "float division or modulo by zero");
                if (op == "//") return Value::number(std::floor(x / y));
                double r = std::fmod(x, y);
                if (r != 0 && ((r < 0) != (y < 0))) r += y;
                return Value::number(r);
            }
            if (op == "%" && a.type == VT::kString)
                fail(line, "unsupported construct: string formatting with %");
        } else if (op == "**") {
            if (ints && detail::as_int(b) >= 0) {
                int64_t base = detail::as_int(a), e = detail::as_int(b), r = 1;
                if (base == 0) return Value::integer(e == 0 ? 1 : 0);
                if (base == 1) return Value::integer(1);
                if (base == -1) return Value::integer(e % 2 ? -1 : 1);
                for (int64_t k = 0; k < e; ++k)
                    if (mul_overflows(r, base, &r)) fail(line, "integer overflow");
                return Value::integer(r);
            }
            if (num) {
                const double x = detail::as_double(a), y = detail::as_double(b);
                if (x == 0 && y < 0) fail(line, "0.0 cannot be raised to a negative power");
                return Value::number(std::pow(x, y));
            }
        }
        fail(line, "unsupported operand type(s) for " + op + ": '" + detail::type_name(a) +
                       "' and '" + detail::type_name(b) + "'");
    }

    Value get_attr(const Value& obj, const std::string& name, int line) {
        if (obj.is_undefined()) undefined_error(obj, line);
        if (obj.type == VT::kDict) {
            charge(static_cast<int64_t>(obj.dict->items.size()));
            if (const Value* v = detail::dict_find(*obj.dict, name)) {
                if (v->type == VT::kString) charge_bytes(v->s.size());
                return *v;
            }
        }
        return Value::undefined(std::string("'") + detail::type_name(obj) + " object' has no attribute '" +
                                name + "'");
    }

    static bool normalize_index(int64_t* idx, size_t size) {
        if (*idx < 0) *idx += static_cast<int64_t>(size);
        return *idx >= 0 && *idx < static_cast<int64_t>(size);
    }

    Value get_item(const Value& obj, const Value& key, int line) {
        if (obj.is_undefined()) undefined_error(obj, line);
        if (obj.type == VT::kDict && key.type == VT::kString) return get_attr(obj, key.s, line);
        if (detail::is_integral(key)) {
            int64_t idx = detail::as_int(key);
            if (obj.type == VT::kList) {
                if (normalize_index(&idx, obj.list->size())) {
                    const Value& v = (*obj.list)[static_cast<size_t>(idx)];
                    if (v.type == VT::kString) charge_bytes(v.s.size());
                    return v;
                }
                return Value::undefined("list index out of range");
            }
            if (obj.type == VT::kString) {
                charge_bytes(obj.s.size());
                const std::vector<size_t> offs = detail::char_offsets(obj.s);
                if (normalize_index(&idx, offs.size() - 1)) {
                    const auto k = static_cast<size_t>(idx);
                    return Value::string(obj.s.substr(offs[k], offs[k + 1] - offs[k]));
                }
                return Value::undefined("string index out of range");
            }
        }
        return Value::undefined(std::string("'") + detail::type_name(obj) + " object' has no item " +
                                str(key));
    }

    Value eval_slice(const Expr& e) {
        const Value obj = eval(*e.args[0]);
        int64_t parts[3] = {0, 0, 1};
        bool given[3] = {false, false, false};
        for (int k = 0; k < 3; ++k) {
            if (!e.args[static_cast<size_t>(k) + 1]) continue;
            const Value v = eval(*e.args[static_cast<size_t>(k) + 1]);
            if (v.type == VT::kNone) continue;
            if (!detail::is_integral(v)) fail(e.line, "slice indices must be integers or None");
            parts[k] = detail::as_int(v);
            given[k] = true;
        }
        if (obj.is_undefined()) undefined_error(obj, e.line);
        if (obj.type != VT::kList && obj.type != VT::kString)
            fail(e.line, std::string("'") + detail::type_name(obj) + "' object is not subscriptable");
        const int64_t step = parts[2];
        if (step == 0) fail(e.line, "slice step cannot be zero");
        std::vector<size_t> offs;
        int64_t len;
        if (obj.type == VT::kString) {
            charge_bytes(obj.s.size());
            offs = detail::char_offsets(obj.s);
            len = static_cast<int64_t>(offs.size()) - 1;
        } else {
            len = static_cast<int64_t>(obj.list->size());
        }
        // Python's slice.indices().
        auto adjust = [&](int64_t v, bool has, int64_t def_pos, int64_t def_neg) {
            if (!has) return step > 0 ? def_pos : def_neg;
            if (v < 0) {
                v += len;
                if (v < 0) v = step < 0 ? -1 : 0;
            } else if (v >= len) {
                v = step < 0 ? len - 1 : len;
            }
            return v;
        };
        const int64_t start = adjust(parts[0], given[0], 0, len - 1);
        const int64_t stop = adjust(parts[1], given[1], len, -1);
        std::vector<int64_t> idx;
        for (int64_t k = start; step > 0 ? k < stop : k > stop; k += step) {
            idx.push_back(k);
            if (step > 0 ? k > INT64_MAX - step : k < INT64_MIN - step) break;
        }
        charge(static_cast<int64_t>(idx.size()));
        if (obj.type == VT::kString) {
            std::string out;
            for (const int64_t k : idx) {
                const auto u = static_cast<size_t>(k);
                out.append(obj.s, offs[u], offs[u + 1] - offs[u]);
            }
            check_string(out);
            return Value::string(std::move(out));
        }
        ValueList items;
        for (const int64_t k : idx) items.push_back((*obj.list)[static_cast<size_t>(k)]);
        return checked(Value::make_list(std::move(items)), e.line);
    }

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
    Args eval_args(const Expr& e, size_t first) {
        Args a;
        for (size_t k = first; k < e.args.size(); ++k) a.pos.push_back(eval(*e.args[k]));
        for (const auto& kv : e.kwargs) a.kw.emplace_back(kv.first, eval(*kv.second));
        return a;
    }
    std::string string_arg(const Value& v, const char* what, int line) {
        if (v.type != VT::kString)
            fail(line, std::string(what) + " must be a string, not " + detail::type_name(v));
        return v.s;
    }
    int64_t int_arg(const Value& v, const char* what, int line) {
        if (!detail::is_integral(v))
            fail(line, std::string(what) + " must be an integer, not " + detail::type_name(v));
        return detail::as_int(v);
    }

    Value eval_call(const Expr& e) {
        const Expr& callee = *e.args[0];
        if (callee.kind == ExprKind::kAttr) {
            const Value obj = eval(*callee.args[0]);
            if (obj.is_undefined()) undefined_error(obj, e.line);
            if (obj.type == VT::kString || (obj.type == VT::kDict && !obj.dict->is_namespace)) {
                Args args = eval_args(e, 1);
                return call_method(obj, callee.name, args, e.line);
            }
            const Value f = get_attr(obj, callee.name, e.line);
            if (f.type != VT::kFunction)
                fail(e.line, std::string("'") + detail::type_name(obj) + "' object has no method '" +
                                 callee.name + "'");
            Args args = eval_args(e, 1);
            return call_function(f.s, args, e.line);
        }
        const Value f = eval(callee);
        if (f.is_undefined()) undefined_error(f, e.line);
        if (f.type != VT::kFunction)
            fail(e.line, std::string("'") + detail::type_name(f) + "' object is not callable");
        Args args = eval_args(e, 1);
        return call_function(f.s, args, e.line);
    }

    Value call_function(const std::string& name, const Args& args, int line) {
        if (name == "raise_exception") {
            Error err(StatusCode::kInvalidArgument, str(args.get(0, "message")));
            err.user_raised = true;
            throw err;
        }
        if (name == "range") {
            int64_t start = 0, stop, step = 1;
            if (args.pos.size() == 1) {
                stop = int_arg(args.pos[0], "range()", line);
            } else if (args.pos.size() == 2 || args.pos.size() == 3) {
                start = int_arg(args.pos[0], "range()", line);
                stop = int_arg(args.pos[1], "range()", line);
                if (args.pos.size() == 3) step = int_arg(args.pos[2], "range()", line);
            } else {
                fail(line, "range() takes 1 to 3 arguments");
            }
            if (step == 0) fail(line, "range() arg 3 must not be zero");
            ValueList items;
            for (int64_t k = start; step > 0 ? k < stop : k > stop; k += step) {
                count_iterations(1, line);
                items.push_back(Value::integer(k));
                if (step > 0 ? k > INT64_MAX - step : k < INT64_MIN - step) break;
            }
            return Value::make_list(std::move(items));
        }
        if (name == "namespace" || name == "dict") {
            if (!args.pos.empty()) fail(line, name + "() takes keyword arguments only here");
            Value v = Value::make_dict(args.kw);
            if (name == "namespace") {
                for (const auto& kv : args.kw) check_namespace_value(kv.second, line);
                v.dict->is_namespace = true;
                v.depth = limits_.max_value_depth / 2;
            }
            return checked(std::move(v), line);
        }
        if (name == "strftime_now") {
            const std::string fmt = string_arg(args.get(0, "format"), "strftime_now()", line);
            const std::time_t now = std::time(nullptr);
            std::tm tm{};
            localtime_r(&now, &tm);
            char buf[256];
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wformat-nonliteral"
            // The format is the template's (as in transformers); bounded input and output.
            const size_t n = fmt.size() < 64 ? std::strftime(buf, sizeof(buf), fmt.c_str(), &tm) : 0;
#pragma GCC diagnostic pop
            return Value::string(std::string(buf, n));
        }
        fail(line, "'" + name + "' is not callable");
    }

    Value call_method(const Value& obj, const std::string& name, const Args& args, int line) {
        if (obj.type == VT::kDict) {
            const ValueDict& d = *obj.dict;
            charge(static_cast<int64_t>(d.items.size()));
            if (name == "items" || name == "keys" || name == "values") {
                ValueList out;
                for (const auto& kv : d.items) {
                    if (name == "items")
                    {
                        Value pair = Value::make_list({Value::string(kv.first), kv.second});
                        pair.tuple = true;
                        out.push_back(std::move(pair));
                    }
                    else
                        out.push_back(name == "keys" ? Value::string(kv.first) : kv.second);
                }
                return checked(Value::make_list(std::move(out)), line);
            }
            if (name == "get") {
                const Value key = args.get(0, "key");
                if (key.type == VT::kString)
                    if (const Value* v = detail::dict_find(d, key.s)) return *v;
                return args.get(1, "default", Value::none());
            }
            fail(line, "'dict' object has no attribute '" + name + "'");
        }
        const std::string& s = obj.s;
        charge_bytes(s.size());
        if (name == "strip" || name == "lstrip" || name == "rstrip") {
            const Value chars = args.get(0, "chars", Value::none());
            std::string set;
            if (chars.type != VT::kNone) set = string_arg(chars, name.c_str(), line);
            return Value::string(strip(s, chars.type == VT::kNone ? nullptr : &set, name != "rstrip",
                                       name != "lstrip"));
        }
        if (name == "upper") return Value::string(ascii_upper(s));
        if (name == "lower") return Value::string(ascii_lower(s));
        if (name == "capitalize") return Value::string(capitalize(s));
        if (name == "title") return Value::string(title(s));
        if (name == "startswith" || name == "endswith") {
            const Value arg = args.get(0, "prefix");
            std::vector<std::string> options;
            if (arg.type == VT::kList) {
                for (const Value& x : *arg.list) options.push_back(string_arg(x, name.c_str(), line));
            } else {
                options.push_back(string_arg(arg, name.c_str(), line));
            }
            for (const std::string& o : options) {
                if (o.size() > s.size()) continue;
                if (name == "startswith" ? s.compare(0, o.size(), o) == 0
                                         : s.compare(s.size() - o.size(), o.size(), o) == 0)
                    return Value::boolean(true);
            }
            return Value::boolean(false);
        }
        if (name == "split") return split(s, args, line);
        if (name == "replace") {
            return replace(s, string_arg(args.get(0, "old"), "replace()", line),
                           string_arg(args.get(1, "new"), "replace()", line),
                           args.pos.size() > 2 ? int_arg(args.pos[2], "replace()", line) : -1);
        }
        if (name == "find" || name == "count") {
            const std::string sub = string_arg(args.get(0, "sub"), name.c_str(), line);
            if (name == "find") {
                const size_t p = s.find(sub);
                if (p == std::string::npos) return Value::integer(-1);
                return Value::integer(static_cast<int64_t>(detail::char_count(s.substr(0, p))));
            }
            if (sub.empty()) return Value::integer(static_cast<int64_t>(detail::char_count(s)) + 1);
            int64_t n = 0;
            for (size_t p = s.find(sub); p != std::string::npos; p = s.find(sub, p + sub.size())) ++n;
            return Value::integer(n);
        }
        if (name == "join") {
            const Value seq = args.get(0, "iterable");
            std::string out;
            bool first = true;
            const auto items = iterate(seq, line);  // keeps the list alive
            for (const Value& x : *items) {
                if (!first) out += s;
                first = false;
                out += string_arg(x, "join()", line);
                check_string(out);
            }
            return Value::string(std::move(out));
        }
        fail(line, "'str' object has no attribute '" + name + "'");
    }

    static std::string capitalize(const std::string& s) {
        std::string out = ascii_lower(s);
        if (!out.empty() && out[0] >= 'a' && out[0] <= 'z') out[0] = static_cast<char>(out[0] - 32);
        return out;
    }
    static std::string title(const std::string& s) {
        std::string out = s;
        bool prev_alpha = false;
        for (char& c : out) {
            if (is_alpha(c)) {
                c = prev_alpha ? ascii_lower(std::string(1, c))[0] : ascii_upper(std::string(1, c))[0];
                prev_alpha = true;
            } else {
                prev_alpha = static_cast<unsigned char>(c) >= 0x80 && prev_alpha;
            }
        }
        return out;
    }

    Value split(const std::string& s, const Args& args, int line) {
        const Value sep = args.get(0, "sep", Value::none());
        const Value maxv = args.get(1, "maxsplit", Value::integer(-1));
        int64_t maxsplit = int_arg(maxv, "split()", line);
        ValueList parts;
        if (sep.type == VT::kNone) {
            size_t n = 0;
            const auto space_at = [&](size_t p) { return detail::is_py_space(detail::decode_at(s, p, &n)); };
            size_t p = 0;
            while (true) {
                while (p < s.size() && space_at(p)) p += n;
                if (p >= s.size()) break;
                if (maxsplit == 0) {
                    charge(kItemCost), parts.push_back(Value::string(strip(s.substr(p), nullptr, false, true)));
                    break;
                }
                size_t q = p;
                while (q < s.size() && !space_at(q)) q += n;
                charge(kItemCost), parts.push_back(Value::string(s.substr(p, q - p)));
                if (maxsplit > 0) --maxsplit;
                p = q;
            }
        } else {
            const std::string d = string_arg(sep, "split()", line);
            if (d.empty()) fail(line, "empty separator");
            size_t p = 0;
            while (true) {
                const size_t q = maxsplit == 0 ? std::string::npos : s.find(d, p);
                if (q == std::string::npos) {
                    charge(kItemCost), parts.push_back(Value::string(s.substr(p)));
                    break;
                }
                charge(kItemCost), parts.push_back(Value::string(s.substr(p, q - p)));
                if (maxsplit > 0) --maxsplit;
                p = q + d.size();
            }
        }
        return checked(Value::make_list(std::move(parts)), line);
    }

    Value replace(const std::string& s, const std::string& from, const std::string& to,
                  int64_t count) {
        std::string out;
        if (from.empty()) {
            const std::vector<size_t> offs = detail::char_offsets(s);
            for (size_t k = 0; k + 1 < offs.size(); ++k) {
                if (count < 0 || static_cast<int64_t>(k) < count) out += to;
                out.append(s, offs[k], offs[k + 1] - offs[k]);
                check_string(out);
            }
            if (count < 0 || static_cast<int64_t>(offs.size()) - 1 < count) out += to;
        } else {
            size_t p = 0;
            int64_t done = 0;
            while (count < 0 || done < count) {
                const size_t q = s.find(from, p);
                if (q == std::string::npos) break;
                out.append(s, p, q - p);
                out += to;
                check_string(out);
                p = q + from.size();
                ++done;
            }
            out.append(s, p, std::string::npos);
        }
        check_string(out);
        return Value::string(std::move(out));
    }

    // ---- filters ----
    Value eval_filter(const Expr& e) {
        const Value v = eval(*e.args[0]);
        const Args args = eval_args(e, 1);
        const std::string& f = e.name;
        const int line = e.line;
        if (f == "default" || f == "d") {
            const bool boolean = truthy(args.get(1, "boolean", Value::boolean(false)));
            if (v.is_undefined() || (boolean && !truthy(v)))
                return args.get(0, "default_value", Value::string(""));
            return v;
        }
        if (f == "length" || f == "count") {
            switch (v.type) {
                case VT::kUndefined: return Value::integer(0);
                case VT::kString: return Value::integer(static_cast<int64_t>(detail::char_count(v.s)));
                case VT::kList: return Value::integer(static_cast<int64_t>(v.list->size()));
                case VT::kDict: return Value::integer(static_cast<int64_t>(v.dict->items.size()));
                default: fail(line, std::string("object of type '") + detail::type_name(v) + "' has no len()");
            }
        }
        if (f == "tojson") {
            const Value indent = args.get(1, "indent", Value::none());
            if (args.get(0, "ensure_ascii", Value::boolean(false)).type != VT::kBool ||
                truthy(args.get(0, "ensure_ascii", Value::boolean(false))))
                fail(line, "tojson: only ensure_ascii=False is supported");
            int ind = -1;
            if (indent.type != VT::kNone) {
                ind = static_cast<int>(std::clamp<int64_t>(int_arg(indent, "tojson indent", line), 0, 64));
            }
            std::string out;
            try {
                detail::append_json(out, v, ind, truthy(args.get(3, "sort_keys", Value::boolean(false))), 0,
                                    max_bytes());
            } catch (const Error& err) {
                if (err.code == StatusCode::kResourceExhausted) throw;
                fail(line, err.message);
            }
            check_string(out);
            return Value::string(std::move(out));
        }
        if (f == "first" || f == "last") {
            if (v.type == VT::kList) {
                if (v.list->empty()) return Value::undefined("no first item, sequence was empty");
                return f == "first" ? v.list->front() : v.list->back();
            }
            if (v.type == VT::kUndefined) return Value::undefined("no first item, sequence was empty");
            const auto items = iterate(v, line);
            if (items->empty()) return Value::undefined("no first item, sequence was empty");
            return f == "first" ? items->front() : items->back();
        }
        if (f == "join") {
            const std::string sep = str(args.get(0, "d", Value::string("")));
            const Value attribute = args.get(1, "attribute", Value::none());
            std::string out;
            bool first = true;
            const auto items = iterate(v, line);  // keeps the list alive
            for (const Value& x : *items) {
                if (!first) out += sep;
                first = false;
                out += str(attribute.type == VT::kNone ? x : get_item(x, attribute, line));
                check_string(out);
            }
            return Value::string(std::move(out));
        }
        if (f == "list") {
            const auto items = iterate(v, line);
            return checked(Value::make_list(*items), line);
        }
        if (f == "reverse") {
            if (v.type == VT::kString) {
                const auto chars = iterate(v, line);
                std::string out;
                for (auto it = chars->rbegin(); it != chars->rend(); ++it) out += it->s;
                return Value::string(std::move(out));
            }
            const auto shared = iterate(v, line);
            ValueList items = *shared;
            std::reverse(items.begin(), items.end());
            return checked(Value::make_list(std::move(items)), line);
        }
        if (f == "items") {
            if (v.is_undefined()) return Value::make_list({});
            if (v.type != VT::kDict || v.dict->is_namespace)
                fail(line, std::string("items: expected a mapping, not ") + detail::type_name(v));
            return call_method(v, "items", {}, line);
        }
        if (f == "string") return Value::string(str(v));
        if (f == "safe") return v;
        if (f == "int") {
            if (detail::is_integral(v)) return Value::integer(detail::as_int(v));
            if (v.type == VT::kFloat && std::isfinite(v.f) && std::fabs(v.f) < 9e18)
                return Value::integer(static_cast<int64_t>(v.f));
            if (v.type == VT::kString) {
                const std::string t = strip_ws(v.s);
                char* end = nullptr;
                errno = 0;
                const long long x = std::strtoll(t.c_str(), &end, 10);
                if (!t.empty() && end == t.c_str() + t.size() && errno == 0) return Value::integer(x);
            }
            return args.get(0, "default", Value::integer(0));
        }
        if (f == "float") {
            if (detail::is_number(v)) return Value::number(detail::as_double(v));
            if (v.type == VT::kString) {
                const std::string t = strip_ws(v.s);
                char* end = nullptr;
                const double x = std::strtod(t.c_str(), &end);
                if (!t.empty() && end == t.c_str() + t.size()) return Value::number(x);
            }
            return args.get(0, "default", Value::number(0));
        }
        if (f == "abs") {
            if (v.type == VT::kFloat) return Value::number(std::fabs(v.f));
            if (detail::is_integral(v)) {
                const int64_t x = detail::as_int(v);
                if (x == INT64_MIN) fail(line, "integer overflow");
                return Value::integer(x < 0 ? -x : x);
            }
            fail(line, std::string("bad operand type for abs(): '") + detail::type_name(v) + "'");
        }
        if (f == "selectattr" || f == "rejectattr") {
            if (args.pos.empty()) fail(line, f + " needs an attribute name");
            const Value attr = args.pos[0];
            ValueList kept;
            const auto items = iterate(v, line);  // keeps the list alive
            for (const Value& x : *items) {
                const Value a = attr.type == VT::kString ? get_attr_soft(x, attr.s, line) : get_item(x, attr, line);
                bool ok;
                if (args.pos.size() > 1) {
                    const std::vector<Value> targs(args.pos.begin() + 2, args.pos.end());
                    ok = run_test(string_arg(args.pos[1], "test name", line), a, targs, line);
                } else {
                    ok = truthy(a);
                }
                if (ok == (f == "selectattr")) kept.push_back(x);
            }
            return checked(Value::make_list(std::move(kept)), line);
        }
        if (f == "select" || f == "reject") {
            ValueList kept;
            const auto items = iterate(v, line);  // keeps the list alive
            for (const Value& x : *items) {
                bool ok;
                if (!args.pos.empty()) {
                    const std::vector<Value> targs(args.pos.begin() + 1, args.pos.end());
                    ok = run_test(string_arg(args.pos[0], "test name", line), x, targs, line);
                } else {
                    ok = truthy(x);
                }
                if (ok == (f == "select")) kept.push_back(x);
            }
            return checked(Value::make_list(std::move(kept)), line);
        }
        if (f == "map") {
            const Value attribute = args.get(99, "attribute", Value::none());
            ValueList out;
            if (attribute.type != VT::kNone) {
                const Value def = args.get(99, "default", Value::undefined());
                const auto items = iterate(v, line);  // keeps the list alive
                for (const Value& x : *items) {
                    Value a = attribute.type == VT::kString ? get_attr_soft(x, attribute.s, line)
                                                            : get_item(x, attribute, line);
                    out.push_back(a.is_undefined() && !def.is_undefined() ? def : a);
                }
            } else {
                if (args.pos.empty()) fail(line, "map needs a filter name or attribute=");
                const std::string filter = string_arg(args.pos[0], "map filter", line);
                if (filter != "string" && filter != "lower" && filter != "upper" && filter != "trim" &&
                    filter != "length" && filter != "tojson" && filter != "int")
                    fail(line, "map: unsupported filter '" + filter + "'");
                const auto items = iterate(v, line);  // keeps the list alive
                for (const Value& x : *items) out.push_back(simple_filter(filter, x, line));
            }
            return checked(Value::make_list(std::move(out)), line);
        }
        if (f == "trim") {
            const Value chars = args.get(0, "chars", Value::none());
            const std::string set = str(chars);
            return Value::string(strip(str(v), chars.type == VT::kNone ? nullptr : &set, true, true));
        }
        if (f == "upper") return Value::string(ascii_upper(str(v)));
        if (f == "lower") return Value::string(ascii_lower(str(v)));
        if (f == "capitalize") return Value::string(capitalize(str(v)));
        if (f == "title") return Value::string(title(str(v)));
        if (f == "replace") {
            const Value count = args.get(2, "count", Value::none());
            return replace(str(v), str(args.get(0, "old")), str(args.get(1, "new")),
                           count.type == VT::kNone ? -1 : int_arg(count, "replace count", line));
        }
        fail(line, "unknown filter '" + f + "'");
    }

    Value simple_filter(const std::string& f, const Value& x, int line) {
        if (f == "string") return Value::string(str(x));
        if (f == "lower") return Value::string(ascii_lower(str(x)));
        if (f == "upper") return Value::string(ascii_upper(str(x)));
        if (f == "trim") return Value::string(strip_ws(str(x)));
        if (f == "int") return detail::is_integral(x) ? Value::integer(detail::as_int(x)) : Value::integer(0);
        if (f == "length") {
            if (x.type == VT::kString) return Value::integer(static_cast<int64_t>(detail::char_count(x.s)));
            if (x.type == VT::kList) return Value::integer(static_cast<int64_t>(x.list->size()));
            if (x.type == VT::kDict) return Value::integer(static_cast<int64_t>(x.dict->items.size()));
            return Value::integer(0);
        }
        std::string out;
        detail::append_json(out, x, -1, false, 0, max_bytes());
        (void)line;
        return Value::string(std::move(out));
    }

    // Attribute lookup that yields undefined instead of failing on undefined objects (filters).
    Value get_attr_soft(const Value& obj, const std::string& name, int line) {
        if (obj.is_undefined()) return obj;
        Value cur = obj;
        size_t p = 0;
        while (true) {  // dotted paths: "function.name"
            const size_t q = name.find('.', p);
            const std::string part = name.substr(p, q == std::string::npos ? std::string::npos : q - p);
            if (cur.is_undefined()) return cur;
            cur = get_attr(cur, part, line);
            if (q == std::string::npos) return cur;
            p = q + 1;
        }
    }

    // ---- tests ----
    bool run_test(const std::string& t, const Value& v, const std::vector<Value>& args, int line) {
        auto arg = [&](size_t k) -> const Value& {
            if (k >= args.size()) fail(line, "test '" + t + "' needs an argument");
            return args[k];
        };
        if (t == "defined") return !v.is_undefined();
        if (t == "undefined") return v.is_undefined();
        if (t == "none") return v.type == VT::kNone;
        if (t == "boolean") return v.type == VT::kBool;
        if (t == "true") return v.type == VT::kBool && v.b;
        if (t == "false") return v.type == VT::kBool && !v.b;
        if (t == "integer") return v.type == VT::kInt;
        if (t == "float") return v.type == VT::kFloat;
        if (t == "number") return detail::is_number(v);
        if (t == "string") return v.type == VT::kString;
        if (t == "mapping") return v.type == VT::kDict && !v.dict->is_namespace;
        if (t == "iterable")
            return v.type == VT::kString || v.type == VT::kList || v.is_undefined() ||
                   (v.type == VT::kDict && !v.dict->is_namespace);
        if (t == "sequence")
            return v.type == VT::kString || v.type == VT::kList ||
                   (v.type == VT::kDict && !v.dict->is_namespace);
        if (t == "callable") return v.type == VT::kFunction;
        if (t == "even" || t == "odd") {
            const int64_t x = int_arg(v, "even/odd test", line);
            return (x % 2 == 0) == (t == "even");
        }
        if (t == "divisibleby") {
            const int64_t d = int_arg(arg(0), "divisibleby", line);
            if (d == 0) fail(line, "integer division or modulo by zero");
            if (d == -1) return true;
            return int_arg(v, "divisibleby", line) % d == 0;
        }
        if (t == "eq" || t == "equalto") return detail::equals(v, arg(0));
        if (t == "ne") return !detail::equals(v, arg(0));
        if (t == "lt" || t == "le" || t == "gt" || t == "ge") {
            const std::string op = t == "lt" ? "<" : t == "le" ? "<=" : t == "gt" ? ">" : ">=";
            return compare_op(op, v, arg(0), line);
        }
        if (t == "in") return contains(arg(0), v, line);
        if (t == "lower" || t == "upper") {
            const std::string s = str(v);
            return s == (t == "lower" ? ascii_lower(s) : ascii_upper(s));
        }
        if (t == "sameas") {
            const Value& o = arg(0);
            if (v.type != o.type) return false;
            if (v.type == VT::kDict) return v.dict == o.dict;
            if (v.type == VT::kList) return v.list == o.list;
            return detail::equals(v, o);
        }
        fail(line, "unknown test '" + t + "'");
    }

    Limits limits_;
    const std::map<std::string, Value>& globals_;
    std::vector<std::unordered_map<std::string, Value>> scopes_;
    std::string out_;
    size_t captured_ = 0;
    int64_t work_ = 0, iterations_ = 0;
};

}  // namespace

Result<Template> Template::parse(std::string_view source, const Options& options,
                                 const Limits& limits) {
    try {
        Template t;
        t.root_ = parse_template(source, options, limits);
        t.limits_ = limits;
        return t;
    } catch (const detail::Error& e) {
        return Status(e.code, e.message);
    } catch (const std::bad_alloc&) {
        return resource_exhausted("out of memory parsing the template");
    }
}

Result<std::string> Template::render(const std::map<std::string, Value>& globals) const {
    if (!root_) return invalid_argument("the template was not parsed");
    try {
        Renderer r(limits_, globals);
        return r.run(*root_);
    } catch (const detail::Error& e) {
        return Status(e.code, e.message);
    } catch (const std::bad_alloc&) {
        return resource_exhausted("out of memory rendering the template");
    }
}

}  // namespace duality::server::jinja
