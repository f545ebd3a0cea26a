#include "loader/torch_pickle.h"

#include <cstring>
#include <memory>
#include <unordered_map>

namespace duality {
namespace {

constexpr size_t kMaxStack = 1u << 20;
constexpr size_t kMaxObjects = 1u << 24;
constexpr int64_t kMaxStorageElements = int64_t{1} << 40;  // 8 TiB of f64: no real checkpoint

// Every value lives in the Unpickler's arena and refers to others by pointer, so cycles and deep
// nesting cost nothing at destruction time.
struct Value {
    enum class Kind {
        kNone,
        kBool,
        kInt,
        kFloat,
        kString,
        kBytes,
        kTuple,
        kList,
        kDict,
        kGlobal,
        kStorage,
        kTensor,
        kMark
    };
    Kind kind = Kind::kNone;
    int64_t i = 0;
    double f = 0;
    std::string s;                                // string, bytes, or "module.name" for a global
    std::vector<Value*> items;                    // tuple, list
    std::vector<std::pair<Value*, Value*>> dict;  // dict, in insertion order
    PickledTensor tensor;                         // storage (key/dtype/numel) or tensor
};

const char* kind_name(Value::Kind k) {
    switch (k) {
        case Value::Kind::kNone:
            return "None";
        case Value::Kind::kBool:
            return "bool";
        case Value::Kind::kInt:
            return "int";
        case Value::Kind::kFloat:
            return "float";
        case Value::Kind::kString:
            return "str";
        case Value::Kind::kBytes:
            return "bytes";
        case Value::Kind::kTuple:
            return "tuple";
        case Value::Kind::kList:
            return "list";
        case Value::Kind::kDict:
            return "dict";
        case Value::Kind::kGlobal:
            return "global";
        case Value::Kind::kStorage:
            return "storage";
        case Value::Kind::kTensor:
            return "tensor";
        case Value::Kind::kMark:
            return "mark";
    }
    return "?";
}

bool storage_dtype(const std::string& global, DType* out) {
    static const std::pair<const char*, DType> kTable[] = {
        {"torch.FloatStorage", DType::kF32},     {"torch.HalfStorage", DType::kF16},
        {"torch.BFloat16Storage", DType::kBF16}, {"torch.IntStorage", DType::kI32},
        {"torch.LongStorage", DType::kI64},      {"torch.ByteStorage", DType::kU8},
    };
    for (const auto& [name, dtype] : kTable) {
        if (global == name) {
            *out = dtype;
            return true;
        }
    }
    return false;
}

bool allowed_global(const std::string& g) {
    DType unused;
    return g == "collections.OrderedDict" || g == "torch._utils._rebuild_tensor_v2" ||
           g == "torch._utils._rebuild_parameter" || storage_dtype(g, &unused);
}

class Unpickler {
  public:
    Unpickler(const uint8_t* data, size_t size, std::string source)
        : start_(data), p_(data), end_(data + size), source_(std::move(source)) {}

    Result<Value*> run() {
        while (true) {
            if (p_ >= end_) return fail("ends without a STOP opcode");
            const uint8_t op = *p_++;
            if (op == '.') {  // STOP
                if (stack_.size() != 1) return fail("STOP with a malformed stack");
                return stack_.back();
            }
            DUALITY_RETURN_IF_ERROR(step(op));
        }
    }

  private:
    Status fail_status(const std::string& what) const {
        return corrupt(source_ + ": pickle byte " + std::to_string(offset()) + ": " + what);
    }
    Result<Value*> fail(const std::string& what) const { return fail_status(what); }
    size_t offset() const { return static_cast<size_t>(p_ - start_); }

    Value* make(Value::Kind kind) {
        arena_.push_back(std::make_unique<Value>());
        arena_.back()->kind = kind;
        return arena_.back().get();
    }

    Status need(size_t n) const {
        if (static_cast<size_t>(end_ - p_) < n) return fail_status("truncated argument");
        return Status::ok();
    }
    template <typename T>
    Status read_le(T* out, size_t n = sizeof(T)) {
        DUALITY_RETURN_IF_ERROR(need(n));
        uint64_t v = 0;
        for (size_t k = 0; k < n; ++k) v |= static_cast<uint64_t>(p_[k]) << (8 * k);
        p_ += n;
        *out = static_cast<T>(v);
        return Status::ok();
    }
    Status read_line(std::string* out) {
        const uint8_t* nl = static_cast<const uint8_t*>(std::memchr(p_, '\n', end_ - p_));
        if (!nl) return fail_status("unterminated text argument");
        out->assign(reinterpret_cast<const char*>(p_), nl - p_);
        p_ = nl + 1;
        return Status::ok();
    }
    Status read_bytes(size_t n, std::string* out) {
        DUALITY_RETURN_IF_ERROR(need(n));
        out->assign(reinterpret_cast<const char*>(p_), n);
        p_ += n;
        return Status::ok();
    }

