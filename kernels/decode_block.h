// One decoding step of a transformer block, the math of tinyslm::decode_block and tinyslm::decode_stack
// (included by decode_block.cpp).
//
// Legend: B sequences (one new token each), D model width, H query heads, K KV heads (G = H / K query
// heads per KV head), hd head_dim, d rotated dims (<= hd; 0: no RoPE), F FFN width, S cache slots, p the new
// token's position.
//
// It computes what layers/block.py's SequentialBlock or ParallelBlock computes with attention.py's Attention
// and ffn.py's GatedFFN or PlainFFN for one new token, every matrix a GGMLLinear (quant/blocks.py) or a plain
// bfloat16 or float32 weight, every bracketed part optional:
//     h       = norm_attn(x)                                          (B, D)
//     q, k, v = h Wq^T [+ bq], h Wk^T [+ bk], h Wv^T [+ bv]           (B, H*hd), (B, K*hd) x 2
//               [clamped to +-clip (OLMo)]
//     q, k    = [per-head norm (QK-norm)], then RoPE (split-half) of the first d dims at position p
//     cache[b, :, slot] = k, v             (slot p; p mod W in a sliding window's ring of W slots)
//     s_j     = q_h . k_j * scale  [-> cap * tanh(s_j / cap)]  [+ slope_h * j (ALiBi)]  over the n_keys slots
//     a_h     = softmax_j(s_j) . v_j, k_j and v_j of KV head h / G               (B, H*hd)
//     o       = [r *] [post-norm](a Wo^T [+ bo])
//   sequential:  m = x + o,  out = m + [r *] [post-norm](ffn(norm_ffn(m)))
//   parallel:    out = x + o + ffn(norm_ffn(x))    (one shared norm: ffn(h))
//     ffn(h)  = (act(h Wg^T [+ bg]) * (h Wu^T [+ bu])) Wd^T [+ bd]     gated, (B, F) -> (B, D)
//             = act(h Wu^T [+ bu]) Wd^T [+ bd]                         plain
// Every norm is RMSNorm, w * x / rms(x), or LayerNorm, w * (x - mean) / std [+ b], one kind per block (a
// "(1 + w)" norm is the same with weight 1 + w, a parameter-free one with w = 1: the caller passes them so).
// act: SiLU, GELU (tanh or erf), ReLU or squared ReLU; r: MiniCPM's residual scale (1 elsewhere). The
// sandwich norms and soft-cap are Gemma-2/3's, the parallel block GPT-NeoX's, Phi-2's and StableLM's.
//
// Why a whole block in C++: decoding a small model is bound by the module path's ~40 operator calls
// per layer (each a dispatch, an allocation, a fork and join of the thread pool, for microseconds of
// work), not by its weights (docs/performance.md has the figures). Here a layer is one run of the kernels'
// thread pool (threads.h; a token's layers one call, decode_block.cpp): the threads split each product's groups
// of 8 weight rows (as ggml_mm does), the attention's heads and the FFN's activations, and meet at a barrier
// between the steps above (a short spin, then sleep: a busy machine's descheduled thread is waited for, not
// spun for). The products are ggml_mm's
// (the same 8-bit activations, the same integer sums) or float_mv's (float_dot.h: bfloat16 or float32
// rows); the norms, RoPE, softmax and sums of attention are float32 like torch's, summed in another order, so the results agree to
// float32 rounding, not bit for bit (tests/runtime/test_decode_block.py bounds the difference). A bfloat16
// model's input and cache are read as bfloat16, everything between computed in float32, and the
// output and the new key and value rounded to bfloat16 (to nearest even, as torch rounds).

#pragma once

#include <ATen/core/Tensor.h>

#include <algorithm>
#include <cmath>
#include <optional>
#include <type_traits>
#include <vector>

#include "float_dot.h"
#include "ggml_blocks.h"
#include "threads.h"

