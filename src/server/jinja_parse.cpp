// Lexer and parser of the Jinja subset (see jinja.h for what is supported). The lexer follows
// Jinja2's: newlines normalized to \n, one trailing newline dropped (keep_trailing_newline=False),
// whitespace control signs, trim_blocks/lstrip_blocks, brackets balanced inside tags so that
// `}}` in a dict literal does not end a tag. The parser is recursive descent with Jinja2's
// operator precedence. Limits: nesting of blocks and expressions is capped (Limits), so hostile
// input cannot exhaust the stack; unknown filters/tests and unsupported tags are parse errors.
#include <algorithm>
#include <charconv>
#include <cctype>
#include <cstdlib>
#include <cstring>
#include <set>

#include "server/jinja_internal.h"

namespace duality::server::jinja {
namespace {

using detail::Error;

enum class Tok { kText, kVarBegin, kVarEnd, kBlockBegin, kBlockEnd, kName, kString, kInt, kFloat, kOp, kEof };

struct Token {
    Tok kind = Tok::kEof;
    std::string text;  // kText, kName, kString (decoded), kOp
    int64_t ival = 0;
    double fval = 0;
    size_t pos = 0;
};

const std::set<std::string, std::less<>> kFilters = {
    "abs",  "capitalize", "count", "d",       "default", "first",   "float",      "int",
    "items", "join",      "last",  "length",  "list",    "lower",   "map",        "rejectattr",
    "reject", "replace", "reverse", "safe", "select", "selectattr", "string", "title",
    "tojson", "trim", "upper"};
const std::set<std::string, std::less<>> kTests = {
    "boolean", "callable", "defined", "divisibleby", "eq",      "equalto", "even",  "false",
    "float",   "ge",       "gt",      "in",          "integer", "iterable", "le",   "lower",
    "lt",      "mapping",  "ne",      "none",        "number",  "odd",     "sameas", "sequence",
    "string",  "true",     "undefined", "upper"};
const std::set<std::string, std::less<>> kUnsupportedTags = {
    "macro", "endmacro", "call",  "endcall", "include", "import", "from", "extends",
    "block", "endblock", "filter", "endfilter", "with", "endwith", "raw", "endraw",
    "autoescape", "endautoescape", "do"};

bool is_space(char c) {
    return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v';
}
bool is_name_start(char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_';
}
bool is_digit(char c) { return c >= '0' && c <= '9'; }

class Lexer {
public:
    Lexer(std::string_view source, const Options& options) : options_(options) {
        src_.reserve(source.size());
        for (size_t k = 0; k < source.size(); ++k) {
            if (source[k] == '\r') {
                src_ += '\n';
                if (k + 1 < source.size() && source[k + 1] == '\n') ++k;
            } else {
                src_ += source[k];
            }
        }
        if (!src_.empty() && src_.back() == '\n') src_.pop_back();
        line_starts_.push_back(0);
        for (size_t k = 0; k < src_.size(); ++k)
            if (src_[k] == '\n') line_starts_.push_back(k + 1);
    }

    std::pair<int, int> line_col(size_t pos) const {
        const auto it = std::upper_bound(line_starts_.begin(), line_starts_.end(), pos);
        const size_t line = static_cast<size_t>(it - line_starts_.begin());
        return {static_cast<int>(line), static_cast<int>(pos - line_starts_[line - 1] + 1)};
    }

    [[noreturn]] void fail(size_t pos, const std::string& message) const {
        const auto [line, col] = line_col(pos);
        throw Error(StatusCode::kInvalidArgument, "line " + std::to_string(line) + ", column " +
                                                      std::to_string(col) + ": " + message);
    }

