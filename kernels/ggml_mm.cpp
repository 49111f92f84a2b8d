// Matrix products with weights in llama.cpp's Q4_0 / Q4_1 / Q8_0 blocks, 8 rows interleaved (tinyslm::ggml_*).
//
// Legend: M activation rows, N weight rows (out_features), K columns (in_features), B = K / 32 blocks,
// G = ceil(N / 8) groups of 8 weight rows.
//
// A GGUF block of 32 weights is a float16 scale (and for Q4_1 a float16 offset) and 32 codes:
//     Q4_0  d, 16 bytes of nibbles     w = (q - 8) * d      q in 0..15
//     Q4_1  d, m, 16 bytes             w = q * d + m        q in 0..15
//     Q8_0  d, 32 int8                 w = q * d
// (byte j of a 4-bit block holds value j in its low nibble and value j + 16 in its high one).
//
// As in llama.cpp, each activation row is first quantized to 8 bits per block of 32 (one float
// scale dx per block, codes in -127..127, plus sx = dx * sum(codes) for the offset term). The dot
// product of a weight block and an activation block is then integer arithmetic:
//     Q8_0:        d * dx * sum_i q_i * qx_i
//     Q4_1:        d * dx * sum_i q_i * qx_i + m * sx
//     Q4_0:        the same as Q4_1 with m = -8 d   (sum_i (q_i - 8) qx_i = sum_i q_i qx_i - 8 sum_i qx_i)
//
// The layout (ggml_pack, at load time; ggml_unpack gives the file's bytes back). Decoding is bound
// by the bytes of weights read, but one row at a time the 4-bit product costs more instructions
// than memory delivers bytes (unpack the nibbles, two multiply-adds, a horizontal sum and a scale
// per row and block). So, like llama.cpp's repacked CPU layouts, 8 weight rows are interleaved
// block by block: the record for (group g, block b) holds
//     d[8] (f16), [m[8] (f16), Q4_1 only], codes: chunk c = bytes 4c..4c+3 of each of the 8 rows
//     (32 bytes: row 0's four, row 1's four, ...), chunks c = 0..3 (4-bit) or 0..7 (Q8_0)
// the same bytes as the 8 blocks it replaces. One 32-byte load is then 4 codes of 8 rows; the
// matching 4 activation codes are broadcast to all 8 lanes, and a vpmaddubsw + vpmaddwd leave one
// partial sum per row in its own lane: 8 rows finish together in one register, with their 8 scales
// applied by one vector multiply, and no horizontal sums. The last group is padded with zero rows.
// Threads split the groups (torch's intra-op pool). Without AVX2 the same arithmetic runs as plain
// loops (same result: the integer sums are exact either way).

#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/zeros.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <vector>

#include "simd.h"

