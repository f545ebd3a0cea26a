# Warnings for duality's own targets; DUALITY_WERROR turns them into errors (CI does).
# DUALITY_SANITIZE adds ASan + UBSan to every target compiled after this file is included.
if(DUALITY_SANITIZE)
  add_compile_options(-fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined)
  add_link_options(-fsanitize=address,undefined)
endif()

function(duality_set_warnings target)
  target_compile_options(${target} PRIVATE
    $<$<COMPILE_LANGUAGE:CXX>:-Wall -Wextra -Wpedantic -Wshadow -Wnon-virtual-dtor -Wcast-align
                              -Wunused -Woverloaded-virtual -Wnull-dereference -Wformat=2>)
  # GCC 12 reports -Wrestrict false positives inside libstdc++ for std::string concatenation at
  # -O3 (GCC bug 105329); keep it a warning there rather than an error.
  if(CMAKE_CXX_COMPILER_ID STREQUAL "GNU" AND CMAKE_CXX_COMPILER_VERSION VERSION_LESS 13)
    target_compile_options(${target} PRIVATE $<$<COMPILE_LANGUAGE:CXX>:-Wno-restrict>)
  endif()
  if(DUALITY_WERROR)
    target_compile_options(${target} PRIVATE $<$<COMPILE_LANGUAGE:CXX>:-Werror>)
  endif()
endfunction()
