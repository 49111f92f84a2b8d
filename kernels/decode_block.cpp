// One decoding step of a Llama- or Gemma-style block in one call (tinyslm::decode_block).
//
// Legend: B sequences (one new token each), D model width, H query heads, K KV heads (G = H / K query
// heads per KV head), hd head_dim, d rotated dims (<= hd), F FFN width, S cache slots, p the new
// token's position.
//
// It computes what layers/block.py's SequentialBlock computes with attention.py's Attention and
// ffn.py's GatedFFN for one new token, every matrix a GGMLLinear (quant/blocks.py) or a plain
// bfloat16 weight:
//     h       = rmsnorm(x) * w_attn                                   (B, D)
//     q, k, v = h Wq^T [+ bq], h Wk^T [+ bk], h Wv^T [+ bv]           (B, H*hd), (B, K*hd) x 2
//     q, k    = per-head rmsnorm (QK-norm, when given), then RoPE (split-half) at position p
//     cache[b, :, slot] = k, v             (slot p; p mod W in a sliding window's ring of W slots)
//     s_j     = q_h . k_j * scale  [-> cap * tanh(s_j / cap)]  over the n_keys slots filled
//     a_h     = softmax_j(s_j) . v_j, k_j and v_j of KV head h / G               (B, H*hd)
//     x       = x + [post-norm](a Wo^T)
//     h       = rmsnorm(x) * w_ffn
//     x       = x + [post-norm]((act(h Wg^T) * (h Wu^T)) Wd^T)         (B, F) -> (B, D), act SiLU or GELU-tanh
// A Gemma "(1 + w)" norm is the same rmsnorm with weight 1 + w (the caller passes it so); the bracketed
// parts are Gemma-2/3's (sandwich norms, soft-capped scores).
//
// Why a whole block in C++: decoding a small model is bound by the module path's ~40 operator calls
// per layer (each a dispatch, an allocation, a fork and join of the thread pool, for microseconds of
// work), not by its weights (quant/decode_block.py has the figures). Here a layer is one call and one
// parallel region: the threads split each product's groups of 8 weight rows (as ggml_mm does) and
// the attention's heads, and meet at a barrier between the steps above. The products are ggml_mm's
// (the same 8-bit activations, the same integer sums) or bf16_mv's; the norms, RoPE, softmax and
// sums of attention are float32 like torch's, summed in another order, so the results agree to
// float32 rounding, not bit for bit (tests/test_decode_block.py bounds the difference). A bfloat16
// model's input and cache are read as bfloat16, everything between computed in float32, and the
// output and the new key and value rounded to bfloat16 (to nearest even, as torch rounds).

#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty_like.h>
#include <omp.h>
#include <torch/library.h>

#include <cmath>
#include <type_traits>
#include <vector>

#include "bf16_dot.h"
#include "ggml_blocks.h"

namespace {

constexpr int64_t BF16 = 5;  // a matrix kind beside ggml_mm's 0..4: a plain (N, K) bfloat16 weight

struct Matrix {  // one layer's weight: ggml_mm's packed blocks (kinds 0..4) or bfloat16 rows (BF16); N rows of K values
  const void* data;
  int64_t kind, n, k;
};

// Thread t's share [lo, hi) of n items split among nt threads.
inline void share(int64_t n, int t, int nt, int64_t* lo, int64_t* hi) {
  *lo = n * t / nt;
  *hi = n * (t + 1) / nt;
}

// y_j = x W_j^T for matrices with the same input (x: B float rows, xq: the same rows as 8-bit blocks): this
// thread's share of all their groups of 8 rows.
void products(const Matrix* w, int count, const float* x, const std::vector<const ActBlock*>& xq, float* const* y,
              int t, int nt) {
  int64_t total = 0;
  for (int j = 0; j < count; ++j) total += (w[j].n + ROWS - 1) / ROWS;
  int64_t lo, hi, first = 0;  // first: index of matrix j's group 0 in the list of all groups
  share(total, t, nt, &lo, &hi);
  for (int j = 0; j < count; ++j) {
    const int64_t groups = (w[j].n + ROWS - 1) / ROWS, g0 = std::max(lo - first, (int64_t)0),
                  g1 = std::min(hi - first, groups);
    if (g0 < g1 && w[j].kind == BF16)
      bf16_rows((const uint16_t*)w[j].data, g0 * ROWS, std::min(g1 * ROWS, w[j].n), w[j].n, w[j].k, x,
                (int64_t)xq.size(), y[j]);
    else if (g0 < g1)
      with_kind(w[j].kind, [&](auto kind_c) {
        mm_groups<decltype(kind_c)::value>((const uint8_t*)w[j].data, g0, g1, w[j].k / QK, xq, y[j], w[j].n);
      });
    first += groups;
  }
}

inline float dot(const float* a, const float* b, int64_t n) {
  int64_t i = 0;
  float sum = 0.f;
#ifdef TINYSLM_AVX2
  __m256 acc = _mm256_setzero_ps();
  for (; i + 8 <= n; i += 8) acc = _mm256_fmadd_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i), acc);
  sum = tinyslm::hsum(acc);
