// Invariant checks. A failed DUALITY_ASSERT is a bug in duality, never a user error: it prints
// the condition with file and line and aborts. User errors return a Status instead.
#pragma once

#include <cstdio>
#include <cstdlib>

#define DUALITY_ASSERT(cond)                                                              \
    do {                                                                                  \
        if (!(cond)) {                                                                    \
            std::fprintf(stderr, "duality: internal error: %s:%d: assertion `%s` failed\n", \
                         __FILE__, __LINE__, #cond);                                      \
            std::abort();                                                                 \
        }                                                                                 \
    } while (0)
