// One clone per x86-64 microarchitecture level, chosen by the dynamic loader (GCC ifunc), so
// elementwise loops vectorise for the machine they run on without -march=native at build time.
#pragma once

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__) && defined(__linux__)
#define IVAE_CPU_CLONES __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#define IVAE_HAVE_CPU_CLONES 1
#else
#define IVAE_CPU_CLONES
#define IVAE_HAVE_CPU_CLONES 0
#endif

// For the loop templates a clone calls: inlined into each clone so they are compiled for its
// level (a non-inlined template would be compiled once, for the baseline).
#if defined(__GNUC__)
#define IVAE_CLONE_INLINE inline __attribute__((always_inline))
#else
#define IVAE_CLONE_INLINE inline
#endif