    std::vector<Token> run() {
        size_t pos = 0;
        const size_t n = src_.size();
        while (pos < n) {
            size_t tag = pos;
            while (true) {
                tag = src_.find('{', tag);
                if (tag == std::string::npos || tag + 1 >= n) {
                    tag = n;
                    break;
                }
                const char k = src_[tag + 1];
                if (k == '{' || k == '%' || k == '#') break;
                ++tag;
            }
            std::string text = src_.substr(pos, tag - pos);
            if (tag == n) {
                emit_text(std::move(text), pos);
                break;
            }
            const char kind = src_[tag + 1];
            size_t p = tag + 2;
            const char sign = (p < n && (src_[p] == '-' || src_[p] == '+')) ? src_[p] : 0;
            if (sign) ++p;
            if (sign == '-') {
                size_t e = text.size();
                while (e > 0 && is_space(text[e - 1])) --e;
                text.resize(e);
            } else if (sign != '+' && options_.lstrip_blocks && kind != '{') {
                const size_t nl = text.rfind('\n');
                const size_t l_pos = nl == std::string::npos ? 0 : nl + 1;
                const bool line_starting = pos == 0 || src_[pos - 1] == '\n';
                if (l_pos > 0 || line_starting) {
                    bool only_ws = true;
                    for (size_t k = l_pos; k < text.size(); ++k)
                        only_ws &= text[k] == ' ' || text[k] == '\t';
                    if (only_ws) text.resize(l_pos);
                }
            }
            emit_text(std::move(text), pos);
            if (kind == '#') {
                const size_t e = src_.find("#}", p);
                if (e == std::string::npos) fail(tag, "unclosed comment {# (no #})");
                pos = after_end(e + 2, e > p && src_[e - 1] == '-', e > p && src_[e - 1] == '+',
                                true);
                continue;
            }
            pos = lex_tag(tag, p, kind == '{');
        }
        Token eof;
        eof.kind = Tok::kEof;
        eof.pos = n;
        tokens_.push_back(eof);
        return std::move(tokens_);
    }

private:
    void emit_text(std::string text, size_t pos) {
        if (text.empty()) return;
        Token t;
        t.kind = Tok::kText;
        t.text = std::move(text);
        t.pos = pos;
        tokens_.push_back(std::move(t));
    }

    // Where data resumes after a tag end at `pos` (just past the closing delimiter).
    size_t after_end(size_t pos, bool minus, bool plus, bool block) const {
        if (minus) {
            while (pos < src_.size() && is_space(src_[pos])) ++pos;
        } else if (block && !plus && options_.trim_blocks && pos < src_.size() &&
                   src_[pos] == '\n') {
            ++pos;
        }
        return pos;
    }

    void push(Tok kind, size_t pos, std::string text = {}) {
        Token t;
        t.kind = kind;
        t.pos = pos;
        t.text = std::move(text);
        tokens_.push_back(std::move(t));
    }

    size_t lex_tag(size_t tag, size_t p, bool variable) {
        const size_t n = src_.size();
        push(variable ? Tok::kVarBegin : Tok::kBlockBegin, tag);
        std::vector<char> brackets;
        bool first = true;
        while (true) {
            while (p < n && is_space(src_[p])) ++p;
            if (p >= n) fail(tag, variable ? "unclosed {{ (no }})" : "unclosed {% (no %})");
            if (brackets.empty()) {
                const char close = variable ? '}' : '%';
                for (const char s : {'-', '+', '\0'}) {
                    const size_t q = p + (s ? 1 : 0);
                    if (s && (p >= n || src_[p] != s)) continue;
                    if (s == '+' && variable) continue;
                    if (q + 1 < n && src_[q] == close && src_[q + 1] == '}') {
                        push(variable ? Tok::kVarEnd : Tok::kBlockEnd, p);
                        return after_end(q + 2, s == '-', s == '+', !variable);
                    }
                }
            }
            const char c = src_[p];
            const size_t start = p;
            if (is_name_start(c)) {
                while (p < n && (is_name_start(src_[p]) || is_digit(src_[p]))) ++p;
                std::string name = src_.substr(start, p - start);
                if (first && !variable && name == "raw")
                    fail(start, "unsupported construct {% raw %}");
                push(Tok::kName, start, std::move(name));
            } else if (is_digit(c)) {
                lex_number(p);
            } else if (c == '\'' || c == '"') {
                lex_string(p);
            } else {
                static const char* const kOps2[] = {"//", "**", "==", "!=", "<=", ">="};
                std::string op;
                for (const char* o : kOps2)
                    if (src_.compare(p, 2, o) == 0) op = o;
                if (op.empty()) {
                    if (!std::strchr("+-*/%~<>()[]{},.:|=", c))
                        fail(p, std::string("unexpected character '") + c + "' in a tag");
                    op = std::string(1, c);
                }
                p += op.size();
                if (c == '(' || c == '[' || c == '{') {
                    brackets.push_back(c);
                } else if (c == ')' || c == ']' || c == '}') {
                    const char open = c == ')' ? '(' : (c == ']' ? '[' : '{');
                    if (brackets.empty() || brackets.back() != open)
                        fail(start, std::string("unexpected '") + c + "'");
                    brackets.pop_back();
                }
                push(Tok::kOp, start, std::move(op));
            }
            first = false;
        }
    }

