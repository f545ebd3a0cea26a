// Internals of the Jinja subset interpreter (jinja.h): the syntax tree the parser
// (jinja_parse.cpp) builds and the evaluator (jinja_eval.cpp, jinja_builtins.cpp) walks, and the
// value helpers (jinja_value.cpp). Errors inside the interpreter are thrown as detail::Error and
// turned into a Status at the API boundary; nothing escapes Template::parse or Template::render.
#pragma once

#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "server/jinja.h"

namespace duality::server::jinja {

namespace detail {

struct Error {
    Error(StatusCode c, std::string m);
    StatusCode code;
    std::string message;
    bool user_raised = false;  // raise_exception(): the message is shown as is
};

const char* type_name(const Value& v);
bool is_number(const Value& v);
bool is_integral(const Value& v);
double as_double(const Value& v);
int64_t as_int(const Value& v);
bool truthy(const Value& v);
bool equals(const Value& a, const Value& b);
int compare(const Value& a, const Value& b, const char* op);
const Value* dict_find(const ValueDict& d, std::string_view key);
std::string py_float(double d);
// str() (repr=false) or repr() of v appended to out; throws once out exceeds max bytes.
void append_str(std::string& out, const Value& v, bool repr, size_t max);
std::string to_str(const Value& v, size_t max);
// json.dumps(v, ensure_ascii=False, indent=indent (<0: none), sort_keys=sort_keys).
void append_json(std::string& out, const Value& v, int indent, bool sort_keys, int level,
                 size_t max);

size_t utf8_len(unsigned char lead);
std::vector<size_t> char_offsets(const std::string& s);  // code point starts, then size()
size_t char_count(const std::string& s);
// The code point at byte p (a stray byte stands for itself) and its length in bytes.
uint32_t decode_at(const std::string& s, size_t p, size_t* len);
bool is_py_space(uint32_t cp);  // Python's str.isspace()
void append_utf8(std::string& out, uint32_t cp);

}  // namespace detail

enum class ExprKind {
    kLiteral, kName, kList, kDict, kAttr, kItem, kSlice, kCall, kFilter, kTest,
    kNeg, kPos, kNot, kBinary, kAnd, kOr, kCompare, kCond
};

struct Expr;
using ExprPtr = std::unique_ptr<Expr>;

struct Expr {
    ExprKind kind = ExprKind::kLiteral;
    int line = 0;
    int depth = 1;
    Value literal;       // kLiteral
    std::string name;    // kName, kAttr, kFilter, kTest: the name; kBinary: the operator
    bool negated = false;  // kTest: `is not`
    // kList: items; kDict: key, value, key, value...; kAttr: object; kItem: object, key;
    // kSlice: object, start, stop, step (null when absent); kCall: callee, positional args;
    // kFilter/kTest: subject, positional args; unary: operand; binary/and/or: lhs, rhs;
    // kCompare: the operands; kCond: condition, then, else (null when absent).
    std::vector<ExprPtr> args;
    std::vector<std::pair<std::string, ExprPtr>> kwargs;
    std::vector<std::string> ops;  // kCompare: "==", "<", "in", "notin", ...
};

enum class NodeKind { kText, kOutput, kIf, kFor, kSet, kSetAttr, kSetBlock, kBreak, kContinue, kBlock };

struct Node {
    NodeKind kind = NodeKind::kBlock;
    int line = 0;
    std::string text;                  // kText
    ExprPtr expr;                      // kOutput; kSet/kSetAttr value; kFor iterable
    std::vector<std::string> targets;  // kFor names; kSet/kSetBlock: name; kSetAttr: name, attr
    ExprPtr filter;                    // kFor: `if` condition
    std::vector<ExprPtr> conds;        // kIf: one per branch, null for else
    std::vector<std::vector<Node>> branches;  // kIf
    std::vector<Node> body, else_body;  // kFor (else_body: {% else %}), kSetBlock, kBlock
};

// Parses a whole template; throws detail::Error with "line L, column C: ...".
std::shared_ptr<const Node> parse_template(std::string_view source, const Options& options,
                                           const Limits& limits);

}  // namespace duality::server::jinja
