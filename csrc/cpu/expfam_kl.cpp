// CPU kernels of ivae_ext::expfam_kl and its backward: argument checks, batch parallelism and
// reductions over broadcast p; the per-element math runs in expfam_kl_rows.cpp.
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/empty_like.h>
#include <ATen/ops/sum.h>
#include <ATen/ops/zeros.h>
#include <torch/library.h>

#include <algorithm>
#include <array>
#include <vector>

#include "common/expfam_kl_args.h"
#include "cpu/expfam_kl_rows.h"

namespace ivae::cpu {
namespace {

constexpr int64_t kTaskElements = 16384;  // elements per task: amortises thread wake-up
constexpr int64_t kMaxChunkRows = 256;    // rows summed in T before a partial is written

int64_t rows_per_task(int64_t dim) {
  return std::clamp<int64_t>(kTaskElements / std::max<int64_t>(dim, 1), 1, kMaxChunkRows);
}

// A p parameter as the row loops read it. Values that are one per row ([B, 1]) or one in all
// (scalar) are spread into a row of `dim` copies, so the loops always see contiguous rows.
template <typename T>
class PRows {
 public:
  PRows(const at::Tensor& p, BroadcastLayout layout, int64_t dim)
      : data_(p.const_data_ptr<T>()), layout_(layout) {
    if (layout.col_stride == 0) spread_.assign(dim, data_[0]);
  }
  const T* row(int64_t i) {
    if (layout_.col_stride == 1) return data_ + i * layout_.row_stride;
    if (layout_.row_stride != 0) std::fill(spread_.begin(), spread_.end(), data_[i]);
    return spread_.data();
  }
  // Row stride within a block of rows that starts at row(i).
  int64_t block_row_stride() const { return layout_.col_stride == 1 ? layout_.row_stride : 0; }

 private:
  const T* data_;
  BroadcastLayout layout_;
  std::vector<T> spread_;
};

bool needs_row_by_row(const ExpfamKlArgs& a) {
  return a.p_loc_layout.one_per_row() || a.p_log_scale_layout.one_per_row();
}

template <typename T>
KlRowsInput<T> block_input(const ExpfamKlArgs& a, PRows<T>& p_loc, PRows<T>& p_log_scale,
                           int64_t first, int64_t rows) {
  return {rows,
          a.dim,
          a.q_loc.const_data_ptr<T>() + first * a.dim,
          a.q_log_scale.const_data_ptr<T>() + first * a.dim,
          p_loc.row(first),
          p_loc.block_row_stride(),
          p_log_scale.row(first),
          p_log_scale.block_row_stride()};
}

template <typename T>
void forward_kernel(const ExpfamKlArgs& a, at::Tensor& out) {
  const int64_t dim = a.dim;
  const int64_t block = needs_row_by_row(a) ? 1 : kMaxChunkRows;
  T* out_data = out.mutable_data_ptr<T>();
  at::parallel_for(0, a.batch, rows_per_task(dim), [&](int64_t begin, int64_t end) {
    PRows<T> p_loc(a.p_loc, a.p_loc_layout, dim);
    PRows<T> p_log_scale(a.p_log_scale, a.p_log_scale_layout, dim);
    std::vector<T> scratch(a.reduce_sum ? dim : 0);
    for (int64_t i = begin; i < end; i += block) {
      const auto in = block_input<T>(a, p_loc, p_log_scale, i, std::min(block, end - i));
      if (a.reduce_sum) {
        expfam_kl_forward_rows(a.family, in, scratch.data(), 0, out_data + i);
      } else {
        expfam_kl_forward_rows(a.family, in, out_data + i * dim, dim, nullptr);
      }
    }
  });
}

// Gradient of one p parameter, in p's shape: stored per element when p is [B, d], summed per
// chunk of rows into `partials` when p is shared by all rows, summed per row when p is [B, 1].
template <typename T>
struct PGrad {
  PGrad(bool wanted, const at::Tensor& p, BroadcastLayout layout, int64_t dim, int64_t chunks)
      : wanted(wanted), layout(layout), dim(dim) {
    if (!wanted) return;
    if (layout.shared_by_rows()) {
      partials = at::zeros({chunks, dim}, p.options());
    } else {
      result = at::empty(p.sizes(), p.options());
    }
  }
  // Where the row loops write for the block starting at `first`, in chunk `chunk`.
  GradRows<T> rows(int64_t first, int64_t chunk, T* scratch) const {
    if (!wanted || layout.one_per_row()) return {scratch, 0, false};
    if (layout.shared_by_rows()) return {partials.mutable_data_ptr<T>() + chunk * dim, 0, true};
    return {result.mutable_data_ptr<T>() + first * dim, dim, false};
  }
  // After row `i` was written to `scratch` (only [B, 1]).
  void finish_row(int64_t i, const T* scratch) const {
    if (!wanted || !layout.one_per_row()) return;
    T sum = 0;
    for (int64_t j = 0; j < dim; ++j) sum += scratch[j];
    result.mutable_data_ptr<T>()[i] = sum;
  }
  at::Tensor finish(const at::Tensor& p) {
    if (!wanted) return at::empty({0}, p.options());
    if (!layout.shared_by_rows()) return result;
    // Chunks are summed in double: the batch can be long.
    at::Tensor total = at::sum(partials, {0}, false, at::kDouble);
    if (layout.col_stride == 0) total = total.sum();
    return total.reshape(p.sizes()).to(p.scalar_type());
  }