    void lex_number(size_t& p) {
        const size_t n = src_.size(), start = p;
        auto digits = [&] {
            while (p < n && (is_digit(src_[p]) || (src_[p] == '_' && p + 1 < n &&
                                                   is_digit(src_[p + 1]))))
                ++p;
        };
        digits();
        bool is_float = false;
        if (p + 1 < n && src_[p] == '.' && is_digit(src_[p + 1])) {
            is_float = true;
            ++p;
            digits();
        }
        if (p < n && (src_[p] == 'e' || src_[p] == 'E')) {
            size_t q = p + 1;
            if (q < n && (src_[q] == '+' || src_[q] == '-')) ++q;
            if (q < n && is_digit(src_[q])) {
                is_float = true;
                p = q;
                digits();
            }
        }
        std::string text = src_.substr(start, p - start);
        text.erase(std::remove(text.begin(), text.end(), '_'), text.end());
        Token t;
        t.pos = start;
        if (is_float) {
            t.kind = Tok::kFloat;
            t.fval = std::strtod(text.c_str(), nullptr);
        } else {
            t.kind = Tok::kInt;
            const auto r = std::from_chars(text.data(), text.data() + text.size(), t.ival);
            if (r.ec != std::errc() || r.ptr != text.data() + text.size())
                fail(start, "integer literal too large");
        }
        tokens_.push_back(std::move(t));
    }

    void lex_string(size_t& p) {
        const size_t n = src_.size(), start = p;
        const char q = src_[p++];
        std::string out;
        while (true) {
            if (p >= n) fail(start, "unterminated string literal");
            const char c = src_[p];
            if (c == q) {
                ++p;
                break;
            }
            if (c != '\\') {
                out += c;
                ++p;
                continue;
            }
            if (p + 1 >= n) fail(start, "unterminated string literal");
            const char e = src_[p + 1];
            p += 2;
            auto hex = [&](int count) {
                uint32_t cp = 0;
                for (int k = 0; k < count; ++k) {
                    if (p >= n || !std::isxdigit(static_cast<unsigned char>(src_[p])))
                        fail(p, "bad escape in string literal");
                    const char h = src_[p++];
                    cp = cp * 16 + static_cast<uint32_t>(is_digit(h) ? h - '0'
                                                                      : (std::tolower(h) - 'a' + 10));
                }
                if (cp > 0x10FFFF) fail(p, "bad escape in string literal");
                detail::append_utf8(out, cp);
            };
            switch (e) {
                case 'n': out += '\n'; break;
                case 't': out += '\t'; break;
                case 'r': out += '\r'; break;
                case '\\': out += '\\'; break;
                case '\'': out += '\''; break;
                case '"': out += '"'; break;
                case 'a': out += '\a'; break;
                case 'b': out += '\b'; break;
                case 'f': out += '\f'; break;
                case 'v': out += '\v'; break;
                case '\n': break;
                case 'x': hex(2); break;
                case 'u': hex(4); break;
                case 'U': hex(8); break;
                default:
                    if (e >= '0' && e <= '7') {
                        uint32_t cp = static_cast<uint32_t>(e - '0');
                        for (int k = 0; k < 2 && p < n && src_[p] >= '0' && src_[p] <= '7'; ++k)
                            cp = cp * 8 + static_cast<uint32_t>(src_[p++] - '0');
                        detail::append_utf8(out, cp);
                    } else {
                        out += '\\';
                        out += e;
                    }
            }
        }
        Token t;
        t.kind = Tok::kString;
        t.pos = start;
        t.text = std::move(out);
        tokens_.push_back(std::move(t));
    }

