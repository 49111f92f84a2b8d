// A few activation rows times a bfloat16 or float32 weight, for decoding (tinyslm::float_mv).
//
// Legend: M activation rows (1 when decoding one token), N weight rows (out_features), K in_features.
//
// Decoding reads every weight once per token, so its speed is the memory bandwidth: a bfloat16
// weight should stream at the speed of memory. On CPUs without native bfloat16 dot products (AVX2)
// torch's bfloat16 matrix-vector product reaches about half of that (measured: 50% of the bound on
// a 1.1B model, 2 cores of an AMD EPYC), and its float32 one (MKL's) 8-11 GB/s, where this kernel
// reads 15-18. Here each weight row is widened to float32 in registers (a bfloat16 is the top half
// of a float32: shift left by 16; a float32 one is read as it is) and multiplied into float32
// accumulators: y[m, n] = sum_k x[m, k] * w[n, k], summed in float32 as torch does, returned in
// float32. Threads split the N rows.

#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <torch/library.h>

#include <cstdint>
#include <cstring>

#include "float_dot.h"
#include "threads.h"

namespace {

// x (M, K) float32, w (N, K) bfloat16 or float32 -> y (M, N) float32
at::Tensor float_mv(const at::Tensor& x, const at::Tensor& w) {
  TORCH_CHECK(x.dim() == 2 && x.scalar_type() == at::kFloat && x.is_contiguous(), "float_mv: x must be (M, K) contiguous float32");
  TORCH_CHECK(w.dim() == 2 && (w.scalar_type() == at::kBFloat16 || w.scalar_type() == at::kFloat) && w.is_contiguous(),
              "float_mv: w must be (N, K) contiguous bfloat16 or float32");
  TORCH_CHECK(x.size(1) == w.size(1), "float_mv: x has ", x.size(1), " columns, w ", w.size(1));
  const int64_t m = x.size(0), k = x.size(1), n = w.size(0);
  at::Tensor y = at::empty({m, n}, x.options());
  const float* xp = x.data_ptr<float>();
  float* yp = y.data_ptr<float>();
  if (w.scalar_type() == at::kFloat) {
    const float* wp = w.data_ptr<float>();
    tinyslm::parallel_for(n, 16, [&](int64_t n0, int64_t n1) { float_rows(wp, n0, n1, n, k, xp, m, yp); });
  } else {
    const uint16_t* wp = (const uint16_t*)w.data_ptr<at::BFloat16>();
    tinyslm::parallel_for(n, 16, [&](int64_t n0, int64_t n1) { float_rows(wp, n0, n1, n, k, xp, m, yp); });
  }
  return y;
}

// The kernels' own thread count (threads.h): n > 0, or 0 for torch's intra-op setting; returns the previous setting.
int64_t set_threads(int64_t n) {
  TORCH_CHECK(n >= 0, "set_threads: n must be >= 0, found ", n);
  return tinyslm::threads_setting().exchange((int)n);
}

}  // namespace

TORCH_LIBRARY_FRAGMENT(tinyslm, m) {
  m.def("float_mv(Tensor x, Tensor w) -> Tensor");
  m.def("set_threads(int n) -> int", &set_threads);  // no tensor: one kernel for every backend
}

TORCH_LIBRARY_IMPL(tinyslm, CPU, m) { m.impl("float_mv", &float_mv); }
