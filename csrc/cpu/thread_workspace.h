// A per-thread scratch buffer kept between calls, for the tiled CPU kernels: a fresh one would be
// zeroed and page-faulted in on every call (a measurable share of a small call). Torch-free.
#pragma once

#include <cstdint>
#include <vector>

namespace ivae::cpu {

// At least `elements` values of T, valid until this thread's next call with the same Owner and T.
// Owner (any type, e.g. a tag struct per kernel file) keeps kernels that call each other from
// sharing, and so resizing, one buffer: brenier_tiled's loop calls icnn_tiled's forward.
template <typename Owner, typename T>
T* thread_workspace(int64_t elements) {
  thread_local std::vector<T> workspace;
  if (static_cast<int64_t>(workspace.size()) < elements) workspace.resize(elements);
  return workspace.data();
}

}  // namespace ivae::cpu
