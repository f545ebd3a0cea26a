#include <gtest/gtest.h>

#include <cstring>

#include "loader/safetensors.h"
#include "test_util.h"

namespace duality {
namespace {

using test::make_safetensors;
using test::StEntry;

std::string valid_file() {
    return make_safetensors({{"a", "F32", {2, 3}, test::f32_bytes({1, 2, 3, 4, 5, 6})},
                             {"b", "BF16", {2}, std::string("\x80\x3f\x00\x40", 4)}});
}

Result<std::vector<std::pair<std::string, RawTensor>>> parse(const std::string& s) {
    return parse_safetensors(reinterpret_cast<const uint8_t*>(s.data()), s.size(), "x.safetensors");
}

TEST(Safetensors, ParsesValidFile) {
    const std::string file = valid_file();
    auto r = parse(file);
    ASSERT_TRUE(r.is_ok()) << r.status().message();
    ASSERT_EQ(r->size(), 2u);
    const auto& [name, t] = (*r)[0];
    EXPECT_EQ(name, "a");
    EXPECT_EQ(t.dtype, DType::kF32);
    EXPECT_EQ(t.shape, (std::vector<int64_t>{2, 3}));
    float v[6];
    std::memcpy(v, t.data, sizeof v);
    EXPECT_EQ(v[5], 6.0f);
    EXPECT_EQ((*r)[1].second.dtype, DType::kBF16);
}

// Rewrites the header of a valid file (keeping the data section).
std::string with_header(const std::string& header, const std::string& body) {
    std::string out(8, '\0');
    const uint64_t n = header.size();
    for (int i = 0; i < 8; ++i) out[i] = static_cast<char>((n >> (8 * i)) & 0xff);
    return out + header + body;
}

struct Corruption {
    const char* name;
    std::string bytes;
    const char* must_mention;
};

std::vector<Corruption> corruptions() {
    const std::string body = test::f32_bytes({1, 2, 3, 4});
    std::string huge_len(8, '\xff');
    std::string past_end = with_header("{}", "");
    past_end[0] = 100;
    return {
        {"empty", "", "too short"},
        {"seven_bytes", std::string(7, '\0'), "too short"},
        {"header_length_huge", huge_len + "{}", "100 MB"},
        {"header_past_end", past_end, "past the end"},
        {"garbage_header", with_header("\x01\x02garbage", body), "invalid JSON"},
        {"header_not_object", with_header("[1,2]", body), "not a JSON object"},
        {"entry_not_object", with_header(R"({"a": 5})", body), "not an object"},
        {"missing_dtype", with_header(R"({"a": {"shape": [4], "data_offsets": [0, 16]}})", body),
         "dtype"},
        {"unknown_dtype",
         with_header(R"({"a": {"dtype": "F8_E4M3", "shape": [4], "data_offsets": [0, 4]}})", body),
         "F8_E4M3"},
        {"negative_shape",
         with_header(R"({"a": {"dtype": "F32", "shape": [-4], "data_offsets": [0, 16]}})", body),
         "shape"},
        {"shape_overflow",
         with_header(R"({"a": {"dtype": "F32", "shape": [4294967296, 4294967296, 4294967296],
                         "data_offsets": [0, 16]}})", body), "too large"},
        {"offsets_out_of_range",
         with_header(R"({"a": {"dtype": "F32", "shape": [4], "data_offsets": [0, 1600]}})", body),
         "outside"},
        {"offsets_reversed",
         with_header(R"({"a": {"dtype": "F32", "shape": [0], "data_offsets": [16, 0]}})", body),
         "outside"},
        {"size_mismatch",
         with_header(R"({"a": {"dtype": "F32", "shape": [3], "data_offsets": [0, 16]}})", body),
         "needs 12"},
        {"overlap",
         with_header(R"({"a": {"dtype": "F32", "shape": [3], "data_offsets": [0, 12]},
                         "b": {"dtype": "F32", "shape": [3], "data_offsets": [4, 16]}})", body),
         "overlap"},
        {"duplicate_tensor",
         with_header(R"({"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},
                         "a": {"dtype": "F32", "shape": [2], "data_offsets": [8, 16]}})", body),
         "duplicate"},
        {"offsets_not_pair",
         with_header(R"({"a": {"dtype": "F32", "shape": [4], "data_offsets": [0]}})", body),
         "data_offsets"},
    };
}

class SafetensorsCorrupt : public ::testing::TestWithParam<Corruption> {};

TEST_P(SafetensorsCorrupt, IsRejectedWithANamedError) {
    auto r = parse(GetParam().bytes);
    ASSERT_FALSE(r.is_ok());
    const std::string& m = r.status().message();
    EXPECT_NE(m.find("x.safetensors"), std::string::npos) << m;
    EXPECT_NE(m.find(GetParam().must_mention), std::string::npos) << m;
}

INSTANTIATE_TEST_SUITE_P(Safetensors, SafetensorsCorrupt, ::testing::ValuesIn(corruptions()),
                         [](const auto& param_info) { return std::string(param_info.param.name); });

TEST(Safetensors, EveryTruncationIsRejected) {
    const std::string file = valid_file();
    for (size_t n = 0; n < file.size(); ++n) {
        auto r = parse(file.substr(0, n));
        EXPECT_FALSE(r.is_ok()) << "truncated to " << n << " bytes";
    }
}

TEST(Safetensors, TensorStoreRejectsDuplicateAcrossFiles) {
    test::TempDir dir;
    test::write_file(dir.path() / "a.safetensors", valid_file());
    test::write_file(dir.path() / "b.safetensors", valid_file());
    TensorStore store;
    ASSERT_TRUE(add_safetensors_file(dir.path() / "a.safetensors", store).is_ok());
    Status s = add_safetensors_file(dir.path() / "b.safetensors", store);
    ASSERT_FALSE(s.is_ok());
    EXPECT_NE(s.message().find("appears twice"), std::string::npos) << s.message();
}

}  // namespace
}  // namespace duality
