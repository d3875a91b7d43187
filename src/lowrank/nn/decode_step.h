// The fused single-token decode step: Model::forward for one new token of one sequence with a KV
// cache, the step generation repeats for every token, computed without ATen operations.
//
// The equations are model.h's, in the same order:
//   h = E[id]
//   per layer:  x = RMSNorm(h) ⊙ w_in;  q, k, v = W_q x, W_k x, W_v x (+ biases)
//               q, k rotated at the token's position p (RoPE, "rotate half" layout, rope.h);
//               K[p], V[p] = k, v (the cache, in the model dtype)
//               a_h = Σ_{s ≤ p, s > p - window} softmax_s(q_h · K_s / √d) V_s   (GQA: head h reads
//               KV head h / (heads / kv_heads))
//               h += W_o a;  x = RMSNorm(h) ⊙ w_post;  h += W_down (act(W_gate x) ⊙ W_up x)
//   logits = W_lm (RMSNorm(h) ⊙ w_norm)
// and every LoRA-form adapter of a slot (Adapter::low_rank_delta: s·B(Ax)) is added to its slot's
// output, as LinearSlot::forward does.
//
// Why a second path: at batch 1 a step reads every weight once and does little arithmetic per
// byte, so its speed is memory bandwidth minus overhead. The ATen path spends ~10 small operations
// per layer on norms, RoPE, SwiGLU, residuals and cache bookkeeping, each an allocation, a dispatch
// and (with threads) an OpenMP fork/join; on small models that overhead, not the weights, set the
// speed, and a second thread made decode slower (issue: llama.cpp decoded our own models 1.4–20×
// faster). Here one parallel region per token (core/parallel_region.h) on libtorch's threads: each
// member computes its share of every product's output rows straight from the weights
// (BaseOperator::row_product: float32/bfloat16 GEMV, ops/gemv.h, or the packed INT4/INT8 kernel of
// ops/group_quant.h), fuses what follows on the same rows (SwiGLU after gate/up, the residual add
// after o/down), and meets the others at a barrier only where a phase needs every row of the last
// one: 4 per layer. Norms, RoPE and attention are plain loops over raw buffers; keys and values are
// written into the cache in place.
//
// Numerics: activations stay float32 between operations and accumulate in float32. For a float32
// model that is the ATen path's arithmetic up to summation order (tests: 1e-4). For a bfloat16
// model it is more precise than the ATen path, which rounds every intermediate to bfloat16 (as
// transformers does); weights and cached keys/values are the same bfloat16 values in both.
//
// When it applies (FusedDecode::kAuto; anything else takes the ATen path): one sequence, one new
// token, a contiguous KVCache (nn/kv_cache.h) without padding on the CPU, no explicit position ids
// or attention mask, no gradient being recorded, a float32 or bfloat16 model, every slot's base
// operator with a row product (dense float32/bfloat16, packed INT4/INT8 `rtn` weights), and every
// active adapter of the LoRA form with contiguous float32 or bfloat16 factors. Model::
// fused_decode_obstacle says which condition a model misses.
#pragma once