#endif
  for (; i < n; ++i) sum += a[i] * b[i];
  return sum;
}

// y += a * x over n values, x float32 or bfloat16 (widened in registers).
inline void axpy(float a, const float* x, float* y, int64_t n) {
  for (int64_t i = 0; i < n; ++i) y[i] += a * x[i];  // (the compiler vectorizes this loop)
}

inline void axpy(float a, const uint16_t* x, float* y, int64_t n) {
  int64_t i = 0;
#ifdef TINYSLM_AVX2
  const __m256 av = _mm256_set1_ps(a);
  for (; i + 8 <= n; i += 8) _mm256_storeu_ps(y + i, _mm256_fmadd_ps(av, widen(x + i), _mm256_loadu_ps(y + i)));
#endif
  for (; i < n; ++i) y[i] += a * bf16_to_f32(x[i]);
}

// out = w * (x / sqrt(mean(x^2) + eps)), as norms.py's RMSNorm (float32).
void rmsnorm(const float* x, const float* w, int64_t n, double eps, float* out) {
  double squares = 0.0;
  for (int64_t i = 0; i < n; ++i) squares += (double)x[i] * x[i];
  const float r = 1.f / std::sqrt((float)(squares / (double)n) + (float)eps);
  for (int64_t i = 0; i < n; ++i) out[i] = w[i] * (x[i] * r);
}

// RoPE, split-half layout (rope.py's apply_rope): pairs (i, i + d/2) of the first d dims rotate by cos/sin (d,).
void rope(float* x, const float* cos, const float* sin, int64_t d) {
  for (int64_t i = 0; i < d / 2; ++i) {
    const float a = x[i], b = x[i + d / 2];
    x[i] = a * cos[i] - b * sin[i];
    x[i + d / 2] = b * cos[i + d / 2] + a * sin[i + d / 2];
  }
}

// The activations' and cache's element type: float32, or bfloat16 held as its 16 bits (a bfloat16 model).
inline float to_float(float v) { return v; }
inline float to_float(uint16_t v) { return bf16_to_f32(v); }
template <typename T>
inline T from_float(float v) {
  if constexpr (std::is_same_v<T, float>) return v;
  else return f32_to_bf16(v);
}

inline float activation(int64_t act, float g) {  // ffn.py's ACTIVATIONS: 0 silu, 1 gelu_tanh (torch's formulas)
  if (act == 0) return g / (1.f + std::exp(-g));
  return 0.5f * g * (1.f + std::tanh(0.7978845608028654f * (g + 0.044715f * g * g * g)));
}