    std::string src_;
    Options options_;
    std::vector<size_t> line_starts_;
    std::vector<Token> tokens_;
};

class Parser {
public:
    Parser(const Lexer& lexer, std::vector<Token> tokens, const Limits& limits)
        : lexer_(lexer), toks_(std::move(tokens)), limits_(limits) {}

    std::shared_ptr<const Node> run() {
        auto root = std::make_shared<Node>();
        root->kind = NodeKind::kBlock;
        std::string ended;
        root->body = parse_body({}, &ended, "", 0);
        return root;
    }

private:
    // ---- tokens ----
    const Token& cur() const { return toks_[i_]; }
    const Token& peek(size_t k = 1) const { return toks_[std::min(i_ + k, toks_.size() - 1)]; }
    const Token& next() {
        const Token& t = toks_[i_];
        if (i_ + 1 < toks_.size()) ++i_;
        return t;
    }
    bool is_op(const char* op) const { return cur().kind == Tok::kOp && cur().text == op; }
    bool is_name(const char* name) const {
        return cur().kind == Tok::kName && cur().text == name;
    }
    int line_of(const Token& t) const { return lexer_.line_col(t.pos).first; }

    static std::string describe(const Token& t) {
        switch (t.kind) {
            case Tok::kText: return "text";
            case Tok::kVarBegin: return "'{{'";
            case Tok::kVarEnd: return "'}}'";
            case Tok::kBlockBegin: return "'{%'";
            case Tok::kBlockEnd: return "'%}'";
            case Tok::kName: return "'" + t.text + "'";
            case Tok::kString: return "a string";
            case Tok::kInt:
            case Tok::kFloat: return "a number";
            case Tok::kOp: return "'" + t.text + "'";
            case Tok::kEof: return "the end of the template";
        }
        return "?";
    }
    [[noreturn]] void fail(const Token& t, const std::string& message) const {
        lexer_.fail(t.pos, message);
    }
    [[noreturn]] void unexpected(const std::string& expected) const {
        fail(cur(), "expected " + expected + ", found " + describe(cur()));
    }
    void expect_op(const char* op) {
        if (!is_op(op)) unexpected(std::string("'") + op + "'");
        next();
    }
    void expect_block_end(const char* what) {
        if (cur().kind != Tok::kBlockEnd)
            fail(cur(), std::string("expected '%}' to end {% ") + what + " %}, found " +
                            describe(cur()));
        next();
    }
    std::string expect_name(const char* what) {
        if (cur().kind != Tok::kName) unexpected(what);
        return next().text;
    }

    // ---- statements ----
    std::vector<Node> parse_body(std::vector<const char*> ends, std::string* ended_by,
                                 const char* construct, size_t open_pos) {
        std::vector<Node> body;
        while (true) {
            const Token& t = cur();
            if (t.kind == Tok::kEof) {
                if (ends.empty()) return body;
                lexer_.fail(open_pos, std::string("{% ") + construct + " %} is never closed (no {% " +
                                          ends.back() + " %})");
            }
            if (t.kind == Tok::kText) {
                Node node;
                node.kind = NodeKind::kText;
                node.line = line_of(t);
                node.text = t.text;
                body.push_back(std::move(node));
                next();
            } else if (t.kind == Tok::kVarBegin) {
                next();
                Node node;
                node.kind = NodeKind::kOutput;
                node.line = line_of(t);
                node.expr = parse_expression();
                if (cur().kind != Tok::kVarEnd) unexpected("'}}'");
                next();
                body.push_back(std::move(node));
            } else if (t.kind == Tok::kBlockBegin) {
                const Token& kw = peek();
                if (kw.kind == Tok::kName) {
                    for (const char* e : ends) {
                        if (kw.text == e) {
                            next();
                            next();
                            *ended_by = e;
                            return body;
                        }
                    }
                }
                next();
                body.push_back(parse_statement(t.pos));
            } else {
                unexpected("text or a tag");
            }
        }
    }

    struct DepthGuard {
        DepthGuard(Parser* p, int* counter, int limit, const Token& at, const char* what)
            : counter_(counter) {
            if (++*counter_ > limit)
                p->fail(at, std::string(what) + " nested too deeply (limit " +
                                std::to_string(limit) + ")");
        }
        ~DepthGuard() { --*counter_; }
        int* counter_;
    };

