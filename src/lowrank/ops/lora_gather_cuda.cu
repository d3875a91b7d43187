// CUDA twin of ops/lora_gather (BGMV; Punica, Chen et al., 2023, arXiv:2310.18547; S-LoRA §5.2):
//   y_t[k, :] += B_t (s_t · A_t x_t[k, :])      for every task t and token k < tokens_t,
// each task at its own rank, in one kernel launch for the whole batch (the segment form pays two
// GEMM launches per adapter per slot). One thread block per task:
//   shrink: warp w computes h[r] = s · <A[r, :], x> for r = w, w + 8, ... (lanes stride over the
//           input, shuffles reduce), h in shared memory;
//   expand: thread j computes y[o] += <B[o, :], h> for o = j, j + 256, ...
// float32 throughout, as the CPU kernels; the paged form below (adapter rows read through the
// memory pool's slot table) takes float32, float16 and bfloat16 with float32 accumulation. The task table
// (pointers and sizes) is copied to the device once per call.
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>

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

// The paged form (lora_gather.h), the twin of lora_gather_cpu.cpp's paged_task: the same two
// products with every chunk of A's rows and B's columns found through the slot table, float32
// accumulation for T = float, c10::Half or c10::BFloat16. One block per task; warp w shrinks rank
// rows w, w + 8, ...; thread j expands outputs j, j + 256, ... (consecutive threads read
// consecutive elements of one slot of B's column).
template <typename T>
__global__ void __launch_bounds__(kThreads) lora_paged_kernel(const LoraPagedTask* __restrict__ tasks) {
  extern __shared__ float h[];
  const LoraPagedTask t = tasks[blockIdx.x];
  const T* __restrict__ a_arena = static_cast<const T*>(t.a_arena);
  const T* __restrict__ b_arena = static_cast<const T*>(t.b_arena);
  const int64_t W = t.slot_width;
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32, warps = blockDim.x / 32;
  for (int64_t k = 0; k < t.tokens; ++k) {
    const T* __restrict__ x = static_cast<const T*>(t.x) + k * t.in;
    T* __restrict__ y = static_cast<T*>(t.y) + k * t.out;
    for (int64_t r = warp; r < t.rank; r += warps) {
      const int64_t* row = t.slots + t.first + r * t.slots_per_rank;
      float d = 0;
      for (int64_t i = lane; i < t.in; i += 32)
        d += static_cast<float>(a_arena[row[i / W] * W + i % W]) * static_cast<float>(x[i]);
#pragma unroll
      for (int offset = 16; offset > 0; offset /= 2) d += __shfl_xor_sync(0xffffffffu, d, offset);
      if (lane == 0) h[r] = t.scale * d;
    }
    __syncthreads();
    for (int64_t o = threadIdx.x; o < t.out; o += blockDim.x) {
      const int64_t chunk = o / W, within = o % W;
      float d = 0;
      for (int64_t r = 0; r < t.rank; ++r)
        d += h[r] * static_cast<float>(b_arena[t.slots[t.first + r * t.slots_per_rank + chunk] * W + within]);
      y[o] = static_cast<T>(static_cast<float>(y[o]) + d);
    }
    __syncthreads();  // h is rewritten by the next token
  }
}

// Copies a task table to the device (from pageable memory: read when the call returns).
template <typename Task>
at::Tensor task_table(std::span<const Task> tasks, int device_index, cudaStream_t stream) {
  const int64_t bytes = static_cast<int64_t>(tasks.size() * sizeof(Task));
  at::Tensor table = at::empty({bytes}, at::TensorOptions(at::kByte).device(at::kCUDA, device_index));
  C10_CUDA_CHECK(cudaMemcpyAsync(table.mutable_data_ptr(), tasks.data(), static_cast<size_t>(bytes),
                                 cudaMemcpyHostToDevice, stream));
  return table;
}

void check_shared_rank(const char* what, int64_t max_rank) {
  LR_CHECK(max_rank * static_cast<int64_t>(sizeof(float)) <= 48 * 1024, InvalidArgument, what, ": rank ",
           max_rank, " does not fit the kernel's shared memory (at most 12288)");
}

}  // namespace

void lora_gather_paged_cuda(std::span<const LoraPagedTask> tasks, LoraElement element, int device_index) {
  int64_t max_out = 0;
  const int64_t max_rank = detail::check_lora_paged_tasks(tasks, &max_out);
  if (tasks.empty()) return;
  check_shared_rank("lora_gather_paged_cuda", max_rank);
  const c10::cuda::CUDAGuard guard(static_cast<c10::DeviceIndex>(device_index));
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  const at::Tensor table = task_table(tasks, device_index, stream);
  const auto* device_tasks = static_cast<const LoraPagedTask*>(table.const_data_ptr());
  const auto blocks = static_cast<unsigned>(tasks.size());
  const auto shared = static_cast<size_t>(max_rank) * sizeof(float);
  switch (element) {
    case LoraElement::kF32:
      lora_paged_kernel<float><<<blocks, kThreads, shared, stream>>>(device_tasks);
      break;
    case LoraElement::kBF16:
      lora_paged_kernel<c10::BFloat16><<<blocks, kThreads, shared, stream>>>(device_tasks);
      break;
    case LoraElement::kF16:
      lora_paged_kernel<c10::Half><<<blocks, kThreads, shared, stream>>>(device_tasks);
      break;
  }
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

bool lora_gather_cuda_built() {
  return true;
}

void lora_gather_cuda(std::span<const LoraGatherTask> tasks, int device_index) {
  const int64_t max_rank = detail::check_lora_gather_tasks(tasks);
  if (tasks.empty()) return;
  check_shared_rank("lora_gather_cuda", max_rank);
  const c10::cuda::CUDAGuard guard(static_cast<c10::DeviceIndex>(device_index));
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  // From pageable memory the copy has read `tasks` when it returns; the kernel is ordered after it.
  const at::Tensor table = task_table(tasks, device_index, stream);
  lora_gather_kernel<<<static_cast<unsigned>(tasks.size()), kThreads,
                       static_cast<size_t>(max_rank) * sizeof(float), stream>>>(
      static_cast<const LoraGatherTask*>(table.const_data_ptr()));
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

}  // namespace lowrank::ops
