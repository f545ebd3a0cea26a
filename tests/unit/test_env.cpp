// core/env.h: reading the DUALITY_* switches.
#include "core/env.h"

#include <gtest/gtest.h>
#include <stdlib.h>

namespace duality {
namespace {

constexpr const char* kName = "DUALITY_TEST_ENV_SWITCH";

TEST(Env, IsMatchesTheWholeValueOnly) {
    unsetenv(kName);
    EXPECT_FALSE(env_is(kName, "1"));
    setenv(kName, "1", 1);
    EXPECT_TRUE(env_is(kName, "1"));
    EXPECT_FALSE(env_is(kName, "0"));
    setenv(kName, "10", 1);
    EXPECT_FALSE(env_is(kName, "1"));
    setenv(kName, "", 1);
    EXPECT_FALSE(env_is(kName, "1"));
    EXPECT_TRUE(env_is(kName, ""));
    unsetenv(kName);
}

TEST(Env, IntTakesWholeNumbersElseTheFallback) {
    unsetenv(kName);
    EXPECT_EQ(env_int(kName, 7), 7);
    const std::pair<const char*, long long> cases[] = {
        {"4", 4}, {"-3", -3}, {"0", 0},
        {"", 7},  {"8x", 7},  {"x8", 7},
        {" ", 7}, {"4.5", 7}, {"99999999999999999999999", 7}};
    for (const auto& [value, want] : cases) {
        setenv(kName, value, 1);
        EXPECT_EQ(env_int(kName, 7), want) << '"' << value << '"';
    }
    unsetenv(kName);
}

}  // namespace
}  // namespace duality