namespace {

constexpr int QK = 32;  // values per block
constexpr int ROWS = 8;  // weight rows interleaved in one group

// Kind 0 = Q4_0, 1 = Q4_1, 2 = Q8_0: the file's block size, where a packed record's codes start, its size.
constexpr int block_bytes(int kind) { return kind == 0 ? 18 : kind == 1 ? 20 : 34; }
constexpr int code_bytes(int kind) { return kind == 2 ? 32 : 16; }
constexpr int header(int kind) { return kind == 1 ? 4 : 2; }  // d (and m) in a file block
constexpr int record_bytes(int kind) { return ROWS * block_bytes(kind); }
constexpr int record_codes(int kind) { return ROWS * header(kind); }  // offset of the codes in a record

struct ActBlock {  // one quantized block of an activation row
  float d;         // scale: x ~ q * d
  float s;         // d * sum(q), for the offset term
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

// One activation row (K floats) -> K / 32 blocks, as llama.cpp's quantize_row_q8_0/q8_1 do:
// d = max |x| / 127, codes = round-half-even(x / d) in -127..127, s = d * sum(codes).
void quantize_row(const float* x, int64_t k, ActBlock* out) {
  for (int64_t b = 0; b < k / QK; ++b) {
    const float* xb = x + b * QK;
#ifdef TINYSLM_AVX2
    __m256 v[4];
    __m256 amax = _mm256_setzero_ps();
    const __m256 sign = _mm256_set1_ps(-0.f);
    for (int i = 0; i < 4; ++i) {
      v[i] = _mm256_loadu_ps(xb + 8 * i);
      amax = _mm256_max_ps(amax, _mm256_andnot_ps(sign, v[i]));
    }
    __m128 m4 = _mm_max_ps(_mm256_castps256_ps128(amax), _mm256_extractf128_ps(amax, 1));
    m4 = _mm_max_ps(m4, _mm_movehl_ps(m4, m4));
    m4 = _mm_max_ss(m4, _mm_movehdup_ps(m4));
    const float d = _mm_cvtss_f32(m4) / 127.f, id = d != 0.f ? 1.f / d : 0.f;
    __m256i q[4];
    for (int i = 0; i < 4; ++i) q[i] = _mm256_cvtps_epi32(_mm256_mul_ps(v[i], _mm256_set1_ps(id)));  // half to even
    const __m256i sum = _mm256_add_epi32(_mm256_add_epi32(q[0], q[1]), _mm256_add_epi32(q[2], q[3]));
    // int32 -> int8 by two saturating packs, which interleave 128-bit lanes; one permute puts them back in order
    const __m256i packed = _mm256_packs_epi16(_mm256_packs_epi32(q[0], q[1]), _mm256_packs_epi32(q[2], q[3]));
    _mm256_storeu_si256((__m256i*)out[b].q, _mm256_permutevar8x32_epi32(packed, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7)));
    out[b].d = d;
    out[b].s = d * (float)tinyslm::hsum_i32(sum);
#else
    float amax = 0.f;
    for (int i = 0; i < QK; ++i) amax = std::max(amax, std::fabs(xb[i]));
    const float d = amax / 127.f, id = d != 0.f ? 1.f / d : 0.f;
    int sum = 0;
    for (int i = 0; i < QK; ++i) {
      const int q = (int)std::nearbyint(xb[i] * id);  // round half to even, as _mm256_cvtps_epi32 does
      out[b].q[i] = (int8_t)q;
      sum += q;
    }
    out[b].d = d;
    out[b].s = d * (float)sum;
#endif
  }
}

// Where code i (0..31) of row r (0..7) sits in a record's codes, and how to read it.
inline int code_at(int kind, const uint8_t* codes, int r, int i) {
  if (kind == 2) return (int8_t)codes[(i / 4) * 32 + r * 4 + i % 4];
  const int j = i % 16;  // value j in the low nibble of byte j, value j + 16 in its high nibble
  const uint8_t byte = codes[(j / 4) * 32 + r * 4 + j % 4];
  return i < 16 ? byte & 0x0F : byte >> 4;
}

// The scale and offset of row r of a record: w_i = code_i * d + m.
inline void scale_at(int kind, const uint8_t* rec, int r, float* d, float* m) {
  *d = f16_to_f32(rec + 2 * r);
  *m = kind == 1 ? f16_to_f32(rec + 16 + 2 * r) : kind == 0 ? -8.f * *d : 0.f;
}

// One group of 8 weight rows against R activation rows: out[r][0..8) = the 8 dot products of activation row r.
template <int Kind, int R>
void dot_group(const uint8_t* rec, int64_t nb, const ActBlock* const* x, float* const* out) {
  constexpr int bytes = record_bytes(Kind);
#ifdef TINYSLM_AVX2
  const __m256i low = _mm256_set1_epi8(0x0F), ones = _mm256_set1_epi16(1);
  __m256 acc[R];
  for (int r = 0; r < R; ++r) acc[r] = _mm256_setzero_ps();
  for (int64_t b = 0; b < nb; ++b, rec += bytes) {
    const __m256 d = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i*)rec));  // 8 rows' scales
    const uint8_t* codes = rec + record_codes(Kind);
    if constexpr (Kind != 2) {
      const __m256 m = Kind == 1 ? _mm256_cvtph_ps(_mm_loadu_si128((const __m128i*)(rec + 16)))
                                 : _mm256_mul_ps(d, _mm256_set1_ps(-8.f));
      __m256i w[8];  // w[c]: codes 4c..4c+3 of the 8 rows (low nibbles); w[c + 4]: codes 16 + 4c.. (high)
      for (int c = 0; c < 4; ++c) {
        const __m256i v = _mm256_loadu_si256((const __m256i*)(codes + 32 * c));
        w[c] = _mm256_and_si256(v, low);
        w[c + 4] = _mm256_and_si256(_mm256_srli_epi16(v, 4), low);
      }
      for (int r = 0; r < R; ++r) {
        const int32_t* a = (const int32_t*)x[r][b].q;  // a[c]: activation codes 4c..4c+3
        __m256i s = _mm256_maddubs_epi16(w[0], _mm256_set1_epi32(a[0]));
        for (int c = 1; c < 8; ++c)  // int16 sums of at most 8 * 2 * 15 * 127 = 30,480: no overflow
          s = _mm256_add_epi16(s, _mm256_maddubs_epi16(w[c], _mm256_set1_epi32(a[c])));
        const __m256 dot = _mm256_cvtepi32_ps(_mm256_madd_epi16(s, ones));  // lane = row
        acc[r] = _mm256_fmadd_ps(_mm256_mul_ps(d, _mm256_set1_ps(x[r][b].d)), dot, acc[r]);
        acc[r] = _mm256_fmadd_ps(m, _mm256_set1_ps(x[r][b].s), acc[r]);
      }
    } else {
      for (int r = 0; r < R; ++r) {
        const int32_t* a = (const int32_t*)x[r][b].q;
        __m256i s = _mm256_setzero_si256();
        for (int c = 0; c < 8; ++c) {  // signed x signed via |w| and sign(x, w); int32 sums per chunk
          const __m256i v = _mm256_loadu_si256((const __m256i*)(codes + 32 * c));
          const __m256i p = _mm256_maddubs_epi16(_mm256_sign_epi8(v, v), _mm256_sign_epi8(_mm256_set1_epi32(a[c]), v));
          s = _mm256_add_epi32(s, _mm256_madd_epi16(p, ones));
        }
        acc[r] = _mm256_fmadd_ps(_mm256_mul_ps(d, _mm256_set1_ps(x[r][b].d)), _mm256_cvtepi32_ps(s), acc[r]);
      }
    }
  }
  for (int r = 0; r < R; ++r) _mm256_storeu_ps(out[r], acc[r]);
