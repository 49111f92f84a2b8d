// The native decoding step's two entry points (the math is in decode_block.h):
//   tinyslm::decode_block  one block for one new token: every argument passed on every call;
//   tinyslm::decode_stack  every block of a model for one new token in one call, the blocks' unchanging arguments
//                          held by a DecodePlan built once (torch.classes.tinyslm.DecodePlan).
// Why both: a call from Python costs tens of microseconds (the arguments' conversion, the dispatcher, Python's
// own loop over the blocks, caches cold after the weights streamed through), which for a small model is
// a quarter of the token (SmolLM2-135M: ~3 ms of 11 in 30 calls, measured); decode_stack pays it once.

#include <ATen/core/Tensor.h>
#include <ATen/ops/empty_like.h>
#include <torch/custom_class.h>
#include <torch/library.h>

#include <vector>

#include "decode_block.h"

namespace {

// The arguments are make_block's and check_step's (decode_block.h); x and the caches float32, or bfloat16 (a
// bfloat16 model).
at::Tensor decode_block(const at::Tensor& x, const c10::List<std::optional<at::Tensor>>& norms, at::TensorList weights,
                        at::IntArrayRef kinds, at::IntArrayRef rows, const c10::List<std::optional<at::Tensor>>& biases,
                        const std::optional<at::Tensor>& cos, const std::optional<at::Tensor>& sin,
                        const std::optional<at::Tensor>& alibi, const at::Tensor& k_cache, const at::Tensor& v_cache,
                        int64_t slot, int64_t n_keys, at::IntArrayRef options, at::ArrayRef<double> params,
                        const std::optional<at::Tensor>& pad, const std::optional<at::Tensor>& key_slots) {
  TORCH_CHECK(k_cache.dim() == 4, "decode_block: the caches must be (B, K, S, hd)");
  Block k = make_block(norms, weights, kinds, rows, biases, alibi, options, params, k_cache.size(3));
  check_step(k, x, k_cache, v_cache, slot, n_keys, cos, sin, pad, key_slots);
  at::Tensor out = at::empty_like(x);
  run_step(k, x, out, k_cache, v_cache, slot, n_keys);
  return out;
}

// A model's blocks in depth order (a block shared by several depths is added once per depth), checked once.
struct DecodePlan : torch::CustomClassHolder {
  std::vector<Block> blocks;
  std::vector<at::Tensor> keep;  // the tensors the blocks point into

  void add(const c10::List<std::optional<at::Tensor>>& norms, const std::vector<at::Tensor>& weights,
           const std::vector<int64_t>& kinds, const std::vector<int64_t>& rows,
           const c10::List<std::optional<at::Tensor>>& biases, const std::optional<at::Tensor>& alibi,
           const std::vector<int64_t>& options, const std::vector<double>& params, int64_t head_dim) {
    blocks.push_back(make_block(norms, weights, kinds, rows, biases, alibi, options, params, head_dim));
    for (const auto& list : {norms, biases})
      for (size_t i = 0; i < list.size(); ++i)
        if (const std::optional<at::Tensor> t = list.get(i)) keep.push_back(*t);
    keep.insert(keep.end(), weights.begin(), weights.end());
    if (alibi.has_value()) keep.push_back(*alibi);
  }

  int64_t size() const { return (int64_t)blocks.size(); }
};

// x (B, D) through every block of the plan, depth i with caches k_caches[i], v_caches[i], its angles cos[i],
// sin[i] (or None), its slot and key count and, in a padded batch, its slots' indices key_slots[i] (None: slot j
// holds index j) beside the rows' padding `pad`; returns the last block's output (B, D).
at::Tensor decode_stack(const at::Tensor& x, const c10::intrusive_ptr<DecodePlan>& plan, at::TensorList k_caches,
                        at::TensorList v_caches, const c10::List<std::optional<at::Tensor>>& cos,
                        const c10::List<std::optional<at::Tensor>>& sin, at::IntArrayRef slots, at::IntArrayRef n_keys,
                        const std::optional<at::Tensor>& pad,
                        const std::optional<c10::List<std::optional<at::Tensor>>>& key_slots) {
  const int64_t depth = plan->size();
  TORCH_CHECK(depth > 0 && (int64_t)k_caches.size() == depth && (int64_t)v_caches.size() == depth &&
                  (int64_t)cos.size() == depth && (int64_t)sin.size() == depth && (int64_t)slots.size() == depth &&
                  (int64_t)n_keys.size() == depth && (!key_slots.has_value() || (int64_t)key_slots->size() == depth),
              "decode_stack: a plan of ", depth, " blocks needs as many caches, angles, slots and key counts");
  std::vector<Block> steps(plan->blocks);  // copies that take this call's angles
  for (int64_t i = 0; i < depth; ++i)
    check_step(steps[i], x, k_caches[i], v_caches[i], slots[i], n_keys[i], cos.get(i), sin.get(i), pad,
               key_slots.has_value() ? key_slots->get(i) : std::optional<at::Tensor>());
  at::Tensor buffers[2] = {at::empty_like(x), at::empty_like(x)};  // each depth's output, the next one's input
  for (int64_t i = 0; i < depth; ++i)
    run_step(steps[i], i == 0 ? x : buffers[(i - 1) % 2], buffers[i % 2], k_caches[i], v_caches[i], slots[i], n_keys[i]);
  return buffers[(depth - 1) % 2];
}

}  // namespace

TORCH_LIBRARY_FRAGMENT(tinyslm, m) {
  m.class_<DecodePlan>("DecodePlan")
      .def(torch::init<>())
      .def("add", &DecodePlan::add)
      .def("size", &DecodePlan::size);
  m.def("decode_block(Tensor x, Tensor?[] norms, Tensor[] weights, int[] kinds, int[] rows, Tensor?[] biases, "
        "Tensor? cos, Tensor? sin, Tensor? alibi, Tensor(a!) k_cache, Tensor(b!) v_cache, int slot, int n_keys, "
        "int[] options, float[] params, Tensor? pad=None, Tensor? key_slots=None) -> Tensor");
  m.def("decode_stack(Tensor x, __torch__.torch.classes.tinyslm.DecodePlan plan, Tensor(a!)[] k_caches, "
        "Tensor(b!)[] v_caches, Tensor?[] cos, Tensor?[] sin, int[] slots, int[] n_keys, Tensor? pad=None, "
        "Tensor?[]? key_slots=None) -> Tensor");
}

TORCH_LIBRARY_IMPL(tinyslm, CPU, m) {
  m.impl("decode_block", &decode_block);
  m.impl("decode_stack", &decode_stack);
}
