// One clone per x86-64 microarchitecture level, chosen by the dynamic loader (GCC ifunc), so
// elementwise loops vectorise for the machine they run on without -march=native at build time.
#pragma once

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__) && defined(__linux__)
#define IVAE_CPU_CLONES __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#else
#define IVAE_CPU_CLONES
#endif
