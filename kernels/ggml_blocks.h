// The GGUF block kinds the native kernels keep, their interleaved layout, and the product of a group of
// 8 weight rows with 8-bit activations (included by ggml_mm.cpp and decode_block.cpp).
//
// Legend: M activation rows, N weight rows (out_features), K columns (in_features), B = K / 32 blocks,
// G = ceil(N / 8) groups of 8 weight rows.
//
// A GGUF block of 32 weights is a float16 scale (and for Q4_1 a float16 offset) and 32 codes:
//     Q4_0  d, 16 bytes of nibbles     w = (q - 8) * d      q in 0..15
//     Q4_1  d, m, 16 bytes             w = q * d + m        q in 0..15
//     Q8_0  d, 32 int8                 w = q * d
// (byte j of a 4-bit block holds value j in its low nibble and value j + 16 in its high one), and
//     Q4_K  256 values: d, dmin (f16), 8 sub-blocks of 32 with 6-bit scale sc_j and min m_j,
//           w = (d * sc_j) * q - dmin * m_j       q in 0..15      (4.5 bits a weight)
// so a Q4_K sub-block is a Q4_1 block with scale d * sc_j and offset -dmin * m_j (both exact in float32), and
//     Q6_K  256 values: d (f16), 16 groups of 16 with an int8 scale sc_g, 6-bit codes (4 low bits + 2 high),
//           w = (d * sc_g) * (q - 32)     q in 0..63      (6.5625 bits a weight)
//
// As in llama.cpp, each activation row is first quantized to 8 bits per block of 32 (one float
// scale dx per block, codes in -127..127, plus sx = dx * sum(codes) for the offset term). The dot
// product of a weight block and an activation block is then integer arithmetic:
//     Q8_0:        d * dx * sum_i q_i * qx_i
//     Q4_1:        d * dx * sum_i q_i * qx_i + m * sx
//     Q4_0:        the same as Q4_1 with m = -8 d   (sum_i (q_i - 8) qx_i = sum_i q_i qx_i - 8 sum_i qx_i)
//     Q4_K:        the same as Q4_1 with d = d * sc_j, m = -dmin * m_j
//     Q6_K:        per half of 16: d * sc_g * dx * (sum_i q_i * qx_i - 32 sum_i qx_i)
//
// The layout (ggml_pack, at load time; ggml_unpack gives the file's bytes back). Decoding is bound
// by the bytes of weights read, but one row at a time the 4-bit product costs more instructions
// than memory delivers bytes (unpack the nibbles, two multiply-adds, a horizontal sum and a scale
// per row and block). So, like llama.cpp's repacked CPU layouts, 8 weight rows are interleaved
// block by block: the record for (group g, block b) holds
//     d[8] (f16), [m[8] (f16), Q4_1 only], codes: chunk c = bytes 4c..4c+3 of each of the 8 rows
//     (32 bytes: row 0's four, row 1's four, ...), chunks c = 0..3 (4-bit) or 0..7 (Q8_0)
// the same bytes as the 8 blocks it replaces. Q4_K keeps its super-block of 256: per group, d[8] and
// dmin[8] (f16), then per sub-block of 32 a record of sc[8], m[8] (one byte each, unpacked from the
// file's 6-bit fields) and the codes as above, nibbles reordered to the Q4_0 order (148 bytes per
// row and 256 values where the file has 144). Q6_K likewise: per group d[8] (f16), then per 32 values
// sc[16] (int8: the rows' first-half scales, then their second-half ones), the low 4 bits as a 4-bit
// record's codes, and the high 2 bits as two 32-byte chunks (lane 4r + t of the first holds, at bits
// 2c..2c+1, the high bits of value 4c + t of row r; the second the same for values 16..31): 210 bytes
// per row and 256 values, as in the file. One 32-byte load is then 4 codes of 8 rows; the
// matching 4 activation codes are broadcast to all 8 lanes, and a vpmaddubsw + vpmaddwd leave one
// partial sum per row in its own lane: 8 rows finish together in one register, with their 8 scales
// applied by one vector multiply, and no horizontal sums. The last group is padded with zero rows.
// Threads split the groups (torch's intra-op pool). Without AVX2 the same arithmetic runs as plain
// loops (same result: the integer sums are exact either way).