    Node parse_statement(size_t open_pos) {
        const Token kw = cur();
        if (kw.kind != Tok::kName) unexpected("a tag name (if, for, set, ...)");
        Node node;
        node.line = line_of(kw);
        const std::string& name = kw.text;
        if (kUnsupportedTags.count(name)) {
            fail(kw, "unsupported construct {% " + name +
                         " %} (this renderer supports if, for, set, break, continue; no macros, "
                         "call blocks, includes, imports, extends, filter/with/raw blocks)");
        }
        next();
        if (name == "if") {
            DepthGuard g(this, &block_depth_, limits_.max_template_depth, kw, "blocks");
            node.kind = NodeKind::kIf;
            node.conds.push_back(parse_expression());
            expect_block_end("if");
            std::string ended;
            while (true) {
                node.branches.push_back(parse_body({"elif", "else", "endif"}, &ended, "if", open_pos));
                if (ended == "endif") break;
                if (ended == "elif") {
                    node.conds.push_back(parse_expression());
                    expect_block_end("elif");
                } else {
                    node.conds.push_back(nullptr);
                    expect_block_end("else");
                    node.branches.push_back(parse_body({"endif"}, &ended, "if", open_pos));
                    break;
                }
            }
            expect_block_end("endif");
        } else if (name == "for") {
            DepthGuard g(this, &block_depth_, limits_.max_template_depth, kw, "blocks");
            node.kind = NodeKind::kFor;
            node.targets.push_back(expect_name("a loop variable name"));
            while (is_op(",")) {
                next();
                node.targets.push_back(expect_name("a loop variable name"));
            }
            if (!is_name("in")) unexpected("'in'");
            next();
            node.expr = parse_expression(/*with_condexpr=*/false);
            if (is_name("if")) {
                next();
                node.filter = parse_expression();
            }
            if (is_name("recursive")) fail(cur(), "unsupported construct: recursive loops");
            expect_block_end("for");
            ++loop_depth_;
            std::string ended;
            node.body = parse_body({"else", "endfor"}, &ended, "for", open_pos);
            --loop_depth_;
            if (ended == "else") {
                expect_block_end("else");
                node.else_body = parse_body({"endfor"}, &ended, "for", open_pos);
            }
            expect_block_end("endfor");
        } else if (name == "set") {
            const std::string target = expect_name("a variable name");
            if (is_op(".")) {
                next();
                node.kind = NodeKind::kSetAttr;
                node.targets = {target, expect_name("an attribute name")};
                expect_op("=");
                node.expr = parse_expression();
                expect_block_end("set");
            } else if (is_op("=")) {
                next();
                node.kind = NodeKind::kSet;
                node.targets = {target};
                node.expr = parse_expression();
                expect_block_end("set");
            } else if (cur().kind == Tok::kBlockEnd) {
                DepthGuard g(this, &block_depth_, limits_.max_template_depth, kw, "blocks");
                next();
                node.kind = NodeKind::kSetBlock;
                node.targets = {target};
                std::string ended;
                node.body = parse_body({"endset"}, &ended, "set", open_pos);
                expect_block_end("endset");
            } else if (is_op(",")) {
                fail(cur(), "unsupported construct: {% set a, b = ... %} (one name per set)");
            } else {
                unexpected("'=' after the name in {% set %}");
            }
        } else if (name == "break" || name == "continue") {
            if (loop_depth_ == 0) fail(kw, "{% " + name + " %} outside a loop");
            node.kind = name == "break" ? NodeKind::kBreak : NodeKind::kContinue;
            expect_block_end(name.c_str());
        } else if (name == "generation") {
            DepthGuard g(this, &block_depth_, limits_.max_template_depth, kw, "blocks");
            node.kind = NodeKind::kBlock;
            expect_block_end("generation");
            std::string ended;
            node.body = parse_body({"endgeneration"}, &ended, "generation", open_pos);
            expect_block_end("endgeneration");
        } else if (name == "elif" || name == "else" || name.rfind("end", 0) == 0) {
            fail(kw, "unexpected {% " + name + " %} (no open block it could belong to)");
        } else {
            fail(kw, "unknown tag {% " + name + " %}");
        }
        return node;
    }

