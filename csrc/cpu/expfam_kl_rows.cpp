#include "cpu/expfam_kl_rows.h"

#include "common/host_device.h"
#include "cpu/cpu_clones.h"

namespace ivae::cpu {
namespace {

using math::ExpFamily;

template <ExpFamily F, typename T>
IVAE_HD void forward_row(int64_t dim, const T* __restrict__ mq, const T* __restrict__ lq,
                         const T* __restrict__ mp, const T* __restrict__ lp, T* __restrict__ out,
                         T* __restrict__ row_sum) {
#pragma omp simd
  for (int64_t j = 0; j < dim; ++j) out[j] = math::expfam_kl_value<F>(mq[j], lq[j], mp[j], lp[j]);
  if (row_sum != nullptr) {
    T sum = 0;
#pragma omp simd reduction(+ : sum)
    for (int64_t j = 0; j < dim; ++j) sum += out[j];
    *row_sum = sum;
  }
}

template <ExpFamily F, typename T>
IVAE_HD void forward_impl(const KlRowsInput<T>& in, T* out, int64_t out_row_stride, T* row_sums) {
  const int64_t dim = in.dim;
  for (int64_t r = 0; r < in.rows; ++r) {
    forward_row<F>(dim, in.q_loc + r * dim, in.q_log_scale + r * dim,
                   in.p_loc + r * in.p_loc_row_stride, in.p_log_scale + r * in.p_log_scale_row_stride,
                   out + r * out_row_stride, row_sums != nullptr ? row_sums + r : nullptr);
  }
}

template <bool kAccumulate, typename T>
IVAE_HD void put(T* __restrict__ dst, int64_t j, T value) {
  if constexpr (kAccumulate) {
    dst[j] += value;
  } else {
    dst[j] = value;
  }
}

// One row. `omp simd` asserts what restrict says but GCC loses once this is inlined: the
// stores do not feed later loads, so the loop vectorises.
template <ExpFamily F, bool kPerElement, bool kAccPLoc, bool kAccPLogScale, typename T>
IVAE_HD void backward_row(int64_t dim, const T* __restrict__ mq, const T* __restrict__ lq,
                          const T* __restrict__ mp, const T* __restrict__ lp,
                          const T* __restrict__ upstream, T* __restrict__ gmq,
                          T* __restrict__ glq, T* __restrict__ gmp, T* __restrict__ glp) {
  const T row_upstream = kPerElement ? T(0) : upstream[0];
#pragma omp simd
  for (int64_t j = 0; j < dim; ++j) {
    const T u = kPerElement ? upstream[j] : row_upstream;
    const math::KlGrad<T> d = math::expfam_kl_grad<F>(mq[j], lq[j], mp[j], lp[j], u);
    gmq[j] = d.q_loc;
    glq[j] = d.q_log_scale;
    put<kAccPLoc>(gmp, j, d.p_loc);
    put<kAccPLogScale>(glp, j, d.p_log_scale);
  }
}

template <ExpFamily F, bool kPerElement, bool kAccPLoc, bool kAccPLogScale, typename T>
IVAE_HD void backward_impl(const KlRowsInput<T>& in, const KlRowsGrad<T>& g) {
  const int64_t dim = in.dim;
  for (int64_t r = 0; r < in.rows; ++r) {
    backward_row<F, kPerElement, kAccPLoc, kAccPLogScale>(
        dim, in.q_loc + r * dim, in.q_log_scale + r * dim, in.p_loc + r * in.p_loc_row_stride,
        in.p_log_scale + r * in.p_log_scale_row_stride, g.grad + (kPerElement ? r * dim : r),
        g.q_loc.data + r * g.q_loc.row_stride, g.q_log_scale.data + r * g.q_log_scale.row_stride,
        g.p_loc.data + r * g.p_loc.row_stride, g.p_log_scale.data + r * g.p_log_scale.row_stride);
  }
}

template <ExpFamily F, bool kPerElement, typename T>
IVAE_HD void backward_by_accumulation(const KlRowsInput<T>& in, const KlRowsGrad<T>& g) {
  const bool acc_loc = g.p_loc.accumulate;
  const bool acc_log_scale = g.p_log_scale.accumulate;
  if (acc_loc && acc_log_scale) {
    backward_impl<F, kPerElement, true, true>(in, g);
  } else if (acc_loc) {
    backward_impl<F, kPerElement, true, false>(in, g);
  } else if (acc_log_scale) {
    backward_impl<F, kPerElement, false, true>(in, g);
  } else {
    backward_impl<F, kPerElement, false, false>(in, g);
  }
}

template <ExpFamily F, typename T>
IVAE_HD void backward_by_family(const KlRowsInput<T>& in, const KlRowsGrad<T>& g) {
  if (g.grad_per_element) {
    backward_by_accumulation<F, true>(in, g);
  } else {
    backward_by_accumulation<F, false>(in, g);
  }
}

template <typename T>
IVAE_HD void forward_rows(ExpFamily family, const KlRowsInput<T>& in, T* out, int64_t out_row_stride,
                          T* row_sums) {
  if (family == ExpFamily::Gaussian) {
    forward_impl<ExpFamily::Gaussian>(in, out, out_row_stride, row_sums);
  } else {
    forward_impl<ExpFamily::Laplace>(in, out, out_row_stride, row_sums);
  }
}

template <typename T>
IVAE_HD void backward_rows(ExpFamily family, const KlRowsInput<T>& in, const KlRowsGrad<T>& g) {
  if (family == ExpFamily::Gaussian) {
    backward_by_family<ExpFamily::Gaussian>(in, g);
  } else {
    backward_by_family<ExpFamily::Laplace>(in, g);
  }
}

}  // namespace

IVAE_CPU_CLONES void expfam_kl_forward_rows(ExpFamily family, const KlRowsInput<float>& in,
                                            float* out, int64_t out_row_stride, float* row_sums) {
  forward_rows(family, in, out, out_row_stride, row_sums);
}

IVAE_CPU_CLONES void expfam_kl_forward_rows(ExpFamily family, const KlRowsInput<double>& in,
                                            double* out, int64_t out_row_stride, double* row_sums) {
  forward_rows(family, in, out, out_row_stride, row_sums);
}

IVAE_CPU_CLONES void expfam_kl_backward_rows(ExpFamily family, const KlRowsInput<float>& in,
                                             const KlRowsGrad<float>& grad) {
  backward_rows(family, in, grad);
}

IVAE_CPU_CLONES void expfam_kl_backward_rows(ExpFamily family, const KlRowsInput<double>& in,
                                             const KlRowsGrad<double>& grad) {
  backward_rows(family, in, grad);
}

}  // namespace ivae::cpu
