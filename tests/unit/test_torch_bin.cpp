#include <gtest/gtest.h>

#include <cstring>

#include "loader/torch_bin.h"
#include "loader/torch_pickle.h"
#include "test_util.h"

namespace duality {
namespace {

namespace pk = test::pk;

// {"w": FloatStorage "0" [2, 3], "tied": the same storage, "b": HalfStorage "1" [2]}
std::string state_dict_pickle() {
    std::string s = pk::proto2() + pk::global("collections", "OrderedDict") + ")" + pk::reduce();
    s += pk::mark();
    s += pk::str("w") + pk::tensor("FloatStorage", "0", 6, {2, 3});
    s += pk::str("tied") + pk::tensor("FloatStorage", "0", 6, {2, 3});
    s += pk::str("b") + pk::tensor("HalfStorage", "1", 2, {2});
    s += pk::str("step") + pk::int1(7);  // a non-tensor entry is skipped
    s += pk::setitems() + pk::stop();
    return s;
}

std::string archive(const std::string& pickle) {
    const std::string half_one_two("\x00\x3c\x00\x40", 4);
    return test::make_zip({{"archive/data.pkl", pickle},
                           {"archive/byteorder", "little"},
                           {"archive/data/0", test::f32_bytes({1, 2, 3, 4, 5, 6})},
                           {"archive/data/1", half_one_two},
                           {"archive/version", "3\n"}});
}

Status load(const std::string& bytes, TensorStore& store) {
    return add_torch_bin(reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size(),
                         "pytorch_model.bin", store);
}

TEST(TorchBin, LoadsAHandMadeStateDict) {
    TensorStore store;
    const std::string bytes = archive(state_dict_pickle());
    Status s = load(bytes, store);
    ASSERT_TRUE(s.is_ok()) << s.message();
    EXPECT_EQ(store.tensors().size(), 3u);
    const RawTensor* w = store.find("w");
    ASSERT_NE(w, nullptr);
    EXPECT_EQ(w->shape, (std::vector<int64_t>{2, 3}));
    float v[6];
    std::memcpy(v, w->data, sizeof v);
    EXPECT_EQ(v[4], 5.0f);
    EXPECT_EQ(store.find("tied")->data, w->data);  // shared storage
    EXPECT_EQ(store.find("b")->dtype, DType::kF16);
}

TEST(TorchBin, RefusesAMaliciousPickle) {
    // The classic: os.system("echo pwned") through GLOBAL + REDUCE. Nothing may run.
    const std::string evil = pk::proto2() + pk::global("os", "system") + pk::mark() +
                             pk::str("echo pwned > /tmp/duality-pwned") + pk::tuple() +
                             pk::reduce() + pk::stop();
    TensorStore store;
    Status s = load(archive(evil), store);
    ASSERT_FALSE(s.is_ok());
    EXPECT_NE(s.message().find("os.system"), std::string::npos) << s.message();
    EXPECT_NE(s.message().find("refusing"), std::string::npos) << s.message();
    EXPECT_FALSE(std::filesystem::exists("/tmp/duality-pwned"));

    for (const auto& [module, name] :
         std::vector<std::pair<std::string, std::string>>{{"builtins", "eval"},
                                                          {"builtins", "exec"},
                                                          {"subprocess", "Popen"},
                                                          {"torch", "load"},
                                                          {"__builtin__", "getattr"}}) {
        const std::string p = pk::proto2() + pk::global(module, name) + pk::stop();
        auto r = unpickle_state_dict(reinterpret_cast<const uint8_t*>(p.data()), p.size(), "p");
        ASSERT_FALSE(r.is_ok());
        EXPECT_NE(r.status().message().find(module + "." + name), std::string::npos);
    }
}

TEST(TorchBin, RejectsBrokenArchivesAndPickles) {
    TensorStore store;
    struct Case {
        std::string bytes;
        const char* must_mention;
    };
    const std::string good = state_dict_pickle();
    std::vector<Case> cases = {
        {"", "not a zip"},
        {"hello world", "not a zip"},
        {std::string("\x80\x02}q\x00.", 6), "legacy"},
        {test::make_zip({{"archive/version", "3"}}), "data.pkl"},
        {archive(good.substr(0, good.size() / 2)), "pickle"},
        {archive(pk::proto2() + "\xff" + pk::stop()), "opcode 0xff"},
        {archive(pk::proto2() + pk::tuple() + pk::stop()), "MARK"},
        {archive(pk::proto2() + "h\x05" + pk::stop()), "memo"},
        {archive(pk::proto2() + pk::int1(3) + pk::stop()), "not a state dict"},
        {test::make_zip({{"archive/data.pkl", good}, {"archive/data/0", "short"}}),
         "holds 5 bytes"},
        {test::make_zip({{"archive/data.pkl", good}}), "missing"},
        {test::make_zip({{"archive/data.pkl", good}, {"archive/byteorder", "big"}}), "big-endian"},
    };
    for (const auto& c : cases) {
        TensorStore fresh;
        Status s = load(c.bytes, fresh);
        ASSERT_FALSE(s.is_ok()) << c.must_mention;
        EXPECT_NE(s.message().find(c.must_mention), std::string::npos) << s.message();
    }
}

// A storage whose element count times the element size wraps around 2^64 (2^62 + 16 f32 elements
// make 64 bytes) beside a 64-byte entry: rejected, not read past the entry's end.
TEST(TorchBin, RejectsAStorageSizeThatOverflows) {
    const std::string small = pk::tensor("FloatStorage", "0", 16, {16});
    const std::string cpu_numel = pk::str("cpu") + pk::int1(16);
    std::string huge_numel = pk::str("cpu") + "\x8a\x08";  // LONG1, 8 bytes little-endian
    const uint64_t numel = (uint64_t{1} << 62) + 16;
    for (int i = 0; i < 8; ++i) huge_numel += static_cast<char>((numel >> (8 * i)) & 0xff);
    std::string t = small;
    ASSERT_NE(t.find(cpu_numel), std::string::npos);
    t.replace(t.find(cpu_numel), cpu_numel.size(), huge_numel);
    const std::string pickle = pk::proto2() + pk::global("collections", "OrderedDict") + ")" +
                               pk::reduce() + pk::mark() + pk::str("w") + t + pk::setitems() +
                               pk::stop();
    const std::string bytes =
        test::make_zip({{"archive/data.pkl", pickle}, {"archive/data/0", std::string(64, '\0')}});
    TensorStore store;
    Status s = load(bytes, store);
    ASSERT_FALSE(s.is_ok());
    EXPECT_NE(s.message().find("implausibly large"), std::string::npos) << s.message();
}

TEST(TorchBin, EveryTruncationIsRejected) {
    const std::string file = archive(state_dict_pickle());
    for (size_t n = 0; n < file.size(); n += 7) {
        TensorStore store;
        EXPECT_FALSE(load(file.substr(0, n), store).is_ok()) << "truncated to " << n;
    }
    const std::string p = state_dict_pickle();
    for (size_t n = 0; n < p.size(); ++n) {
        auto r = unpickle_state_dict(reinterpret_cast<const uint8_t*>(p.data()), n, "p");
        EXPECT_FALSE(r.is_ok()) << "pickle truncated to " << n;
    }
}

}  // namespace
}  // namespace duality