#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <type_traits>
#include <vector>

#include <ATen/core/Tensor.h>

#include "simd.h"

namespace {

constexpr int QK = 32;  // values per block
constexpr int ROWS = 8;  // weight rows interleaved in one group
constexpr int PREFETCH_AHEAD = 2048;  // bytes: how far ahead of its reads dot_group asks for weights

// Kind 0 = Q4_0, 1 = Q4_1, 2 = Q8_0, 3 = Q4_K, 4 = Q6_K.
// A file block: its values and bytes; a packed unit (one file block of each of the 8 rows): its bytes;
// for the K-quants, where a unit's records of 32 values start and their size.
constexpr int block_values(int kind) { return kind >= 3 ? 256 : QK; }
constexpr int block_bytes(int kind) { return kind == 0 ? 18 : kind == 1 ? 20 : kind == 2 ? 34 : kind == 3 ? 144 : 210; }
constexpr int unit_head(int kind) { return kind == 3 ? 32 : 16; }
constexpr int k_record_bytes(int kind) { return kind == 3 ? 144 : 208; }
constexpr int unit_bytes(int kind) { return kind >= 3 ? unit_head(kind) + 8 * k_record_bytes(kind) : ROWS * block_bytes(kind); }
constexpr int record_codes(int kind) { return kind == 1 ? 32 : 16; }  // where a record's codes start

// Bytes of one group's packed row for K values.
constexpr int64_t group_bytes(int kind, int64_t k) { return k / block_values(kind) * unit_bytes(kind); }

// The packed unit holding 32-value block b (0..K/32) of a group whose bytes start at `group`, and b's record in it.
template <int Kind>
inline const uint8_t* unit_of(const uint8_t* group, int64_t b) {
  return group + b * QK / block_values(Kind) * unit_bytes(Kind);
}

template <int Kind>
inline const uint8_t* record(const uint8_t* group, int64_t b) {
  if constexpr (Kind >= 3) return unit_of<Kind>(group, b) + unit_head(Kind) + (b % 8) * k_record_bytes(Kind);
  return unit_of<Kind>(group, b);
}

struct ActBlock {  // one quantized block of an activation row
  float d;         // scale: x ~ q * d
  float s;         // d * sum(q), for the offset term
  int8_t q[QK];
  int32_t half_sum[2];  // sum(q) of values 0..15 and 16..31, for Q6_K's offset of 32 per half
};

inline float f16_to_f32(const uint8_t* p) {
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
inline void quantize_row(const float* x, int64_t k, ActBlock* out) {
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
    // int32 -> int8 by two saturating packs, which interleave 128-bit lanes; one permute puts them back in order
    const __m256i packed = _mm256_packs_epi16(_mm256_packs_epi32(q[0], q[1]), _mm256_packs_epi32(q[2], q[3]));
    _mm256_storeu_si256((__m256i*)out[b].q, _mm256_permutevar8x32_epi32(packed, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7)));
    out[b].d = d;
    out[b].half_sum[0] = tinyslm::hsum_i32(_mm256_add_epi32(q[0], q[1]));
    out[b].half_sum[1] = tinyslm::hsum_i32(_mm256_add_epi32(q[2], q[3]));
    out[b].s = d * (float)(out[b].half_sum[0] + out[b].half_sum[1]);
#else
    float amax = 0.f;
    for (int i = 0; i < QK; ++i) amax = std::max(amax, std::fabs(xb[i]));
    const float d = amax / 127.f, id = d != 0.f ? 1.f / d : 0.f;
    out[b].half_sum[0] = out[b].half_sum[1] = 0;
    for (int i = 0; i < QK; ++i) {
      const int q = (int)std::nearbyint(xb[i] * id);  // round half to even, as _mm256_cvtps_epi32 does
      out[b].q[i] = (int8_t)q;
      out[b].half_sum[i / 16] += q;
    }
    out[b].d = d;
    out[b].s = d * (float)(out[b].half_sum[0] + out[b].half_sum[1]);
#endif
  }
}

