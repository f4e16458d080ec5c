// symtest_cxx: a C++ shared library for test_symbols, so symbolization is checked on a real C++
// template method (demangling, DWARF linkage names of inlined templates) in a module that is
// not the main program.
#include <cstdint>

#ifdef __clang__
#define NOIPA __attribute__((noinline))
#else
#define NOIPA __attribute__((noipa))
#endif

namespace apsym {

template <typename T>
inline __attribute__((always_inline)) uint64_t grab(uint64_t (*cb)(), int *line)
{
	uint64_t r = cb(); *line = __LINE__;
	return r;
}

template <typename T> struct Widget {
	NOIPA static uint64_t poke(uint64_t (*cb)(), int *line, int *inl_line)
	{
		uint64_t r = grab<T>(cb, inl_line); *line = __LINE__;
		return r;
	}
};

} // namespace apsym

extern "C" uint64_t symtest_cxx_call(uint64_t (*cb)(), int *line, int *inl_line);

// The template is instantiated here; the result is used so the call is not a tail call.
extern "C" uint64_t symtest_cxx_call(uint64_t (*cb)(), int *line, int *inl_line)
{
	uint64_t r = apsym::Widget<int>::poke(cb, line, inl_line);
	__asm__ volatile("" : : : "memory");
	return r;
}