  bool wanted;
  BroadcastLayout layout;
  int64_t dim;
  at::Tensor partials, result;
};

template <typename T>
std::array<at::Tensor, 4> backward_kernel(const at::Tensor& grad, const ExpfamKlArgs& a,
                                          std::array<bool, 4> mask) {
  const int64_t dim = a.dim;
  const int64_t chunk_rows = rows_per_task(dim);
  const int64_t chunks = (a.batch + chunk_rows - 1) / chunk_rows;
  at::Tensor g_q_loc = mask[0] ? at::empty_like(a.q_loc) : at::empty({0}, a.q_loc.options());
  at::Tensor g_q_log_scale = mask[1] ? at::empty_like(a.q_log_scale) : at::empty({0}, a.q_loc.options());
  PGrad<T> g_p_loc(mask[2], a.p_loc, a.p_loc_layout, dim, chunks);
  PGrad<T> g_p_log_scale(mask[3], a.p_log_scale, a.p_log_scale_layout, dim, chunks);
  const T* grad_data = grad.const_data_ptr<T>();
  const int64_t block = needs_row_by_row(a) ? 1 : chunk_rows;

  // Chunks are fixed by the batch size (not the thread count), so results are reproducible.
  at::parallel_for(0, chunks, 1, [&](int64_t chunk_begin, int64_t chunk_end) {
    PRows<T> p_loc(a.p_loc, a.p_loc_layout, dim);
    PRows<T> p_log_scale(a.p_log_scale, a.p_log_scale_layout, dim);
    std::vector<T> scratch(4 * dim);  // rows for gradients not stored per element
    for (int64_t chunk = chunk_begin; chunk < chunk_end; ++chunk) {
      const int64_t end = std::min(a.batch, (chunk + 1) * chunk_rows);
      for (int64_t i = chunk * chunk_rows; i < end; i += block) {
        const auto in = block_input<T>(a, p_loc, p_log_scale, i, std::min(block, end - i));
        KlRowsGrad<T> out;
        out.grad = grad_data + (a.reduce_sum ? i : i * dim);
        out.grad_per_element = !a.reduce_sum;
        out.q_loc = mask[0] ? GradRows<T>{g_q_loc.mutable_data_ptr<T>() + i * dim, dim, false}
                            : GradRows<T>{scratch.data(), 0, false};
        out.q_log_scale = mask[1]
                              ? GradRows<T>{g_q_log_scale.mutable_data_ptr<T>() + i * dim, dim, false}
                              : GradRows<T>{scratch.data() + dim, 0, false};
        out.p_loc = g_p_loc.rows(i, chunk, scratch.data() + 2 * dim);
        out.p_log_scale = g_p_log_scale.rows(i, chunk, scratch.data() + 3 * dim);
        expfam_kl_backward_rows(a.family, in, out);
        g_p_loc.finish_row(i, scratch.data() + 2 * dim);
        g_p_log_scale.finish_row(i, scratch.data() + 3 * dim);
      }
    }
  });
  return {g_q_loc, g_q_log_scale, g_p_loc.finish(a.p_loc), g_p_log_scale.finish(a.p_log_scale)};
}

// float16/bfloat16 compute through float32 copies on the CPU.
bool is_reduced_precision(const at::Tensor& t) {
  return t.scalar_type() == at::kHalf || t.scalar_type() == at::kBFloat16;
}

ExpfamKlArgs to_float(const ExpfamKlArgs& a) {
  ExpfamKlArgs f = a;
  f.q_loc = a.q_loc.to(at::kFloat);
  f.q_log_scale = a.q_log_scale.to(at::kFloat);
  f.p_loc = a.p_loc.to(at::kFloat);
  f.p_log_scale = a.p_log_scale.to(at::kFloat);
  return f;
}

at::Tensor expfam_kl_cpu(const at::Tensor& q_loc, const at::Tensor& q_log_scale,
                         const at::Tensor& p_loc, const at::Tensor& p_log_scale,
                         c10::string_view family, c10::string_view reduction) {
  const ExpfamKlArgs parsed =
      parse_expfam_kl_args(q_loc, q_log_scale, p_loc, p_log_scale, family, reduction);
  const bool reduced = is_reduced_precision(q_loc);
  const ExpfamKlArgs args = reduced ? to_float(parsed) : parsed;
  at::Tensor out = args.reduce_sum ? at::empty({args.batch}, args.q_loc.options())
                                   : at::empty({args.batch, args.dim}, args.q_loc.options());
  if (args.dim == 0) out.zero_();
  if (args.batch > 0 && args.dim > 0) {
    AT_DISPATCH_FLOATING_TYPES(out.scalar_type(), "expfam_kl_cpu",
                               [&] { forward_kernel<scalar_t>(args, out); });
  }
  return reduced ? out.to(q_loc.scalar_type()) : out;
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> expfam_kl_backward_cpu(
    const at::Tensor& grad, const at::Tensor& q_loc, const at::Tensor& q_log_scale,
    const at::Tensor& p_loc, const at::Tensor& p_log_scale, c10::string_view family,
    c10::string_view reduction, std::array<bool, 4> output_mask) {
  const ExpfamKlArgs parsed =
      parse_expfam_kl_args(q_loc, q_log_scale, p_loc, p_log_scale, family, reduction);
  at::Tensor grad_c = check_expfam_kl_grad(grad, parsed);
  const bool reduced = is_reduced_precision(q_loc);
  const ExpfamKlArgs args = reduced ? to_float(parsed) : parsed;
  if (reduced) grad_c = grad_c.to(at::kFloat);
  std::array<at::Tensor, 4> grads;
  AT_DISPATCH_FLOATING_TYPES(args.q_loc.scalar_type(), "expfam_kl_backward_cpu",
                             [&] { grads = backward_kernel<scalar_t>(grad_c, args, output_mask); });
  if (reduced) {
    for (auto& g : grads) g = g.to(q_loc.scalar_type());
  }
  return {grads[0], grads[1], grads[2], grads[3]};
}

}  // namespace

TORCH_LIBRARY_IMPL(ivae_ext, CPU, m) {
  m.impl("expfam_kl", &expfam_kl_cpu);
  m.impl("expfam_kl_backward", &expfam_kl_backward_cpu);
}

}  // namespace ivae::cpu
