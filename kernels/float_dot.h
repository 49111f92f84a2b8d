// A bfloat16 or float32 weight row times float32 activations, summed in float32 (included by float_mv.cpp and
// decode_block.cpp). A bfloat16 is the top half of a float32: widening is a shift left by 16.

#pragma once

#include <cstdint>
#include <cstring>

#include "simd.h"

namespace {

inline float bf16_to_f32(uint16_t h) {
  const uint32_t bits = (uint32_t)h << 16;
  float out;
  std::memcpy(&out, &bits, 4);
  return out;
}

// Weight elements: bfloat16 (held as its 16 bits) or float32.
inline float to_f32(uint16_t h) { return bf16_to_f32(h); }
inline float to_f32(float f) { return f; }

#ifdef TINYSLM_AVX2
inline __m256 widen(const uint16_t* p) {  // 8 bfloat16 -> 8 float32
  const __m256i v = _mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i*)p));
  return _mm256_castsi256_ps(_mm256_slli_epi32(v, 16));
}

inline __m256 widen(const float* p) { return _mm256_loadu_ps(p); }  // 8 float32 as they are

using tinyslm::hsum;
#endif

// One weight row (K values) against one activation row (K float32).
template <typename W>
inline float dot(const W* w, const float* x, int64_t k) {
  int64_t i = 0;
  float sum = 0.f;
#ifdef TINYSLM_AVX2
  __m256 a0 = _mm256_setzero_ps(), a1 = _mm256_setzero_ps();
  for (; i + 16 <= k; i += 16) {
    a0 = _mm256_fmadd_ps(widen(w + i), _mm256_loadu_ps(x + i), a0);
    a1 = _mm256_fmadd_ps(widen(w + i + 8), _mm256_loadu_ps(x + i + 8), a1);
  }
  sum = hsum(_mm256_add_ps(a0, a1));
#endif
  for (; i < k; ++i) sum += to_f32(w[i]) * x[i];
  return sum;
}

// Four weight rows against one activation row: each x load serves four rows, four independent sums.
template <typename W>
inline void dot4(const W* w, int64_t k, const float* x, float* out) {
#ifdef TINYSLM_AVX2
  if (k % 8 == 0) {
    __m256 a0 = _mm256_setzero_ps(), a1 = _mm256_setzero_ps(), a2 = _mm256_setzero_ps(), a3 = _mm256_setzero_ps();
    // The next 4 rows follow these in memory: fetch them at the pace these are read (4 x 8 values, 64 bytes of
    // bfloat16 or 128 of float32, a step), so that the reads never wait at a page boundary, where the hardware's
    // prefetcher stops and starts again (measured over TinyLlama-1.1B's bfloat16 matrices, 2 cores of an AMD
    // EPYC: 4.5-8.6% more GB/s).
    const char* next = (const char*)(w + 4 * k);
    constexpr int64_t step_bytes = 4 * 8 * sizeof(W);
    for (int64_t i = 0; i < k; i += 8) {
      for (int64_t line = 0; line < step_bytes; line += 64) __builtin_prefetch(next + 4 * sizeof(W) * i + line);
      const __m256 xv = _mm256_loadu_ps(x + i);
      a0 = _mm256_fmadd_ps(widen(w + i), xv, a0);
      a1 = _mm256_fmadd_ps(widen(w + k + i), xv, a1);
      a2 = _mm256_fmadd_ps(widen(w + 2 * k + i), xv, a2);
      a3 = _mm256_fmadd_ps(widen(w + 3 * k + i), xv, a3);
    }
    out[0] = hsum(a0), out[1] = hsum(a1), out[2] = hsum(a2), out[3] = hsum(a3);
    return;
  }
#endif
  for (int j = 0; j < 4; ++j) out[j] = dot(w + j * k, x, k);
}

// Weight rows row0..row1 (of N rows, K values each) against M activation rows x (M, K): y[r, row] for every r,
// y being (M, N) float32. Four weight rows at a time, so that each activation load serves four.
template <typename W>
inline void float_rows(const W* w, int64_t row0, int64_t row1, int64_t n, int64_t k, const float* x, int64_t m,
                       float* y) {
  int64_t row = row0;
  for (; row + 4 <= row1; row += 4)
    for (int64_t r = 0; r < m; ++r) {
      float out[4];
      dot4(w + row * k, k, x + r * k, out);
      for (int j = 0; j < 4; ++j) y[r * n + row + j] = out[j];
    }
  for (; row < row1; ++row)
    for (int64_t r = 0; r < m; ++r) y[r * n + row] = dot(w + row * k, x + r * k, k);
}

// float32 -> bfloat16, rounding to nearest even as torch's conversion does (NaN kept a NaN).
inline uint16_t f32_to_bf16(float f) {
  uint32_t bits;
  std::memcpy(&bits, &f, 4);
  if ((bits & 0x7FFFFFFF) > 0x7F800000) return (uint16_t)((bits >> 16) | 0x40);
  return (uint16_t)((bits + 0x7FFF + ((bits >> 16) & 1)) >> 16);
}

}  // namespace
