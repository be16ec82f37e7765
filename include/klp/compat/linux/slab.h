/* libklp: kernel livepatch modules, unchanged. SPDX-License-Identifier: MIT OR Apache-2.0 */
/* <linux/slab.h>: kmalloc and friends on the C library's allocator (one for the whole
 * process: a module may free what another allocated). The flags are accepted and, but
 * for __GFP_ZERO, ignored. kmalloc(0) returns a pointer that kfree accepts. */
#ifndef KLP_COMPAT_LINUX_SLAB_H
#define KLP_COMPAT_LINUX_SLAB_H

#include "gfp.h"
#include <linux/types.h>

static inline void *kmalloc(size_t size, gfp_t flags)
{
	if (size == 0)
		size = 1;
	return (flags & __GFP_ZERO) ? calloc(1, size) : malloc(size);
}

static inline void *kzalloc(size_t size, gfp_t flags)
{
	return kmalloc(size, flags | __GFP_ZERO);
}

static inline void *kmalloc_array(size_t n, size_t size, gfp_t flags)
{
	if (size != 0 && n > (size_t)-1 / size)
		return NULL;
	return kmalloc(n * size, flags);
}

static inline void *kcalloc(size_t n, size_t size, gfp_t flags)
{
	return kmalloc_array(n, size, flags | __GFP_ZERO);
}

static inline void *krealloc(const void *p, size_t size, gfp_t flags)
{
	(void)flags;
	return realloc((void *)p, size ? size : 1);
}

static inline void kfree(const void *p)
{
	free((void *)p);
}

static inline void kfree_sensitive(const void *p)
{
	free((void *)p);
}

static inline void *kvmalloc(size_t size, gfp_t flags)
{
	return kmalloc(size, flags);
}

static inline void *kvzalloc(size_t size, gfp_t flags)
{
	return kzalloc(size, flags);
}

static inline void kvfree(const void *p)
{
	free((void *)p);
}

static inline void *kmemdup(const void *src, size_t len, gfp_t flags)
{
	void *p = kmalloc(len, flags);

	if (p)
		memcpy(p, src, len);
	return p;
}

static inline char *kstrdup(const char *s, gfp_t flags)
{
	return s ? (char *)kmemdup(s, strlen(s) + 1, flags) : NULL;
}

#endif /* KLP_COMPAT_LINUX_SLAB_H */
