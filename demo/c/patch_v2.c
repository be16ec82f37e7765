/* Livepatch module demo_v2, cumulative (replace): carries demo_v1's parse_request fix,
 * and fixes format_reply, whose buffer in struct conn is too small. The struct cannot
 * grow under a running program, so the fixed function hangs a larger buffer off each
 * connection as a shadow variable; post_unpatch frees them all. It takes the system
 * state DEMO_STATE_PARSER over from demo_v1. Needs GNU C. */
#include "demo.h"

#include <stdio.h>
#include <string.h>

int demo_patch_status = 1;

static long parse_number(const char **p)
{
	long v = 0, sign = 1;

	while (**p == ' ')
		++*p;
	if (**p == '-') {
		sign = -1;
		++*p;
	}
	while (**p >= '0' && **p <= '9')
		v = v * 10 + (*(*p)++ - '0');
	return sign * v;
}

static int livepatch_parse_request(const char *text, long *a, long *b)
{
	if (strncmp(text, "slow ", 5) == 0) {
		demo_read_slow_body();
		text += 5;
	}
	if (strncmp(text, "add ", 4) != 0)
		return -1;
	text += 4;
	*a = parse_number(&text);
	*b = parse_number(&text);
	return 0;
}

static const char *livepatch_format_reply(struct conn *c, long value)
{
	char *buf = klp_shadow_get_or_alloc(c, DEMO_SHADOW_REPLY, DEMO_REPLY_BYTES, GFP_KERNEL,
					    NULL, NULL);

	if (!buf)
		return "error";
	snprintf(buf, DEMO_REPLY_BYTES, "%ld", value);
	return buf;
}

static struct klp_patch patch;

static int pre_patch(struct klp_object *obj)
{
	struct klp_state *prev = klp_get_prev_state(DEMO_STATE_PARSER);

	(void)obj;
	demo_say("  demo_v2 pre_patch: state %lu %s", DEMO_STATE_PARSER,
		 prev ? "taken over from the patch it replaces" : "is new");
	return 0;
}

static void post_unpatch(struct klp_object *obj)
{
	(void)obj;
	/* No worker runs livepatch_format_reply any more: the buffers can go. */
	klp_shadow_free_all(DEMO_SHADOW_REPLY, NULL);
	demo_say("  demo_v2 post_unpatch: shadow reply buffers freed");
}

static struct klp_func funcs[] = {
	{ .old_name = "parse_request", .new_func = (void *)livepatch_parse_request },
	{ .old_name = "format_reply", .new_func = (void *)livepatch_format_reply },
	{ 0 }
};

static struct klp_object objs[] = {
	{
		.name = NULL,
		.funcs = funcs,
		.callbacks = { .pre_patch = pre_patch, .post_unpatch = post_unpatch },
	},
	{ 0 }
};

static struct klp_state states[] = {
	{ .id = DEMO_STATE_PARSER, .version = 1 },
	{ 0 }
};

static struct klp_patch patch = {
	.name = "demo_v2",
	.objs = objs,
	.states = states,
	.replace = true,
};

__attribute__((constructor)) static void livepatch_init(void)
{
	demo_patch_status = klp_enable_patch(&patch);
}
