// Matrix products with weights kept in llama.cpp's Q4_0 / Q4_1 / Q8_0 blocks (tinyslm::ggml_mm).
//
// Legend: M activation rows, N weight rows (out_features), K columns (in_features), B = K / 32 blocks.
//
// The weight is the GGUF tensor's own bytes, (N, B * block bytes), never unpacked in memory:
//     Q4_0  d (f16), 16 bytes of nibbles     w = (q - 8) * d      q in 0..15
//     Q4_1  d (f16), m (f16), 16 bytes       w = q * d + m        q in 0..15
//     Q8_0  d (f16), 32 int8                 w = q * d
// (byte j of a 4-bit block holds value j in its low nibble and value j + 16 in its high one).
//
// As in llama.cpp, each activation row is first quantized to 8 bits per block of 32 (Q8_0: one
// float scale dx per block, codes in -127..127, plus sx = dx * sum(codes) for Q4_1's offset). The
// dot product of a weight block and an activation block is then integer arithmetic:
//     Q8_0:        d * dx * sum_i q_i * qx_i
//     Q4_1:        d * dx * sum_i q_i * qx_i + m * sx
//     Q4_0:        the same as Q4_1 with m = -8 d   (sum_i (q_i - 8) qx_i = sum_i q_i qx_i - 8 sum_i qx_i)
// which AVX2 does 32 products at a time (vpmaddubsw + vpmaddwd); one float multiply-add per block.
// Reading 4.5 bits per weight instead of 16 is the whole point: decoding one token is bound by the
// bytes of weights read. Threads split the N rows (torch's intra-op pool). Without AVX2 the same
// arithmetic runs as plain loops (same result: the integer sums are exact either way).

#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <torch/library.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <vector>

#include "simd.h"

