// The causal depthwise 1-D convolution of Mamba's block (Gu & Dao, 2023, arXiv:2312.00752, Fig. 3:
// the "Conv" before the SSM): every channel c has its own kernel w_c of width K, and output t sees
// inputs t − K + 1 … t only,
//   y_t[c] = b[c] + Σ_{k=0}^{K−1} w_c[k] · x_{t−K+1+k}[c]     (x_{<0} = the carried state, or 0)
// optionally followed by SiLU. The carried state is the last K − 1 inputs, which is all a decode
// needs to continue the sequence one position at a time.
// Code followed: Dao-AILab/causal-conv1d's reference (causal_conv1d_ref / causal_conv1d_update_ref,
// as transformers' models/mamba/modeling_mamba.py restates them: a grouped F.conv1d with K − 1
// positions of left padding, or the state in front).
// Layout: position-major x [batch, T, C] (the authors' is [batch, C, T]); weight [C, K] (the HF
// checkpoint's conv1d.weight [C, 1, K] viewed); state [batch, C, K − 1].
// ATen ops only (conv1d with groups = C): any device, autograd's backward.
#pragma once

#include <ATen/ATen.h>

namespace lowrank::ops {

struct CausalConv1dResult {
  at::Tensor y;      // [batch, T, C]
  at::Tensor state;  // [batch, C, K − 1]: the last K − 1 inputs (state and x together)
};

// `bias` undefined: none; `state` undefined: zeros (the start of a sequence). Throws
// InvalidArgument naming the argument for a wrong shape.
CausalConv1dResult causal_conv1d(const at::Tensor& x, const at::Tensor& weight, const at::Tensor& bias,
                                 const at::Tensor& state, bool silu);

}  // namespace lowrank::ops
