// Evaluator of the Jinja subset: walks the tree jinja_parse.cpp builds, with Jinja2's scoping
// (each loop iteration is its own scope; if blocks are not) and Python operator semantics; the
// filters, tests, methods and globals listed in jinja.h are in jinja_builtins.cpp. This file holds
// the renderer's core (jinja_render.h): bookkeeping, variables, statements, expressions, operators,
// indexing and slicing, and Template::parse/render. Limits: every node evaluated and every byte or
// item copied is charged against Limits::max_work; loop iterations, value nesting and output size
// are capped; recursion follows the parsed tree, whose depth the parser caps.
#include <algorithm>
#include <climits>
#include <cmath>

#include "server/jinja_render.h"

namespace duality::server::jinja {
namespace detail {

Renderer::Renderer(const Limits& limits, const std::map<std::string, Value>& globals)
    : limits_(limits), globals_(globals) {
    scopes_.emplace_back();
}

std::string Renderer::run(const Node& root) {
    exec_body(root.body);
    return std::move(out_);
}

// ---- bookkeeping ----
[[noreturn]] void Renderer::fail(int line, const std::string& message) const {
    throw Error(StatusCode::kInvalidArgument, "line " + std::to_string(line) + ": " + message);
}

void Renderer::charge(int64_t units) {
    work_ += units;
    if (work_ > limits_.max_work)
        throw Error(StatusCode::kResourceExhausted,
                    "the template needs too much work to render (limit " +
                        std::to_string(limits_.max_work) + " units)");
}

void Renderer::charge_bytes(size_t n) {
    charge(static_cast<int64_t>(n >> 3));
}

size_t Renderer::max_bytes() const {
    return limits_.max_output_bytes;
}

void Renderer::check_string(const std::string& s) {
    if (s.size() > max_bytes())
        throw Error(StatusCode::kResourceExhausted,
                    "a string exceeds " + std::to_string(max_bytes()) + " bytes");
    charge_bytes(s.size());
}

Value Renderer::checked(Value v, int line) {
    if (v.depth > limits_.max_value_depth)
        fail(line,
             "values nested too deeply (limit " + std::to_string(limits_.max_value_depth) + ")");
    // Building a container costs per item (and its strings were charged where built).
    if (v.type == VT::kList) charge(static_cast<int64_t>(v.list->size()) * kItemCost);
    if (v.type == VT::kDict) charge(static_cast<int64_t>(v.dict->items.size()) * kItemCost);
    return v;
}

void Renderer::count_iterations(int64_t n, int line) {
    iterations_ += n;
    if (iterations_ > limits_.max_loop_iterations)
        throw Error(StatusCode::kResourceExhausted,
                    "line " + std::to_string(line) + ": more than " +
                        std::to_string(limits_.max_loop_iterations) + " loop iterations");
    charge(n);
}

void Renderer::emit(const std::string& s) {
    out_ += s;
    if (out_.size() + captured_ > max_bytes())
        throw Error(StatusCode::kResourceExhausted,
                    "the rendered text exceeds " + std::to_string(max_bytes()) + " bytes");
    charge_bytes(s.size());
}

std::string Renderer::str(const Value& v) {
    return detail::to_str(v, max_bytes());
}

[[noreturn]] void Renderer::undefined_error(const Value& v, int line) const {
    fail(line, v.s.empty() ? std::string("a value is undefined") : v.s);
}

// ---- variables ----
Value Renderer::lookup(const std::string& name) const {
    for (auto it = scopes_.rbegin(); it != scopes_.rend(); ++it) {
        const auto found = it->find(name);
        if (found != it->end()) return found->second;
    }
    const auto g = globals_.find(name);
    if (g != globals_.end()) return g->second;
    if (name == "raise_exception" || name == "range" || name == "namespace" || name == "dict" ||
        name == "strftime_now")
        return Value::function(name);
    return Value::undefined("'" + name + "' is undefined");
}

void Renderer::assign(const std::string& name, Value v) {
    scopes_.back()[name] = std::move(v);
}

// ---- statements ----
Flow Renderer::exec_body(const std::vector<Node>& body) {
    for (const Node& node : body) {
        const Flow f = exec(node);
        if (f != Flow::kNormal) return f;
    }
    return Flow::kNormal;
}

Flow Renderer::exec(const Node& node) {
    charge(16);
    switch (node.kind) {
        case NodeKind::kText:
            emit(node.text);
            return Flow::kNormal;
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
        case NodeKind::kFor:
            return exec_for(node);
        case NodeKind::kSet:
            assign(node.targets[0], eval(*node.expr));
            return Flow::kNormal;
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
        case NodeKind::kBreak:
            return Flow::kBreak;
        case NodeKind::kContinue:
            return Flow::kContinue;
        case NodeKind::kBlock:
            return exec_body(node.body);
    }
    return Flow::kNormal;
}

void Renderer::check_namespace_value(const Value& v, int line) {
    scan_for_namespace(v, line);
    if (v.depth >= limits_.max_value_depth / 2)
        fail(line, "value too deeply nested for a namespace attribute");
}

void Renderer::scan_for_namespace(const Value& v, int line) {
    charge(1);
    if (v.type == VT::kDict) {
        if (v.dict->is_namespace) fail(line, "a namespace cannot hold a namespace");
        for (const auto& kv : v.dict->items) scan_for_namespace(kv.second, line);
    } else if (v.type == VT::kList) {
        for (const Value& x : *v.list) scan_for_namespace(x, line);
    }
}

std::shared_ptr<const ValueList> Renderer::iterate(const Value& v, int line) {
    switch (v.type) {
        case VT::kUndefined:
            return std::make_shared<const ValueList>();
        case VT::kList:
            charge(static_cast<int64_t>(v.list->size()));
            return v.list;
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
        default:
            break;
    }
    fail(line, std::string("'") + detail::type_name(v) + "' object is not iterable");
}

void Renderer::charge_copy(const Value& v) {
    charge(1);
    if (v.type == VT::kString || v.type == VT::kUndefined) charge_bytes(v.s.size());
}

void Renderer::bind(const std::vector<std::string>& targets, const Value& item, int line) {
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

Flow Renderer::exec_for(const Node& node) {
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
Value Renderer::eval(const Expr& e) {
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
        case ExprKind::kAttr:
            return get_attr(eval(*e.args[0]), e.name, e.line);
        case ExprKind::kItem:
            return get_item(eval(*e.args[0]), eval(*e.args[1]), e.line);
        case ExprKind::kSlice:
            return eval_slice(e);
        case ExprKind::kCall:
            return eval_call(e);
        case ExprKind::kFilter:
            return eval_filter(e);
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
            if (e.kind == ExprKind::kPos)
                return detail::is_integral(v) ? Value::integer(detail::as_int(v)) : v;
            if (v.type == VT::kFloat) return Value::number(-v.f);
            const int64_t x = detail::as_int(v);
            if (x == INT64_MIN) fail(e.line, "integer overflow");
            return Value::integer(-x);
        }
        case ExprKind::kNot:
            return Value::boolean(!truthy(eval(*e.args[0])));
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

bool Renderer::compare_op(const std::string& op, const Value& a, const Value& b, int line) {
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

bool Renderer::contains(const Value& container, const Value& item, int line) {
    switch (container.type) {
        case VT::kUndefined:
            return false;
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

bool Renderer::mul_overflows(int64_t a, int64_t b, int64_t* r) {
    return __builtin_mul_overflow(a, b, r);
}

Value Renderer::repeat(const Value& seq, int64_t times, int line) {
    if (times < 0) times = 0;
    if (seq.type == VT::kString) {
        int64_t total = 0;
        if (mul_overflows(static_cast<int64_t>(seq.s.size()), times, &total) ||
            total > static_cast<int64_t>(max_bytes()))
            throw Error(StatusCode::kResourceExhausted, "line " + std::to_string(line) +
                                                            ": a string exceeds " +
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

Value Renderer::binary(const std::string& op, const Value& a, const Value& b, int line) {
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
            if (mul_overflows(detail::as_int(a), detail::as_int(b), &r))
                fail(line, "integer overflow");
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
    fail(line, "unsupported operand type(s) for " + op + ": '" + detail::type_name(a) + "' and '" +
                   detail::type_name(b) + "'");
}

Value Renderer::get_attr(const Value& obj, const std::string& name, int line) {
    if (obj.is_undefined()) undefined_error(obj, line);
    if (obj.type == VT::kDict) {
        charge(static_cast<int64_t>(obj.dict->items.size()));
        if (const Value* v = detail::dict_find(*obj.dict, name)) {
            if (v->type == VT::kString) charge_bytes(v->s.size());
            return *v;
        }
    }
    return Value::undefined(std::string("'") + detail::type_name(obj) +
                            " object' has no attribute '" + name + "'");
}

bool Renderer::normalize_index(int64_t* idx, size_t size) {
    if (*idx < 0) *idx += static_cast<int64_t>(size);
    return *idx >= 0 && *idx < static_cast<int64_t>(size);
}

Value Renderer::get_item(const Value& obj, const Value& key, int line) {
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

Value Renderer::eval_slice(const Expr& e) {
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

}  // namespace detail

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
        detail::Renderer r(limits_, globals);
        return r.run(*root_);
    } catch (const detail::Error& e) {
        return Status(e.code, e.message);
    } catch (const std::bad_alloc&) {
        return resource_exhausted("out of memory rendering the template");
    }
}

}  // namespace duality::server::jinja