    Status push(Value* v) {
        if (stack_.size() >= kMaxStack || arena_.size() >= kMaxObjects)
            return fail_status("too many objects");
        stack_.push_back(v);
        return Status::ok();
    }
    Result<Value*> pop() {
        if (stack_.empty() || stack_.back()->kind == Value::Kind::kMark)
            return fail("stack underflow");
        Value* v = stack_.back();
        stack_.pop_back();
        return v;
    }
    // Pops everything above the topmost MARK.
    Result<std::vector<Value*>> pop_to_mark() {
        size_t k = stack_.size();
        while (k > 0 && stack_[k - 1]->kind != Value::Kind::kMark) --k;
        if (k == 0) return fail_status("no MARK on the stack");
        std::vector<Value*> items(stack_.begin() + k, stack_.end());
        stack_.resize(k - 1);
        return items;
    }
    Result<Value*> top() {
        if (stack_.empty() || stack_.back()->kind == Value::Kind::kMark)
            return fail("stack underflow");
        return stack_.back();
    }
    Status memo_put(uint32_t key) {
        DUALITY_ASSIGN_OR_RETURN(Value * v, top());
        if (memo_.size() >= kMaxObjects) return fail_status("memo too large");
        memo_[key] = v;
        return Status::ok();
    }
    Status memo_get(uint32_t key) {
        auto it = memo_.find(key);
        if (it == memo_.end()) return fail_status("memo key " + std::to_string(key) + " unset");
        return push(it->second);
    }
    Status push_global(const std::string& module, const std::string& name) {
        const std::string g = module + "." + name;
        if (!allowed_global(g)) {
            return unsupported(source_ + ": the pickle references `" + g +
                               "`, which is not part of a tensor state dict; refusing to load "
                               "it (duality never executes pickled code)");
        }
        Value* v = make(Value::Kind::kGlobal);
        v->s = g;
        return push(v);
    }
    Status set_items(Value* dict, const std::vector<Value*>& kv) {
        if (dict->kind != Value::Kind::kDict) return fail_status("SETITEM(S) on a non-dict");
        if (kv.size() % 2) return fail_status("odd number of items for SETITEMS");
        for (size_t k = 0; k < kv.size(); k += 2) dict->dict.emplace_back(kv[k], kv[k + 1]);
        return Status::ok();
    }

    static bool as_int(const Value* v, int64_t* out) {
        if (v->kind != Value::Kind::kInt) return false;
        *out = v->i;
        return true;
    }
    Result<std::vector<int64_t>> int_tuple(const Value* v, const char* what) {
        if (v->kind != Value::Kind::kTuple && v->kind != Value::Kind::kList)
            return fail_status(std::string(what) + " is a " + kind_name(v->kind) + ", not a tuple");
        std::vector<int64_t> out;
        for (const Value* e : v->items) {
            int64_t x;
            if (!as_int(e, &x) || x < 0)
                return fail_status(std::string(what) + " holds a non-integer or negative entry");
            out.push_back(x);
        }
        return out;
    }

    // Persistent id ('storage', <storage type>, key, location, numel).
    Result<Value*> load_persistent(Value* pid) {
        if (pid->kind != Value::Kind::kTuple || pid->items.size() != 5 ||
            pid->items[0]->kind != Value::Kind::kString || pid->items[0]->s != "storage")
            return fail("unsupported persistent id (expected a typed storage)");
        const Value* type = pid->items[1];
        DType dtype;
        if (type->kind != Value::Kind::kGlobal || !storage_dtype(type->s, &dtype))
            return fail("persistent id with an unsupported storage type");
        if (pid->items[2]->kind != Value::Kind::kString) return fail("storage key is not a str");
        int64_t numel;
        if (!as_int(pid->items[4], &numel) || numel < 0) return fail("bad storage size");
        // Bounded so that no byte count or offset computed from it can overflow (2^62 + 16 f32
        // elements once wrapped to 64 bytes and matched a 64-byte entry).
        if (numel > kMaxStorageElements)
            return fail("a storage of " + std::to_string(numel) + " elements is implausibly large");
        Value* v = make(Value::Kind::kStorage);
        v->tensor.storage_key = pid->items[2]->s;
        v->tensor.dtype = dtype;
        v->tensor.storage_numel = numel;
        return v;
    }