#else
  for (int r = 0; r < R; ++r) std::fill(out[r], out[r] + ROWS, 0.f);
  for (int64_t b = 0; b < nb; ++b, rec += bytes) {
    const uint8_t* codes = rec + record_codes(Kind);
    for (int row = 0; row < ROWS; ++row) {
      float d, m;
      scale_at(Kind, rec, row, &d, &m);
      for (int r = 0; r < R; ++r) {
        int sum = 0;
        for (int i = 0; i < QK; ++i) sum += code_at(Kind, codes, row, i) * x[r][b].q[i];
        out[r][row] += d * x[r][b].d * (float)sum + m * x[r][b].s;
      }
    }
  }
#endif
}

// Groups g0..g1 against every activation row, 4 rows at a time so that each record is unpacked once for 4.
template <int Kind>
void mm_groups(const uint8_t* w, int64_t g0, int64_t g1, int64_t nb, const std::vector<const ActBlock*>& x,
               float* y, int64_t n) {
  const int64_t m = (int64_t)x.size(), row_bytes = nb * record_bytes(Kind);
  float tail[4][ROWS];  // the last group's outputs when it holds padding rows
  for (int64_t g = g0; g < g1; ++g) {
    const uint8_t* rec = w + g * row_bytes;
    const bool whole = (g + 1) * ROWS <= n;
    auto target = [&](int64_t r, int i) { return whole ? y + r * n + g * ROWS : tail[i]; };
    auto copy_tail = [&](int64_t r, int i) {
      if (!whole) std::copy(tail[i], tail[i] + (n - g * ROWS), y + r * n + g * ROWS);
    };
    int64_t r = 0;
    for (; r + 4 <= m; r += 4) {
      float* out[4] = {target(r, 0), target(r + 1, 1), target(r + 2, 2), target(r + 3, 3)};
      dot_group<Kind, 4>(rec, nb, &x[r], out);
      for (int i = 0; i < 4; ++i) copy_tail(r + i, i);
    }
    for (; r < m; ++r) {
      float* out[1] = {target(r, 0)};
      dot_group<Kind, 1>(rec, nb, &x[r], out);
      copy_tail(r, 0);
    }
  }
}

void check_kind(int64_t kind, const char* op) {
  TORCH_CHECK(kind >= 0 && kind <= 2, op, ": kind must be 0 (Q4_0), 1 (Q4_1) or 2 (Q8_0), found ", kind);
}

