/* The driver of the C selftests: the kernel (vmlinux.c) and the harness of the kernel's
 * tools/testing/selftests/livepatch/functions.sh (functions.c); the test scripts are
 * test-*.c. See README.md. */
#ifndef HARNESS_H
#define HARNESS_H

#include "klp_selftest.h"

/* ---- vmlinux.c ------------------------------------------------------------------ */

/* What /proc/cmdline and /proc/meminfo show unpatched. */
#define CMDLINE "BOOT_IMAGE=/boot/vmlinuz root=/dev/vda1 ro console=ttyS0\n"
#define MEMINFO "MemTotal:        4026532 kB\nMemFree:         3145728 kB\n"

/* The patchable functions of vmlinux (KLP_PATCHABLE, object NULL); vmlinux.c also has
 * the getpid system call, named as its wrapper (__x64_sys_getpid on x86-64). */
int cmdline_proc_show(struct seq_file *m, void *v);
int meminfo_proc_show(struct seq_file *m, void *v);

/* "cat /proc/<file>": the text `show` writes, in a static buffer. */
const char *proc_read(int (*show)(struct seq_file *m, void *v));
/* "cat /proc/test_klp_mod_target": the module's show function, found with dlsym. */
const char *proc_read_mod_target(void);

/* Start the kworker of the system workqueue. */
void workqueue_init(void);

/* ---- functions.c (functions.sh) ------------------------------------------------- */

/* How long a wait may take (the scripts: 60 s), and how often a stalled transition is
 * retried (the kernel: about 1 s). */
#define TIMEOUT_MS 20000
#define RETRY_MS 50

/* A line into the kernel log, as the harness writes to /dev/kmsg (no level). */
__attribute__((format(printf, 1, 2))) void log_line(const char *fmt, ...);
/* Stop the test: a message on standard error, exit status 1. */
__attribute__((format(printf, 1, 2), noreturn)) void die(const char *fmt, ...);

#define CHECK(cond)                                                                     \
	do {                                                                            \
		if (!(cond))                                                            \
			die("%s:%d: check failed: %s", __FILE__, __LINE__, #cond);     \
	} while (0)

#define CHECK_INT(actual, expected)                                                     \
	do {                                                                            \
		long a__ = (long)(actual), e__ = (long)(expected);                      \
		if (a__ != e__)                                                         \
			die("%s:%d: %s is %ld, not %ld", __FILE__, __LINE__, #actual,  \
			    a__, e__);                                                  \
	} while (0)

#define CHECK_STR(actual, expected)                                                     \
	do {                                                                            \
		const char *a__ = (actual), *e__ = (expected);                          \
		if (strcmp(a__, e__) != 0)                                              \
			die("%s:%d: %s is \"%s\", not \"%s\"", __FILE__, __LINE__,     \
			    #actual, a__, e__);                                         \
	} while (0)

/* loop_until: poll `cond` (parked 1 ms between polls) until it holds; die after
 * TIMEOUT_MS, naming `what`. */
#define LOOP_UNTIL(what, cond)                                                          \
	do {                                                                            \
		long long end__ = now_ms() + TIMEOUT_MS;                                \
		while (!(cond)) {                                                       \
			if (now_ms() > end__)                                           \
				die("timed out waiting until %s", (what));              \
			msleep(1);                                                      \
		}                                                                       \
	} while (0)

long long now_ms(void);

/* The helpers of functions.sh. The module names are those of the shared objects
 * (<dir>/<module>.so), params the insmod arguments ("" for none). */
void load_mod(const char *mod, const char *params);
int load_failing_mod(const char *mod, const char *params);
void load_lp_nowait(const char *mod, const char *params);
void load_lp(const char *mod, const char *params);
int load_failing_lp(const char *mod, const char *params);
void disable_lp(const char *mod);
void unload_mod(const char *mod);
void unload_lp(const char *mod);
void set_pre_patch_ret(const char *mod, int value);
/* "echo 0 > /sys/kernel/livepatch/<mod>/enabled", then wait until the directory goes. */
void write_enabled_0(const char *mod);
void wait_gone(const char *mod);
/* Wait until /sys/kernel/livepatch/<mod>/transition reads 0. */
void wait_transition_0(const char *mod);
/* A symbol of a loaded module. */
void *module_sym(const char *mod, const char *sym);
/* grep 'live patched' /proc/cmdline /proc/meminfo > /dev/kmsg */
void grep_live_patched(void);
/* /sys/kernel/livepatch/<patch> exists. */
bool patch_exists(const char *patch);
/* The number of entries of /sys/kernel/livepatch (klp_patch_list). */
int patch_count(void);

/* ---- the tests ------------------------------------------------------------------ */

struct selftest {
	const char *name; /* "<script>-<n>", e.g. "livepatch-1" */
	void (*run)(void);
};

extern const struct selftest test_livepatch[], test_callbacks[], test_shadow_vars[],
	test_state[], test_sysfs[];

#endif /* HARNESS_H */