    Result<Value*> reduce(Value* callable, Value* args) {
        if (callable->kind != Value::Kind::kGlobal) return fail("REDUCE on a non-callable");
        if (args->kind != Value::Kind::kTuple) return fail("REDUCE arguments are not a tuple");
        const std::string& g = callable->s;
        if (g == "collections.OrderedDict") {
            if (!args->items.empty()) return fail("OrderedDict() with arguments");
            return make(Value::Kind::kDict);
        }
        if (g == "torch._utils._rebuild_parameter") {
            if (args->items.empty() || args->items[0]->kind != Value::Kind::kTensor)
                return fail("_rebuild_parameter without a tensor");
            return args->items[0];
        }
        if (g == "torch._utils._rebuild_tensor_v2") {
            // (storage, storage_offset, size, stride, requires_grad, backward_hooks[, metadata])
            if (args->items.size() < 4) return fail("_rebuild_tensor_v2 with too few arguments");
            const Value* storage = args->items[0];
            if (storage->kind != Value::Kind::kStorage)
                return fail("_rebuild_tensor_v2 without a storage");
            Value* t = make(Value::Kind::kTensor);
            t->tensor = storage->tensor;
            if (!as_int(args->items[1], &t->tensor.offset) || t->tensor.offset < 0)
                return fail("bad storage offset");
            DUALITY_ASSIGN_OR_RETURN(t->tensor.shape, int_tuple(args->items[2], "size"));
            DUALITY_ASSIGN_OR_RETURN(t->tensor.stride, int_tuple(args->items[3], "stride"));
            if (t->tensor.shape.size() != t->tensor.stride.size())
                return fail("size and stride differ in length");
            return t;
        }
        return fail("cannot call " + g);  // a storage type is not callable here
    }

