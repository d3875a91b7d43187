// CUDA twin of ops/lora_gather (BGMV; Punica, Chen et al., 2023, arXiv:2310.18547; S-LoRA §5.2):
//   y_t[k, :] += B_t (s_t · A_t x_t[k, :])      for every task t and token k < tokens_t,
// each task at its own rank, in one kernel launch for the whole batch (the segment form pays two
// GEMM launches per adapter per slot). One thread block per task:
//   shrink: warp w computes h[r] = s · <A[r, :], x> for r = w, w + 8, ... (lanes stride over the
//           input, shuffles reduce), h in shared memory;
//   expand: thread j computes y[o] += <B[o, :], h> for o = j, j + 256, ...
// float32 throughout, as the CPU kernels. The task table (pointers and sizes) is copied to the
// device once per call.
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>

#include <ATen/ATen.h>

#include <cstring>

#include "lowrank/core/error.h"
#include "lowrank/ops/lora_gather.h"

namespace lowrank::ops {
namespace {

constexpr int kThreads = 256;

__global__ void __launch_bounds__(kThreads) lora_gather_kernel(const LoraGatherTask* __restrict__ tasks) {
  extern __shared__ float h[];
  const LoraGatherTask t = tasks[blockIdx.x];
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32, warps = blockDim.x / 32;
  for (int64_t k = 0; k < t.tokens; ++k) {
    const float* __restrict__ x = t.x + k * t.in;
    float* __restrict__ y = t.y + k * t.out;
    for (int64_t r = warp; r < t.rank; r += warps) {
      const float* __restrict__ a = t.a + r * t.in;
      float d = 0;
      for (int64_t i = lane; i < t.in; i += 32) d += __ldg(a + i) * __ldg(x + i);
#pragma unroll
      for (int offset = 16; offset > 0; offset /= 2) d += __shfl_xor_sync(0xffffffffu, d, offset);
      if (lane == 0) h[r] = t.scale * d;
    }
    __syncthreads();
    for (int64_t o = threadIdx.x; o < t.out; o += blockDim.x) {
      const float* __restrict__ b = t.b + o * t.rank;
      float d = 0;
      for (int64_t r = 0; r < t.rank; ++r) d += __ldg(b + r) * h[r];
      y[o] += d;
    }
    __syncthreads();  // h is rewritten by the next token
  }
}

}  // namespace

bool lora_gather_cuda_built() {
  return true;
}

void lora_gather_cuda(std::span<const LoraGatherTask> tasks, int device_index) {
  const int64_t max_rank = detail::check_lora_gather_tasks(tasks);
  if (tasks.empty()) return;
  LR_CHECK(max_rank * static_cast<int64_t>(sizeof(float)) <= 48 * 1024, InvalidArgument,
           "lora_gather_cuda: rank ", max_rank, " does not fit the kernel's shared memory (at most 12288)");
  const c10::cuda::CUDAGuard guard(static_cast<c10::DeviceIndex>(device_index));
  const int64_t bytes = static_cast<int64_t>(tasks.size() * sizeof(LoraGatherTask));
  at::Tensor table = at::empty({bytes}, at::TensorOptions(at::kByte).device(at::kCUDA, device_index));
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  // From pageable memory the copy has read `tasks` when it returns; the kernel is ordered after it.
  C10_CUDA_CHECK(cudaMemcpyAsync(table.mutable_data_ptr(), tasks.data(), static_cast<size_t>(bytes),
                                 cudaMemcpyHostToDevice, stream));
  lora_gather_kernel<<<static_cast<unsigned>(tasks.size()), kThreads,
                       static_cast<size_t>(max_rank) * sizeof(float), stream>>>(
      static_cast<const LoraGatherTask*>(table.const_data_ptr()));
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

}  // namespace lowrank::ops
