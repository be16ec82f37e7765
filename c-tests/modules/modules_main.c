/* The module loader and the compatibility headers, from a program that plays the
 * kernel: every bad input of klp_module_load, klp_module_unload, klp_module_param_set and
 * klp_module_refcnt (its errno, its line, nothing changed: a NULL or missing file, a
 * shared object that is not a module, a module that needs a symbol nobody exports, an
 * init that fails, a livepatch module without MODULE_INFO(livepatch, "Y"), unknown
 * parameters and bad values, a second load, the unload of a module in use or without an
 * exit), a plain dlopen of a module, the parameters, the kernel's facilities of the
 * headers (printk levels and %p forms, jiffies, a mutex and a completion whose waiters
 * park), and patch->mod from C.
 *
 *   modules_main <directory of the modules' .so files>
 *
 * Exit status 0 when every check holds; a failed check says which on standard error.
 * Run by klp-ffi/tests/c_modules.rs under both flavors. */
#include <klp.h>

#include <dlfcn.h>
#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* vmlinux's function that the livepatch modules replace. */
KLP_PATCHABLE(int, compute, (int x), (x))
{
	return x + 1;
}

static const char *dir;

static void fail(int line, const char *what)
{
	fprintf(stderr, "modules_main.c:%d: check failed: %s\n", line, what);
	exit(1);
}

