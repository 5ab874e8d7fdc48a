// Closes the region opened by cpu/isa_begin.h.
#if PYDET_ISA_LEVEL >= 1
#if defined(__clang__)
#pragma clang attribute pop
#elif defined(__GNUC__)
#pragma GCC pop_options
#endif
#endif
#undef PYDET_ISA_NAMESPACE