// The block for x (B, D) and caches (B, K, S, hd) of element type T; everything between in float32 (see the top).
template <typename T>
void block_step(const T* xp, T* outp, T* kc, T* vc, const Matrix* w, const float* attn_norm, const float* ffn_norm,
                const float* const* post_norm, const float* const* bias, const float* const* qk_norm, const float* cp,
                const float* sp, int64_t bsz, int64_t dim, int64_t n_heads, int64_t n_kv, int64_t hd, int64_t d_rot,
                int64_t slots, int64_t slot, int64_t n_keys, double eps, double qk_eps, float scale, float softcap,
                int64_t act_kind) {
  const int64_t q_width = n_heads * hd, kv_width = n_kv * hd, group = n_heads / n_kv, ffn = w[4].n;
  std::vector<float> x(bsz * dim), h(bsz * std::max(dim, ffn)), q(bsz * q_width), k(bsz * kv_width), v(bsz * kv_width);
  std::vector<float> att(bsz * q_width), mid(bsz * dim), gate(bsz * ffn), up(bsz * ffn), down(bsz * dim);
  std::vector<ActBlock> act(bsz * std::max({dim, ffn, q_width}) / QK);
  std::vector<const ActBlock*> act_rows(bsz);
  auto quantize = [&](const float* rows_in, int64_t width) {  // (B, width) -> act, B rows of width / 32 blocks
    for (int64_t b = 0; b < bsz; ++b) {
      quantize_row(rows_in + b * width, width, &act[b * width / QK]);
      act_rows[b] = &act[b * width / QK];
    }
  };
  const int nt = at::get_num_threads();
  std::vector<float> scores(nt * n_keys);

#pragma omp parallel num_threads(nt)
  {
    const int t = omp_get_thread_num(), team = omp_get_num_threads();
    int64_t lo, hi;
#pragma omp single
    {
      for (int64_t i = 0; i < bsz * dim; ++i) x[i] = to_float(xp[i]);
      for (int64_t b = 0; b < bsz; ++b) rmsnorm(&x[b * dim], attn_norm, dim, eps, &h[b * dim]);
      quantize(h.data(), dim);
    }
    float* qkv_out[3] = {q.data(), k.data(), v.data()};
    products(w, 3, h.data(), act_rows, qkv_out, t, team);
#pragma omp barrier
    // Per (sequence, head) of q then of k: bias, QK-norm, RoPE; k and v go into the cache at p.
    share(bsz * (n_heads + n_kv), t, team, &lo, &hi);
    for (int64_t i = lo; i < hi; ++i) {
      const int64_t b = i / (n_heads + n_kv), head = i % (n_heads + n_kv);
      const bool is_q = head < n_heads;
      const int64_t kv_head = head - n_heads;
      float* vec = is_q ? &q[b * q_width + head * hd] : &k[b * kv_width + kv_head * hd];
      if (bias[0]) {
        const float* add = bias[is_q ? 0 : 1] + (is_q ? head : kv_head) * hd;
        for (int64_t e = 0; e < hd; ++e) vec[e] += add[e];
      }
      if (qk_norm[0]) rmsnorm(vec, qk_norm[is_q ? 0 : 1], hd, qk_eps, vec);
      rope(vec, cp, sp, d_rot);
      if (!is_q) {
        float* vv = &v[b * kv_width + kv_head * hd];
        if (bias[0])
          for (int64_t e = 0; e < hd; ++e) vv[e] += bias[2][kv_head * hd + e];
        const int64_t at = ((b * n_kv + kv_head) * slots + slot) * hd;
        for (int64_t e = 0; e < hd; ++e) kc[at + e] = from_float<T>(vec[e]), vc[at + e] = from_float<T>(vv[e]);
      }
    }
#pragma omp barrier
    // Attention, per (sequence, query head), over the n_keys filled slots of its KV head.
    share(bsz * n_heads, t, team, &lo, &hi);
    float* s = &scores[t * n_keys];
    for (int64_t i = lo; i < hi; ++i) {
      const int64_t b = i / n_heads, head = i % n_heads;
      const float* qh = &q[b * q_width + head * hd];
      const T* keys = kc + (b * n_kv + head / group) * slots * hd;  // (S, hd)
      const T* values = vc + (b * n_kv + head / group) * slots * hd;
      float top = -INFINITY, total = 0.f;
      for (int64_t j = 0; j < n_keys; ++j) {
        s[j] = dot(keys + j * hd, qh, hd) * scale;  // float32 keys, or bfloat16 ones widened in registers
        if (softcap > 0.f) s[j] = std::tanh(s[j] / softcap) * softcap;
        top = std::max(top, s[j]);
      }
      for (int64_t j = 0; j < n_keys; ++j) total += s[j] = std::exp(s[j] - top);
      float* a = &att[b * q_width + head * hd];
      std::fill(a, a + hd, 0.f);
      for (int64_t j = 0; j < n_keys; ++j) axpy(s[j] / total, values + j * hd, a, hd);
    }
#pragma omp barrier
#pragma omp single
    quantize(att.data(), q_width);
    float* o_out[1] = {mid.data()};
    products(w + 3, 1, att.data(), act_rows, o_out, t, team);
#pragma omp barrier
#pragma omp single
    {
      for (int64_t b = 0; b < bsz && post_norm[0]; ++b) rmsnorm(&mid[b * dim], post_norm[0], dim, eps, &mid[b * dim]);
      for (int64_t i = 0; i < bsz * dim; ++i) mid[i] += x[i];  // x + attention
      for (int64_t b = 0; b < bsz; ++b) rmsnorm(&mid[b * dim], ffn_norm, dim, eps, &h[b * dim]);
      quantize(h.data(), dim);
    }
    float* gu_out[2] = {gate.data(), up.data()};
    products(w + 4, 2, h.data(), act_rows, gu_out, t, team);
#pragma omp barrier
#pragma omp single
    {
      for (int64_t i = 0; i < bsz * ffn; ++i) h[i] = activation(act_kind, gate[i]) * up[i];  // act(g) * u
      quantize(h.data(), ffn);
    }
    float* down_out[1] = {down.data()};
    products(w + 6, 1, h.data(), act_rows, down_out, t, team);
#pragma omp barrier
    if (post_norm[1]) {
#pragma omp single
      for (int64_t b = 0; b < bsz; ++b) rmsnorm(&down[b * dim], post_norm[1], dim, eps, &down[b * dim]);
    }
    share(bsz * dim, t, team, &lo, &hi);
    for (int64_t i = lo; i < hi; ++i) outp[i] = from_float<T>(mid[i] + down[i]);  // + the residual
  }
}