namespace {

constexpr int64_t BF16 = 5, F32 = 6;  // matrix kinds beside ggml_mm's 0..4: a plain (N, K) bfloat16 / float32 weight

struct Matrix {  // one layer's weight: ggml_mm's packed blocks (kinds 0..4) or plain rows (BF16, F32); N rows of K values
  const void* data;
  int64_t kind, n, k;
};

// The groups of 8 rows of several matrices with the same input, numbered one after the other.
inline int64_t groups_of(const Matrix* w, int count) {
  int64_t total = 0;
  for (int j = 0; j < count; ++j) total += (w[j].n + ROWS - 1) / ROWS;
  return total;
}

// y_j = x W_j^T for matrices with the same input (x: B float rows, xq: the same rows as 8-bit blocks): the groups
// [lo, hi) of groups_of(w, count).
void products(const Matrix* w, int count, const float* x, const std::vector<const ActBlock*>& xq, float* const* y,
              int64_t lo, int64_t hi) {
  int64_t first = 0;  // index of matrix j's group 0 in the list of all groups
  for (int j = 0; j < count; ++j) {
    const int64_t groups = (w[j].n + ROWS - 1) / ROWS, g0 = std::max(lo - first, (int64_t)0),
                  g1 = std::min(hi - first, groups);
    if (g0 < g1 && w[j].kind == BF16)
      float_rows((const uint16_t*)w[j].data, g0 * ROWS, std::min(g1 * ROWS, w[j].n), w[j].n, w[j].k, x,
                 (int64_t)xq.size(), y[j]);
    else if (g0 < g1 && w[j].kind == F32)
      float_rows((const float*)w[j].data, g0 * ROWS, std::min(g1 * ROWS, w[j].n), w[j].n, w[j].k, x,
                 (int64_t)xq.size(), y[j]);
    else if (g0 < g1)
      with_kind(w[j].kind, [&](auto kind_c) {
        mm_groups<decltype(kind_c)::value>((const uint8_t*)w[j].data, g0, g1, w[j].k / QK, xq, y[j], w[j].n);
      });
    first += groups;
  }
}

// a = scale * sum_j p_j v_j over n rows v_j of hd values (float32, or bfloat16 widened in registers): 64 values
// at a time in 8 registers, so that a is written once, not once per row.
template <typename W>
inline void weighted_sum(const float* p, const W* v, int64_t n, int64_t hd, float scale, float* a) {
  int64_t c = 0;
#ifdef TINYSLM_AVX2
  for (; c + 64 <= hd; c += 64) {
    __m256 acc[8];
    for (int i = 0; i < 8; ++i) acc[i] = _mm256_setzero_ps();
    for (int64_t j = 0; j < n; ++j) {
      const __m256 pj = _mm256_set1_ps(p[j]);
      for (int i = 0; i < 8; ++i) acc[i] = _mm256_fmadd_ps(pj, widen(v + j * hd + c + 8 * i), acc[i]);
    }
    for (int i = 0; i < 8; ++i) _mm256_storeu_ps(a + c + 8 * i, _mm256_mul_ps(acc[i], _mm256_set1_ps(scale)));
  }
  for (; c + 8 <= hd; c += 8) {
    __m256 acc = _mm256_setzero_ps();
    for (int64_t j = 0; j < n; ++j) acc = _mm256_fmadd_ps(_mm256_set1_ps(p[j]), widen(v + j * hd + c), acc);
    _mm256_storeu_ps(a + c, _mm256_mul_ps(acc, _mm256_set1_ps(scale)));
  }
#endif
  for (; c < hd; ++c) {
    float acc = 0.f;
    for (int64_t j = 0; j < n; ++j) acc += p[j] * to_f32(v[j * hd + c]);
    a[c] = acc * scale;
  }
}

enum Mat { WQ, WK, WV, WO, WG, WU, WD, MATRICES };  // the block's matrices (no WG in a plain FFN)
enum NormSlot { ATTN_NORM, FFN_NORM, ATTN_POST, FFN_POST, Q_NORM, K_NORM, NORM_SLOTS };

struct Norm {  // a norm's float32 weight and optional bias; w null: no such norm in this block
  const float* w = nullptr;
  const float* b = nullptr;
};

// out = w * (x - mean) / sqrt(var + eps) [+ b] (LayerNorm, as torch's) or w * x / sqrt(mean(x^2) + eps) (RMSNorm,
// as norms.py's), in float32 with double sums; out may be x.
void normalize(const float* x, const Norm& norm, bool layer_norm, int64_t n, double eps, float* out) {
  double mean = 0.0, squares = 0.0;
  if (layer_norm) {
    for (int64_t i = 0; i < n; ++i) mean += x[i];
    mean /= (double)n;
  }
  for (int64_t i = 0; i < n; ++i) squares += ((double)x[i] - mean) * ((double)x[i] - mean);
  const float r = 1.f / std::sqrt((float)(squares / (double)n) + (float)eps), m = (float)mean;
  for (int64_t i = 0; i < n; ++i) out[i] = norm.w[i] * ((x[i] - m) * r) + (norm.b ? norm.b[i] : 0.f);
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

enum Act { SILU, GELU_TANH, GELU, RELU, RELU2, ACTS };  // ffn.py's ACTIVATIONS (gelu_new is GELU_TANH in float32)

inline float activation(int64_t act, float g) {  // torch's formulas
  switch (act) {
    case SILU: return g / (1.f + std::exp(-g));
    case GELU_TANH: return 0.5f * g * (1.f + std::tanh(0.7978845608028654f * (g + 0.044715f * g * g * g)));
    case GELU: return 0.5f * g * (1.f + std::erf(g * 0.7071067811865476f));
    case RELU: return std::max(g, 0.f);
    default: return std::max(g, 0.f) * std::max(g, 0.f);  // RELU2
  }
}

struct Block {  // one block's parameters and settings, as decode_block received them
  Matrix w[MATRICES];
  const float* bias[MATRICES];  // null: no bias
  Norm norm[NORM_SLOTS];
  const float *cos, *sin, *alibi;  // null: no RoPE (d = 0) / no ALiBi
  // a left-padded batch: pad (B,) each row's padding slots, whose keys it never attends; key_slots (S,) the slot
  // index each cache slot holds (a ring buffer's), null: slot j holds index j; RoPE angles then per row (B, d)
  const int64_t *pad, *key_slots;
  int64_t rope_stride;  // 0: one cos/sin for every row; d: row b's at b * d
  bool layer_norm, parallel, gated, blocks;  // blocks: some matrix holds GGUF blocks (8-bit activations needed)
  int64_t dim, n_heads, n_kv, hd, d_rot, ffn, act;
  double eps, qk_eps;
  float scale, softcap, clip, residual;
};

inline void add_bias(float* y, const float* bias, int64_t bsz, int64_t n) {
  if (bias)
    for (int64_t b = 0; b < bsz; ++b)
      for (int64_t i = 0; i < n; ++i) y[b * n + i] += bias[i];
}

inline void clamp(float* y, int64_t n, float clip) {
  if (clip > 0.f)
    for (int64_t i = 0; i < n; ++i) y[i] = std::min(std::max(y[i], -clip), clip);
}

// A branch's output y (B, D) as it joins the residual stream: [post-norm], then x the residual scale.
inline void finish_branch(const Block& k, float* y, const Norm& post, int64_t bsz) {
  for (int64_t b = 0; b < bsz; ++b) {
    if (post.w) normalize(&y[b * k.dim], post, k.layer_norm, k.dim, k.eps, &y[b * k.dim]);
    if (k.residual != 1.f)
      for (int64_t i = 0; i < k.dim; ++i) y[b * k.dim + i] *= k.residual;
  }
}

// The block for x (B, D) and caches (B, K, S, hd) of element type T; everything between in float32 (see the top).
template <typename T>
void block_step(const Block& k, const T* xp, T* outp, T* kc, T* vc, int64_t bsz, int64_t slots, int64_t slot,
                int64_t n_keys) {
  const int64_t dim = k.dim, ffn = k.ffn, hd = k.hd, n_heads = k.n_heads, n_kv = k.n_kv;
  const int64_t q_width = n_heads * hd, kv_width = n_kv * hd, group = n_heads / n_kv;
  std::vector<float> x(bsz * dim), h(bsz * std::max(dim, ffn)), q(bsz * q_width), kk(bsz * kv_width), v(bsz * kv_width);
  std::vector<float> att(bsz * q_width), mid(bsz * dim), gate(k.gated ? bsz * ffn : 0), up(bsz * ffn), down(bsz * dim);
  std::vector<ActBlock> act(k.blocks ? bsz * std::max({dim, ffn, q_width}) / QK : 0);
  std::vector<const ActBlock*> act_rows(bsz), ffn_rows(bsz);  // act's rows of width D, H*hd (set by quantize); F
  for (int64_t b = 0; b < bsz && k.blocks; ++b) ffn_rows[b] = &act[b * ffn / QK];
  const int64_t pieces = (ffn + QK - 1) / QK;  // an FFN row's pieces of 32 values
  auto quantize = [&](const float* rows_in, int64_t width) {  // (B, width) -> act, B rows of width / 32 blocks
    for (int64_t b = 0; b < bsz && k.blocks; ++b) {
      quantize_row(rows_in + b * width, width, &act[b * width / QK]);
      act_rows[b] = &act[b * width / QK];
    }
  };
  const int nt = tinyslm::threads();
  std::vector<float> scores(nt * n_keys);  // per thread t: one head's scores
  float* qkv_out[3] = {q.data(), kk.data(), v.data()};
  float *o_out[1] = {mid.data()}, *gu_out[2] = {gate.data(), up.data()}, *down_out[1] = {down.data()};
  const Matrix* gu = k.w + (k.gated ? WG : WU);
  const int n_gu = k.gated ? 2 : 1;
  const int64_t qkv_groups = groups_of(k.w + WQ, 3), o_groups = groups_of(k.w + WO, 1), gu_groups = groups_of(gu, n_gu),
                down_groups = groups_of(k.w + WD, 1);
  auto pieces_of = [nt](int64_t items) { return std::max<int64_t>(1, items / (4 * nt)); };  // ~4 claims a thread

  // The steps, in order, each a phase of the kernels' pool (threads.h): (items, items a claim, the work on
  // items [lo, hi) by thread t). A step of one item is done by one thread while the others wait.
  const tinyslm::Phase phases[] = {
      {1, 1, [&](int64_t, int64_t, int) {  // h = norm_attn(x), and its 8-bit blocks
         for (int64_t i = 0; i < bsz * dim; ++i) x[i] = to_float(xp[i]);
         for (int64_t b = 0; b < bsz; ++b) normalize(&x[b * dim], k.norm[ATTN_NORM], k.layer_norm, dim, k.eps, &h[b * dim]);
         quantize(h.data(), dim);
       }},
      {qkv_groups, pieces_of(qkv_groups), [&](int64_t lo, int64_t hi, int) {  // q, k, v
         products(k.w + WQ, 3, h.data(), act_rows, qkv_out, lo, hi);
       }},
      // Per (sequence, head) of q then of k: bias, clip, QK-norm, RoPE; k and v go into the cache at p.
      {bsz * (n_heads + n_kv), 1, [&](int64_t lo, int64_t hi, int) {
         for (int64_t i = lo; i < hi; ++i) {
           const int64_t b = i / (n_heads + n_kv), head = i % (n_heads + n_kv);
           const bool is_q = head < n_heads;
           const int64_t kv_head = head - n_heads, at = is_q ? head * hd : kv_head * hd;
           float* vec = is_q ? &q[b * q_width + at] : &kk[b * kv_width + at];
           if (const float* add = k.bias[is_q ? WQ : WK])
             for (int64_t e = 0; e < hd; ++e) vec[e] += add[at + e];
           clamp(vec, hd, k.clip);
           const Norm& qk = k.norm[is_q ? Q_NORM : K_NORM];
           if (qk.w) normalize(vec, qk, k.layer_norm, hd, k.qk_eps, vec);
           if (k.cos) rope(vec, k.cos + b * k.rope_stride, k.sin + b * k.rope_stride, k.d_rot);
           if (!is_q) {
             float* vv = &v[b * kv_width + at];
             if (const float* add = k.bias[WV])
               for (int64_t e = 0; e < hd; ++e) vv[e] += add[at + e];
             clamp(vv, hd, k.clip);
             const int64_t to = ((b * n_kv + kv_head) * slots + slot) * hd;
             for (int64_t e = 0; e < hd; ++e) kc[to + e] = from_float<T>(vec[e]), vc[to + e] = from_float<T>(vv[e]);
           }
         }
       }},
      // Attention, per (sequence, query head), over the n_keys filled slots of its KV head.
      {bsz * n_heads, 1, [&](int64_t lo, int64_t hi, int t) {
         float* s = &scores[t * n_keys];
         for (int64_t i = lo; i < hi; ++i) {
           const int64_t b = i / n_heads, head = i % n_heads;
           const float* qh = &q[b * q_width + head * hd];
           const T* keys = kc + (b * n_kv + head / group) * slots * hd;  // (S, hd)
           const T* values = vc + (b * n_kv + head / group) * slots * hd;
           float top = -INFINITY, total = 0.f;
           int64_t j = 0;
           for (; j + 4 <= n_keys; j += 4) dot4(keys + j * hd, hd, qh, &s[j]);  // four keys a q load (as the products)
           for (; j < n_keys; ++j) s[j] = dot(keys + j * hd, qh, hd);  // (bfloat16 keys widened in registers)
           const int64_t padding = k.pad ? k.pad[b] : 0;  // key slot index i is at position i - padding
           for (j = 0; j < n_keys; ++j) {
             s[j] *= k.scale;
             if (k.softcap > 0.f) s[j] = std::tanh(s[j] / k.softcap) * k.softcap;
             if (k.alibi) s[j] += to_float(from_float<T>(k.alibi[head] * (float)(j - padding)));  // as Bloom, in T
             if ((k.key_slots ? k.key_slots[j] : j) < padding) s[j] = -INFINITY;  // a padding key: weight 0
             top = std::max(top, s[j]);
           }
           // exp(s - top) below -87.3 is a float32 subnormal, < 1.2e-38 of the sum (>= 1): taken as 0, the exact
           // float32 result to the sum's precision, without the subnormal arithmetic's slow path (2x, measured)
           for (j = 0; j < n_keys; ++j) total += s[j] = s[j] - top < -87.3f ? 0.f : std::exp(s[j] - top);
           weighted_sum(s, values, n_keys, hd, 1.f / total, &att[b * q_width + head * hd]);
         }
       }},
      {1, 1, [&](int64_t, int64_t, int) { quantize(att.data(), q_width); }},
      {o_groups, pieces_of(o_groups), [&](int64_t lo, int64_t hi, int) {  // o
         products(k.w + WO, 1, att.data(), act_rows, o_out, lo, hi);
       }},
      {1, 1, [&](int64_t, int64_t, int) {  // x + attention, the FFN's input h and its 8-bit blocks
         add_bias(mid.data(), k.bias[WO], bsz, dim);
         finish_branch(k, mid.data(), k.norm[ATTN_POST], bsz);
         for (int64_t i = 0; i < bsz * dim; ++i) mid[i] += x[i];
         const float* ffn_in = k.parallel ? x.data() : mid.data();  // a parallel block's FFN reads x too
         for (int64_t b = 0; b < bsz && k.norm[FFN_NORM].w; ++b)  // (no FFN norm: a shared one, h as it is)
           normalize(&ffn_in[b * dim], k.norm[FFN_NORM], k.layer_norm, dim, k.eps, &h[b * dim]);
         quantize(h.data(), dim);
       }},
      {gu_groups, pieces_of(gu_groups), [&](int64_t lo, int64_t hi, int) {  // gate and up, or up
         products(gu, n_gu, h.data(), act_rows, gu_out + (k.gated ? 0 : 1), lo, hi);
       }},
      // act(g + bg) * (u + bu), or act(u + bu), and its 8-bit blocks, by pieces of 32 values
      {bsz * pieces, 1, [&](int64_t lo, int64_t hi, int) {
         for (int64_t i = lo; i < hi; ++i) {
           const int64_t b = i / pieces, c0 = i % pieces * QK, c1 = std::min(c0 + QK, ffn);
           float *hb = &h[b * ffn], *ub = &up[b * ffn], *gb = k.gated ? &gate[b * ffn] : nullptr;
           const float *bu = k.bias[WU], *bg = k.bias[WG];
           for (int64_t c = c0; c < c1; ++c) {
             const float u = ub[c] + (bu ? bu[c] : 0.f);
             hb[c] = k.gated ? activation(k.act, gb[c] + (bg ? bg[c] : 0.f)) * u : activation(k.act, u);
           }
           if (k.blocks) quantize_row(&hb[c0], QK, &act[(b * ffn + c0) / QK]);  // (ffn a multiple of 32 here)
         }
       }},
      {down_groups, pieces_of(down_groups), [&](int64_t lo, int64_t hi, int) {  // down
         products(k.w + WD, 1, h.data(), ffn_rows, down_out, lo, hi);
       }},
      {1, 1, [&](int64_t, int64_t, int) {
         add_bias(down.data(), k.bias[WD], bsz, dim);
         finish_branch(k, down.data(), k.norm[FFN_POST], bsz);
       }},
      {bsz * dim, pieces_of(bsz * dim), [&](int64_t lo, int64_t hi, int) {  // + the residual
         for (int64_t i = lo; i < hi; ++i) outp[i] = from_float<T>(mid[i] + down[i]);
       }},
  };
  tinyslm::pool().run(nt, phases, (int)(sizeof(phases) / sizeof(phases[0])));
}

// A float32 vector of n values, or null for None.
const float* vector_or_null(const std::optional<at::Tensor>& t, int64_t n, const char* what) {
  if (!t.has_value()) return nullptr;
  TORCH_CHECK(t->numel() == n && t->scalar_type() == at::kFloat && t->is_contiguous(), "decode_block: ", what,
              " must be (", n, ",) contiguous float32, found ", t->sizes(), " ", t->scalar_type());
  return t->data_ptr<float>();
}


// weights: Wq, Wk, Wv, Wo, [Wg,] Wu, Wd (no Wg: a plain FFN): GGMLLinear.packed (kinds 0..4) or a (N, K) bfloat16
// (kind 5) or float32 (kind 6) weight; rows: their N; biases: one per matrix, or None. norms: (weight, bias) for
// the attention's, the FFN's, the two post-norms and the q and k norms, None where absent (the FFN's: a parallel
// block's shared norm); every vector float32. alibi: (H,) slopes or None. options: (norm kind 0 RMSNorm / 1
// LayerNorm, parallel 0/1, act); params: (eps, qk_eps, scale, softcap, clip, residual scale), 0 for no soft-cap or
// clip. The block's widths follow from the rows and head_dim: D = rows of Wo, H = rows of Wq / hd, K = rows of Wk / hd.
// The Block points into these tensors: whoever keeps it keeps them.
Block make_block(const c10::List<std::optional<at::Tensor>>& norms, at::TensorList weights, at::IntArrayRef kinds,
                 at::IntArrayRef rows, const c10::List<std::optional<at::Tensor>>& biases,
                 const std::optional<at::Tensor>& alibi, at::IntArrayRef options, at::ArrayRef<double> params,
                 int64_t head_dim) {
  const char* op = "decode_block";
  const int64_t count = (int64_t)weights.size();
  TORCH_CHECK((count == 7 || count == 6) && (int64_t)kinds.size() == count && (int64_t)rows.size() == count &&
                  (int64_t)biases.size() == count,
              op, ": 7 matrices (q, k, v, o, gate, up, down) or 6 (no gate), each with its kind, rows and bias");
  TORCH_CHECK(norms.size() == 2 * NORM_SLOTS, op, ": ", 2 * NORM_SLOTS, " norm tensors (weight, bias) x 6");
  TORCH_CHECK(options.size() == 3 && params.size() == 6, op, ": options (norm, parallel, act), params (eps, qk_eps, "
              "scale, softcap, clip, residual)");
  Block k{};
  k.gated = count == 7;
  int64_t n[MATRICES] = {0};  // rows of each matrix, WG 0 when absent
  for (int64_t j = 0, m = 0; m < MATRICES; ++m)
    if (m != WG || k.gated) n[m] = rows[j++];
  TORCH_CHECK(head_dim > 0, op, ": head_dim must be positive, found ", head_dim);
  k.hd = head_dim, k.dim = n[WO], k.n_heads = n[WQ] / head_dim, k.n_kv = n[WK] / head_dim, k.ffn = n[WU];
  k.layer_norm = options[0] == 1, k.parallel = options[1] == 1, k.act = options[2];
  k.eps = params[0], k.qk_eps = params[1], k.scale = (float)params[2], k.softcap = (float)params[3];
  k.clip = (float)params[4], k.residual = (float)params[5];
  TORCH_CHECK((options[0] == 0 || options[0] == 1) && (options[1] == 0 || options[1] == 1), op,
              ": norm kind and parallel must be 0 or 1");
  TORCH_CHECK(k.act >= 0 && k.act < ACTS, op, ": act must be 0..", ACTS - 1, " (silu, gelu_tanh, gelu, relu, relu2), "
              "found ", k.act);
  TORCH_CHECK(k.n_kv > 0 && n[WQ] == k.n_heads * k.hd && k.n_heads % k.n_kv == 0 && n[WK] == k.n_kv * k.hd &&
                  n[WV] == k.n_kv * k.hd && (!k.gated || n[WG] == k.ffn) && n[WD] == k.dim,
              op, ": the matrices' shapes (rows ", rows, ") do not make a block with head_dim ", head_dim);
  k.alibi = vector_or_null(alibi, k.n_heads, "alibi");
  const int64_t input[MATRICES] = {k.dim, k.dim, k.dim, k.n_heads * k.hd, k.dim, k.dim, k.ffn};
  for (int64_t j = 0, m = 0; m < MATRICES; ++m) {
    if (m == WG && !k.gated) {
      k.w[m] = {nullptr, BF16, 0, 0}, k.bias[m] = nullptr;
      continue;
    }
    const at::Tensor& wt = weights[j];
    if (kinds[j] == BF16 || kinds[j] == F32) {
      const auto type = kinds[j] == BF16 ? at::kBFloat16 : at::kFloat;
      TORCH_CHECK(wt.dim() == 2 && wt.scalar_type() == type && wt.is_contiguous() && wt.size(0) == n[m] &&
                      wt.size(1) == input[m],
                  op, ": matrix ", j, " must be (", n[m], ", ", input[m], ") contiguous ", type);
    } else {
      check_kind(kinds[j], op);
      TORCH_CHECK(packed_k(wt, kinds[j], n[m], op) == input[m], op, ": matrix ", j, " has the wrong width");
      k.blocks = true;
    }
    k.w[m] = {wt.data_ptr(), kinds[j], n[m], input[m]};
    k.bias[m] = vector_or_null(biases.get(j), n[m], "a bias");
    ++j;
  }
  const int64_t width[NORM_SLOTS] = {k.dim, k.dim, k.dim, k.dim, k.hd, k.hd};
  for (int s = 0; s < NORM_SLOTS; ++s) {
    k.norm[s] = {vector_or_null(norms.get(2 * s), width[s], "a norm weight"),
                 vector_or_null(norms.get(2 * s + 1), width[s], "a norm bias")};
    TORCH_CHECK(k.norm[s].w || !k.norm[s].b, op, ": a norm bias without its weight");
  }
  TORCH_CHECK(k.norm[ATTN_NORM].w && (k.norm[FFN_NORM].w || k.parallel) && !k.norm[Q_NORM].w == !k.norm[K_NORM].w, op,
              ": the attention norm, the FFN norm (but in a parallel block) and both or neither q/k norms are required");
  TORCH_CHECK(!k.blocks || (k.dim % QK == 0 && k.ffn % QK == 0 && (k.n_heads * k.hd) % QK == 0), op,
              ": GGUF blocks need widths that are multiples of ", QK);
  return k;
}

// Checks one call's input (B, D), caches (B, K, S, hd) and position against block k, and sets k's RoPE angles
// (cos, sin: (d,) at the new position, or (B, d) per row of a padded batch, or None) and padding (pad, key_slots).
void check_step(Block& k, const at::Tensor& x, const at::Tensor& k_cache, const at::Tensor& v_cache, int64_t slot,
                int64_t n_keys, const std::optional<at::Tensor>& cos, const std::optional<at::Tensor>& sin,
                const std::optional<at::Tensor>& pad, const std::optional<at::Tensor>& key_slots) {
  const char* op = "decode_block";
  const auto dtype = x.scalar_type();
  TORCH_CHECK(x.dim() == 2 && (dtype == at::kFloat || dtype == at::kBFloat16) && x.is_contiguous(), op,
              ": x must be (B, D) contiguous float32 or bfloat16");
  TORCH_CHECK(x.size(1) == k.dim, op, ": the matrices' shapes do not make a block of width ", x.size(1));
  TORCH_CHECK(k_cache.dim() == 4 && k_cache.scalar_type() == dtype && k_cache.is_contiguous() &&
                  v_cache.sizes() == k_cache.sizes() && v_cache.scalar_type() == dtype && v_cache.is_contiguous(),
              op, ": the caches must be (B, K, S, hd) contiguous, both the same shape, of x's dtype");
  TORCH_CHECK(k_cache.size(0) == x.size(0) && k_cache.size(1) == k.n_kv && k_cache.size(3) == k.hd, op,
              ": caches of ", k_cache.sizes(), " for ", x.size(0), " sequences, ", k.n_kv, " KV heads of ", k.hd);
  TORCH_CHECK(slot >= 0 && slot < n_keys && n_keys <= k_cache.size(2), op, ": slot ", slot, " of ", n_keys,
              " keys outside a cache of ", k_cache.size(2), " slots");
  TORCH_CHECK(cos.has_value() == sin.has_value(), op, ": cos and sin come together");
  k.pad = k.key_slots = nullptr;
  if (pad.has_value()) {
    TORCH_CHECK(pad->dim() == 1 && pad->size(0) == x.size(0) && pad->scalar_type() == at::kLong && pad->is_contiguous(),
                op, ": pad must be (B,) contiguous int64, one padding count per row");
    k.pad = pad->data_ptr<int64_t>();
  }
  if (key_slots.has_value()) {
    TORCH_CHECK(key_slots->dim() == 1 && key_slots->size(0) >= n_keys && key_slots->scalar_type() == at::kLong &&
                    key_slots->is_contiguous(), op, ": key_slots must be (S,) contiguous int64 covering the keys");
    k.key_slots = key_slots->data_ptr<int64_t>();
  }
  k.cos = k.sin = nullptr, k.d_rot = 0, k.rope_stride = 0;
  if (cos.has_value()) {
    const bool per_row = cos->dim() == 2;  // (B, d): a padded batch's rows are at different positions
    TORCH_CHECK(!per_row || cos->size(0) == x.size(0), op, ": per-row angles must be (B, d)");
    k.d_rot = per_row ? cos->size(1) : cos->numel();
    k.rope_stride = per_row ? k.d_rot : 0;
    TORCH_CHECK(k.d_rot <= k.hd && k.d_rot % 2 == 0, op, ": cos and sin must be (d,) or (B, d) with d <= head_dim, even");
    const int64_t n = per_row ? x.size(0) * k.d_rot : k.d_rot;
    k.cos = vector_or_null(cos, n, "cos"), k.sin = vector_or_null(sin, n, "sin");
  }
}

// Runs block k (checked by check_step) on x into out, writing the new key and value at `slot`.
inline void run_step(const Block& k, const at::Tensor& x, at::Tensor& out, const at::Tensor& k_cache,
                     const at::Tensor& v_cache, int64_t slot, int64_t n_keys) {
  const int64_t bsz = x.size(0), slots = k_cache.size(2);
  if (x.scalar_type() == at::kFloat)
    block_step(k, x.data_ptr<float>(), out.data_ptr<float>(), k_cache.data_ptr<float>(), v_cache.data_ptr<float>(), bsz,
               slots, slot, n_keys);
  else
    block_step(k, (const uint16_t*)x.data_ptr(), (uint16_t*)out.data_ptr(), (uint16_t*)k_cache.data_ptr(),
               (uint16_t*)v_cache.data_ptr(), bsz, slots, slot, n_keys);
}

}  // namespace
