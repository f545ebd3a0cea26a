# CUDA compile settings (the architectures are chosen in CMakeLists.txt before enable_language).
# C++20 in kernels too. CMake 3.25 predates nvcc's C++20 support table: teach it the flag.
set(CMAKE_CUDA_STANDARD 20)
set(CMAKE_CUDA_STANDARD_REQUIRED ON)
set(CMAKE_CUDA20_STANDARD_COMPILE_OPTION "-std=c++20")
set(CMAKE_CUDA20_EXTENSION_COMPILE_OPTION "-std=c++20")
find_package(CUDAToolkit REQUIRED)
# Kernels: full optimization, line info for profilers, and constexpr host functions usable on the
# device. No fast-math: exp/log/rsqrt accuracy is part of the numerics policy (docs/numerics.md).
set(CMAKE_CUDA_FLAGS "${CMAKE_CUDA_FLAGS} -lineinfo --expt-relaxed-constexpr -Xcompiler=-Wall,-Wextra")
if(DUALITY_WERROR)
  set(CMAKE_CUDA_FLAGS "${CMAKE_CUDA_FLAGS} -Werror=all-warnings")
endif()