    Status step(uint8_t op) {
        using K = Value::Kind;
        switch (op) {
            case 0x80: {  // PROTO
                uint8_t proto = 0;
                DUALITY_RETURN_IF_ERROR(read_le(&proto));
                if (proto < 2 || proto > 5)
                    return unsupported(source_ + ": pickle protocol " + std::to_string(proto));
                return Status::ok();
            }
            case 0x95: {  // FRAME: a length prefix we do not need
                uint64_t n = 0;
                return read_le(&n);
            }
            case '}':
                return push(make(K::kDict));
            case ']':
                return push(make(K::kList));
            case ')':
                return push(make(K::kTuple));
            case '(':
                return push(make(K::kMark));
            case 'N':
                return push(make(K::kNone));
            case 0x88:
            case 0x89: {  // NEWTRUE, NEWFALSE
                Value* v = make(K::kBool);
                v->i = op == 0x88;
                return push(v);
            }
            case 'K':
            case 'M':
            case 'J': {  // BININT1, BININT2, BININT
                Value* v = make(K::kInt);
                if (op == 'K') {
                    uint8_t x = 0;
                    DUALITY_RETURN_IF_ERROR(read_le(&x));
                    v->i = x;
                } else if (op == 'M') {
                    uint16_t x = 0;
                    DUALITY_RETURN_IF_ERROR(read_le(&x));
                    v->i = x;
                } else {
                    uint32_t x = 0;
                    DUALITY_RETURN_IF_ERROR(read_le(&x));
                    v->i = static_cast<int32_t>(x);
                }
                return push(v);
            }
            case 0x8a: {  // LONG1: little-endian two's complement, up to 8 bytes accepted
                uint8_t n = 0;
                DUALITY_RETURN_IF_ERROR(read_le(&n));
                if (n > 8) return fail_status("integer wider than 64 bits");
                DUALITY_RETURN_IF_ERROR(need(n));
                uint64_t x = 0;
                for (uint8_t k = 0; k < n; ++k) x |= static_cast<uint64_t>(p_[k]) << (8 * k);
                if (n > 0 && n < 8 && (p_[n - 1] & 0x80)) x |= ~uint64_t{0} << (8 * n);
                p_ += n;
                Value* v = make(K::kInt);
                v->i = static_cast<int64_t>(x);
                return push(v);
            }
            case 'G': {  // BINFLOAT, big-endian double
                DUALITY_RETURN_IF_ERROR(need(8));
                uint64_t bits = 0;
                for (int k = 0; k < 8; ++k) bits = (bits << 8) | p_[k];
                p_ += 8;
                Value* v = make(K::kFloat);
                std::memcpy(&v->f, &bits, sizeof bits);
                return push(v);
            }
            case 'X':
            case 0x8c:
            case 0x8d:
            case 'B':
            case 'C':
            case 0x8e: {  // BINUNICODE, SHORT_BINUNICODE, BINUNICODE8, BINBYTES, SHORT_BINBYTES,
                          // BINBYTES8
                uint64_t n = 0;
                if (op == 0x8c || op == 'C') {
                    uint8_t x = 0;
                    DUALITY_RETURN_IF_ERROR(read_le(&x));
                    n = x;
                } else if (op == 'X' || op == 'B') {
                    uint32_t x = 0;
                    DUALITY_RETURN_IF_ERROR(read_le(&x));
                    n = x;
                } else {
                    DUALITY_RETURN_IF_ERROR(read_le(&n));
                }
                Value* v = make((op == 'B' || op == 'C' || op == 0x8e) ? K::kBytes : K::kString);
                DUALITY_RETURN_IF_ERROR(read_bytes(n, &v->s));
                return push(v);
            }
            case 'q': {  // BINPUT
                uint8_t k = 0;
                DUALITY_RETURN_IF_ERROR(read_le(&k));
                return memo_put(k);
            }
            case 'r': {  // LONG_BINPUT
                uint32_t k = 0;
                DUALITY_RETURN_IF_ERROR(read_le(&k));
                return memo_put(k);
            }
            case 0x94:
                return memo_put(static_cast<uint32_t>(memo_.size()));  // MEMOIZE
            case 'h': {                                                // BINGET
                uint8_t k = 0;
                DUALITY_RETURN_IF_ERROR(read_le(&k));
                return memo_get(k);
            }
            case 'j': {  // LONG_BINGET
                uint32_t k = 0;
                DUALITY_RETURN_IF_ERROR(read_le(&k));
                return memo_get(k);
            }
            case 'c': {  // GLOBAL "module\nname\n"
                std::string module, name;
                DUALITY_RETURN_IF_ERROR(read_line(&module));
                DUALITY_RETURN_IF_ERROR(read_line(&name));
                return push_global(module, name);
            }
            case 0x93: {  // STACK_GLOBAL
                DUALITY_ASSIGN_OR_RETURN(Value * name, pop());
                DUALITY_ASSIGN_OR_RETURN(Value * module, pop());
                if (name->kind != K::kString || module->kind != K::kString)
                    return fail_status("STACK_GLOBAL needs two strings");
                return push_global(module->s, name->s);
            }
            case 't': {  // TUPLE
                DUALITY_ASSIGN_OR_RETURN(auto items, pop_to_mark());
                Value* v = make(K::kTuple);
                v->items = std::move(items);
                return push(v);
            }
            case 0x85:
            case 0x86:
            case 0x87: {  // TUPLE1..3
                const int n = op - 0x84;
                Value* v = make(K::kTuple);
                v->items.resize(n);
                for (int k = n - 1; k >= 0; --k) {
                    DUALITY_ASSIGN_OR_RETURN(v->items[k], pop());
                }
                return push(v);
            }
            case 'l': {  // LIST
                DUALITY_ASSIGN_OR_RETURN(auto items, pop_to_mark());
                Value* v = make(K::kList);
                v->items = std::move(items);
                return push(v);
            }
            case 'd': {  // DICT
                DUALITY_ASSIGN_OR_RETURN(auto items, pop_to_mark());
                Value* v = make(K::kDict);
                DUALITY_RETURN_IF_ERROR(set_items(v, items));
                return push(v);
            }
            case 'a': {  // APPEND
                DUALITY_ASSIGN_OR_RETURN(Value * item, pop());
                DUALITY_ASSIGN_OR_RETURN(Value * list, top());
                if (list->kind != K::kList) return fail_status("APPEND to a non-list");
                list->items.push_back(item);
                return Status::ok();
            }
            case 'e': {  // APPENDS
                DUALITY_ASSIGN_OR_RETURN(auto items, pop_to_mark());
                DUALITY_ASSIGN_OR_RETURN(Value * list, top());
                if (list->kind != K::kList) return fail_status("APPENDS to a non-list");
                list->items.insert(list->items.end(), items.begin(), items.end());
                return Status::ok();
            }
            case 's': {  // SETITEM
                DUALITY_ASSIGN_OR_RETURN(Value * value, pop());
                DUALITY_ASSIGN_OR_RETURN(Value * key, pop());
                DUALITY_ASSIGN_OR_RETURN(Value * dict, top());
                return set_items(dict, {key, value});
            }
            case 'u': {  // SETITEMS
                DUALITY_ASSIGN_OR_RETURN(auto items, pop_to_mark());
                DUALITY_ASSIGN_OR_RETURN(Value * dict, top());
                return set_items(dict, items);
            }
            case 'Q': {  // BINPERSID
                DUALITY_ASSIGN_OR_RETURN(Value * pid, pop());
                DUALITY_ASSIGN_OR_RETURN(Value * storage, load_persistent(pid));
                return push(storage);
            }
            case 'R': {  // REDUCE
                DUALITY_ASSIGN_OR_RETURN(Value * args, pop());
                DUALITY_ASSIGN_OR_RETURN(Value * callable, pop());
                DUALITY_ASSIGN_OR_RETURN(Value * result, reduce(callable, args));
                return push(result);
            }
            case 'b': {  // BUILD: only the state of an OrderedDict (its _metadata) is accepted
                DUALITY_ASSIGN_OR_RETURN(Value * state, pop());
                DUALITY_ASSIGN_OR_RETURN(Value * obj, top());
                if (obj->kind != K::kDict || (state->kind != K::kDict && state->kind != K::kNone))
                    return fail_status("BUILD on a " + std::string(kind_name(obj->kind)));
                return Status::ok();
            }
            case '0': {  // POP
                DUALITY_ASSIGN_OR_RETURN(Value * unused, pop());
                (void)unused;
                return Status::ok();
            }
            default: {
                char hex[8];
                std::snprintf(hex, sizeof hex, "0x%02x", op);
                return unsupported(source_ + ": pickle opcode " + hex + " at byte " +
                                   std::to_string(offset() - 1) +
                                   " is not used by tensor state dicts; refusing to load");
            }
        }
    }

