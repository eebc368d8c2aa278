#include "common/scratch.h"

#include <ATen/ops/empty.h>
#include <ATen/ops/from_blob.h>
#include <c10/util/Exception.h>

namespace ivae {
namespace {

constexpr int64_t kAlignment = 64;
constexpr int64_t kMaxPooledBytes = int64_t{96} << 20;  // above this, allocate: GEMMs dominate anyway

struct ThreadBuffer {
  at::Tensor storage;  // bytes
  bool in_use = false;  // a nested op on this thread falls back to plain allocation
};
thread_local ThreadBuffer t_buffer;

int64_t aligned(int64_t bytes) { return (bytes + kAlignment - 1) / kAlignment * kAlignment; }

}  // namespace

Scratch::Scratch(const at::TensorOptions& options, const std::vector<std::vector<int64_t>>& sizes)
    : options_(options) {
  if (!options.device().is_cpu() || t_buffer.in_use) return;
  int64_t bytes = 0;
  for (const auto& s : sizes) {
    int64_t numel = 1;
    for (int64_t n : s) numel *= n;
    bytes += aligned(numel * static_cast<int64_t>(options.dtype().itemsize()));
  }
  if (bytes > kMaxPooledBytes) return;
  if (!t_buffer.storage.defined() || t_buffer.storage.numel() < bytes) {
    t_buffer.storage = at::empty({bytes + kAlignment}, at::TensorOptions().dtype(at::kByte));
  }
  const auto address = reinterpret_cast<uintptr_t>(t_buffer.storage.mutable_data_ptr());
  base_ = reinterpret_cast<char*>(aligned(static_cast<int64_t>(address)));
  capacity_ = bytes;
  pooled_ = true;
  t_buffer.in_use = true;
}

Scratch::~Scratch() {
  if (pooled_) t_buffer.in_use = false;
}

at::Tensor Scratch::take(at::IntArrayRef sizes) {
  if (!pooled_) return at::empty(sizes, options_);
  int64_t numel = 1;
  for (int64_t n : sizes) numel *= n;
  const int64_t bytes = aligned(numel * static_cast<int64_t>(options_.dtype().itemsize()));
  TORCH_INTERNAL_ASSERT(offset_ + bytes <= capacity_, "Scratch::take: more than was declared");
  at::Tensor view = at::from_blob(base_ + offset_, sizes, options_);
  offset_ += bytes;
  return view;
}

}  // namespace ivae