// Where code i (0..31) of row r (0..7) sits in a record's codes, and how to read it.
inline int code_at(int kind, const uint8_t* codes, int r, int i) {
  if (kind == 2) return (int8_t)codes[(i / 4) * 32 + r * 4 + i % 4];
  const int j = i % 16;  // value j in the low nibble of byte j, value j + 16 in its high nibble
  const uint8_t byte = codes[(j / 4) * 32 + r * 4 + j % 4];
  const int low = i < 16 ? byte & 0x0F : byte >> 4;
  if (kind != 4) return low;
  const uint8_t high = codes[128 + (i / 16) * 32 + r * 4 + j % 4];  // Q6_K: bits 2c..2c+1, c = j / 4
  return low | (((high >> (2 * (j / 4))) & 3) << 4);
}

// The scale and offset of row r in block b of a group, for values 16 h .. 16 h + 15: w_i = code_i * d + m.
template <int Kind>
inline void scale_at(const uint8_t* group, int64_t b, int r, int h, float* d, float* m) {
  const uint8_t* rec = record<Kind>(group, b);
  if constexpr (Kind == 4) {
    *d = f16_to_f32(unit_of<4>(group, b) + 2 * r) * (float)(int8_t)rec[8 * h + r];
    *m = -32.f * *d;
  } else if constexpr (Kind == 3) {
    const uint8_t* head = unit_of<3>(group, b);
    *d = f16_to_f32(head + 2 * r) * (float)rec[r];
    *m = -(f16_to_f32(head + 16 + 2 * r) * (float)rec[8 + r]);
  } else {
    *d = f16_to_f32(rec + 2 * r);
    *m = Kind == 1 ? f16_to_f32(rec + 16 + 2 * r) : Kind == 0 ? -8.f * *d : 0.f;
  }
}

#ifdef TINYSLM_AVX2
inline __m256 bytes_to_ps(const uint8_t* p) {  // 8 unsigned bytes -> 8 floats
  return _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i*)p)));
}

// A 4-bit record's 128 bytes of codes -> w[c]: codes 4c..4c+3 of the 8 rows (low nibbles), w[c + 4]: 16 + 4c.. (high).
inline void nibbles8(const uint8_t* codes, __m256i* w) {
  const __m256i low = _mm256_set1_epi8(0x0F);
  for (int c = 0; c < 4; ++c) {
    const __m256i v = _mm256_loadu_si256((const __m256i*)(codes + 32 * c));
    w[c] = _mm256_and_si256(v, low);
    w[c + 4] = _mm256_and_si256(_mm256_srli_epi16(v, 4), low);
  }
}

// The 8 rows' scales d and offsets m of a record (m unused for Q8_0); for Q4_K from its super-block's d and
// -dmin (unit_d, unit_m: read once per 8 records).
template <int Kind>
inline void scales8(const uint8_t* rec, __m256 unit_d, __m256 unit_m, __m256* d, __m256* m) {
  if constexpr (Kind == 3) {
    *d = _mm256_mul_ps(unit_d, bytes_to_ps(rec));
    *m = _mm256_mul_ps(unit_m, bytes_to_ps(rec + 8));
  } else {
    *d = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i*)rec));
    if constexpr (Kind == 1) *m = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i*)(rec + 16)));
    if constexpr (Kind == 0) *m = _mm256_mul_ps(*d, _mm256_set1_ps(-8.f));
  }
}
#endif

