// Torch-free CPU loops of aggregate_log_q over one block of (code rows i) x (component range j).
// The components are stored transposed ([d, N] rows) so the innermost loop runs over contiguous
// j and vectorises for any d; four code rows share each load of a component. Each entry point
// is compiled per x86-64 level (cpu_clones.h). Math: math/aggregate_log_q.h.
#pragma once

#include <cstdint>

#include "math/aggregate_log_q.h"

namespace ivae::cpu {

// The N components of the mixture as [d, N] rows: entry (k, j) at k * components + j.
template <typename T>
struct ComponentTable {
  int64_t components, dim;
  const T* loc;        // μ_jk
  const T* inv_scale;  // e^-ℓ_jk
  const T* offset;     // -ℓ_jk - log_norm
};

// Streams components [j_begin, j_end) past `rows` codes and merges their logsumexps into
// joint[r] (over j of Σ_k log q) and, when not null, marginals[r * d + k] (over j of log q_k).
template <typename T>
struct AggregateForwardBlock {
  const T* z;  // [rows, d]
  int64_t rows, j_begin, j_end;
  math::LogSumExp<T>* joint;      // [rows]
  math::LogSumExp<T>* marginals;  // [rows, d] or null
};

// Adds the block's share of the gradients. The softmax weight of component j at code i is
// e^(log q(z_i | x_j) - log N - log_qz_i), recomputed from the forward's outputs; likewise per
// dimension. A null upstream gradient counts as zero; a null destination is not computed.
template <typename T>
struct AggregateBackwardBlock {
  const T* z;  // [rows, d]
  int64_t rows, j_begin, j_end;
  T log_components;           // log N
  const T* log_qz;            // [rows]
  const T* grad_log_qz;       // [rows] or null
  const T* log_qz_marginals;  // [rows, d] (read only with grad_marginals)
  const T* grad_marginals;    // [rows, d] or null
  T* grad_z;                  // [rows, d], added to; or null
  T* grad_loc_t;              // [d, N] (table layout), added to; or null
  T* grad_log_scale_t;        // [d, N], added to; or null
};

void aggregate_log_q_forward_block(math::ExpFamily family, const ComponentTable<float>& table,
                                   const AggregateForwardBlock<float>& block);
void aggregate_log_q_forward_block(math::ExpFamily family, const ComponentTable<double>& table,
                                   const AggregateForwardBlock<double>& block);
void aggregate_log_q_backward_block(math::ExpFamily family, const ComponentTable<float>& table,
                                    const AggregateBackwardBlock<float>& block);
void aggregate_log_q_backward_block(math::ExpFamily family, const ComponentTable<double>& table,
                                    const AggregateBackwardBlock<double>& block);

}  // namespace ivae::cpu
