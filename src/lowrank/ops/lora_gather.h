// Gathered LoRA products for rows that each use their own adapter: BGMV (Punica, Chen et al., 2023,
// arXiv:2310.18547, "batched gather matrix-vector multiplication"; S-LoRA, Sheng et al., 2023,
// arXiv:2311.03285, §5.2 MBGMV), here on the CPU. For every task t:
//   y_t[k, :] += s_t · B_t (A_t x_t[k, :])      for k < tokens_t,
// A_t [rank_t, in] and B_t [out, rank_t] row-major float32 (the paged form below reads them out of
// a memory pool instead, in float32, bfloat16 or float16), each task at its own rank (nothing is
// padded to a common one). A decode step of a mixed-adapter batch is one task per (row, slot):
// where the segment form (one GEMM pair per adapter, nn/adapter_paths.cpp) pays two library calls per
// adapter per slot, a few microseconds each whatever the size, this is one parallel loop over all
// rows. The scale multiplies the rank-sized intermediate A x rather than the output, so results
// equal at::addmm(y, x Aᵀ, Bᵀ, 1, s) up to float rounding.
//
// No ATen include: the AVX2 twin (lora_gather_avx2.cpp) is compiled without the precompiled header.
#pragma once

#include <cstdint>
#include <span>

namespace lowrank::ops {

struct LoraGatherTask {
  const float* x = nullptr;  // [tokens, in], rows `in` apart
  float* y = nullptr;        // [tokens, out], rows `out` apart; updated in place
  const float* a = nullptr;  // [rank, in]
  const float* b = nullptr;  // [out, rank]
  int64_t tokens = 1, in = 0, out = 0, rank = 0;
  float scale = 1;
};

enum class LoraGatherKernel {
  kAuto,      // AVX2 + FMA when the CPU has them, else portable
  kPortable,  // plain loops (lora_gather_cpu.cpp)
  kAvx2,      // lora_gather_avx2.cpp; Unsupported when the build or the CPU lacks it
};

// Runs every task, in parallel over tasks (at::parallel_for; tasks must write disjoint y). Throws
// InvalidArgument for a task with a null pointer or a non-positive size, Unsupported when kAvx2 is
// forced and not available.
void lora_gather(std::span<const LoraGatherTask> tasks, LoraGatherKernel kernel = LoraGatherKernel::kAuto);

// Segments of a routed forward (nn::LinearSlot with an AdapterRouting, no gradient) of at most this
// many tokens take lora_gather (the serving engine's paged adapters: lora_gather_paged) rather
// than a GEMM pair per adapter. Process-wide, default 4 (the
// GEMM pair's two library calls cost more below it, measured in bench/serve.cpp's step table);
// 0 turns the gathered path off, which the benchmarks use as their baseline. Throws
// InvalidArgument for a negative value.
int64_t lora_gather_max_tokens();
void set_lora_gather_max_tokens(int64_t tokens);

// Whether kAvx2 is available here.
bool lora_gather_avx2_usable();

// The CUDA twin (lora_gather_cuda.cu): every pointer of every task points into the memory of CUDA
// device `device_index`; runs on that device's current stream, one thread block per task, and
// returns without waiting for it. Throws InvalidArgument as lora_gather does (and for a rank above
// 12288), Unsupported in a build without CUDA (lora_gather_cuda_built() is then false).
void lora_gather_cuda(std::span<const LoraGatherTask> tasks, int device_index);
bool lora_gather_cuda_built();

// ---- Paged form: adapter rows read through a page table (S-LoRA's MBGMV, §5.2) -----------------
//
// The serving engine keeps adapter weights in its memory pool (serve/memory_pool.h): two arenas of
// `slot_width`-element slots (the KV pool's key and value buffers of one layer), LoRA-A rows in the
// key arena and LoRA-B columns in the value arena at the same slot indices, as S-LoRA's
// `mem_manager.py` does. An adapter owns a list of slots, logical → physical (`slots`, its pages
// expanded slot by slot, S-LoRA's `a_loc`); one module of it starts at logical slot `first` and
// gives each rank index j the `slots_per_rank` logical slots first + j·slots_per_rank + c, c <
// slots_per_rank; chunk c holds elements [c·W, (c+1)·W) of A's row j (key arena) and of B's
// column j (value arena), W = slot_width. So for every task
//   h[j]      = s · Σ_i A[j, i] x[k, i],   A[j, i] = a_arena[slots[first + j·spr + i / W]·W + i % W]
//   y[k, o]  += Σ_j B[o, j] h[j],          B[o, j] = b_arena[slots[first + j·spr + o / W]·W + o % W]
// for k < tokens, each task at its own rank. Rows of one adapter are therefore not contiguous in
// memory: every chunk is found through the slot table. x, y and both arenas share one element
// type (float32, bfloat16 or float16); products and sums are accumulated in float32 and y is
// rounded once per element.
enum class LoraElement { kF32, kBF16, kF16 };

struct LoraPagedTask {
  const void* x = nullptr;         // [tokens, in], rows `in` apart
  void* y = nullptr;               // [tokens, out], rows `out` apart; updated in place
  const void* a_arena = nullptr;   // [slots, slot_width]: A rows
  const void* b_arena = nullptr;   // [slots, slot_width]: B columns
  const int64_t* slots = nullptr;  // the adapter's logical → physical slot table
  int64_t first = 0;               // this module's first logical slot
  int64_t slots_per_rank = 0;      // ≥ ⌈in / W⌉ and ≥ ⌈out / W⌉
  int64_t slot_width = 0;          // W
  int64_t tokens = 1, in = 0, out = 0, rank = 0;
  float scale = 1;
};

// Runs every task on the CPU, in parallel over tasks (tasks must write disjoint y). Throws
// InvalidArgument for a null pointer, a non-positive size or slots_per_rank too small for in or
// out (naming the task).
void lora_gather_paged(std::span<const LoraPagedTask> tasks, LoraElement element);
// The CUDA twin (lora_gather_cuda.cu): every pointer (the slot tables too) points into the memory
// of CUDA device `device_index`; one thread block per task on the device's current stream; returns
// without waiting. Throws as lora_gather_paged, plus InvalidArgument for a rank above 12288 and
// Unsupported in a build without CUDA.
void lora_gather_paged_cuda(std::span<const LoraPagedTask> tasks, LoraElement element, int device_index);

namespace detail {
// Validates paged tasks (InvalidArgument naming the first bad one); returns the largest rank and,
// in `max_out`, the largest out.
int64_t check_lora_paged_tasks(std::span<const LoraPagedTask> tasks, int64_t* max_out);
// One paged task on the CPU; `scratch` holds at least rank + out floats.
void lora_paged_task_cpu(const LoraPagedTask& task, LoraElement element, float* scratch);
// Validates the tasks (InvalidArgument naming the first bad one); returns the largest rank.
int64_t check_lora_gather_tasks(std::span<const LoraGatherTask> tasks);
// One task each; `h` is scratch of at least task.rank floats.
void lora_gather_task_cpu(const LoraGatherTask& task, float* h);
void lora_gather_task_avx2(const LoraGatherTask& task, float* h);
}  // namespace detail

}  // namespace lowrank::ops