namespace {

constexpr int QK = 32;  // values per block

struct ActBlock {  // one quantized block of an activation row
  float d;         // scale: x ~ q * d
  float s;         // d * sum(q), for Q4_1's offset term
  int8_t q[QK];
};

float f16_to_f32(const uint8_t* p) {
  uint16_t h;
  std::memcpy(&h, p, 2);
#ifdef TINYSLM_AVX2
  return _cvtsh_ss(h);
#else
  const uint32_t sign = (uint32_t)(h & 0x8000) << 16, exp = (h >> 10) & 0x1F, man = h & 0x3FF;
  uint32_t bits;
  if (exp == 0x1F) {
    bits = sign | 0x7F800000 | (man << 13);  // inf / nan
  } else if (exp != 0) {
    bits = sign | ((exp + 112) << 23) | (man << 13);  // normal: rebias 15 -> 127
  } else if (man == 0) {
    bits = sign;  // zero
  } else {        // subnormal: value = man * 2^-24
    float v = std::ldexp((float)man, -24);
    std::memcpy(&bits, &v, 4);
    bits |= sign;
  }
  float out;
  std::memcpy(&out, &bits, 4);
  return out;
#endif
}

// One activation row (K floats) -> K / 32 blocks, as llama.cpp's quantize_row_q8_0/q8_1 do.
void quantize_row(const float* x, int64_t k, ActBlock* out) {
  for (int64_t b = 0; b < k / QK; ++b) {
    const float* xb = x + b * QK;
    float amax = 0.f;
    for (int i = 0; i < QK; ++i) amax = std::max(amax, std::fabs(xb[i]));
    const float d = amax / 127.f, id = d != 0.f ? 1.f / d : 0.f;
    int sum = 0;
    for (int i = 0; i < QK; ++i) {
      const int q = (int)std::nearbyint(xb[i] * id);  // round half to even, like _mm256_cvtps_epi32
      out[b].q[i] = (int8_t)q;
      sum += q;
    }
    out[b].d = d;
    out[b].s = d * (float)sum;
  }
}

#ifdef TINYSLM_AVX2
inline __m256i nibbles(const uint8_t* qs) {  // 16 bytes -> 32 codes 0..15 (low nibbles first)
  const __m128i b = _mm_loadu_si128((const __m128i*)qs);
  const __m256i both = _mm256_set_m128i(_mm_srli_epi16(b, 4), b);
  return _mm256_and_si256(both, _mm256_set1_epi8(0x0F));
}

inline __m256 sum_u8_i8(__m256i u, __m256i s) {  // 8 partial sums of u_i * s_i, as floats
  const __m256i pairs = _mm256_maddubs_epi16(u, s);  // int16: at most 2 * 255 * 127, no saturation here
  return _mm256_cvtepi32_ps(_mm256_madd_epi16(pairs, _mm256_set1_epi16(1)));
}

inline __m256 sum_i8_i8(__m256i w, __m256i x) {  // signed x signed via |w| and sign(x, w)
  return sum_u8_i8(_mm256_sign_epi8(w, w), _mm256_sign_epi8(x, w));
}

using tinyslm::hsum;
#endif

// The dot product of one weight row (nb blocks of `Kind`) with R activation rows, into out[0..R).
// R rows at a time so that each weight block is unpacked once for all of them.
template <int Kind, int R>  // Kind: 0 = Q4_0, 1 = Q4_1, 2 = Q8_0
void dot_rows(const uint8_t* w, int64_t nb, const ActBlock* const* x, float* out) {
  constexpr int bytes = Kind == 0 ? 18 : Kind == 1 ? 20 : 34;
#ifdef TINYSLM_AVX2
  __m256 acc[R];
  float offset[R];
  for (int r = 0; r < R; ++r) acc[r] = _mm256_setzero_ps(), offset[r] = 0.f;
  for (int64_t b = 0; b < nb; ++b, w += bytes) {
    const float d = f16_to_f32(w);
    if constexpr (Kind != 2) {  // Q4_0 as Q4_1 with m = -8 d: unsigned codes go straight into vpmaddubsw
      const __m256i q = nibbles(w + (Kind == 0 ? 2 : 4));
      const float m = Kind == 0 ? -8.f * d : f16_to_f32(w + 2);
      for (int r = 0; r < R; ++r) {
        const __m256i xq = _mm256_loadu_si256((const __m256i*)x[r][b].q);
        acc[r] = _mm256_fmadd_ps(_mm256_set1_ps(d * x[r][b].d), sum_u8_i8(q, xq), acc[r]);
        offset[r] += m * x[r][b].s;
      }
    } else {
      const __m256i q = _mm256_loadu_si256((const __m256i*)(w + 2));
      for (int r = 0; r < R; ++r) {
        const __m256i xq = _mm256_loadu_si256((const __m256i*)x[r][b].q);
        acc[r] = _mm256_fmadd_ps(_mm256_set1_ps(d * x[r][b].d), sum_i8_i8(q, xq), acc[r]);
      }
    }
  }
  for (int r = 0; r < R; ++r) out[r] = hsum(acc[r]) + offset[r];
#else
  for (int r = 0; r < R; ++r) out[r] = 0.f;
  for (int64_t b = 0; b < nb; ++b, w += bytes) {
    const float d = f16_to_f32(w);
    int q[QK];
    if (Kind == 2) {
      for (int i = 0; i < QK; ++i) q[i] = ((const int8_t*)(w + 2))[i];
    } else {
      const uint8_t* qs = w + (Kind == 0 ? 2 : 4);
      for (int i = 0; i < 16; ++i) q[i] = qs[i] & 0x0F, q[i + 16] = qs[i] >> 4;
      if (Kind == 0)
        for (int i = 0; i < QK; ++i) q[i] -= 8;
    }
    for (int r = 0; r < R; ++r) {
      int sum = 0;
      for (int i = 0; i < QK; ++i) sum += q[i] * x[r][b].q[i];
      out[r] += d * x[r][b].d * (float)sum;
      if (Kind == 1) out[r] += f16_to_f32(w + 2) * x[r][b].s;
    }
  }
#endif
}

template <int Kind>
void mm_rows(const uint8_t* w, int64_t row_bytes, int64_t n0, int64_t n1, int64_t nb,
             const std::vector<const ActBlock*>& x, float* y, int64_t n) {
  const int64_t m = (int64_t)x.size();
  for (int64_t row = n0; row < n1; ++row) {
    const uint8_t* wr = w + row * row_bytes;
    int64_t r = 0;
    float out[4];
    for (; r + 4 <= m; r += 4) {
      dot_rows<Kind, 4>(wr, nb, &x[r], out);
      for (int i = 0; i < 4; ++i) y[(r + i) * n + row] = out[i];
    }
    for (; r < m; ++r) {
      dot_rows<Kind, 1>(wr, nb, &x[r], out);
      y[r * n + row] = out[0];
    }
  }
}

// x (M, K) float32, w (N, B * block bytes) uint8, kind 0/1/2 -> y (M, N) float32
at::Tensor ggml_mm(const at::Tensor& x, const at::Tensor& w, int64_t kind) {
  TORCH_CHECK(x.dim() == 2 && x.scalar_type() == at::kFloat && x.is_contiguous(), "ggml_mm: x must be (M, K) contiguous float32");
  TORCH_CHECK(w.dim() == 2 && w.scalar_type() == at::kByte && w.is_contiguous(), "ggml_mm: w must be (N, bytes) contiguous uint8");
  TORCH_CHECK(kind >= 0 && kind <= 2, "ggml_mm: kind must be 0 (Q4_0), 1 (Q4_1) or 2 (Q8_0)");
  const int64_t m = x.size(0), k = x.size(1), n = w.size(0);
  const int64_t bytes = kind == 0 ? 18 : kind == 1 ? 20 : 34;
  TORCH_CHECK(k % QK == 0 && w.size(1) == k / QK * bytes, "ggml_mm: a (", n, ", ", w.size(1), ") weight of ", bytes,
              "-byte blocks does not match K = ", k);
  const int64_t nb = k / QK;
  std::vector<ActBlock> act(m * nb);
  const float* xp = x.data_ptr<float>();
  at::parallel_for(0, m, 1, [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) quantize_row(xp + r * k, k, &act[r * nb]);
  });
  std::vector<const ActBlock*> rows(m);
  for (int64_t r = 0; r < m; ++r) rows[r] = &act[r * nb];
  at::Tensor y = at::empty({m, n}, x.options());
  float* yp = y.data_ptr<float>();
  const uint8_t* wp = w.data_ptr<uint8_t>();
  const int64_t row_bytes = w.size(1);
  at::parallel_for(0, n, 16, [&](int64_t n0, int64_t n1) {
    if (kind == 0) mm_rows<0>(wp, row_bytes, n0, n1, nb, rows, yp, n);
    else if (kind == 1) mm_rows<1>(wp, row_bytes, n0, n1, nb, rows, yp, n);
    else mm_rows<2>(wp, row_bytes, n0, n1, nb, rows, yp, n);
  });
  return y;
}

