// The op-test registry: every CUDA op, on many shapes and dtypes, against its CPU twin.
//
// A case builds random inputs from a fixed seed, rounds them to the dtype the kernel reads (so
// both backends see identical values), runs the CPU reference op in f32 and the CUDA op, and
// returns each output of both. test_op_registry.cpp runs every registered case and checks every
// output against the tolerance of the case's dtype (docs/numerics.md).
#pragma once

#include <functional>
#include <string>
#include <vector>

#include "duality/types.h"

namespace duality::optest {

// An output passes when rel_l2(actual, expected) <= max_rel_l2 and every element satisfies
// |actual - expected| <= atol + rtol·|expected|.
struct Tolerance {
    double max_rel_l2 = 1e-5;
    double atol = 1e-5;
    double rtol = 1e-5;
};

// The policy of docs/numerics.md for a kernel whose inputs are already rounded to `act` and
// whose math is f32: only its own output rounding and summation order differ from the CPU.
Tolerance default_tolerance(DType act);

struct Output {
    std::string what;                 // "y", "final_state", ...
    std::vector<float> expected;      // CPU reference
    std::vector<float> actual;        // CUDA
};

struct OpCase {
    std::string name;  // "<op>/<shape>/<dtype>", unique; becomes the test's name
    Tolerance tol;
    std::function<std::vector<Output>()> run;
};

// Registers a case (call from a static initializer; see DUALITY_OP_CASES).
void register_case(OpCase c);
const std::vector<OpCase>& cases();

}  // namespace duality::optest

// Registers cases at static-initialization time: DUALITY_OP_CASES(conv) { register_case(...); }
#define DUALITY_OP_CASES(tag)                                                   \
    static void duality_register_##tag();                                       \
    [[maybe_unused]] static const bool duality_registered_##tag = [] {          \
        duality_register_##tag();                                               \
        return true;                                                            \
    }();                                                                        \
    static void duality_register_##tag()