// The file's blocks (N, B * block bytes) -> the packed records (G, B * 8 * block bytes), padding rows zero.
at::Tensor ggml_pack(const at::Tensor& w, int64_t kind) {
  check_kind(kind, "ggml_pack");
  TORCH_CHECK(w.dim() == 2 && w.scalar_type() == at::kByte && w.is_contiguous(), "ggml_pack: w must be (N, bytes) contiguous uint8");
  const int bytes = block_bytes(kind), head = header(kind), nc = code_bytes(kind);
  TORCH_CHECK(w.size(1) % bytes == 0, "ggml_pack: rows of ", w.size(1), " bytes are not whole ", bytes, "-byte blocks");
  const int64_t n = w.size(0), nb = w.size(1) / bytes, groups = (n + ROWS - 1) / ROWS;
  at::Tensor out = at::zeros({groups, nb * record_bytes(kind)}, w.options());
  const uint8_t* src = w.data_ptr<uint8_t>();
  uint8_t* dst = out.data_ptr<uint8_t>();
  at::parallel_for(0, groups, 16, [&](int64_t g0, int64_t g1) {
    for (int64_t g = g0; g < g1; ++g)
      for (int r = 0; r < ROWS && g * ROWS + r < n; ++r) {
        const uint8_t* blk = src + (g * ROWS + r) * nb * bytes;
        for (int64_t b = 0; b < nb; ++b, blk += bytes) {
          uint8_t* rec = dst + (g * nb + b) * record_bytes(kind);
          std::memcpy(rec + 2 * r, blk, 2);                            // d
          if (kind == 1) std::memcpy(rec + 16 + 2 * r, blk + 2, 2);    // m
          for (int c = 0; c < nc / 4; ++c)                             // codes, 4 bytes a chunk
            std::memcpy(rec + record_codes(kind) + 32 * c + 4 * r, blk + head + 4 * c, 4);
        }
      }
  });
  return out;
}

// The inverse of ggml_pack: records (G, ...) -> the file's blocks for the first n rows (n, B * block bytes).
at::Tensor ggml_unpack(const at::Tensor& p, int64_t kind, int64_t n) {
  check_kind(kind, "ggml_unpack");
  TORCH_CHECK(p.dim() == 2 && p.scalar_type() == at::kByte && p.is_contiguous(), "ggml_unpack: p must be (G, bytes) contiguous uint8");
  const int bytes = block_bytes(kind), head = header(kind), nc = code_bytes(kind);
  TORCH_CHECK(p.size(1) % record_bytes(kind) == 0 && (n + ROWS - 1) / ROWS == p.size(0), "ggml_unpack: a (", p.size(0),
              ", ", p.size(1), ") packed weight does not hold ", n, " rows");
  const int64_t nb = p.size(1) / record_bytes(kind);
  at::Tensor out = at::empty({n, nb * bytes}, p.options());
  const uint8_t* src = p.data_ptr<uint8_t>();
  uint8_t* dst = out.data_ptr<uint8_t>();
  at::parallel_for(0, n, 64, [&](int64_t n0, int64_t n1) {
    for (int64_t row = n0; row < n1; ++row) {
      const int64_t g = row / ROWS, r = row % ROWS;
      uint8_t* blk = dst + row * nb * bytes;
      for (int64_t b = 0; b < nb; ++b, blk += bytes) {
        const uint8_t* rec = src + (g * nb + b) * record_bytes(kind);
        std::memcpy(blk, rec + 2 * r, 2);
        if (kind == 1) std::memcpy(blk + 2, rec + 16 + 2 * r, 2);
        for (int c = 0; c < nc / 4; ++c) std::memcpy(blk + head + 4 * c, rec + record_codes(kind) + 32 * c + 4 * r, 4);
      }
    }
  });
  return out;
}