    // ---- expressions ----
    ExprPtr make(ExprKind kind, const Token& at) {
        auto e = std::make_unique<Expr>();
        e->kind = kind;
        e->line = line_of(at);
        return e;
    }
    ExprPtr finish(ExprPtr e) {
        int d = 0;
        for (const auto& a : e->args)
            if (a) d = std::max(d, a->depth);
        for (const auto& kv : e->kwargs) d = std::max(d, kv.second->depth);
        e->depth = d + 1;
        if (e->depth > limits_.max_expr_depth)
            fail(cur(), "expression nested too deeply (limit " +
                            std::to_string(limits_.max_expr_depth) + ")");
        return e;
    }
    ExprPtr binary(ExprKind kind, const Token& at, std::string op, ExprPtr a, ExprPtr b) {
        ExprPtr e = make(kind, at);
        e->name = std::move(op);
        e->args.push_back(std::move(a));
        e->args.push_back(std::move(b));
        return finish(std::move(e));
    }

    ExprPtr parse_expression(bool with_condexpr = true) {
        DepthGuard g(this, &expr_depth_, limits_.max_expr_depth, cur(), "expression");
        return with_condexpr ? parse_condexpr() : parse_or();
    }

    ExprPtr parse_condexpr() {
        ExprPtr expr = parse_or();
        while (is_name("if")) {
            const Token at = next();
            ExprPtr cond = parse_or();
            ExprPtr other;
            if (is_name("else")) {
                next();
                DepthGuard g(this, &expr_depth_, limits_.max_expr_depth, cur(), "expression");
                other = parse_condexpr();
            }
            ExprPtr e = make(ExprKind::kCond, at);
            e->args.push_back(std::move(cond));
            e->args.push_back(std::move(expr));
            e->args.push_back(std::move(other));
            expr = finish(std::move(e));
        }
        return expr;
    }

    ExprPtr parse_or() {
        ExprPtr left = parse_and();
        while (is_name("or")) {
            const Token at = next();
            left = binary(ExprKind::kOr, at, "or", std::move(left), parse_and());
        }
        return left;
    }
    ExprPtr parse_and() {
        ExprPtr left = parse_not();
        while (is_name("and")) {
            const Token at = next();
            left = binary(ExprKind::kAnd, at, "and", std::move(left), parse_not());
        }
        return left;
    }
    ExprPtr parse_not() {
        if (is_name("not")) {
            const Token at = next();
            DepthGuard g(this, &expr_depth_, limits_.max_expr_depth, at, "expression");
            ExprPtr e = make(ExprKind::kNot, at);
            e->args.push_back(parse_not());
            return finish(std::move(e));
        }
        return parse_compare();
    }
    ExprPtr parse_compare() {
        const Token at = cur();
        ExprPtr first = parse_math1();
        ExprPtr e;
        while (true) {
            std::string op;
            if (cur().kind == Tok::kOp &&
                (cur().text == "==" || cur().text == "!=" || cur().text == "<" ||
                 cur().text == ">" || cur().text == "<=" || cur().text == ">=")) {
                op = next().text;
            } else if (is_name("in")) {
                next();
                op = "in";
            } else if (is_name("not") && peek().kind == Tok::kName && peek().text == "in") {
                next();
                next();
                op = "notin";
            } else {
                break;
            }
            if (!e) {
                e = make(ExprKind::kCompare, at);
                e->args.push_back(std::move(first));
            }
            e->ops.push_back(op);
            e->args.push_back(parse_math1());
        }
        return e ? finish(std::move(e)) : std::move(first);
    }
    ExprPtr parse_math1() {
        ExprPtr left = parse_concat();
        while (is_op("+") || is_op("-")) {
            const Token at = next();
            left = binary(ExprKind::kBinary, at, at.text, std::move(left), parse_concat());
        }
        return left;
    }
    ExprPtr parse_concat() {
        ExprPtr left = parse_math2();
        while (is_op("~")) {
            const Token at = next();
            left = binary(ExprKind::kBinary, at, "~", std::move(left), parse_math2());
        }
        return left;
    }
    ExprPtr parse_math2() {
        ExprPtr left = parse_pow();
        while (is_op("*") || is_op("/") || is_op("//") || is_op("%")) {
            const Token at = next();
            left = binary(ExprKind::kBinary, at, at.text, std::move(left), parse_pow());
        }
        return left;
    }
    ExprPtr parse_pow() {
        ExprPtr left = parse_unary();
        while (is_op("**")) {
            const Token at = next();
            left = binary(ExprKind::kBinary, at, "**", std::move(left), parse_unary());
        }
        return left;
    }
    ExprPtr parse_unary(bool with_filter = true) {
        ExprPtr node;
        if (is_op("-") || is_op("+")) {
            const Token at = next();
            DepthGuard g(this, &expr_depth_, limits_.max_expr_depth, at, "expression");
            node = make(at.text == "-" ? ExprKind::kNeg : ExprKind::kPos, at);
            node->args.push_back(parse_unary(false));
            node = finish(std::move(node));
        } else {
            node = parse_primary();
        }
        node = parse_postfix(std::move(node));
        if (with_filter) node = parse_filter_expr(std::move(node));
        return node;
    }

