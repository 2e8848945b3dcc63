// The registry of disabled kernels (see kernel_registry.h): one set, owned by this file's
// accessor, guarded by a mutex (ranks' threads and autograd's may dispatch at once).
#include "kernel_registry.h"

#include <mutex>
#include <set>

namespace ember {
namespace {

struct Registry {
  std::mutex mutex;
  std::set<std::string> names;
};

Registry& registry() {
  static Registry r;
  return r;
}

}  // namespace

bool kernel_disabled(const char* name) {
  Registry& r = registry();
  std::lock_guard<std::mutex> lock(r.mutex);
  return !r.names.empty() && r.names.count(name) != 0;
}

void set_disabled_kernels(const std::vector<std::string>& names) {
  Registry& r = registry();
  std::lock_guard<std::mutex> lock(r.mutex);
  r.names = std::set<std::string>(names.begin(), names.end());
}

std::vector<std::string> disabled_kernels() {
  Registry& r = registry();
  std::lock_guard<std::mutex> lock(r.mutex);
  return {r.names.begin(), r.names.end()};
}

}  // namespace ember
