# Third-party libraries, all from the system's package manager (see scripts/setup.sh).
# Nothing is downloaded at build time.
find_package(OpenMP REQUIRED COMPONENTS CXX)
find_package(nlohmann_json 3.10 REQUIRED)
find_package(CLI11 REQUIRED)
find_package(PkgConfig REQUIRED)
# OpenBLAS built on OpenMP shares duality's OpenMP thread pool; the pthread build spins its own
# threads against ours and runs slower than one thread on a 2-core machine. Debian installs the
# variants side by side: prefer the OpenMP one (its directory also goes into the RPATH, so the
# binary loads it whatever the system alternative points to).
set(_openblas_openmp_pc "/usr/lib/${CMAKE_LIBRARY_ARCHITECTURE}/openblas-openmp/pkgconfig")
if(EXISTS "${_openblas_openmp_pc}/openblas.pc")
  set(ENV{PKG_CONFIG_PATH} "${_openblas_openmp_pc}:$ENV{PKG_CONFIG_PATH}")
else()
  message(WARNING "OpenBLAS (OpenMP build) not found: install libopenblas-openmp-dev for full speed")
endif()
pkg_check_modules(OPENBLAS REQUIRED IMPORTED_TARGET openblas)
pkg_check_modules(LIBZIP REQUIRED IMPORTED_TARGET libzip)
# The tokenizer: PCRE2 (UTF + UCP) for the pre-tokenizer regex, utf8proc for NFC.
pkg_check_modules(PCRE2 REQUIRED IMPORTED_TARGET libpcre2-8)
pkg_check_modules(UTF8PROC REQUIRED IMPORTED_TARGET libutf8proc)
# The HTTP server (Debian builds cpp-httplib as a shared library).
pkg_check_modules(HTTPLIB REQUIRED IMPORTED_TARGET cpp-httplib)
find_package(Threads REQUIRED)

add_library(duality_deps INTERFACE)
target_link_libraries(duality_deps INTERFACE
  OpenMP::OpenMP_CXX nlohmann_json::nlohmann_json PkgConfig::OPENBLAS PkgConfig::LIBZIP
  PkgConfig::PCRE2 PkgConfig::UTF8PROC PkgConfig::HTTPLIB Threads::Threads)
add_library(duality::deps ALIAS duality_deps)
