// Launch helpers shared by the torch-free CUDA kernel headers: the launch macro (redefinable, so a
// CPU emulation of CUDA can launch the same kernels), grid sizing, and a grid-stride loop.
#pragma once

#include <cstdint>

#ifndef IVAE_LAUNCH_KERNEL
#define IVAE_LAUNCH_KERNEL(kernel, grid, block, shmem, stream, ...) \
  kernel<<<grid, block, shmem, stream>>>(__VA_ARGS__)
#endif

namespace ivae::cuda {

constexpr int kThreads = 256;
constexpr int64_t kMaxBlocks = 4096;

// Blocks of kThreads for n elements, capped (the kernels loop with IVAE_GRID_STRIDE).
inline unsigned blocks_for(int64_t n) {
  const int64_t blocks = (n + kThreads - 1) / kThreads;
  return static_cast<unsigned>(blocks < 1 ? 1 : (blocks < kMaxBlocks ? blocks : kMaxBlocks));
}

}  // namespace ivae::cuda

#define IVAE_GRID_STRIDE(i, n)                                                                   \
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < (n);        \
       i += static_cast<int64_t>(gridDim.x) * blockDim.x)
