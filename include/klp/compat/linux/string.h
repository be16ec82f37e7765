/* libklp: kernel livepatch modules, unchanged. SPDX-License-Identifier: MIT OR Apache-2.0 */
/* <linux/string.h>: the C library's string functions, and strscpy. */
#ifndef KLP_COMPAT_LINUX_STRING_H
#define KLP_COMPAT_LINUX_STRING_H

#include "../klp_compat.h"

/* Copy src into dst of size bytes, always terminated: its length, or -E2BIG when it
 * was cut. */
static inline long strscpy(char *dst, const char *src, size_t size)
{
	size_t n = strlen(src);

	if (size == 0)
		return -E2BIG;
	if (n >= size) {
		memcpy(dst, src, size - 1);
		dst[size - 1] = '\0';
		return -E2BIG;
	}
	memcpy(dst, src, n + 1);
	return (long)n;
}

#endif /* KLP_COMPAT_LINUX_STRING_H */
