// A test hook (ember._C._index_math): see index_math.cpp.
#pragma once

#include <cstdint>
#include <map>
#include <string>

namespace ember::bindings {

std::map<std::string, int64_t> index_math(int64_t tokens, int64_t vocab, int64_t dim, int64_t block);

}  // namespace ember::bindings
