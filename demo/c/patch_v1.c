/* Livepatch module demo_v1: fixes parse_request (a minus sign was skipped). Like a
 * kernel livepatch module, its init (the constructor, run by dlopen) enables its static
 * struct klp_patch. Declares the system state DEMO_STATE_PARSER. Needs GNU C. */
#include "demo.h"

#include <string.h>

/* klp_enable_patch's result, read by the server after dlopen. */
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

static void post_patch(struct klp_object *obj)
{
	(void)obj;
	demo_say("  demo_v1 post_patch: every worker parses negative numbers now");
}

static struct klp_func funcs[] = {
	{ .old_name = "parse_request", .new_func = (void *)livepatch_parse_request },
	{ 0 }
};

static struct klp_object objs[] = {
	{ .name = NULL, .funcs = funcs, .callbacks = { .post_patch = post_patch } },
	{ 0 }
};

static struct klp_state states[] = {
	{ .id = DEMO_STATE_PARSER, .version = 1 },
	{ 0 }
};

static struct klp_patch patch = {
	.name = "demo_v1",
	.objs = objs,
	.states = states,
};

__attribute__((constructor)) static void livepatch_init(void)
{
	demo_patch_status = klp_enable_patch(&patch);
}
