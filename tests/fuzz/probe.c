/* probe.c: built at configure time to learn whether clang can link a libFuzzer target with ASan
 * and UBSan (clang plus libclang-rt-XX-dev on Debian); see meson.build. */
#include <stddef.h>
#include <stdint.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	(void)data;
	(void)size;
	return 0;
}
