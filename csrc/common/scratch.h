// Scratch tensors for an op's temporaries. On the CPU they are carved from a buffer kept per
// thread and reused across calls: the ICNN op needs megabytes of temporaries per call, and at
// training sizes the page faults of fresh allocations cost more than the elementwise math.
// On other devices (CUDA has a caching allocator) they are plain at::empty.
#pragma once

#include <ATen/core/Tensor.h>

#include <vector>

namespace ivae {

class Scratch {
 public:
  // `sizes`: every temporary the caller will take, in order (so the buffer is sized once and
  // never reallocated while views are alive).
  Scratch(const at::TensorOptions& options, const std::vector<std::vector<int64_t>>& sizes);
  Scratch(const Scratch&) = delete;
  Scratch& operator=(const Scratch&) = delete;
  ~Scratch();

  // The next temporary; its sizes must be the next entry given to the constructor.
  at::Tensor take(at::IntArrayRef sizes);

 private:
  at::TensorOptions options_;
  bool pooled_ = false;
  char* base_ = nullptr;
  int64_t offset_ = 0;
  int64_t capacity_ = 0;
};

}  // namespace ivae