    ExprPtr parse_primary() {
        const Token& t = cur();
        if (t.kind == Tok::kName) {
            const Token at = next();
            ExprPtr e = make(ExprKind::kLiteral, at);
            if (at.text == "true" || at.text == "True") {
                e->literal = Value::boolean(true);
            } else if (at.text == "false" || at.text == "False") {
                e->literal = Value::boolean(false);
            } else if (at.text == "none" || at.text == "None") {
                e->literal = Value::none();
            } else {
                e->kind = ExprKind::kName;
                e->name = at.text;
            }
            return finish(std::move(e));
        }
        if (t.kind == Tok::kString) {
            const Token at = next();
            std::string s = at.text;
            while (cur().kind == Tok::kString) s += next().text;
            ExprPtr e = make(ExprKind::kLiteral, at);
            e->literal = Value::string(std::move(s));
            return finish(std::move(e));
        }
        if (t.kind == Tok::kInt || t.kind == Tok::kFloat) {
            const Token at = next();
            ExprPtr e = make(ExprKind::kLiteral, at);
            e->literal = at.kind == Tok::kInt ? Value::integer(at.ival) : Value::number(at.fval);
            return finish(std::move(e));
        }
        if (is_op("(")) {
            next();
            if (is_op(")")) fail(cur(), "unsupported construct: tuples");
            ExprPtr e = parse_expression();
            if (is_op(",")) fail(cur(), "unsupported construct: tuples (use a list [a, b])");
            expect_op(")");
            return e;
        }
        if (is_op("[")) {
            const Token at = next();
            ExprPtr e = make(ExprKind::kList, at);
            while (!is_op("]")) {
                e->args.push_back(parse_expression());
                if (!is_op(",")) break;
                next();
            }
            expect_op("]");
            return finish(std::move(e));
        }
        if (is_op("{")) {
            const Token at = next();
            ExprPtr e = make(ExprKind::kDict, at);
            while (!is_op("}")) {
                e->args.push_back(parse_expression());
                expect_op(":");
                e->args.push_back(parse_expression());
                if (!is_op(",")) break;
                next();
            }
            expect_op("}");
            return finish(std::move(e));
        }
        unexpected("an expression");
    }

    ExprPtr parse_postfix(ExprPtr node) {
        while (true) {
            if (is_op(".")) {
                const Token at = next();
                if (cur().kind == Tok::kInt) {
                    ExprPtr key = make(ExprKind::kLiteral, cur());
                    key->literal = Value::integer(next().ival);
                    ExprPtr e = make(ExprKind::kItem, at);
                    e->args.push_back(std::move(node));
                    e->args.push_back(finish(std::move(key)));
                    node = finish(std::move(e));
                } else {
                    ExprPtr e = make(ExprKind::kAttr, at);
                    e->name = expect_name("an attribute name after '.'");
                    e->args.push_back(std::move(node));
                    node = finish(std::move(e));
                }
            } else if (is_op("[")) {
                node = parse_subscript(std::move(node));
            } else if (is_op("(")) {
                const Token at = cur();
                ExprPtr e = make(ExprKind::kCall, at);
                e->args.push_back(std::move(node));
                parse_call_args(e.get());
                node = finish(std::move(e));
            } else {
                return node;
            }
        }
    }