// w (N, B * block bytes) uint8, kind 0/1/2 -> the weight (N, K) in float32, as llama.cpp dequantizes it.
// For long prompts: a float32 GEMM over the dequantized weight beats the block dot products.
at::Tensor ggml_dequantize(const at::Tensor& w, int64_t kind) {
  TORCH_CHECK(w.dim() == 2 && w.scalar_type() == at::kByte && w.is_contiguous(), "ggml_dequantize: w must be (N, bytes) contiguous uint8");
  TORCH_CHECK(kind >= 0 && kind <= 2, "ggml_dequantize: kind must be 0 (Q4_0), 1 (Q4_1) or 2 (Q8_0)");
  const int64_t bytes = kind == 0 ? 18 : kind == 1 ? 20 : 34;
  TORCH_CHECK(w.size(1) % bytes == 0, "ggml_dequantize: rows of ", w.size(1), " bytes are not whole ", bytes, "-byte blocks");
  const int64_t n = w.size(0), nb = w.size(1) / bytes;
  at::Tensor out = at::empty({n, nb * QK}, w.options().dtype(at::kFloat));
  const uint8_t* wp = w.data_ptr<uint8_t>();
  float* op = out.data_ptr<float>();
  at::parallel_for(0, n, 16, [&](int64_t n0, int64_t n1) {
    for (int64_t row = n0; row < n1; ++row) {
      const uint8_t* blk = wp + row * nb * bytes;
      float* o = op + row * nb * QK;
      for (int64_t b = 0; b < nb; ++b, blk += bytes, o += QK) {
        const float d = f16_to_f32(blk);
        if (kind == 2) {
          for (int i = 0; i < QK; ++i) o[i] = d * (float)((const int8_t*)(blk + 2))[i];
        } else {
          const float m = kind == 0 ? 0.f : f16_to_f32(blk + 2);
          const uint8_t* qs = blk + (kind == 0 ? 2 : 4);
          const int shift = kind == 0 ? 8 : 0;
          for (int i = 0; i < 16; ++i) {  // as ggml: (q - 8) * d for Q4_0, q * d + m for Q4_1
            o[i] = (float)((qs[i] & 0x0F) - shift) * d + m;
            o[i + 16] = (float)((qs[i] >> 4) - shift) * d + m;
          }
        }
      }
    }
  });
  return out;
}

}  // namespace

TORCH_LIBRARY(tinyslm, m) {
  m.def("ggml_mm(Tensor x, Tensor w, int kind) -> Tensor");
  m.def("ggml_dequantize(Tensor w, int kind) -> Tensor");
}

TORCH_LIBRARY_IMPL(tinyslm, CPU, m) {
  m.impl("ggml_mm", &ggml_mm);
  m.impl("ggml_dequantize", &ggml_dequantize);
}