#define CHECK(cond)                                                                     \
	do {                                                                            \
		if (!(cond))                                                            \
			fail(__LINE__, #cond);                                          \
	} while (0)

/* ---- the log ------------------------------------------------------------------- */

#define LINES 256
static pthread_mutex_t log_lock = PTHREAD_MUTEX_INITIALIZER;
static char lines[LINES][600];
static int nlines;

static void handler(int level, const char *line, void *data)
{
	(void)data;
	printf("<%d>%s\n", level, line);
	fflush(stdout);
	pthread_mutex_lock(&log_lock);
	if (nlines < LINES)
		snprintf(lines[nlines++], sizeof(lines[0]), "<%d>%s", level, line);
	pthread_mutex_unlock(&log_lock);
}

static void clear_log(void)
{
	pthread_mutex_lock(&log_lock);
	nlines = 0;
	pthread_mutex_unlock(&log_lock);
}

/* The first line since the last clear_log that contains `text`, or NULL. */
static const char *logged(const char *text)
{
	const char *found = NULL;
	int i;

	pthread_mutex_lock(&log_lock);
	for (i = 0; i < nlines && !found; i++)
		if (strstr(lines[i], text))
			found = lines[i];
	pthread_mutex_unlock(&log_lock);
	return found;
}

/* ---- helpers ------------------------------------------------------------------- */

static void path_of(char *path, const char *mod)
{
	snprintf(path, PATH_MAX, "%s/%s.so", dir, mod);
}

static int load(const char *mod, const char *params)
{
	char path[PATH_MAX];

	path_of(path, mod);
	return klp_module_load(path, params);
}

static int mapped(const char *mod)
{
	char path[PATH_MAX];
	void *h;

	path_of(path, mod);
	h = dlopen(path, RTLD_LAZY | RTLD_NOLOAD);
	if (h)
		dlclose(h);
	return h != NULL;
}

static void *sym(const char *mod, const char *name)
{
	char path[PATH_MAX];
	void *h, *p;

	path_of(path, mod);
	h = dlopen(path, RTLD_LAZY | RTLD_NOLOAD);
	CHECK(h != NULL);
	p = dlsym(h, name);
	dlclose(h);
	CHECK(p != NULL);
	return p;
}

static void sleep_ms(int ms)
{
	struct timespec ts = { ms / 1000, (long)(ms % 1000) * 1000000L };

	klp_park();
	nanosleep(&ts, NULL);
	klp_unpark();
}

/* Wait (at most 10 s) until `cond` holds. */
#define WAIT_UNTIL(cond)                                                                \
	do {                                                                            \
		int n__;                                                                \
		for (n__ = 0; !(cond) && n__ < 10000; n__++)                            \
			sleep_ms(1);                                                    \
		CHECK(cond);                                                            \
	} while (0)

/* ---- the cases ----------------------------------------------------------------- */

static void null_and_missing(void)
{
	clear_log();
	CHECK(klp_module_load(NULL, NULL) == -EINVAL);
	CHECK(logged("<3>klp_module_load: no file (NULL)"));
	CHECK(load("no_such_module", NULL) == -ENOENT);
	CHECK(logged("no_such_module.so: cannot open"));
	CHECK(klp_module_unload(NULL) == -EINVAL);
	CHECK(logged("<3>klp_module_unload: no name (NULL)"));
	CHECK(klp_module_unload("no_such_module") == -ENOENT);
	CHECK(logged("<3>klp_module_unload: no_such_module: no such module"));
	CHECK(klp_module_refcnt(NULL) == -EINVAL);
	CHECK(klp_module_refcnt("no_such_module") == -ENOENT);
	CHECK(klp_module_param_set(NULL, "p", "1") == -EINVAL);
	CHECK(klp_module_param_set("m", NULL, "1") == -EINVAL);
	CHECK(klp_module_param_set("m", "p", NULL) == -EINVAL);
	CHECK(klp_module_param_set("no_such_module", "p", "1") == -ENOENT);
	CHECK(logged("klp_module_param_set: no_such_module: no such module"));
	CHECK(klp_log_write(KLP_LOG_INFO, NULL) == -EINVAL);
	CHECK(klp_log_write(8, "x") == -EINVAL);
	CHECK(klp_format_pointer(NULL, 1, "", 0, NULL) == -EINVAL);
	CHECK(klp_module_register(NULL) == -EINVAL);
	klp_module_unregister(NULL);
}

static void not_a_module(void)
{
	clear_log();
	CHECK(load("not_a_module", "") == -ENOEXEC);
	CHECK(logged("not a module (no <linux/module.h>)"));
	CHECK(!mapped("not_a_module"));
}

static void unknown_symbol(void)
{
	clear_log();
	CHECK(load("mod_unknown_symbol", NULL) == -ENOENT);
	CHECK(logged("undefined symbol: no_such_kernel_symbol"));
	CHECK(klp_module_refcnt("mod_unknown_symbol") == -ENOENT);
	CHECK(!mapped("mod_unknown_symbol"));
}

static void init_fails(void)
{
	clear_log();
	CHECK(load("mod_initfail", NULL) == -ENODEV);
	CHECK(logged("<6>mod_initfail: init runs and fails"));
	CHECK(logged("<4>klp_module_load: mod_initfail: init failed (-19)"));
	CHECK(!logged("exit must not run"));
	CHECK(klp_module_refcnt("mod_initfail") == -ENOENT);
	CHECK(!mapped("mod_initfail"));
}

static void unmarked(void)
{
	clear_log();
	CHECK(load("lp_unmarked", NULL) == -EINVAL);
	CHECK(logged("<3>livepatch: module lp_unmarked is not marked as a livepatch module"));
	CHECK(!logged("enabling patch"));
	CHECK(klp_patch_enabled("lp_unmarked") == -ENOENT);
	CHECK(klp_module_refcnt("lp_unmarked") == -ENOENT);
	CHECK(!mapped("lp_unmarked"));
	CHECK(compute(1) == 2);
}

static void bad_parameters(void)
{
	clear_log();
	CHECK(load("lp_good", "p_int=1 p_nosuch=1") == -ENOENT);
	CHECK(logged("<3>klp_module_load: lp_good: Unknown parameter `p_nosuch'"));
	CHECK(load("lp_good", "p_int=abc") == -EINVAL);
	CHECK(logged("<3>klp_module_load: lp_good: 'abc' invalid for parameter 'p_int'"));
	CHECK(load("lp_good", "p_byte=256") == -EINVAL);
	CHECK(load("lp_good", "p_uint=-1") == -EINVAL);
	CHECK(load("lp_good", "p_bool=maybe") == -EINVAL);
	CHECK(load("lp_good", "p_int") == -EINVAL);
	CHECK(load("lp_good", "p_array=1,2,3,4,5") == -EINVAL);
	CHECK(logged("p_array: can only take 4 arguments"));
	/* The init never ran, nothing was enabled, nothing stays. */
	CHECK(!logged("params:"));
	CHECK(!logged("enabling patch"));
	CHECK(klp_patch_enabled("lp_good") == -ENOENT);
	CHECK(!mapped("lp_good"));
}

static void good_module(void)
{
	int (*p_int)(void);

	clear_log();
	CHECK(load("lp_good", "p_int=-7 p_uint=7 p_long=-8 p_ulong=8 p_short=-9 p_ushort=9 "
			      "p_byte=255 p_ullong=0x10 p_hexint=0x20 p_bool p_invbool=y "
			      "p_charp=\"hello world\" p_array=1,-2,3") == 0);
	CHECK(logged("<6>lp_good: params: int=-7 uint=7 long=-8 ulong=8 short=-9 ushort=9 "
		     "byte=255 ullong=16 hexint=0x20 bool=1 invbool=0 charp=hello world "
		     "array=3:1,-2,3,0"));
	/* init runs while the module is coming. */
	CHECK(logged("<6>lp_good: state 1, name lp_good"));
	CHECK(logged("<5>livepatch: enabling patch 'lp_good'"));
	CHECK(klp_wait_transition(10000) == 0);
	CHECK(compute(1) == 101);
	CHECK(klp_module_refcnt("lp_good") == 1);

	/* Loaded twice. */
	clear_log();
	CHECK(load("lp_good", NULL) == -EEXIST);
	CHECK(logged("<3>klp_module_load: lp_good: module is already loaded"));
	CHECK(compute(1) == 101);

	/* /sys/module/lp_good/parameters. */
	*(void **)&p_int = sym("lp_good", "lp_good_p_int");
	CHECK(p_int() == -7);
	CHECK(klp_module_param_set("lp_good", "p_int", "5") == 0);
	CHECK(p_int() == 5);
	CHECK(klp_module_param_set("lp_good", "p-int", "6") == 0);
	CHECK(p_int() == 6);
	CHECK(klp_module_param_set("lp_good", "p_int", "x") == -EINVAL);
	CHECK(p_int() == 6);
	CHECK(klp_module_param_set("lp_good", "p_nosuch", "1") == -ENOENT);
	CHECK(logged("klp_module_param_set: lp_good: no parameter 'p_nosuch'"));
	CHECK(klp_module_param_set("lp_good", "p_ro", "1") == -EACCES);
	CHECK(logged("klp_module_param_set: lp_good: parameter 'p_ro' is not writable"));

	/* rmmod of a livepatch module whose patch is in use: refused, nothing changes. */
	clear_log();
	CHECK(klp_module_unload("lp_good") == -EBUSY);
	CHECK(logged("<3>klp_module_unload: lp_good: module is in use"));
	CHECK(!logged("exit"));
	CHECK(klp_patch_enabled("lp_good") == 1);
	CHECK(compute(1) == 101);

	/* Disabled and released: the reference goes, the module unloads. */
	CHECK(klp_patch_set_enabled("lp_good", 0) == 0);
	CHECK(klp_wait_transition(10000) == 0);
	WAIT_UNTIL(klp_module_refcnt("lp_good") == 0);
	clear_log();
	CHECK(klp_module_unload("lp_good") == 0);
	CHECK(logged("<6>lp_good: exit, state 2"));
	CHECK(klp_module_refcnt("lp_good") == -ENOENT);
	CHECK(!mapped("lp_good"));
	CHECK(compute(1) == 2);
	/* And it loads again. */
	CHECK(load("lp_good", NULL) == 0);
	CHECK(klp_wait_transition(10000) == 0);
	CHECK(klp_patch_set_enabled("lp_good", 0) == 0);
	CHECK(klp_wait_transition(10000) == 0);
	WAIT_UNTIL(klp_module_refcnt("lp_good") == 0);
	CHECK(klp_module_unload("lp_good") == 0);
}

static void no_exit(void)
{
	clear_log();
	CHECK(load("mod_noexit", NULL) == 0);
	CHECK(klp_module_unload("mod_noexit") == -EBUSY);
	CHECK(logged("<3>klp_module_unload: mod_noexit: module has an init but no exit"));
	CHECK(klp_module_refcnt("mod_noexit") == 0);
}

static void plain_dlopen(void)
{
	char path[PATH_MAX];
	void *h;

	/* A plain dlopen loads the module with no parameters. */
	clear_log();
	path_of(path, "lp_good");
	h = dlopen(path, RTLD_NOW);
	CHECK(h != NULL);
	CHECK(logged("lp_good: params: int=-1 "));
	CHECK(klp_object_refused("lp_good") == 0);
	CHECK(klp_wait_transition(10000) == 0);
	CHECK(compute(1) == 101);
	/* Closed by the program while its patch is enabled: it stays. */
	CHECK(dlclose(h) == 0);
	CHECK(mapped("lp_good"));
	CHECK(klp_module_refcnt("lp_good") == 1);
	CHECK(compute(1) == 101);
	/* Once the patch is released, the last reference goes: exit, unloaded. */
	CHECK(klp_patch_set_enabled("lp_good", 0) == 0);
	CHECK(klp_wait_transition(10000) == 0);
	WAIT_UNTIL(klp_module_refcnt("lp_good") == -ENOENT);
	WAIT_UNTIL(logged("lp_good: exit, state 2") != NULL);
	WAIT_UNTIL(!mapped("lp_good"));

	/* A module whose init fails stays open but unloaded: klp_object_refused says so. */
	clear_log();
	path_of(path, "mod_initfail");
	h = dlopen(path, RTLD_NOW);
	CHECK(h != NULL);
	CHECK(logged("klp_module_load: mod_initfail: init failed (-19)"));
	CHECK(klp_object_refused("mod_initfail") == -ENODEV);
	CHECK(klp_module_refcnt("mod_initfail") == -ENOENT);
	CHECK(dlclose(h) == 0);
	CHECK(!logged("exit must not run"));
}

/* ---- the kernel's facilities --------------------------------------------------- */

static int thread_calls;
static void (*api_lock)(void), (*api_unlock)(void), (*api_wait)(void), (*api_complete)(void);

static void *blocked_on_mutex(void *arg)
{
	(void)arg;
	thread_calls = compute(1); /* a task now */
	api_lock();
	api_unlock();
	return (void *)(long)compute(1);
}

static void *blocked_on_completion(void *arg)
{
	(void)arg;
	(void)compute(1);
	api_wait();
	return (void *)(long)compute(1);
}

static int compute_v3(int x)
{
	return x + 300;
}

static struct klp_func funcs3[] = { { .old_name = "compute", .new_func = compute_v3 }, { 0 } };
static struct klp_object objs3[] = { { .name = NULL, .funcs = funcs3 }, { 0 } };
static struct klp_patch patch3 = { .name = "compute_v3", .objs = objs3 };

static void check_line(const char *text)
{
	if (!logged(text)) {
		fprintf(stderr, "no line with: %s\n", text);
		fail(__LINE__, "a line of mod_kernel_api");
	}
}

static void kernel_api(void)
{
	unsigned long (*sleep_jiffies)(unsigned int);
	int (*expired)(unsigned long, unsigned long);
	const char *l, *h;
	unsigned long j;
	pthread_t t;
	void *ret;

	clear_log();
	CHECK(load("mod-kernel-api", NULL) == 0);
	/* Named after its file (no KBUILD_MODNAME), in printk's pr_fmt too. */
	CHECK(klp_module_refcnt("mod_kernel_api") == 0);
	check_line("<3>mod_kernel_api: emerg");
	check_line("<3>mod_kernel_api: alert");
	check_line("<3>mod_kernel_api: crit");
	check_line("<3>mod_kernel_api: err -22");
	check_line("<4>mod_kernel_api: warn text");
	check_line("<5>mod_kernel_api: notice  3.14|7   |00ab|z|-5");
	check_line("<6>mod_kernel_api: info   42|abc|4|%");
	check_line("<7>mod_kernel_api: debug");
	check_line("<4>no level");
	check_line("<6>two");
	check_line("<6>lines");
	check_line("<6>mod_kernel_api: list 123 zeroed 0 modname mod_kernel_api current 1");
	check_line("<6>mod_kernel_api: null 0000000000000000 err fffffffffffffff4 x 0000000000001234");
	check_line("<6>mod_kernel_api: gfp GFP_KERNEL|__GFP_ZERO GFP_NOWAIT");
	check_line("<6>mod_kernel_api: errname -ENODEV");
	check_line("<6>mod_kernel_api: symbol api_lock api_lock+0x1/0x");
	check_line("<6>mod_kernel_api: HZ 100 msecs 100 secs 200 after 1 0");
	check_line("<4>WARNING: CPU: 0 PID: ");
	check_line("mod_kernel_api_init()");
	/* %p: a 32-bit hash in 16 digits, the same for the same pointer. */
	l = logged("mod_kernel_api: hashed ");
	CHECK(l != NULL);
	h = strstr(l, "hashed ") + 7;
	CHECK(strlen(h) == 16 + 6 + 16);
	CHECK(strncmp(h, "00000000", 8) == 0);
	CHECK(strncmp(h, h + 22, 16) == 0);

	/* jiffies advances HZ times a second, and a parameter may be named jiffies. */
	*(void **)&sleep_jiffies = sym("mod-kernel-api", "api_sleep_jiffies");
	*(void **)&expired = sym("mod-kernel-api", "api_expired");
	j = sleep_jiffies(200);
	CHECK(j >= 10 && j <= 60);
	CHECK(expired(5, 6) == 1 && expired(6, 5) == 0 && expired(ULONG_MAX, 2) == 1);

	/* A thread blocked on the module's mutex, or waiting for its completion, sleeps:
	 * the transition does not wait for it. */
	*(void **)&api_lock = sym("mod-kernel-api", "api_lock");
	*(void **)&api_unlock = sym("mod-kernel-api", "api_unlock");
	*(void **)&api_wait = sym("mod-kernel-api", "api_wait");
	*(void **)&api_complete = sym("mod-kernel-api", "api_complete");
	api_lock();
	CHECK(pthread_create(&t, NULL, blocked_on_mutex, NULL) == 0);
	sleep_ms(100);
	CHECK(klp_enable_patch(&patch3) == 0);
	CHECK(klp_wait_transition(5000) == 0);
	api_unlock();
	CHECK(pthread_join(t, &ret) == 0);
	CHECK(thread_calls == 2 && (long)ret == 301);
	CHECK(klp_patch_set_enabled("compute_v3", 0) == 0);
	CHECK(klp_wait_transition(5000) == 0);

	CHECK(pthread_create(&t, NULL, blocked_on_completion, NULL) == 0);
	sleep_ms(100);
	WAIT_UNTIL(klp_patch_enabled("compute_v3") == -ENOENT);
	CHECK(klp_enable_patch(&patch3) == 0);
	CHECK(klp_wait_transition(5000) == 0);
	api_complete();
	CHECK(pthread_join(t, &ret) == 0);
	CHECK((long)ret == 301);
	CHECK(klp_patch_set_enabled("compute_v3", 0) == 0);
	CHECK(klp_wait_transition(5000) == 0);

	clear_log();
	CHECK(klp_module_unload("mod_kernel_api") == 0);
	check_line("<6>mod_kernel_api: exit");
}

/* patch->mod from C: a struct klp_module of the program's. */
static struct klp_modinfo livepatch_info = { "livepatch", "Y", NULL };

static void patch_mod_from_c(void)
{
	static struct klp_module fake = { KLP_MODULE_ABI, KLP_MODULE_STATE_LIVE, "fake_lp",
					  NULL, NULL, NULL, NULL, { NULL } };
	static struct klp_patch p = { .objs = objs3 };

	clear_log();
	p.mod = &fake;
	CHECK(klp_enable_patch(&p) == -EINVAL);
	CHECK(logged("<3>livepatch: module fake_lp is not marked as a livepatch module"));
	fake.info = &livepatch_info;
	p.name = "another_name";
	CHECK(klp_enable_patch(&p) == -EINVAL);
	fake.abi = 0;
	p.name = NULL;
	CHECK(klp_enable_patch(&p) == -EINVAL);
	fake.abi = KLP_MODULE_ABI;
	CHECK(klp_patch_enabled("fake_lp") == -ENOENT);
	/* Named by the module; not a loaded module: no reference to take. */
	CHECK(klp_enable_patch(&p) == 0);
	CHECK(klp_patch_enabled("fake_lp") == 1);
	CHECK(klp_wait_transition(5000) == 0);
	CHECK(compute(1) == 301);
	CHECK(klp_patch_set_enabled("fake_lp", 0) == 0);
	CHECK(klp_wait_transition(5000) == 0);
	WAIT_UNTIL(klp_patch_enabled("fake_lp") == -ENOENT);
	CHECK(compute(1) == 2);
}

int main(int argc, char **argv)
{
	if (argc != 2) {
		fprintf(stderr, "usage: %s <module dir>\n", argv[0]);
		return 2;
	}
	dir = argv[1];
	CHECK(klp_set_log_handler(handler, NULL) == 0);
	CHECK(klp_set_retry_period(50) == 0);
	CHECK(compute(1) == 2);

	null_and_missing();
	not_a_module();
	unknown_symbol();
	init_fails();
	unmarked();
	bad_parameters();
	good_module();
	no_exit();
	plain_dlopen();
	kernel_api();
	patch_mod_from_c();
	printf("modules_main: ok\n");
	return 0;
}
