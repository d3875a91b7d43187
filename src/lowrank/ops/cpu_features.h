// Run-time CPU feature checks for the hand-written kernels (ops/*_avx2.cpp). No ATen include, so
// the AVX2 translation units, which skip the precompiled header, may include it too.
#pragma once

namespace lowrank::ops::detail {

// True when the AVX2 kernels were compiled in (x86-64 build) and this CPU has AVX2 and FMA.
inline bool cpu_has_avx2_fma() {
#if defined(LOWRANK_HAVE_AVX2_KERNELS) && (defined(__x86_64__) || defined(__i386__))
  static const bool has = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  return has;
#else
  return false;
#endif
}

}  // namespace lowrank::ops::detail
