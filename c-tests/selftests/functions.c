/* The harness: functions.sh of the kernel's livepatch selftests, and main.
 *
 *   selftests <case> <module dir>
 *
 * runs one case (e.g. livepatch-1) and prints the kernel log on standard output: the
 * harness's echo lines ("% insmod test_modules/<m>.ko", "% rmmod <m>",
 * "% echo 0 > /sys/kernel/livepatch/<m>/enabled"), the modules' lines and libklp's.
 * klp-ffi/tests/c_selftests.rs keeps the lines that contain "livepatch:" or "test_klp"
 * (check_result) and compares them with expected/<case>.log.
 *
 * insmod is dlopen of <module dir>/<m>.so (its constructors: the module's init), rmmod
 * is dlclose; /sys/kernel/livepatch is the control surface of libklp. */
#include "harness.h"

#include <dlfcn.h>
#include <limits.h>

static const char *module_dir;

/* The loaded modules: /sys/module. */
static struct {
	const char *name;
	void *handle;
} modules[16];

long long now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

void log_line(const char *fmt, ...)
{
	va_list ap;

	flockfile(stdout);
	va_start(ap, fmt);
	vprintf(fmt, ap);
	va_end(ap);
	putchar('\n');
	fflush(stdout);
	funlockfile(stdout);
}

void die(const char *fmt, ...)
{
	va_list ap;

	fflush(stdout);
	fprintf(stderr, "FAILED: ");
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
	exit(1);
}

/* libklp's log: printk with the line's level. */
static void kmsg(int level, const char *line, void *data)
{
	(void)data;
	klp_printk(level, "%s", line);
}

/* What insmod prints for an init's error. */
static const char *insmod_strerror(int err)
{
	switch (-err) {
	case EINVAL:
		return "Invalid parameters";
	case ENODEV:
		return "No such device";
	case EBUSY:
		return "Device or resource busy";
	case EEXIST:
		return "File exists";
	case ENOENT:
		return "Unknown symbol in module";
	case ENOMEM:
		return "Cannot allocate memory";
	default:
		return "Unknown error";
	}
}

static int module_slot(const char *mod)
{
	unsigned int i;

	for (i = 0; i < sizeof(modules) / sizeof(modules[0]); i++)
		if (modules[i].name && strcmp(modules[i].name, mod) == 0)
			return (int)i;
	return -1;
}

static void module_path(char *path, const char *mod)
{
	snprintf(path, PATH_MAX, "%s/%s.so", module_dir, mod);
}

void *module_sym(const char *mod, const char *sym)
{
	int i = module_slot(mod);
	void *p;

	if (i < 0)
		die("%s is not loaded", mod);
	p = dlsym(modules[i].handle, sym);
	if (!p)
		die("%s has no symbol %s", mod, sym);
	return p;
}

/* insmod: open the module (its constructors run its init); 0, or the init's error after
 * the module was closed again (the kernel frees a module whose init failed). */
static int insmod(const char *mod, const char *params)
{
	char path[PATH_MAX];
	int *init_ret, err;
	unsigned int i;
	void *h;

	log_line("%% insmod test_modules/%s.ko%s%s", mod, *params ? " " : "", params);
	if (module_slot(mod) >= 0)
		die("%s is loaded already", mod);
	module_path(path, mod);
	klp_insmod_args = params;
	h = dlopen(path, RTLD_NOW | RTLD_LOCAL);
	klp_insmod_args = "";
	if (!h)
		die("dlopen: %s", dlerror());
	init_ret = dlsym(h, "klp_module_init_ret");
	if (!init_ret)
		die("%s has no module_init", mod);
	err = *init_ret;
	if (err) {
		CHECK_INT(dlclose(h), 0);
		log_line("insmod: ERROR: could not insert module test_modules/%s.ko: %s", mod,
			 insmod_strerror(err));
		return err;
	}
	for (i = 0; i < sizeof(modules) / sizeof(modules[0]); i++) {
		if (!modules[i].name) {
			modules[i].name = mod;
			modules[i].handle = h;
			return 0;
		}
	}
	die("too many modules");
}

/* rmmod: close the module (its destructors run its exit), then wait until it is gone
 * (/sys/module/<m> disappears): libklp may hold a reference a little longer. */
static void rmmod(const char *mod)
{
	char path[PATH_MAX];
	int i = module_slot(mod);
	void *h;

	if (i < 0)
		die("%s is not loaded", mod);
	log_line("%% rmmod %s", mod);
	CHECK_INT(dlclose(modules[i].handle), 0);
	modules[i].name = NULL;
	modules[i].handle = NULL;
	module_path(path, mod);
	LOOP_UNTIL("the module is unmapped",
		   !(h = dlopen(path, RTLD_LAZY | RTLD_NOLOAD)) || (dlclose(h), 0));
}

