// IVAE_HD marks math that runs on both host and device: the CPU kernels execute the very code
// the CUDA kernels run, so CPU tests exercise the device math.
#pragma once

#if defined(__CUDACC__) || defined(__HIPCC__)
#define IVAE_HD __host__ __device__ __forceinline__
#else
#define IVAE_HD inline __attribute__((always_inline))
#endif