// One group of 8 weight rows against R activation rows: out[r][0..8) = the 8 dot products of activation row r.
template <int Kind, int R>
void dot_group(const uint8_t* group, int64_t nb, const ActBlock* const* x, float* const* out) {
#ifdef TINYSLM_AVX2
  const __m256i ones = _mm256_set1_epi16(1);
  __m256 acc[R], unit_d = _mm256_setzero_ps(), unit_m = _mm256_setzero_ps();
  for (int r = 0; r < R; ++r) acc[r] = _mm256_setzero_ps();
  constexpr int per_block = Kind >= 3 ? unit_bytes(Kind) / 8 : unit_bytes(Kind);  // a group's bytes per 32 values
  for (int64_t b = 0; b < nb; ++b) {
    const uint8_t* rec = record<Kind>(group, b);
    const uint8_t* codes = rec + record_codes(Kind);
    // Fetch 2 KB ahead of this read (into the next group past the end): the reads never wait at a page
    // boundary, where the hardware's prefetcher stops (measured over TinyLlama-1.1B's matrices, 2 cores
    // of an AMD EPYC: 11% more GB/s for Q4_0, 10% for Q8_0, 28% for Q4_K_M).
    for (int j = 0; j < per_block; j += 64) __builtin_prefetch(group + b * per_block + PREFETCH_AHEAD + j);
    if (Kind >= 3 && b % 8 == 0) {  // a new super-block
      const uint8_t* head = unit_of<Kind>(group, b);
      unit_d = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i*)head));
      if (Kind == 3) unit_m = _mm256_sub_ps(_mm256_setzero_ps(), _mm256_cvtph_ps(_mm_loadu_si128((const __m128i*)(head + 16))));
    }
    __m256 d = unit_d, m = unit_m;  // the 8 rows' scales and offsets (Q6_K: two scales per row, below)
    if constexpr (Kind != 4) scales8<Kind>(rec, unit_d, unit_m, &d, &m);
    if constexpr (Kind == 4) {
      __m256i w[8];  // as for 4 bits, with the high 2 bits put back at bits 4..5: codes 0..63
      nibbles8(codes, w);
      const __m256i h0 = _mm256_loadu_si256((const __m256i*)(codes + 128)), h1 = _mm256_loadu_si256((const __m256i*)(codes + 160));
      const __m256i high = _mm256_set1_epi8(0x30);
      // the high bits of chunk c sit at bits 2c..2c+1 of h0 / h1: move them to bits 4..5
      w[0] = _mm256_or_si256(w[0], _mm256_and_si256(_mm256_slli_epi16(h0, 4), high));
      w[1] = _mm256_or_si256(w[1], _mm256_and_si256(_mm256_slli_epi16(h0, 2), high));
      w[2] = _mm256_or_si256(w[2], _mm256_and_si256(h0, high));
      w[3] = _mm256_or_si256(w[3], _mm256_and_si256(_mm256_srli_epi16(h0, 2), high));
      w[4] = _mm256_or_si256(w[4], _mm256_and_si256(_mm256_slli_epi16(h1, 4), high));
      w[5] = _mm256_or_si256(w[5], _mm256_and_si256(_mm256_slli_epi16(h1, 2), high));
      w[6] = _mm256_or_si256(w[6], _mm256_and_si256(h1, high));
      w[7] = _mm256_or_si256(w[7], _mm256_and_si256(_mm256_srli_epi16(h1, 2), high));
      const __m256 d0 = _mm256_mul_ps(unit_d, _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64((const __m128i*)rec))));
      const __m256 d1 = _mm256_mul_ps(unit_d, _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64((const __m128i*)(rec + 8)))));
      for (int r = 0; r < R; ++r) {
        const int32_t* a = (const int32_t*)x[r][b].q;
        __m256i half[2];
        for (int h = 0; h < 2; ++h) {  // pairs of products <= 2 * 63 * 127: two fit in int16, four do not
          const __m256i p0 = _mm256_add_epi16(_mm256_maddubs_epi16(w[4 * h], _mm256_set1_epi32(a[4 * h])),
                                              _mm256_maddubs_epi16(w[4 * h + 1], _mm256_set1_epi32(a[4 * h + 1])));
          const __m256i p1 = _mm256_add_epi16(_mm256_maddubs_epi16(w[4 * h + 2], _mm256_set1_epi32(a[4 * h + 2])),
                                              _mm256_maddubs_epi16(w[4 * h + 3], _mm256_set1_epi32(a[4 * h + 3])));
          half[h] = _mm256_add_epi32(_mm256_madd_epi16(p0, ones), _mm256_madd_epi16(p1, ones));
          half[h] = _mm256_sub_epi32(half[h], _mm256_set1_epi32(32 * x[r][b].half_sum[h]));  // codes q - 32
        }
        const __m256 dx = _mm256_set1_ps(x[r][b].d);
        acc[r] = _mm256_fmadd_ps(_mm256_mul_ps(d0, dx), _mm256_cvtepi32_ps(half[0]), acc[r]);
        acc[r] = _mm256_fmadd_ps(_mm256_mul_ps(d1, dx), _mm256_cvtepi32_ps(half[1]), acc[r]);
      }
    } else if constexpr (Kind != 2) {
      __m256i w[8];
      nibbles8(codes, w);
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
  for (int64_t b = 0; b < nb; ++b) {
    const uint8_t* codes = record<Kind>(group, b) + record_codes(Kind);
    for (int row = 0; row < ROWS; ++row)
      for (int h = 0; h < 2; ++h) {  // halves of 16 values (Q6_K's scales; the others have one per 32)
        float d, m;
        scale_at<Kind>(group, b, row, h, &d, &m);
        for (int r = 0; r < R; ++r) {
          int sum = 0;
          for (int i = 16 * h; i < 16 * h + 16; ++i) sum += code_at(Kind, codes, row, i) * x[r][b].q[i];
          out[r][row] += d * x[r][b].d * (float)sum + m * x[r][b].d * (float)x[r][b].half_sum[h];
        }
      }
  }
#endif
}

