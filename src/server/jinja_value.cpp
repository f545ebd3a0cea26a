// Jinja values: constructors, and the Python-compatible text forms the interpreter needs
// (str(), repr(), json.dumps as transformers' tojson calls it, float repr), truthiness, equality
// and ordering. Limits: recursion follows value nesting, which the interpreter caps; every
// builder checks the output cap as it grows.
#include "server/jinja_internal.h"

#include <algorithm>
#include <charconv>
#include <cmath>
#include <cstdio>
#include <cstring>

namespace duality::server::jinja {

Value Value::undefined(std::string name) {
    Value v;
    v.s = std::move(name);
    return v;
}
Value Value::none() {
    Value v;
    v.type = Type::kNone;
    return v;
}
Value Value::boolean(bool x) {
    Value v;
    v.type = Type::kBool;
    v.b = x;
    return v;
}
Value Value::integer(int64_t x) {
    Value v;
    v.type = Type::kInt;
    v.i = x;
    return v;
}
Value Value::number(double x) {
    Value v;
    v.type = Type::kFloat;
    v.f = x;
    return v;
}
Value Value::string(std::string x) {
    Value v;
    v.type = Type::kString;
    v.s = std::move(x);
    return v;
}
Value Value::function(std::string name) {
    Value v;
    v.type = Type::kFunction;
    v.s = std::move(name);
    return v;
}
Value Value::make_list(ValueList items) {
    Value v;
    v.type = Type::kList;
    int d = 0;
    for (const Value& x : items) d = std::max(d, x.depth);
    v.depth = d + 1;
    v.list = std::make_shared<const ValueList>(std::move(items));
    return v;
}
Value Value::make_dict(std::vector<std::pair<std::string, Value>> items) {
    Value v;
    v.type = Type::kDict;
    int d = 0;
    for (const auto& kv : items) d = std::max(d, kv.second.depth);
    v.depth = d + 1;
    v.dict = std::make_shared<ValueDict>();
    v.dict->items = std::move(items);
    return v;
}

namespace detail {

Error::Error(StatusCode c, std::string m) : code(c), message(std::move(m)) {}

const char* type_name(const Value& v) {
    switch (v.type) {
        case Value::Type::kUndefined: return "Undefined";
        case Value::Type::kNone: return "NoneType";
        case Value::Type::kBool: return "bool";
        case Value::Type::kInt: return "int";
        case Value::Type::kFloat: return "float";
        case Value::Type::kString: return "str";
        case Value::Type::kList: return "list";
        case Value::Type::kDict: return v.dict->is_namespace ? "Namespace" : "dict";
        case Value::Type::kFunction: return "function";
    }
    return "?";
}

bool is_number(const Value& v) {
    return v.type == Value::Type::kInt || v.type == Value::Type::kFloat ||
           v.type == Value::Type::kBool;
}
double as_double(const Value& v) {
    if (v.type == Value::Type::kFloat) return v.f;
    if (v.type == Value::Type::kBool) return v.b ? 1 : 0;
    return static_cast<double>(v.i);
}
int64_t as_int(const Value& v) { return v.type == Value::Type::kBool ? (v.b ? 1 : 0) : v.i; }
bool is_integral(const Value& v) {
    return v.type == Value::Type::kInt || v.type == Value::Type::kBool;
}

bool truthy(const Value& v) {
    switch (v.type) {
        case Value::Type::kUndefined:
        case Value::Type::kNone: return false;
        case Value::Type::kBool: return v.b;
        case Value::Type::kInt: return v.i != 0;
        case Value::Type::kFloat: return v.f != 0;
        case Value::Type::kString: return !v.s.empty();
        case Value::Type::kList: return !v.list->empty();
        case Value::Type::kDict: return v.dict->is_namespace || !v.dict->items.empty();
        case Value::Type::kFunction: return true;
    }
    return false;
}

const Value* dict_find(const ValueDict& d, std::string_view key) {
    for (const auto& kv : d.items)
        if (kv.first == key) return &kv.second;
    return nullptr;
}

bool equals(const Value& a, const Value& b) {
    if (is_number(a) && is_number(b)) {
        if (is_integral(a) && is_integral(b)) return as_int(a) == as_int(b);
        return as_double(a) == as_double(b);
    }
    if (a.type != b.type) return false;
    switch (a.type) {
        case Value::Type::kUndefined:
        case Value::Type::kNone: return true;
        case Value::Type::kString:
        case Value::Type::kFunction: return a.s == b.s;
        case Value::Type::kList: {
            if (a.list->size() != b.list->size()) return false;
            for (size_t k = 0; k < a.list->size(); ++k)
                if (!equals((*a.list)[k], (*b.list)[k])) return false;
            return true;
        }
        case Value::Type::kDict: {
            if (a.dict->is_namespace || b.dict->is_namespace) return a.dict == b.dict;
            if (a.dict->items.size() != b.dict->items.size()) return false;
            for (const auto& kv : a.dict->items) {
                const Value* other = dict_find(*b.dict, kv.first);
                if (!other || !equals(kv.second, *other)) return false;
            }
            return true;
        }
        default: return false;
    }
}

// <0, 0, >0; throws for types Python cannot order.
int compare(const Value& a, const Value& b, const char* op) {
    if (is_number(a) && is_number(b)) {
        if (is_integral(a) && is_integral(b)) {
            const int64_t x = as_int(a), y = as_int(b);
            return x < y ? -1 : (x > y ? 1 : 0);
        }
        const double x = as_double(a), y = as_double(b);
        return x < y ? -1 : (x > y ? 1 : 0);
    }
    if (a.type == Value::Type::kString && b.type == Value::Type::kString) {
        const int c = a.s.compare(b.s);  // UTF-8 byte order is code point order
        return c < 0 ? -1 : (c > 0 ? 1 : 0);
    }
    if (a.type == Value::Type::kList && b.type == Value::Type::kList) {
        const size_t n = std::min(a.list->size(), b.list->size());
        for (size_t k = 0; k < n; ++k) {
            if (equals((*a.list)[k], (*b.list)[k])) continue;
            return compare((*a.list)[k], (*b.list)[k], op);
        }
        return a.list->size() < b.list->size() ? -1 : (a.list->size() > b.list->size() ? 1 : 0);
    }
    throw Error(StatusCode::kInvalidArgument, std::string("'") + op +
                                                  "' not supported between instances of '" +
                                                  type_name(a) + "' and '" + type_name(b) + "'");
}

std::string py_float(double d) {
    if (std::isnan(d)) return "nan";
    if (std::isinf(d)) return d > 0 ? "inf" : "-inf";
    char buf[64];
    const auto r = std::to_chars(buf, buf + sizeof(buf), d, std::chars_format::scientific);
    std::string sci(buf, r.ptr);
    bool neg = false;
    if (!sci.empty() && sci[0] == '-') {
        neg = true;
        sci.erase(0, 1);
    }
    const size_t e = sci.find('e');
    std::string digits = sci.substr(0, e);
    digits.erase(std::remove(digits.begin(), digits.end(), '.'), digits.end());
    const int exp = std::atoi(sci.c_str() + e + 1);
    std::string out = neg ? "-" : "";
    if (exp >= -4 && exp < 16) {
        if (exp >= 0) {
            std::string int_part = digits.substr(0, std::min<size_t>(digits.size(), exp + 1));
            while (int_part.size() < static_cast<size_t>(exp + 1)) int_part += '0';
            std::string frac = digits.size() > static_cast<size_t>(exp + 1)
                                   ? digits.substr(exp + 1)
                                   : std::string("0");
            out += int_part + "." + frac;
        } else {
            out += "0." + std::string(static_cast<size_t>(-exp - 1), '0') + digits;
        }
    } else {
        out += digits.substr(0, 1);
        if (digits.size() > 1) out += "." + digits.substr(1);
        char eb[16];
        std::snprintf(eb, sizeof(eb), "e%c%02d", exp < 0 ? '-' : '+', exp < 0 ? -exp : exp);
        out += eb;
    }
    return out;
}

namespace {

void check_size(const std::string& out, size_t max) {
    if (out.size() > max)
        throw Error(StatusCode::kResourceExhausted,
                    "the rendered text exceeds " + std::to_string(max) + " bytes");
}

void append_repr_string(std::string& out, const std::string& s) {
    const bool dq = s.find('\'') != std::string::npos && s.find('"') == std::string::npos;
    const char q = dq ? '"' : '\'';
    out += q;
    for (const char ch : s) {
        const auto c = static_cast<unsigned char>(ch);
        if (ch == q || ch == '\\') {
            out += '\\';
            out += ch;
        } else if (ch == '\n') {
            out += "\\n";
        } else if (ch == '\r') {
            out += "\\r";
        } else if (ch == '\t') {
            out += "\\t";
        } else if (c < 0x20 || c == 0x7F) {
            char buf[8];
            std::snprintf(buf, sizeof(buf), "\\x%02x", c);
            out += buf;
        } else {
            out += ch;
        }
    }
    out += q;
}

}  // namespace

void append_str(std::string& out, const Value& v, bool repr, size_t max) {
    switch (v.type) {
        case Value::Type::kUndefined: out += repr ? "Undefined" : ""; break;
        case Value::Type::kNone: out += "None"; break;
        case Value::Type::kBool: out += v.b ? "True" : "False"; break;
        case Value::Type::kInt: out += std::to_string(v.i); break;
        case Value::Type::kFloat: out += py_float(v.f); break;
        case Value::Type::kString:
            if (repr)
                append_repr_string(out, v.s);
            else
                out += v.s;
            break;
        case Value::Type::kFunction: out += "<function " + v.s + ">"; break;
        case Value::Type::kList:
            out += v.tuple ? '(' : '[';
            for (size_t k = 0; k < v.list->size(); ++k) {
                if (k) out += ", ";
                append_str(out, (*v.list)[k], true, max);
                check_size(out, max);
            }
            if (v.tuple && v.list->size() == 1) out += ',';
            out += v.tuple ? ')' : ']';
            break;
        case Value::Type::kDict:
            out += v.dict->is_namespace ? "<Namespace {" : "{";
            for (size_t k = 0; k < v.dict->items.size(); ++k) {
                if (k) out += ", ";
                append_repr_string(out, v.dict->items[k].first);
                out += ": ";
                append_str(out, v.dict->items[k].second, true, max);
                check_size(out, max);
            }
            out += v.dict->is_namespace ? "}>" : "}";
            break;
    }
    check_size(out, max);
}

std::string to_str(const Value& v, size_t max) {
    if (v.type == Value::Type::kString) return v.s;
    std::string out;
    append_str(out, v, false, max);
    return out;
}

namespace {

void append_json_string(std::string& out, const std::string& s) {
    out += '"';
    for (const char ch : s) {
        const auto c = static_cast<unsigned char>(ch);
        switch (ch) {
            case '"': out += "\\\""; break;
            case '\\': out += "\\\\"; break;
            case '\n': out += "\\n"; break;
            case '\r': out += "\\r"; break;
            case '\t': out += "\\t"; break;
            case '\b': out += "\\b"; break;
            case '\f': out += "\\f"; break;
            default:
                if (c < 0x20) {
                    char buf[8];
                    std::snprintf(buf, sizeof(buf), "\\u%04x", c);
                    out += buf;
                } else {
                    out += ch;
                }
        }
    }
    out += '"';
}

void newline_indent(std::string& out, int indent, int level) {
    out += '\n';
    out.append(static_cast<size_t>(indent) * static_cast<size_t>(level), ' ');
}

}  // namespace

void append_json(std::string& out, const Value& v, int indent, bool sort_keys, int level,
                 size_t max) {
    check_size(out, max);
    switch (v.type) {
        case Value::Type::kNone: out += "null"; return;
        case Value::Type::kBool: out += v.b ? "true" : "false"; return;
        case Value::Type::kInt: out += std::to_string(v.i); return;
        case Value::Type::kFloat:
            if (std::isnan(v.f))
                out += "NaN";
            else if (std::isinf(v.f))
                out += v.f > 0 ? "Infinity" : "-Infinity";
            else
                out += py_float(v.f);
            return;
        case Value::Type::kString: append_json_string(out, v.s); return;
        case Value::Type::kList: {
            if (v.list->empty()) {
                out += "[]";
                return;
            }
            out += '[';
            for (size_t k = 0; k < v.list->size(); ++k) {
                if (k) out += indent >= 0 ? "," : ", ";
                if (indent >= 0) newline_indent(out, indent, level + 1);
                append_json(out, (*v.list)[k], indent, sort_keys, level + 1, max);
            }
            if (indent >= 0) newline_indent(out, indent, level);
            out += ']';
            return;
        }
        case Value::Type::kDict: {
            if (v.dict->is_namespace) break;
            if (v.dict->items.empty()) {
                out += "{}";
                return;
            }
            std::vector<const std::pair<std::string, Value>*> items;
            for (const auto& kv : v.dict->items) items.push_back(&kv);
            if (sort_keys)
                std::stable_sort(items.begin(), items.end(),
                                 [](auto* x, auto* y) { return x->first < y->first; });
            out += '{';
            for (size_t k = 0; k < items.size(); ++k) {
                if (k) out += indent >= 0 ? "," : ", ";
                if (indent >= 0) newline_indent(out, indent, level + 1);
                append_json_string(out, items[k]->first);
                out += ": ";
                append_json(out, items[k]->second, indent, sort_keys, level + 1, max);
            }
            if (indent >= 0) newline_indent(out, indent, level);
            out += '}';
            return;
        }
        default: break;
    }
    throw Error(StatusCode::kInvalidArgument,
                std::string("tojson: object of type '") + type_name(v) +
                    "' is not JSON serializable");
}

// ---- UTF-8 -------------------------------------------------------------------------------------

size_t utf8_len(unsigned char lead) {
    if (lead < 0x80) return 1;
    if ((lead >> 5) == 0x6) return 2;
    if ((lead >> 4) == 0xE) return 3;
    if ((lead >> 3) == 0x1E) return 4;
    return 1;  // a stray byte counts as one character
}

std::vector<size_t> char_offsets(const std::string& s) {
    std::vector<size_t> offs;
    size_t p = 0;
    while (p < s.size()) {
        offs.push_back(p);
        p += std::min(utf8_len(static_cast<unsigned char>(s[p])), s.size() - p);
    }
    offs.push_back(s.size());
    return offs;
}

uint32_t decode_at(const std::string& s, size_t p, size_t* len) {
    const auto c0 = static_cast<unsigned char>(s[p]);
    size_t n = std::min(utf8_len(c0), s.size() - p);
    uint32_t cp = n == 1 ? c0 : (n == 2 ? c0 & 0x1F : (n == 3 ? c0 & 0x0F : c0 & 0x07));
    for (size_t k = 1; k < n; ++k) {
        const auto c = static_cast<unsigned char>(s[p + k]);
        if ((c & 0xC0) != 0x80) {
            n = 1;
            cp = c0;
            break;
        }
        cp = (cp << 6) | (c & 0x3F);
    }
    *len = n;
    return cp;
}

bool is_py_space(uint32_t cp) {
    return (cp >= 0x09 && cp <= 0x0D) || (cp >= 0x1C && cp <= 0x20) || cp == 0x85 ||
           cp == 0xA0 || cp == 0x1680 || (cp >= 0x2000 && cp <= 0x200A) || cp == 0x2028 ||
           cp == 0x2029 || cp == 0x202F || cp == 0x205F || cp == 0x3000;
}

size_t char_count(const std::string& s) {
    size_t n = 0;
    for (const char c : s) n += (static_cast<unsigned char>(c) & 0xC0) != 0x80;
    return n;
}

void append_utf8(std::string& out, uint32_t cp) {
    if (cp < 0x80) {
        out += static_cast<char>(cp);
    } else if (cp < 0x800) {
        out += static_cast<char>(0xC0 | (cp >> 6));
        out += static_cast<char>(0x80 | (cp & 0x3F));
    } else if (cp < 0x10000) {
        out += static_cast<char>(0xE0 | (cp >> 12));
        out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
        out += static_cast<char>(0x80 | (cp & 0x3F));
    } else {
        out += static_cast<char>(0xF0 | (cp >> 18));
        out += static_cast<char>(0x80 | ((cp >> 12) & 0x3F));
        out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
        out += static_cast<char>(0x80 | (cp & 0x3F));
    }
}

}  // namespace detail
}  // namespace duality::server::jinja