// weights: Wq, Wk, Wv, Wo, Wg, Wu, Wd: GGMLLinear.packed (kinds 0..4) or a (N, K) bfloat16 weight (kind 5);
// rows: their N. x and the caches: float32, or bfloat16 (a bfloat16 model); norm weights, biases: float32.
// qkv_bias: empty or (bq, bk, bv); qk_norm: empty or (q_norm weight, k_norm weight) over hd.
at::Tensor decode_block(const at::Tensor& x, const at::Tensor& attn_norm, const at::Tensor& ffn_norm,
                        at::TensorList post_norms, at::TensorList weights, at::IntArrayRef kinds, at::IntArrayRef rows,
                        at::TensorList qkv_bias, at::TensorList qk_norm, const at::Tensor& cos, const at::Tensor& sin,
                        const at::Tensor& k_cache, const at::Tensor& v_cache, int64_t slot, int64_t n_keys, double eps,
                        double qk_eps, double scale, double softcap, int64_t act) {
  const char* op = "decode_block";
  const auto dtype = x.scalar_type();
  TORCH_CHECK(x.dim() == 2 && (dtype == at::kFloat || dtype == at::kBFloat16) && x.is_contiguous(), op,
              ": x must be (B, D) contiguous float32 or bfloat16");
  TORCH_CHECK(weights.size() == 7 && kinds.size() == 7 && rows.size() == 7, op, ": 7 matrices (q, k, v, o, gate, up, down)");
  TORCH_CHECK(k_cache.dim() == 4 && k_cache.scalar_type() == dtype && k_cache.is_contiguous() &&
                  v_cache.sizes() == k_cache.sizes() && v_cache.scalar_type() == dtype && v_cache.is_contiguous(),
              op, ": the caches must be (B, K, S, hd) contiguous, both the same shape, of x's dtype");
  const int64_t bsz = x.size(0), dim = x.size(1), n_kv = k_cache.size(1), slots = k_cache.size(2), hd = k_cache.size(3);
  const int64_t n_heads = rows[0] / hd, ffn = rows[4], d_rot = cos.numel();
  TORCH_CHECK(k_cache.size(0) == bsz && slot >= 0 && slot < n_keys && n_keys <= slots, op, ": slot ", slot, " of ", n_keys,
              " keys outside a cache of ", slots, " slots");
  TORCH_CHECK(act == 0 || act == 1, op, ": act must be 0 (silu) or 1 (gelu_tanh), found ", act);
  TORCH_CHECK(rows[0] == n_heads * hd && n_heads % n_kv == 0 && rows[1] == n_kv * hd && rows[2] == n_kv * hd &&
                  rows[3] == dim && rows[5] == ffn && rows[6] == dim,
              op, ": the matrices' shapes do not make a block of width ", dim);
  TORCH_CHECK(d_rot <= hd && d_rot % 2 == 0 && sin.numel() == d_rot && cos.is_contiguous() && sin.is_contiguous() &&
                  cos.scalar_type() == at::kFloat && sin.scalar_type() == at::kFloat,
              op, ": cos and sin must be (d,) contiguous float32 with d <= head_dim, even");
  TORCH_CHECK(qkv_bias.empty() || qkv_bias.size() == 3, op, ": qkv_bias is empty or (bq, bk, bv)");
  TORCH_CHECK(qk_norm.empty() || qk_norm.size() == 2, op, ": qk_norm is empty or (q weight, k weight)");
  const int64_t input[7] = {dim, dim, dim, n_heads * hd, dim, dim, ffn};
  Matrix w[7];
  for (int j = 0; j < 7; ++j) {
    if (kinds[j] == BF16) {
      TORCH_CHECK(weights[j].dim() == 2 && weights[j].scalar_type() == at::kBFloat16 && weights[j].is_contiguous() &&
                      weights[j].size(0) == rows[j] && weights[j].size(1) == input[j],
                  op, ": matrix ", j, " must be (", rows[j], ", ", input[j], ") contiguous bfloat16");
    } else {
      check_kind(kinds[j], op);
      TORCH_CHECK(packed_k(weights[j], kinds[j], rows[j], op) == input[j], op, ": matrix ", j, " has the wrong width");
    }
    w[j] = {weights[j].data_ptr(), kinds[j], rows[j], input[j]};
  }
  TORCH_CHECK(post_norms.empty() || post_norms.size() == 2, op, ": post_norms is empty or (attention's, FFN's)");
  for (const auto& t : {attn_norm, ffn_norm})
    TORCH_CHECK(t.numel() == dim && t.scalar_type() == at::kFloat && t.is_contiguous(), op, ": norm weights must be (D,) float32");
  const float* post[2] = {nullptr, nullptr};
  for (size_t j = 0; j < post_norms.size(); ++j) {
    TORCH_CHECK(post_norms[j].numel() == dim && post_norms[j].scalar_type() == at::kFloat && post_norms[j].is_contiguous(),
                op, ": norm weights must be (D,) float32");
    post[j] = post_norms[j].data_ptr<float>();
  }
  const float* bias[3] = {nullptr, nullptr, nullptr};
  for (size_t j = 0; j < qkv_bias.size(); ++j) {
    TORCH_CHECK(qkv_bias[j].numel() == rows[j] && qkv_bias[j].scalar_type() == at::kFloat && qkv_bias[j].is_contiguous(),
                op, ": bias ", j, " must be (", rows[j], ",) float32");
    bias[j] = qkv_bias[j].data_ptr<float>();
  }
  const float* norms[2] = {nullptr, nullptr};
  for (size_t j = 0; j < qk_norm.size(); ++j) {
    TORCH_CHECK(qk_norm[j].numel() == hd && qk_norm[j].scalar_type() == at::kFloat && qk_norm[j].is_contiguous(), op,
                ": q/k norm weights must be (hd,) float32");
    norms[j] = qk_norm[j].data_ptr<float>();
  }
  at::Tensor out = at::empty_like(x);
  auto run = [&](auto* x_data, auto* out_data, auto* k_data, auto* v_data) {
    block_step(x_data, out_data, k_data, v_data, w, attn_norm.data_ptr<float>(), ffn_norm.data_ptr<float>(), post, bias,
               norms, cos.data_ptr<float>(), sin.data_ptr<float>(), bsz, dim, n_heads, n_kv, hd, d_rot, slots, slot, n_keys,
               eps, qk_eps, (float)scale, (float)softcap, act);
  };
  if (dtype == at::kFloat)
    run(x.data_ptr<float>(), out.data_ptr<float>(), k_cache.data_ptr<float>(), v_cache.data_ptr<float>());
  else
    run((const uint16_t*)x.data_ptr(), (uint16_t*)out.data_ptr(), (uint16_t*)k_cache.data_ptr(), (uint16_t*)v_cache.data_ptr());
  return out;
}

}  // namespace

TORCH_LIBRARY_FRAGMENT(tinyslm, m) {
  m.def("decode_block(Tensor x, Tensor attn_norm, Tensor ffn_norm, Tensor[] post_norms, Tensor[] weights, int[] kinds, "
        "int[] rows, Tensor[] qkv_bias, Tensor[] qk_norm, Tensor cos, Tensor sin, Tensor(a!) k_cache, Tensor(b!) v_cache, "
        "int slot, int n_keys, float eps, float qk_eps, float scale, float softcap, int act) -> Tensor");
}

TORCH_LIBRARY_IMPL(tinyslm, CPU, m) { m.impl("decode_block", &decode_block); }