bool patch_exists(const char *patch)
{
	return klp_patch_enabled(patch) != -ENOENT;
}

int patch_count(void)
{
	char buf[512];
	int n = 0, len = klp_patch_list(buf, sizeof(buf));

	CHECK(len > 0 && (size_t)len <= sizeof(buf));
	for (const char *p = buf; *p; p += strlen(p) + 1)
		n++;
	return n;
}

void load_mod(const char *mod, const char *params)
{
	int err = insmod(mod, params);

	if (err)
		die("insmod %s: %s", mod, klp_strerror(err));
}

int load_failing_mod(const char *mod, const char *params)
{
	int err = insmod(mod, params);

	if (!err)
		die("%s unexpectedly loaded", mod);
	return err;
}

void load_lp_nowait(const char *mod, const char *params)
{
	load_mod(mod, params);
	LOOP_UNTIL("/sys/kernel/livepatch/<mod> exists", patch_exists(mod));
}

void wait_transition_0(const char *mod)
{
	LOOP_UNTIL("/sys/kernel/livepatch/<mod>/transition reads 0",
		   klp_patch_transition(mod) != 1);
}

void load_lp(const char *mod, const char *params)
{
	load_lp_nowait(mod, params);
	wait_transition_0(mod);
	/* libklp's own way to say the same. */
	CHECK_INT(klp_wait_transition(TIMEOUT_MS), 0);
}

int load_failing_lp(const char *mod, const char *params)
{
	int err = load_failing_mod(mod, params);

	CHECK(!patch_exists(mod));
	return err;
}

void write_enabled_0(const char *mod)
{
	int err;

	log_line("%% echo 0 > /sys/kernel/livepatch/%s/enabled", mod);
	err = klp_patch_set_enabled(mod, 0);
	if (err)
		die("echo 0 > /sys/kernel/livepatch/%s/enabled: %s", mod, klp_strerror(err));
}

void wait_gone(const char *mod)
{
	LOOP_UNTIL("/sys/kernel/livepatch/<mod> disappears", !patch_exists(mod));
	CHECK_INT(klp_wait_transition(TIMEOUT_MS), 0);
}

void disable_lp(const char *mod)
{
	write_enabled_0(mod);
	wait_gone(mod);
}

void unload_mod(const char *mod)
{
	rmmod(mod);
}

/* The module's reference count drops to 0 when its patch is released: it no longer
 * appears under its name, and the program may unmap its structs. */
void unload_lp(const char *mod)
{
	LOOP_UNTIL("/sys/module/<mod>/refcnt reads 0", !patch_exists(mod));
	rmmod(mod);
}

void set_pre_patch_ret(const char *mod, int value)
{
	log_line("%% echo %d > /sys/module/%s/parameters/pre_patch_ret", value, mod);
	WRITE_ONCE(*(int *)module_sym(mod, "pre_patch_ret"), value);
}

static void grep_text(const char *text)
{
	char buf[sizeof(((struct seq_file *)0)->buf)];
	char *line, *save;

	snprintf(buf, sizeof(buf), "%s", text);
	for (line = strtok_r(buf, "\n", &save); line; line = strtok_r(NULL, "\n", &save))
		if (strstr(line, "live patched"))
			log_line("%s", line);
}

void grep_live_patched(void)
{
	grep_text(proc_read(cmdline_proc_show));
	grep_text(proc_read(meminfo_proc_show));
}

static const struct selftest *find(const char *name)
{
	const struct selftest *scripts[] = { test_livepatch, test_callbacks, test_shadow_vars,
					     test_state, test_sysfs };
	const struct selftest *t;
	unsigned int i;

	for (i = 0; i < sizeof(scripts) / sizeof(scripts[0]); i++)
		for (t = scripts[i]; t->name; t++)
			if (strcmp(t->name, name) == 0)
				return t;
	return NULL;
}

int main(int argc, char **argv)
{
	const struct selftest *t;
	unsigned int i;

	if (argc != 3) {
		fprintf(stderr, "usage: %s <case> <module dir>\n", argv[0]);
		return 2;
	}
	t = find(argv[1]);
	if (!t)
		die("no case %s", argv[1]);
	module_dir = argv[2];

	/* setup_config: the log (dynamic debug on: every level), a fast retry. */
	CHECK_INT(klp_set_log_handler(kmsg, NULL), 0);
	CHECK_INT(klp_set_retry_period(RETRY_MS), 0);
	workqueue_init();

	t->run();

	for (i = 0; i < sizeof(modules) / sizeof(modules[0]); i++)
		if (modules[i].name)
			die("%s is still loaded", modules[i].name);
	CHECK(klp_wait_transition(0) == 0);
	return 0;
}