// Groups g0..g1 against every activation row, 4 rows at a time so that each record is unpacked once for 4.
template <int Kind>
void mm_groups(const uint8_t* w, int64_t g0, int64_t g1, int64_t nb, const std::vector<const ActBlock*>& x,
               float* y, int64_t n) {
  const int64_t m = (int64_t)x.size(), row_bytes = group_bytes(Kind, nb * QK);
  float tail[4][ROWS];  // the last group's outputs when it holds padding rows
  for (int64_t g = g0; g < g1; ++g) {
    const uint8_t* group = w + g * row_bytes;
    const bool whole = (g + 1) * ROWS <= n;
    auto target = [&](int64_t r, int i) { return whole ? y + r * n + g * ROWS : tail[i]; };
    auto copy_tail = [&](int64_t r, int i) {
      if (!whole) std::copy(tail[i], tail[i] + (n - g * ROWS), y + r * n + g * ROWS);
    };
    int64_t r = 0;
    for (; r + 4 <= m; r += 4) {
      float* out[4] = {target(r, 0), target(r + 1, 1), target(r + 2, 2), target(r + 3, 3)};
      dot_group<Kind, 4>(group, nb, &x[r], out);
      for (int i = 0; i < 4; ++i) copy_tail(r + i, i);
    }
    for (; r < m; ++r) {
      float* out[1] = {target(r, 0)};
      dot_group<Kind, 1>(group, nb, &x[r], out);
      copy_tail(r, 0);
    }
  }
}

inline void check_kind(int64_t kind, const char* op) {
  TORCH_CHECK(kind >= 0 && kind <= 4, op, ": kind must be 0 (Q4_0), 1 (Q4_1), 2 (Q8_0), 3 (Q4_K) or 4 (Q6_K), found ", kind);
}

// Checks that p holds n rows packed as `kind`, and returns K.
inline int64_t packed_k(const at::Tensor& p, int64_t kind, int64_t n, const char* op) {
  TORCH_CHECK(p.dim() == 2 && p.scalar_type() == at::kByte && p.is_contiguous(), op, ": the packed weight must be (G, bytes) contiguous uint8");
  const int64_t unit = unit_bytes((int)kind);
  TORCH_CHECK(p.size(1) % unit == 0 && (n + ROWS - 1) / ROWS == p.size(0), op, ": a (", p.size(0), ", ", p.size(1),
              ") packed weight does not hold ", n, " rows of kind ", kind);
  return p.size(1) / unit * block_values((int)kind);
}

// Calls f(std::integral_constant<int, kind>{}): the kind as a compile-time constant.
template <typename F>
void with_kind(int64_t kind, F&& f) {
  if (kind == 0) f(std::integral_constant<int, 0>{});
  else if (kind == 1) f(std::integral_constant<int, 1>{});
  else if (kind == 2) f(std::integral_constant<int, 2>{});
  else if (kind == 3) f(std::integral_constant<int, 3>{});
  else f(std::integral_constant<int, 4>{});
}

}  // namespace
