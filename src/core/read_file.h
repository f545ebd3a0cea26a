// Reading a whole file into memory, with errors that name the path.
#pragma once

#include <filesystem>
#include <string>

#include "duality/status.h"

namespace duality {

// The bytes of `path`. A missing file is kNotFound ("PATH: no such file"); a directory is
// kInvalidArgument ("PATH: is a directory, not a file"); a file that cannot be opened or read is
// kIo with the system's reason. Pipes and other streams are read to their end.
Result<std::string> read_file(const std::filesystem::path& path);

}  // namespace duality
