/* The documented link line works: a C program using libklp's first exports, linked
 * statically and dynamically by klp-ffi/tests/c_link.rs, which checks what it prints. */
#include <klp.h>

#include <errno.h>
#include <stdio.h>
#include <string.h>

static int warnings;

static void handler(int level, const char *line, void *data)
{
	int *count = data;
	if (level == KLP_LOG_WARNING)
		++*count;
	printf("log %d %s\n", level, line);
}

static int ctor(void *obj, void *shadow_data, void *ctor_data)
{
	(void)obj;
	memcpy(shadow_data, ctor_data, sizeof(int));
	return 0;
}

static int freed;

static void dtor(void *obj, void *shadow_data)
{
	(void)obj;
	freed = *(int *)shadow_data;
}

int main(void)
{
	int obj = 0, value = 42;
	int *p;

	printf("version %s\n", klp_version());
	printf("strerror %s\n", klp_strerror(-ENOENT));
	printf("set_sync bad %d\n", klp_set_sync(7));
	printf("set_sync %d\n", klp_set_sync(KLP_SYNC_RCU));
	printf("set_log_handler %d\n", klp_set_log_handler(handler, &warnings));
	printf("enabled nope %d\n", klp_patch_enabled("nope") == -ENOENT);
	printf("set_sync late %d\n", klp_set_sync(KLP_SYNC_PREEMPT) == -EBUSY);

	p = klp_shadow_alloc(&obj, 7, sizeof(int), GFP_KERNEL, ctor, &value);
	printf("alloc %d\n", p != NULL && *p == 42);
	printf("get %d\n", klp_shadow_get(&obj, 7) == p);
	printf("duplicate %d\n", klp_shadow_alloc(&obj, 7, sizeof(int), GFP_KERNEL, ctor, &value) == NULL);
	printf("warnings %d\n", warnings);
	klp_shadow_free(&obj, 7, dtor);
	printf("freed %d\n", freed);
	printf("gone %d\n", klp_shadow_get(&obj, 7) == NULL);
	printf("set_log_handler NULL %d\n", klp_set_log_handler(NULL, NULL));
	return 0;
}