    ExprPtr parse_subscript(ExprPtr node) {
        const Token at = next();  // '['
        ExprPtr start, stop, step;
        bool slice = false;
        if (!is_op(":")) start = parse_expression();
        if (is_op(":")) {
            slice = true;
            next();
            if (!is_op("]") && !is_op(":")) stop = parse_expression();
            if (is_op(":")) {
                next();
                if (!is_op("]")) step = parse_expression();
            }
        }
        if (is_op(",")) fail(cur(), "unsupported construct: tuple subscripts");
        expect_op("]");
        ExprPtr e = make(slice ? ExprKind::kSlice : ExprKind::kItem, at);
        e->args.push_back(std::move(node));
        e->args.push_back(std::move(start));
        if (slice) {
            e->args.push_back(std::move(stop));
            e->args.push_back(std::move(step));
        }
        return finish(std::move(e));
    }

    void parse_call_args(Expr* e) {
        expect_op("(");
        while (!is_op(")")) {
            if (is_op("*") || is_op("**")) fail(cur(), "unsupported construct: *args / **kwargs");
            if (cur().kind == Tok::kName && peek().kind == Tok::kOp && peek().text == "=") {
                std::string key = next().text;
                next();
                e->kwargs.emplace_back(std::move(key), parse_expression());
            } else {
                if (!e->kwargs.empty()) fail(cur(), "positional argument after keyword argument");
                e->args.push_back(parse_expression());
            }
            if (!is_op(",")) break;
            next();
        }
        expect_op(")");
    }

    ExprPtr parse_filter_expr(ExprPtr node) {
        while (true) {
            if (is_op("|")) {
                const Token at = next();
                ExprPtr e = make(ExprKind::kFilter, at);
                const Token name_tok = cur();
                e->name = expect_name("a filter name after '|'");
                if (!kFilters.count(e->name)) fail(name_tok, "unknown filter '" + e->name + "'");
                e->args.push_back(std::move(node));
                if (is_op("(")) parse_call_args(e.get());
                node = finish(std::move(e));
            } else if (is_name("is")) {
                const Token at = next();
                ExprPtr e = make(ExprKind::kTest, at);
                if (is_name("not")) {
                    next();
                    e->negated = true;
                }
                const Token name_tok = cur();
                e->name = expect_name("a test name after 'is'");
                if (!kTests.count(e->name)) fail(name_tok, "unknown test '" + e->name + "'");
                e->args.push_back(std::move(node));
                if (is_op("(")) {
                    parse_call_args(e.get());
                } else if ((cur().kind == Tok::kName || cur().kind == Tok::kString ||
                            cur().kind == Tok::kInt || cur().kind == Tok::kFloat ||
                            is_op("[") || is_op("{")) &&
                           !(cur().kind == Tok::kName &&
                             (cur().text == "else" || cur().text == "or" || cur().text == "and" ||
                              cur().text == "if" || cur().text == "in" || cur().text == "not" ||
                              cur().text == "is"))) {
                    e->args.push_back(parse_postfix(parse_primary()));
                }
                node = finish(std::move(e));
            } else if (is_op("(")) {
                const Token at = cur();
                ExprPtr e = make(ExprKind::kCall, at);
                e->args.push_back(std::move(node));
                parse_call_args(e.get());
                node = finish(std::move(e));
            } else {
                return node;
            }
        }
    }

    const Lexer& lexer_;
    std::vector<Token> toks_;
    size_t i_ = 0;
    Limits limits_;
    int block_depth_ = 0, expr_depth_ = 0, loop_depth_ = 0;
};

}  // namespace

std::shared_ptr<const Node> parse_template(std::string_view source, const Options& options,
                                           const Limits& limits) {
    Lexer lexer(source, options);
    std::vector<Token> tokens = lexer.run();
    Parser parser(lexer, std::move(tokens), limits);
    return parser.run();
}

}  // namespace duality::server::jinja
