// parse_id_list: the comma-separated token ids of flags such as --ids and --prompt-ids.
#include <algorithm>
#include <cerrno>
#include <climits>
#include <cstdio>
#include <cstdlib>

#include "tools/duality/commands.h"

namespace duality::cli {

bool parse_id_list(const std::string& flag, const std::string& text, std::vector<int32_t>* ids) {
    ids->clear();
    size_t pos = 0;
    while (pos <= text.size()) {
        const size_t comma = std::min(text.find(',', pos), text.size());
        const std::string item = text.substr(pos, comma - pos);
        char* end = nullptr;
        errno = 0;
        const long long v = std::strtoll(item.c_str(), &end, 10);
        if (item.empty() || *end != '\0' || errno == ERANGE || v < 0 || v > INT32_MAX) {
            std::fprintf(stderr, "duality: %s: \"%s\" is not a token id (expected e.g. 1,2,3)\n",
                         flag.c_str(), item.c_str());
            return false;
        }
        ids->push_back(static_cast<int32_t>(v));
        pos = comma + 1;
    }
    return true;
}

}  // namespace duality::cli