// x (M, K) float32 @ the packed weight of n rows -> y (M, n) float32
at::Tensor ggml_mm(const at::Tensor& x, const at::Tensor& p, int64_t kind, int64_t n) {
  check_kind(kind, "ggml_mm");
  TORCH_CHECK(x.dim() == 2 && x.scalar_type() == at::kFloat && x.is_contiguous(), "ggml_mm: x must be (M, K) contiguous float32");
  TORCH_CHECK(p.dim() == 2 && p.scalar_type() == at::kByte && p.is_contiguous(), "ggml_mm: w must be (G, bytes) contiguous uint8");
  const int64_t m = x.size(0), k = x.size(1), nb = k / QK;
  TORCH_CHECK(k % QK == 0 && p.size(1) == nb * record_bytes(kind) && p.size(0) == (n + ROWS - 1) / ROWS, "ggml_mm: a (",
              p.size(0), ", ", p.size(1), ") packed weight does not hold ", n, " rows of K = ", k);
  std::vector<ActBlock> act(m * nb);
  const float* xp = x.data_ptr<float>();
  at::parallel_for(0, m, 16, [&](int64_t r0, int64_t r1) {  // a few rows: on this thread (no fork / join)
    for (int64_t r = r0; r < r1; ++r) quantize_row(xp + r * k, k, &act[r * nb]);
  });
  std::vector<const ActBlock*> rows(m);
  for (int64_t r = 0; r < m; ++r) rows[r] = &act[r * nb];
  at::Tensor y = at::empty({m, n}, x.options());
  float* yp = y.data_ptr<float>();
  const uint8_t* wp = p.data_ptr<uint8_t>();
  at::parallel_for(0, p.size(0), 2, [&](int64_t g0, int64_t g1) {
    if (kind == 0) mm_groups<0>(wp, g0, g1, nb, rows, yp, n);
    else if (kind == 1) mm_groups<1>(wp, g0, g1, nb, rows, yp, n);
    else mm_groups<2>(wp, g0, g1, nb, rows, yp, n);
  });
  return y;
}

// The packed weight -> its first n rows (n, K) in float32, as llama.cpp dequantizes them.
// For long prompts: a float32 GEMM over the dequantized weight beats the block dot products.
at::Tensor ggml_dequantize(const at::Tensor& p, int64_t kind, int64_t n) {
  check_kind(kind, "ggml_dequantize");
  TORCH_CHECK(p.dim() == 2 && p.scalar_type() == at::kByte && p.is_contiguous(), "ggml_dequantize: p must be (G, bytes) contiguous uint8");
  TORCH_CHECK(p.size(1) % record_bytes(kind) == 0 && (n + ROWS - 1) / ROWS == p.size(0), "ggml_dequantize: a (",
              p.size(0), ", ", p.size(1), ") packed weight does not hold ", n, " rows");
  const int64_t nb = p.size(1) / record_bytes(kind), k = nb * QK;
  at::Tensor out = at::empty({n, k}, p.options().dtype(at::kFloat));
  const uint8_t* src = p.data_ptr<uint8_t>();
  float* op = out.data_ptr<float>();
  at::parallel_for(0, n, 16, [&](int64_t n0, int64_t n1) {
    for (int64_t row = n0; row < n1; ++row) {
      const int64_t g = row / ROWS;
      const int r = (int)(row % ROWS);
      float* o = op + row * k;
      for (int64_t b = 0; b < nb; ++b, o += QK) {
        const uint8_t* rec = src + (g * nb + b) * record_bytes(kind);
        float d, m;
        scale_at(kind, rec, r, &d, &m);
        if (kind == 0) m = 0.f;  // as ggml: (q - 8) * d, not q * d - 8 d (they round differently)
        const int shift = kind == 0 ? 8 : 0;
        for (int i = 0; i < QK; ++i) o[i] = (float)(code_at(kind, rec + record_codes(kind), r, i) - shift) * d + m;
      }
    }
  });
  return out;
}

}  // namespace

TORCH_LIBRARY(tinyslm, m) {
  m.def("ggml_pack(Tensor w, int kind) -> Tensor");
  m.def("ggml_unpack(Tensor p, int kind, int n) -> Tensor");
  m.def("ggml_mm(Tensor x, Tensor p, int kind, int n) -> Tensor");
  m.def("ggml_dequantize(Tensor p, int kind, int n) -> Tensor");
}

TORCH_LIBRARY_IMPL(tinyslm, CPU, m) {
  m.impl("ggml_pack", &ggml_pack);
  m.impl("ggml_unpack", &ggml_unpack);
  m.impl("ggml_mm", &ggml_mm);
  m.impl("ggml_dequantize", &ggml_dequantize);
}