    const uint8_t* start_;
    const uint8_t* p_;
    const uint8_t* end_;
    std::string source_;
    std::vector<std::unique_ptr<Value>> arena_;
    std::vector<Value*> stack_;
    std::unordered_map<uint32_t, Value*> memo_;
};

}  // namespace

Result<std::vector<PickledTensor>> unpickle_state_dict(const uint8_t* data, size_t size,
                                                       const std::string& source) {
    Unpickler unpickler(data, size, source);
    DUALITY_ASSIGN_OR_RETURN(Value * root, unpickler.run());
    if (root->kind != Value::Kind::kDict)
        return corrupt(source + ": the pickle holds a " + kind_name(root->kind) +
                       ", not a state dict");
    // Accept {"state_dict": {...}} and {"model": {...}} wrappers.
    for (const auto& [k, v] : root->dict) {
        if (k->kind == Value::Kind::kString && (k->s == "state_dict" || k->s == "model") &&
            v->kind == Value::Kind::kDict) {
            root = v;
            break;
        }
    }
    std::vector<PickledTensor> out;
    for (const auto& [k, v] : root->dict) {
        if (v->kind != Value::Kind::kTensor) continue;
        if (k->kind != Value::Kind::kString)
            return corrupt(source + ": a state-dict key is a " + kind_name(k->kind));
        PickledTensor t = v->tensor;
        t.name = k->s;
        // Only contiguous row-major tensors: the loader maps their bytes directly.
        int64_t expect = 1;
        for (size_t d = t.shape.size(); d-- > 0;) {
            if (t.shape[d] != 1 && t.stride[d] != expect)
                return unsupported(source + ": tensor \"" + t.name +
                                   "\" is not contiguous; re-save it with .contiguous()");
            if (t.shape[d] > (int64_t{1} << 40) ||
                expect > (int64_t{1} << 50) / std::max<int64_t>(1, t.shape[d]))
                return corrupt(source + ": tensor \"" + t.name + "\" has an absurd shape");
            expect *= t.shape[d];
        }
        if (t.offset > t.storage_numel || expect > t.storage_numel - t.offset)
            return corrupt(source + ": tensor \"" + t.name + "\" reaches past its storage");
        out.push_back(std::move(t));
    }
    return out;
}

}  // namespace duality
