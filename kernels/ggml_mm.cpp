// Matrix products with weights kept as llama.cpp's blocks (tinyslm::ggml_*): packing a GGUF tensor's blocks
// into the interleaved layout and back, the product, and the dequantization. The layout and the
// arithmetic are described in ggml_blocks.h.

#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <torch/library.h>

#include <vector>

#include "ggml_blocks.h"
#include "threads.h"

namespace {

// Q4_K's 12 bytes of 6-bit scales and mins (llama.cpp's get_scale_min_k4) <-> sc[8], m[8].
void q4k_scales(const uint8_t* q, uint8_t* sc, uint8_t* m) {
  for (int j = 0; j < 4; ++j) {
    sc[j] = q[j] & 63, m[j] = q[j + 4] & 63;
    sc[j + 4] = (q[j + 8] & 0x0F) | ((q[j] >> 6) << 4);
    m[j + 4] = (q[j + 8] >> 4) | ((q[j + 4] >> 6) << 4);
  }
}

void q4k_pack_scales(const uint8_t* sc, const uint8_t* m, uint8_t* q) {
  for (int j = 0; j < 4; ++j) {
    q[j] = sc[j] | ((sc[j + 4] >> 4) << 6);
    q[j + 4] = m[j] | ((m[j + 4] >> 4) << 6);
    q[j + 8] = (sc[j + 4] & 0x0F) | ((m[j + 4] & 0x0F) << 4);
  }
}

// Row r's 4-bit codes (32 values: q[i] for i < 16 low nibbles, i >= 16 high) into a record's chunk layout, and back.
void put_codes4(const uint8_t* q, uint8_t* codes, int r) {
  for (int t = 0; t < 16; ++t) codes[(t / 4) * 32 + r * 4 + t % 4] = (uint8_t)(q[t] | (q[t + 16] << 4));
}

// One row's file blocks (B32 = K / 32 blocks of 32 values) <-> its share of a group's packed units.
template <int Kind>
void pack_row(const uint8_t* blk, int64_t n_blocks, uint8_t* group, int r) {
  constexpr int bytes = block_bytes(Kind);
  for (int64_t fb = 0; fb < n_blocks; ++fb, blk += bytes) {
    uint8_t* unit = group + fb * unit_bytes(Kind);
    std::memcpy(unit + 2 * r, blk, 2);  // d
    if constexpr (Kind == 3) {
      std::memcpy(unit + 16 + 2 * r, blk + 2, 2);  // dmin
      uint8_t sc[8], m[8];
      q4k_scales(blk + 4, sc, m);
      const uint8_t* qs = blk + 16;  // sub-block j: nibble j % 2 of bytes 32 (j / 2) .. + 31
      for (int j = 0; j < 8; ++j) {
        uint8_t* rec = unit + 32 + j * 144;
        rec[r] = sc[j], rec[8 + r] = m[j];
        uint8_t q[QK];
        for (int i = 0; i < QK; ++i) q[i] = (qs[32 * (j / 2) + i] >> (4 * (j % 2))) & 0x0F;
        put_codes4(q, rec + record_codes(3), r);
      }
    } else if constexpr (Kind == 4) {
      std::memcpy(unit + 2 * r, blk + 208, 2);  // d sits at the end of a Q6_K block
      const uint8_t *ql = blk, *qh = blk + 128;
      const int8_t* scales = (const int8_t*)(blk + 192);
      for (int j = 0; j < 8; ++j) {  // values 32 j .. 32 j + 31: half h = j / 4 of 128, quarter j % 4 of it
        uint8_t* rec = unit + 16 + j * 208;
        rec[r] = (uint8_t)scales[2 * j], rec[8 + r] = (uint8_t)scales[2 * j + 1];
        const int h = j / 4, quarter = j % 4;
        uint8_t q[QK];
        for (int l = 0; l < QK; ++l)  // as ggml's dequantize_row_q6_K
          q[l] = (uint8_t)(((ql[64 * h + 32 * (quarter % 2) + l] >> (4 * (quarter / 2))) & 0x0F) |
                           (((qh[32 * h + l] >> (2 * quarter)) & 3) << 4));
        uint8_t low[QK];
        for (int l = 0; l < QK; ++l) low[l] = q[l] & 0x0F;
        put_codes4(low, rec + 16, r);
        for (int half = 0; half < 2; ++half)
          for (int t = 0; t < 4; ++t) {
            uint8_t bits = 0;
            for (int c = 0; c < 4; ++c) bits |= (uint8_t)((q[16 * half + 4 * c + t] >> 4) << (2 * c));
            rec[16 + 128 + 32 * half + 4 * r + t] = bits;
          }
      }
    } else {
      if constexpr (Kind == 1) std::memcpy(unit + 16 + 2 * r, blk + 2, 2);  // m
      const int head = Kind == 1 ? 4 : 2, chunks = Kind == 2 ? 8 : 4;  // the file's codes, 4 bytes a chunk
      for (int c = 0; c < chunks; ++c) std::memcpy(unit + record_codes(Kind) + 32 * c + 4 * r, blk + head + 4 * c, 4);
    }
  }
}

template <int Kind>
void unpack_row(const uint8_t* group, int64_t n_blocks, uint8_t* blk, int r) {
  constexpr int bytes = block_bytes(Kind);
  for (int64_t fb = 0; fb < n_blocks; ++fb, blk += bytes) {
    const uint8_t* unit = group + fb * unit_bytes(Kind);
    if constexpr (Kind == 4) {
      std::memcpy(blk + 208, unit + 2 * r, 2);
      uint8_t *ql = blk, *qh = blk + 128;
      std::memset(blk, 0, 192);
      for (int j = 0; j < 8; ++j) {
        const uint8_t* rec = unit + 16 + j * 208;
        blk[192 + 2 * j] = rec[r], blk[192 + 2 * j + 1] = rec[8 + r];
        const int h = j / 4, quarter = j % 4;
        for (int l = 0; l < QK; ++l) {
          const int q = code_at(4, rec + 16, r, l);
          ql[64 * h + 32 * (quarter % 2) + l] |= (uint8_t)((q & 0x0F) << (4 * (quarter / 2)));
          qh[32 * h + l] |= (uint8_t)((q >> 4) << (2 * quarter));
        }
      }
      continue;
    }
    std::memcpy(blk, unit + 2 * r, 2);
    if constexpr (Kind == 3) {
      std::memcpy(blk + 2, unit + 16 + 2 * r, 2);
      uint8_t sc[8], m[8], *qs = blk + 16;
      std::memset(qs, 0, 128);
      for (int j = 0; j < 8; ++j) {
        const uint8_t* rec = unit + 32 + j * 144;
        sc[j] = rec[r], m[j] = rec[8 + r];
        for (int i = 0; i < QK; ++i) qs[32 * (j / 2) + i] |= code_at(3, rec + record_codes(3), r, i) << (4 * (j % 2));
      }
      q4k_pack_scales(sc, m, blk + 4);
    } else {
      if constexpr (Kind == 1) std::memcpy(blk + 2, unit + 16 + 2 * r, 2);
      const int head = Kind == 1 ? 4 : 2, chunks = Kind == 2 ? 8 : 4;
      for (int c = 0; c < chunks; ++c) std::memcpy(blk + head + 4 * c, unit + record_codes(Kind) + 32 * c + 4 * r, 4);
    }
  }
}

// The file's blocks (N, bytes per row) -> the packed groups (G, 8 x bytes per row, +1/36 for Q4_K), padding rows zero.
at::Tensor ggml_pack(const at::Tensor& w, int64_t kind) {
  check_kind(kind, "ggml_pack");
  TORCH_CHECK(w.dim() == 2 && w.scalar_type() == at::kByte && w.is_contiguous(), "ggml_pack: w must be (N, bytes) contiguous uint8");
  const int64_t bytes = block_bytes((int)kind);
  TORCH_CHECK(w.size(1) % bytes == 0, "ggml_pack: rows of ", w.size(1), " bytes are not whole ", bytes, "-byte blocks");
  const int64_t n = w.size(0), n_blocks = w.size(1) / bytes, groups = (n + ROWS - 1) / ROWS;
  const int64_t k = n_blocks * block_values((int)kind), row_bytes = group_bytes((int)kind, k);
  at::Tensor out = at::empty({groups, row_bytes}, w.options());
  const uint8_t* src = w.data_ptr<uint8_t>();
  uint8_t* dst = out.data_ptr<uint8_t>();
  if (n % ROWS) std::memset(dst + (groups - 1) * row_bytes, 0, row_bytes);  // the padding rows: zero blocks
  with_kind(kind, [&](auto kind_c) {
    constexpr int Kind = decltype(kind_c)::value;
    tinyslm::parallel_for(groups, 16, [&](int64_t g0, int64_t g1) {
      for (int64_t g = g0; g < g1; ++g)
        for (int r = 0; r < ROWS && g * ROWS + r < n; ++r)
          pack_row<Kind>(src + (g * ROWS + r) * w.size(1), n_blocks, dst + g * row_bytes, r);
    });
  });
  return out;
}

// The inverse of ggml_pack: packed groups -> the file's blocks for the first n rows.
at::Tensor ggml_unpack(const at::Tensor& p, int64_t kind, int64_t n) {
  check_kind(kind, "ggml_unpack");
  const int64_t k = packed_k(p, kind, n, "ggml_unpack");
  const int64_t bytes = block_bytes((int)kind), n_blocks = k / block_values((int)kind);
  at::Tensor out = at::empty({n, n_blocks * bytes}, p.options());
  const uint8_t* src = p.data_ptr<uint8_t>();
  uint8_t* dst = out.data_ptr<uint8_t>();
  with_kind(kind, [&](auto kind_c) {
    constexpr int Kind = decltype(kind_c)::value;
    tinyslm::parallel_for(n, 64, [&](int64_t n0, int64_t n1) {
      for (int64_t row = n0; row < n1; ++row)
        unpack_row<Kind>(src + row / ROWS * p.size(1), n_blocks, dst + row * n_blocks * bytes, (int)(row % ROWS));
    });
  });
  return out;
}

// x (M, K) float32 @ the packed weight of n rows -> y (M, n) float32
at::Tensor ggml_mm(const at::Tensor& x, const at::Tensor& p, int64_t kind, int64_t n) {
  check_kind(kind, "ggml_mm");
  TORCH_CHECK(x.dim() == 2 && x.scalar_type() == at::kFloat && x.is_contiguous(), "ggml_mm: x must be (M, K) contiguous float32");
  const int64_t m = x.size(0), k = x.size(1), nb = k / QK;
  const int64_t columns = packed_k(p, kind, n, "ggml_mm");
  TORCH_CHECK(columns == k, "ggml_mm: the packed weight has ", columns, " columns, x has K = ", k);
  std::vector<ActBlock> act(m * nb);
  const float* xp = x.data_ptr<float>();
  tinyslm::parallel_for(m, 16, [&](int64_t r0, int64_t r1) {  // a few rows: on this thread (no fork / join)
    for (int64_t r = r0; r < r1; ++r) quantize_row(xp + r * k, k, &act[r * nb]);
  });
  std::vector<const ActBlock*> rows(m);
  for (int64_t r = 0; r < m; ++r) rows[r] = &act[r * nb];
  at::Tensor y = at::empty({m, n}, x.options());
  float* yp = y.data_ptr<float>();
  const uint8_t* wp = p.data_ptr<uint8_t>();
  with_kind(kind, [&](auto kind_c) {
    constexpr int Kind = decltype(kind_c)::value;
    tinyslm::parallel_for(p.size(0), 2, [&](int64_t g0, int64_t g1) { mm_groups<Kind>(wp, g0, g1, nb, rows, yp, n); });
  });
  return y;
}

// The packed weight -> its first n rows (n, K) in float32, as llama.cpp dequantizes them.
at::Tensor ggml_dequantize(const at::Tensor& p, int64_t kind, int64_t n) {
  check_kind(kind, "ggml_dequantize");
  const int64_t k = packed_k(p, kind, n, "ggml_dequantize"), nb = k / QK;
  at::Tensor out = at::empty({n, k}, p.options().dtype(at::kFloat));
  const uint8_t* src = p.data_ptr<uint8_t>();
  float* op = out.data_ptr<float>();
  with_kind(kind, [&](auto kind_c) {
    constexpr int Kind = decltype(kind_c)::value;
    tinyslm::parallel_for(n, 16, [&](int64_t n0, int64_t n1) {
      for (int64_t row = n0; row < n1; ++row) {
        const uint8_t* group = src + row / ROWS * p.size(1);
        const int r = (int)(row % ROWS);
        float* o = op + row * k;
        for (int64_t b = 0; b < nb; ++b, o += QK) {
          const uint8_t* codes = record<Kind>(group, b) + record_codes(Kind);
          for (int h = 0; h < 2; ++h) {
            float d, m;
            scale_at<Kind>(group, b, r, h, &d, &m);
            for (int i = 16 * h; i < 16 * h + 16; ++i) {  // as ggml: (q - 8) * d for Q4_0, (d * sc) * (q - 32) for
              const int q = code_at(Kind, codes, r, i);      // Q6_K (not q * d - 8 d: they round differently)
              o[i] = Kind == 0 ? (float)(q - 8) * d : Kind == 4 ? (float)(q - 32) * d : Kind == 2 ? (float)q * d : (float)q * d + m;
            }
          }
        }
      }
    });
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
