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
 * The livepatch modules (and test_klp_shadow_vars) are the kernel's, in its form, built
 * with libklp's compatibility headers: insmod is klp_module_load of <module dir>/<m>.so
 * with the parameters, rmmod klp_module_unload, /sys/module/<m>/parameters
 * klp_module_param_set. The target modules stand for kernel code and are built with
 * klp_selftest.h: insmod is dlopen (their constructors: the module's init), rmmod
 * dlclose. /sys/kernel/livepatch is the control surface of libklp. */
#include "harness.h"

#include <dlfcn.h>
#include <limits.h>

static const char *module_dir;

/* The loaded modules: /sys/module. `handle` is NULL for those of klp_module_load. */
static struct {
	const char *name;
	void *handle;
} modules[16];

/* The target modules (klp_selftest.h): the others are kernel modules for libklp. */
static bool is_target(const char *mod)
{
	static const char *const targets[] = { "test_klp_callbacks_mod", "test_klp_callbacks_busy",
					       "test_klp_mod_target" };
	unsigned int i;

	for (i = 0; i < sizeof(targets) / sizeof(targets[0]); i++)
		if (strcmp(mod, targets[i]) == 0)
			return true;
	return false;
}

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

/* libklp's log: printk with the line's level. The module loader's own lines
 * ("klp_module_load: ...", "klp_module_unload: ..."), which the kernel leaves to insmod
 * and rmmod (whose lines the harness prints itself), go to standard error. */
static void kmsg(int level, const char *line, void *data)
{
	(void)data;
	if (strncmp(line, "klp_module_", 11) == 0) {
		fprintf(stderr, "<%d>%s\n", level, line);
		return;
	}
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

	if (i < 0 || !modules[i].handle)
		die("%s is not a loaded target module", mod);
	p = dlsym(modules[i].handle, sym);
	if (!p)
		die("%s has no symbol %s", mod, sym);
	return p;
}

/* insmod: load the module; 0, or its init's error (the module is closed again: the
 * kernel frees a module whose init failed). */
static int insmod(const char *mod, const char *params)
{
	char path[PATH_MAX];
	int *init_ret, err;
	unsigned int i;
	void *h = NULL;

	log_line("%% insmod test_modules/%s.ko%s%s", mod, *params ? " " : "", params);
	if (module_slot(mod) >= 0)
		die("%s is loaded already", mod);
	module_path(path, mod);
	if (is_target(mod)) {
		/* Its constructors run its init. */
		klp_insmod_args = params;
		h = dlopen(path, RTLD_NOW | RTLD_LOCAL);
		klp_insmod_args = "";
		if (!h)
			die("dlopen: %s", dlerror());
		init_ret = dlsym(h, "klp_module_init_ret");
		if (!init_ret)
			die("%s has no module_init", mod);
		err = *init_ret;
		if (err)
			CHECK_INT(dlclose(h), 0);
	} else {
		err = klp_module_load(path, params);
	}
	if (err) {
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
	if (modules[i].handle)
		CHECK_INT(dlclose(modules[i].handle), 0);
	else
		CHECK_INT(klp_module_unload(mod), 0);
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

/* The module's reference count drops to 0 when its patch is released. */
void unload_lp(const char *mod)
{
	LOOP_UNTIL("/sys/module/<mod>/refcnt reads 0", klp_module_refcnt(mod) == 0);
	rmmod(mod);
}

void set_pre_patch_ret(const char *mod, int value)
{
	char v[16];

	log_line("%% echo %d > /sys/module/%s/parameters/pre_patch_ret", value, mod);
	snprintf(v, sizeof(v), "%d", value);
	CHECK_INT(klp_module_param_set(mod, "pre_patch_ret", v), 0);
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
