// The renderer's builtins (see jinja_render.h): calls of the globals (raise_exception, range,
// namespace, dict, strftime_now), str and dict methods, filters (tojson as transformers calls it:
// json.dumps with ensure_ascii=False) and tests, as listed in jinja.h. What they build is charged
// and capped like the rest of the render (jinja_eval.cpp).
#include <algorithm>
#include <climits>
#include <cmath>
#include <ctime>
#include <unordered_set>

#include "server/jinja_render.h"

namespace duality::server::jinja {
namespace detail {
namespace {

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
std::string strip_ws(const std::string& s) {
    return strip(s, nullptr, true, true);
}
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
bool is_alpha(char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
}

}  // namespace

Renderer::Args Renderer::eval_args(const Expr& e, size_t first) {
    Args a;
    for (size_t k = first; k < e.args.size(); ++k) a.pos.push_back(eval(*e.args[k]));
    for (const auto& kv : e.kwargs) a.kw.emplace_back(kv.first, eval(*kv.second));
    return a;
}

std::string Renderer::string_arg(const Value& v, const char* what, int line) {
    if (v.type != VT::kString)
        fail(line, std::string(what) + " must be a string, not " + detail::type_name(v));
    return v.s;
}

int64_t Renderer::int_arg(const Value& v, const char* what, int line) {
    if (!detail::is_integral(v))
        fail(line, std::string(what) + " must be an integer, not " + detail::type_name(v));
    return detail::as_int(v);
}

Value Renderer::eval_call(const Expr& e) {
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

Value Renderer::call_function(const std::string& name, const Args& args, int line) {
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

Value Renderer::call_method(const Value& obj, const std::string& name, const Args& args, int line) {
    if (obj.type == VT::kDict) {
        const ValueDict& d = *obj.dict;
        charge(static_cast<int64_t>(d.items.size()));
        if (name == "items" || name == "keys" || name == "values") {
            ValueList out;
            for (const auto& kv : d.items) {
                if (name == "items") {
                    Value pair = Value::make_list({Value::string(kv.first), kv.second});
                    pair.tuple = true;
                    out.push_back(std::move(pair));
                } else
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
        return Value::string(
            strip(s, chars.type == VT::kNone ? nullptr : &set, name != "rstrip", name != "lstrip"));
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

std::string Renderer::capitalize(const std::string& s) {
    std::string out = ascii_lower(s);
    if (!out.empty() && out[0] >= 'a' && out[0] <= 'z') out[0] = static_cast<char>(out[0] - 32);
    return out;
}

std::string Renderer::title(const std::string& s) {
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

Value Renderer::split(const std::string& s, const Args& args, int line) {
    const Value sep = args.get(0, "sep", Value::none());
    const Value maxv = args.get(1, "maxsplit", Value::integer(-1));
    int64_t maxsplit = int_arg(maxv, "split()", line);
    ValueList parts;
    if (sep.type == VT::kNone) {
        size_t n = 0;
        const auto space_at = [&](size_t p) {
            return detail::is_py_space(detail::decode_at(s, p, &n));
        };
        size_t p = 0;
        while (true) {
            while (p < s.size() && space_at(p)) p += n;
            if (p >= s.size()) break;
            if (maxsplit == 0) {
                charge(kItemCost),
                    parts.push_back(Value::string(strip(s.substr(p), nullptr, false, true)));
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

Value Renderer::replace(const std::string& s, const std::string& from, const std::string& to,
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
Value Renderer::eval_filter(const Expr& e) {
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
            case VT::kUndefined:
                return Value::integer(0);
            case VT::kString:
                return Value::integer(static_cast<int64_t>(detail::char_count(v.s)));
            case VT::kList:
                return Value::integer(static_cast<int64_t>(v.list->size()));
            case VT::kDict:
                return Value::integer(static_cast<int64_t>(v.dict->items.size()));
            default:
                fail(line,
                     std::string("object of type '") + detail::type_name(v) + "' has no len()");
        }
    }
    if (f == "tojson") {
        const Value indent = args.get(1, "indent", Value::none());
        if (args.get(0, "ensure_ascii", Value::boolean(false)).type != VT::kBool ||
            truthy(args.get(0, "ensure_ascii", Value::boolean(false))))
            fail(line, "tojson: only ensure_ascii=False is supported");
        int ind = -1;
        if (indent.type != VT::kNone) {
            ind = static_cast<int>(
                std::clamp<int64_t>(int_arg(indent, "tojson indent", line), 0, 64));
        }
        std::string out;
        try {
            detail::append_json(out, v, ind,
                                truthy(args.get(3, "sort_keys", Value::boolean(false))), 0,
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
            const Value a =
                attr.type == VT::kString ? get_attr_soft(x, attr.s, line) : get_item(x, attr, line);
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

Value Renderer::simple_filter(const std::string& f, const Value& x, int line) {
    if (f == "string") return Value::string(str(x));
    if (f == "lower") return Value::string(ascii_lower(str(x)));
    if (f == "upper") return Value::string(ascii_upper(str(x)));
    if (f == "trim") return Value::string(strip_ws(str(x)));
    if (f == "int")
        return detail::is_integral(x) ? Value::integer(detail::as_int(x)) : Value::integer(0);
    if (f == "length") {
        if (x.type == VT::kString)
            return Value::integer(static_cast<int64_t>(detail::char_count(x.s)));
        if (x.type == VT::kList) return Value::integer(static_cast<int64_t>(x.list->size()));
        if (x.type == VT::kDict) return Value::integer(static_cast<int64_t>(x.dict->items.size()));
        return Value::integer(0);
    }
    std::string out;
    detail::append_json(out, x, -1, false, 0, max_bytes());
    (void)line;
    return Value::string(std::move(out));
}

Value Renderer::get_attr_soft(const Value& obj, const std::string& name, int line) {
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
bool Renderer::run_test(const std::string& t, const Value& v, const std::vector<Value>& args,
                        int line) {
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

}  // namespace detail
}  // namespace duality::server::jinja
