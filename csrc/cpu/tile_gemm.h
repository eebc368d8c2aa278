// Register-tiled small GEMMs with a fused epilogue, for the ICNN ops' CPU kernels. Torch-free.
//
// Why not BLAS: the ICNN's GEMMs are skinny ([rows, H] x [H, H] with H ~ 64, per row block of a
// few dozen rows). MKL runs them at about half the rate of this loop nest here (53 against
// ~100 GFLOP/s on one core at 1024x64x64), each ATen call costs microseconds, and the results
// would go through memory before the elementwise work. Here a tile of kRows x kCols outputs is
// accumulated in registers over every product of a sum and handed to the caller's epilogue.
//
// Layout: a tile reads kCols consecutive columns of each B row, so B operands must have their
// column count padded to a multiple of kColumnAlign (the padding's contents only reach output
// columns the caller discards). A operands are read one element at a time: any strides.
#pragma once

#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <type_traits>

#include "cpu/cpu_clones.h"

namespace ivae::cpu::tile {

constexpr int64_t kColumnAlign = 8;

inline int64_t padded(int64_t n) { return (n + kColumnAlign - 1) / kColumnAlign * kColumnAlign; }

// One product of a sum: out(r, n) += Σ_{k < depth} a(r, k) b(k, n), with
// a(r, k) = a[r * a_row + k * a_step] and b(k, n) = b[k * ldb + n].
template <typename T>
struct Product {
  const T* a;
  int64_t a_row;
  int64_t a_step;
  const T* b;
  int64_t ldb;
  int64_t depth;
};

// Widest tile: four AVX-512 registers per row (64 floats, 32 doubles); 4 rows make 16 accumulators.
template <typename T>
constexpr int kWideCols = static_cast<int>(256 / sizeof(T));

// Rows and columns of an epilogue's accumulator tile (`auto& acc` in a generic lambda).
template <typename Acc>
constexpr int tile_rows = static_cast<int>(std::extent_v<std::remove_reference_t<Acc>, 0>);
template <typename Acc>
constexpr int tile_cols = static_cast<int>(std::extent_v<std::remove_reference_t<Acc>, 1>);

template <typename T, int kRows, int kCols>
IVAE_CLONE_INLINE void tile_sum(const Product<T>* products, int count, int64_t r0, int64_t n0,
                                T (&acc)[kRows][kCols]) {
  for (int r = 0; r < kRows; ++r) {
#pragma omp simd
    for (int n = 0; n < kCols; ++n) acc[r][n] = T(0);
  }
  for (int p = 0; p < count; ++p) {
    const Product<T>& q = products[p];
    const T* a = q.a + r0 * q.a_row;
    for (int64_t k = 0; k < q.depth; ++k) {
      const T* __restrict__ b_row = q.b + k * q.ldb + n0;
      for (int r = 0; r < kRows; ++r) {
        const T a_rk = a[r * q.a_row + k * q.a_step];
#pragma omp simd
        for (int n = 0; n < kCols; ++n) acc[r][n] += a_rk * b_row[n];
      }
    }
  }
}

// Tiles of kRows rows starting at r0, across `cols` columns (a multiple of kColumnAlign):
// the widest tiles first, then one each of the narrower widths the remainder needs.
template <typename T, int kRows, int kCols, typename Epilogue>
IVAE_CLONE_INLINE void column_tiles(const Product<T>* products, int count, int64_t r0, int64_t& n0,
                                    int64_t cols, Epilogue& epilogue, bool repeat) {
  while (n0 + kCols <= cols) {
    T acc[kRows][kCols];
    tile_sum<T, kRows, kCols>(products, count, r0, n0, acc);
    epilogue(r0, n0, acc);
    n0 += kCols;
    if (!repeat) break;
  }
}

template <typename T, int kRows, int kWide, typename Epilogue>
IVAE_CLONE_INLINE void row_tiles_from(const Product<T>* products, int count, int64_t r0, int64_t cols,
                                      Epilogue& epilogue) {
  int64_t n0 = 0;
  column_tiles<T, kRows, kWide>(products, count, r0, n0, cols, epilogue, true);
  // Then one each of the narrower widths the remainder needs (down to kColumnAlign).
  if constexpr (kWide / 2 >= kColumnAlign) {
    column_tiles<T, kRows, kWide / 2>(products, count, r0, n0, cols, epilogue, false);
  }
  if constexpr (kWide / 4 >= kColumnAlign) {
    column_tiles<T, kRows, kWide / 4>(products, count, r0, n0, cols, epilogue, false);
  }
  if constexpr (kWide / 8 >= kColumnAlign) {
    column_tiles<T, kRows, kWide / 8>(products, count, r0, n0, cols, epilogue, false);
  }
}

// Whether this machine has AVX-512's 32 vector registers of 64 bytes: a 4-row tile of kWideCols
// then keeps its 16 accumulators in registers. With AVX2's 16 registers of 32 bytes the same tile
// would need 32 and spilled to the stack in every multiply-add (seen in the x86-64-v3 clone's
// inner loop), so tiles of kNarrowBytes per row run there: 8 accumulators, which measured ~15%
// faster than 128-byte rows and ~15-20% faster than the spilling 256-byte ones for brenier_logdet
// and icnn_map (AMD EPYC, AVX2, 2 threads). Inside a clone the answer is fixed (target_clones picks
// the AVX-512 clone wherever it can run). Without clones the code is built for the baseline
// instruction set (16-byte registers on x86-64 and ARM): narrow tiles. The environment variable
// IVAE_CPU_TILE_WIDTH=wide|narrow, read once per process, forces one (tests run the AVX-512
// machines' tiles on AVX2 this way; any other value means "by the machine").
constexpr int kNarrowBytes = 64;

inline bool wide_vector_registers() {
  static const bool wide = [] {
    const char* forced = std::getenv("IVAE_CPU_TILE_WIDTH");
    if (forced != nullptr && std::strcmp(forced, "wide") == 0) return true;
    if (forced != nullptr && std::strcmp(forced, "narrow") == 0) return false;
#if IVAE_HAVE_CPU_CLONES
    return __builtin_cpu_supports("avx512f") != 0;
#else
    return false;
#endif
  }();
  return wide;
}

template <typename T, int kRows, typename Epilogue>
IVAE_CLONE_INLINE void row_tiles(const Product<T>* products, int count, int64_t r0, int64_t cols,
                                 Epilogue& epilogue) {
  if (wide_vector_registers()) {
    row_tiles_from<T, kRows, kWideCols<T>>(products, count, r0, cols, epilogue);
  } else {
    row_tiles_from<T, kRows, static_cast<int>(kNarrowBytes / sizeof(T))>(products, count, r0, cols, epilogue);
  }
}

// out = Σ_p a_p b_p over rows [0, rows) and columns [0, cols): epilogue(r0, n0, acc) receives
// each tile (acc[r][n] is output (r0 + r, n0 + n)) and decides what to store. cols must be a
// multiple of kColumnAlign; the epilogue must be inlined (mark lambdas always_inline) so that it
// is compiled for the calling clone's instruction set and the tile stays in registers.
template <typename T, typename Epilogue>
IVAE_CLONE_INLINE void gemm(int64_t rows, int64_t cols, const Product<T>* products, int count,
                            Epilogue&& epilogue) {
  int64_t r0 = 0;
  for (; r0 + 4 <= rows; r0 += 4) row_tiles<T, 4>(products, count, r0, cols, epilogue);
  for (; r0 < rows; ++r0) row_tiles<T, 1>(products, count, r0, cols, epilogue);
}

}  // namespace ivae::cpu::tile
