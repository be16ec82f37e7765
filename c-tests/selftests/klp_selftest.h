/* What the kernel's livepatch selftests use of the kernel, in userspace: included by the
 * driver (selftests, the "kernel" and functions.sh) and by the target modules (shared
 * objects opened with dlopen; the livepatch modules are in the kernel's form and use
 * libklp's compatibility headers instead). See README.md. Needs GNU C.
 *
 * The driver is linked with -rdynamic: what it defines below (console_loglevel,
 * schedule_work, ...) is what vmlinux exports to modules (EXPORT_SYMBOL). */
#ifndef KLP_SELFTEST_H
#define KLP_SELFTEST_H

#include <klp.h>

#include <errno.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* ---- printk ----------------------------------------------------------------------
 * The kernel log is standard output, one line per message. A line of printk carries its
 * level first as "<N>" (the raw format of /dev/kmsg); lines the harness writes to
 * /dev/kmsg (the "% insmod ..." echoes, grep results) carry none. */

static inline __attribute__((format(printf, 2, 3))) void klp_printk(int level, const char *fmt, ...)
{
	va_list ap;

	flockfile(stdout);
	if (level >= 0)
		printf("<%d>", level);
	va_start(ap, fmt);
	vprintf(fmt, ap);
	va_end(ap);
	putchar('\n');
	fflush(stdout);
	funlockfile(stdout);
}

#ifdef KBUILD_MODNAME
/* pr_info with the modules' pr_fmt ("<module>: "); the trailing newline is implied. */
#define pr_info(fmt, ...) klp_printk(6, KBUILD_MODNAME ": " fmt, ##__VA_ARGS__)
#endif

#define READ_ONCE(x) __atomic_load_n(&(x), __ATOMIC_SEQ_CST)
#define WRITE_ONCE(x, v) __atomic_store_n(&(x), (v), __ATOMIC_SEQ_CST)

/* ---- sleeping -------------------------------------------------------------------
 * A sleeping task is not running: its stack can be checked and it can be switched from
 * outside. A thread that blocks is parked around the blocking call. */

static inline void msleep(unsigned int ms)
{
	struct timespec ts = { .tv_sec = ms / 1000, .tv_nsec = (long)(ms % 1000) * 1000000L };

	klp_park();
	while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
		;
	klp_unpark();
}

struct completion {
	pthread_mutex_t lock;
	pthread_cond_t cond;
	unsigned int done;
};

#define DECLARE_COMPLETION(name)                                                        \
	struct completion name = { PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, 0 }

static inline void complete(struct completion *c)
{
	pthread_mutex_lock(&c->lock);
	c->done++;
	pthread_cond_broadcast(&c->cond);
	pthread_mutex_unlock(&c->lock);
}

static inline void wait_for_completion(struct completion *c)
{
	klp_park();
	pthread_mutex_lock(&c->lock);
	while (!c->done)
		pthread_cond_wait(&c->cond, &c->lock);
	c->done--;
	pthread_mutex_unlock(&c->lock);
	klp_unpark();
}

/* ---- exported by the driver (vmlinux) ------------------------------------------- */

/* The system workqueue: work runs on the driver's kworker thread. */
struct work_struct {
	void (*func)(struct work_struct *work);
	struct work_struct *next;
	int pending, running;
};

#define DECLARE_WORK(name, f) struct work_struct name = { .func = (f) }

void schedule_work(struct work_struct *work);
/* Wait (parked) until the work is neither queued nor running. */
void flush_work(struct work_struct *work);

/* A /proc file's text, written by its show function. */
struct seq_file {
	char buf[512];
	size_t count;
};

__attribute__((format(printf, 2, 3))) void seq_printf(struct seq_file *m, const char *fmt, ...);

extern int console_loglevel;
#define CONSOLE_LOGLEVEL_DEFAULT 7
#define CONSOLE_LOGLEVEL_MOTORMOUTH 15

/* The parameters of the insmod in progress ("name=value ..."), for module_param. */
extern const char *klp_insmod_args;

/* ---- module_param, module_init, module_exit --------------------------------------
 * module_param(name, int|bool) defines the exported variable `name`; the driver finds it
 * with dlsym to write it later (/sys/module/<m>/parameters/<name>). It is set from the
 * insmod arguments by a constructor of priority 102: after the registration of the
 * patchable functions (101) and before every constructor of default priority (ELF runs
 * the prioritised constructors first).
 *
 * module_init(fn) runs fn as a constructor of default priority, so it must come after
 * KLP_OBJECT in the source: same-priority constructors run in the order of definition,
 * so the object is loaded (klp_object_coming: "applying patch ..." and the patch's
 * callbacks for the coming module) before the module's init, as in the kernel. When a
 * patch refused the object (klp_object_refused), init does not run: the kernel refuses
 * the module before calling it. The result goes to the exported klp_module_init_ret,
 * which the driver reads after dlopen (non-zero: insmod failed, the driver dlcloses).
 *
 * module_exit(fn) runs fn as a destructor of default priority, after init succeeded;
 * destructors run in the reverse order, so before KLP_OBJECT's klp_object_going, as the
 * kernel's module exit runs before the going notifier. */

static inline const char *klp_param_value(const char *name)
{
	const char *p = klp_insmod_args;
	size_t n = strlen(name);

	while (p && *p) {
		while (*p == ' ')
			p++;
		if (strncmp(p, name, n) == 0 && p[n] == '=')
			return p + n + 1;
		p = strchr(p, ' ');
	}
	return NULL;
}

static inline void klp_param_int(const char *name, int *v)
{
	const char *s = klp_param_value(name);

	if (s)
		*v = (int)strtol(s, NULL, 0);
}

static inline void klp_param_bool(const char *name, bool *v)
{
	const char *s = klp_param_value(name);

	if (s)
		*v = (*s == 'Y' || *s == 'y' || *s == '1');
}

#define module_param(name, type)                                                        \
	type name;                                                                      \
	__attribute__((constructor(102))) static void name##__klp_param(void)          \
	{                                                                               \
		klp_param_##type(#name, &name);                                         \
	}                                                                               \
	extern type name

#ifdef KBUILD_MODNAME
#define module_init(fn)                                                                 \
	int klp_module_init_ret;                                                        \
	__attribute__((constructor)) static void klp__module_init(void)                \
	{                                                                               \
		int refused = klp_object_refused(KBUILD_MODNAME);                       \
		klp_module_init_ret = refused ? refused : fn();                         \
	}                                                                               \
	extern int klp_module_init_ret

#define module_exit(fn)                                                                 \
	__attribute__((destructor)) static void klp__module_exit(void)                 \
	{                                                                               \
		if (klp_module_init_ret == 0)                                           \
			fn();                                                           \
	}                                                                               \
	extern int klp_module_init_ret
#endif

#endif /* KLP_SELFTEST_H */
