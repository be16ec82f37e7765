/* The kernel of the livepatch samples: a program that plays vmlinux for the kernel's
 * samples/livepatch/ modules (rewritten in the kernel's form, built with libklp's
 * compatibility headers) and runs the steps of their usage notes, as a shell would:
 *
 *   kernel <scenario> <directory of the modules' .so files>
 *
 * It prints the kernel log on standard output: the steps' echo lines ("% insmod
 * livepatch-sample.ko", "% cat /proc/cmdline" and what it shows, ...) and every line of
 * libklp's log (the modules' printk and libklp's own) with its level first ("<5>").
 * klp-ffi/tests/c_samples.rs compares it with expected/<scenario>.log, or checks the
 * lines of the shadow variable demo (whose pointers and times differ from run to run).
 *
 * vmlinux here: cmdline_proc_show (patchable), seq_printf, and the system workqueue of
 * <linux/workqueue.h> (one kworker thread; delays in jiffies), exported to the modules
 * (-rdynamic). insmod is klp_module_load, rmmod klp_module_unload, /sys/module/<m>/
 * parameters klp_module_param_set, /sys/kernel/livepatch libklp's control surface. */
#include <klp.h>
#include <linux/workqueue.h>

#include <limits.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define CMDLINE "BOOT_IMAGE=/boot/vmlinuz root=/dev/vda1 ro console=ttyS0\n"

static const char *module_dir;

static void die(const char *fmt, ...)
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

#define CHECK(cond)                                                                     \
	do {                                                                            \
		if (!(cond))                                                            \
			die("%s:%d: check failed: %s", __FILE__, __LINE__, #cond);     \
	} while (0)

/* ---- the log ------------------------------------------------------------------- */

static pthread_mutex_t log_lock = PTHREAD_MUTEX_INITIALIZER;
static int seen_lines;
static char last_lines[64][256];

/* A line of the kernel log. */
static void kmsg_line(const char *line)
{
	pthread_mutex_lock(&log_lock);
	printf("%s\n", line);
	fflush(stdout);
	snprintf(last_lines[seen_lines % 64], sizeof(last_lines[0]), "%s", line);
	seen_lines++;
	pthread_mutex_unlock(&log_lock);
}

static void echo(const char *fmt, ...)
{
	char buf[512];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(buf, sizeof(buf), fmt, ap);
	va_end(ap);
	kmsg_line(buf);
}

/* libklp's log, with each line's level. */
static void kmsg(int level, const char *line, void *data)
{
	char buf[600];

	(void)data;
	snprintf(buf, sizeof(buf), "<%d>%s", level, line);
	kmsg_line(buf);
}

/* How many lines so far contain `text` (of the last 64, plus a running count). */
static int counts[8];
static const char *counted[8];

static void count_line(const char *text, int slot)
{
	counted[slot] = text;
}

static int count_of(int slot)
{
	int n;

	pthread_mutex_lock(&log_lock);
	n = counts[slot];
	pthread_mutex_unlock(&log_lock);
	return n;
}

static long long now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void sleep_ms(long ms)
{
	struct timespec ts = { ms / 1000, (ms % 1000) * 1000000L };

	klp_park();
	while (nanosleep(&ts, &ts) != 0)
		;
	klp_unpark();
}

/* Wait (at most 60 s) until `cond` holds. */
#define WAIT_UNTIL(what, cond)                                                          \
	do {                                                                            \
		long long end__ = now_ms() + 60000;                                     \
		while (!(cond)) {                                                       \
			if (now_ms() > end__)                                           \
				die("timed out waiting until %s", (what));              \
			sleep_ms(5);                                                    \
		}                                                                       \
	} while (0)

/* ---- vmlinux ------------------------------------------------------------------- */

struct seq_file {
	char buf[512];
	size_t count;
};

void seq_printf(struct seq_file *m, const char *fmt, ...)
{
	va_list ap;
	int n;

	if (m->count >= sizeof(m->buf) - 1)
		return;
	va_start(ap, fmt);
	n = vsnprintf(m->buf + m->count, sizeof(m->buf) - m->count, fmt, ap);
	va_end(ap);
	if (n > 0)
		m->count += (size_t)n;
	if (m->count > sizeof(m->buf) - 1)
		m->count = sizeof(m->buf) - 1;
}

/* The show function of /proc/cmdline. */
KLP_PATCHABLE(int, cmdline_proc_show, (struct seq_file *m, void *v), (m, v))
{
	(void)v;
	seq_printf(m, "%s", CMDLINE);
	return 0;
}

/* % cat /proc/cmdline */
static void cat_cmdline(void)
{
	struct seq_file m;
	char *line, *save;

	m.count = 0;
	m.buf[0] = '\0';
	echo("%% cat /proc/cmdline");
	CHECK(cmdline_proc_show(&m, NULL) == 0);
	for (line = strtok_r(m.buf, "\n", &save); line; line = strtok_r(NULL, "\n", &save))
		echo("%s", line);
}

/* ---- the system workqueue: one kworker thread ----------------------------------- */

/* A work item queued or running. */
struct entry {
	struct work_struct *work;
	long long due; /* ms, CLOCK_MONOTONIC */
	int pending, running;
};

static pthread_mutex_t wq_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t wq_changed = PTHREAD_COND_INITIALIZER;
static struct entry entries[64];

static struct entry *entry_of(struct work_struct *work, int create)
{
	unsigned int i;
	struct entry *free_slot = NULL;

	for (i = 0; i < sizeof(entries) / sizeof(entries[0]); i++) {
		if (entries[i].work == work)
			return &entries[i];
		if (!entries[i].work && !free_slot)
			free_slot = &entries[i];
	}
	if (!create)
		return NULL;
	CHECK(free_slot != NULL);
	free_slot->work = work;
	free_slot->pending = free_slot->running = 0;
	return free_slot;
}

/* An entry that is neither pending nor running is forgotten (its module may go). */
static void entry_settle(struct entry *e)
{
	if (!e->pending && !e->running)
		e->work = NULL;
}

bool schedule_delayed_work(struct delayed_work *dwork, unsigned long delay)
{
	struct entry *e;
	bool queued = false;

	pthread_mutex_lock(&wq_lock);
	e = entry_of(&dwork->work, 1);
	if (!e->pending) {
		e->pending = 1;
		e->due = now_ms() + (long long)delay * 1000 / KLP_HZ;
		queued = true;
		pthread_cond_broadcast(&wq_changed);
	}
	pthread_mutex_unlock(&wq_lock);
	return queued;
}

bool schedule_work(struct work_struct *work)
{
	return schedule_delayed_work((struct delayed_work *)(void *)work, 0);
}

/* Wait (parked: a sleeping task) while the item is pending (if `pending`) or running. */
static bool wait_idle(struct work_struct *work, int pending, int cancel)
{
	struct entry *e;
	bool was = false;

	klp_park();
	pthread_mutex_lock(&wq_lock);
	e = entry_of(work, 0);
	if (e && cancel && e->pending) {
		e->pending = 0;
		was = true;
	}
	while (e && e->work == work && ((pending && e->pending) || e->running)) {
		was = true;
		pthread_cond_wait(&wq_changed, &wq_lock);
	}
	if (e && e->work == work)
		entry_settle(e);
	pthread_mutex_unlock(&wq_lock);
	klp_unpark();
	return was;
}

bool flush_work(struct work_struct *work)
{
	return wait_idle(work, 1, 0);
}

bool flush_delayed_work(struct delayed_work *dwork)
{
	return wait_idle(&dwork->work, 1, 0);
}

bool cancel_work_sync(struct work_struct *work)
{
	return wait_idle(work, 0, 1);
}

bool cancel_delayed_work_sync(struct delayed_work *dwork)
{
	return wait_idle(&dwork->work, 0, 1);
}

bool cancel_delayed_work(struct delayed_work *dwork)
{
	struct entry *e;
	bool was = false;

	pthread_mutex_lock(&wq_lock);
	e = entry_of(&dwork->work, 0);
	if (e && e->pending) {
		e->pending = 0;
		was = true;
		entry_settle(e);
	}
	pthread_mutex_unlock(&wq_lock);
	return was;
}

static void *worker_thread(void *arg)
{
	(void)arg;
	for (;;) {
		struct entry *next = NULL;
		struct work_struct *work;
		unsigned int i;
		long long now;

		/* An idle kworker sleeps: parked. */
		klp_park();
		pthread_mutex_lock(&wq_lock);
		for (;;) {
			next = NULL;
			for (i = 0; i < sizeof(entries) / sizeof(entries[0]); i++)
				if (entries[i].work && entries[i].pending &&
				    (!next || entries[i].due < next->due))
					next = &entries[i];
			now = now_ms();
			if (next && next->due <= now)
				break;
			if (!next) {
				pthread_cond_wait(&wq_changed, &wq_lock);
			} else {
				struct timespec until;
				long long wait = next->due - now;

				clock_gettime(CLOCK_REALTIME, &until);
				until.tv_sec += wait / 1000;
				until.tv_nsec += (wait % 1000) * 1000000L;
				if (until.tv_nsec >= 1000000000L) {
					until.tv_sec++;
					until.tv_nsec -= 1000000000L;
				}
				pthread_cond_timedwait(&wq_changed, &wq_lock, &until);
			}
		}
		next->pending = 0;
		next->running = 1;
		work = next->work;
		pthread_mutex_unlock(&wq_lock);
		klp_unpark();

		work->func(work);

		/* The item may be unmapped once it is idle: not touched after. */
		pthread_mutex_lock(&wq_lock);
		next->running = 0;
		entry_settle(next);
		pthread_cond_broadcast(&wq_changed);
		pthread_mutex_unlock(&wq_lock);
	}
	return NULL;
}

/* ---- insmod, rmmod, sysfs ------------------------------------------------------- */

/* What insmod prints for an errno. */
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
	default:
		return "Unknown error";
	}
}

/* % insmod <file>.ko [params]: 0 or the errno (after insmod's line). */
static int insmod(const char *file, const char *params)
{
	char path[PATH_MAX];
	int err;

	echo("%% insmod %s.ko%s%s", file, *params ? " " : "", params);
	snprintf(path, sizeof(path), "%s/%s.so", module_dir, file);
	err = klp_module_load(path, params);
	if (err)
		echo("insmod: ERROR: could not insert module %s.ko: %s", file,
		     insmod_strerror(err));
	return err;
}

static void load_mod(const char *file, const char *params)
{
	int err = insmod(file, params);

	if (err)
		die("insmod %s: %s", file, klp_strerror(err));
}

/* A livepatch module: loaded, and its transition over. */
static void load_lp(const char *file, const char *params, const char *patch)
{
	load_mod(file, params);
	WAIT_UNTIL("the patch's transition is over", klp_patch_transition(patch) == 0);
}

static void disable_lp(const char *patch)
{
	echo("%% echo 0 > /sys/kernel/livepatch/%s/enabled", patch);
	CHECK(klp_patch_set_enabled(patch, 0) == 0);
	WAIT_UNTIL("the patch is gone", klp_patch_enabled(patch) == -ENOENT);
}

/* % rmmod <module>, once the module's references are gone. */
static void rmmod(const char *mod)
{
	WAIT_UNTIL("its refcnt reads 0", klp_module_refcnt(mod) == 0);
	echo("%% rmmod %s", mod);
	CHECK(klp_module_unload(mod) == 0);
}

static void set_param(const char *mod, const char *param, const char *value)
{
	echo("%% echo %s > /sys/module/%s/parameters/%s", value, mod, param);
	CHECK(klp_module_param_set(mod, param, value) == 0);
}

/* ---- the scenarios: the samples' usage notes ------------------------------------ */

static void sample(void)
{
	cat_cmdline();
	load_lp("livepatch-sample", "", "livepatch_sample");
	cat_cmdline();
	disable_lp("livepatch_sample");
	cat_cmdline();
	rmmod("livepatch_sample");
}

static void callbacks_mod_first(void)
{
	load_mod("livepatch-callbacks-mod", "");
	load_lp("livepatch-callbacks-demo", "", "livepatch_callbacks_demo");
	disable_lp("livepatch_callbacks_demo");
	rmmod("livepatch_callbacks_demo");
	rmmod("livepatch_callbacks_mod");
}

static void callbacks_demo_first(void)
{
	load_lp("livepatch-callbacks-demo", "", "livepatch_callbacks_demo");
	load_mod("livepatch-callbacks-mod", "");
	rmmod("livepatch_callbacks_mod");
	disable_lp("livepatch_callbacks_demo");
	rmmod("livepatch_callbacks_demo");
}

static void callbacks_refused(void)
{
	load_lp("livepatch-callbacks-demo", "", "livepatch_callbacks_demo");
	set_param("livepatch_callbacks_demo", "pre_patch_ret", "-19");
	CHECK(insmod("livepatch-callbacks-mod", "") == -ENODEV);
	disable_lp("livepatch_callbacks_demo");
	rmmod("livepatch_callbacks_demo");
}

static int line_seen(const char *text)
{
	int i, n, found = 0;

	pthread_mutex_lock(&log_lock);
	n = seen_lines < 64 ? seen_lines : 64;
	for (i = 0; i < n && !found; i++)
		found = strstr(last_lines[i], text) != NULL;
	pthread_mutex_unlock(&log_lock);
	return found;
}

static void callbacks_busy(void)
{
	/* The busy module sleeps in busymod_work_func, which the demo replaces: the
	 * patching transition waits for it, while another target module comes and goes. */
	load_mod("livepatch-callbacks-busymod", "sleep_secs=3");
	WAIT_UNTIL("busymod_work_func sleeps", line_seen("busymod_work_func, sleeping"));
	load_mod("livepatch-callbacks-demo", "");
	CHECK(klp_patch_transition("livepatch_callbacks_demo") == 1);
	load_mod("livepatch-callbacks-mod", "");
	rmmod("livepatch_callbacks_mod");
	CHECK(klp_patch_transition("livepatch_callbacks_demo") == 1);
	WAIT_UNTIL("the transition is over",
		   klp_patch_transition("livepatch_callbacks_demo") == 0);
	disable_lp("livepatch_callbacks_demo");
	rmmod("livepatch_callbacks_demo");
	rmmod("livepatch_callbacks_busymod");
}

/* The shadow variable demo, with the buggy module's periods shortened (alloc 100 ms,
 * cleanup 300 ms, expiry 1.2 s): fix1 frees the leaks of the dummies it allocates
 * (which expire after its own 12 s), fix2 counts the checks. */
static void shadow(void)
{
	load_mod("livepatch-shadow-mod", "alloc_ms=100 cleanup_ms=300 expire_ms=1200");
	WAIT_UNTIL("a few dummies", count_of(0) >= 3);
	load_lp("livepatch-shadow-fix1", "", "livepatch_shadow_fix1");
	/* The dummies of before the patch leak when they expire. */
	WAIT_UNTIL("a leaked dummy", count_of(1) >= 1);
	load_lp("livepatch-shadow-fix2", "", "livepatch_shadow_fix2");
	/* The dummies of fix1 expire: fix2 frees them, their leak and their counter. */
	WAIT_UNTIL("a counted dummy", count_of(2) >= 1);
	disable_lp("livepatch_shadow_fix2");
	disable_lp("livepatch_shadow_fix1");
	rmmod("livepatch_shadow_fix2");
	rmmod("livepatch_shadow_fix1");
	rmmod("livepatch_shadow_mod");
}

static const struct {
	const char *name;
	void (*run)(void);
} scenarios[] = {
	{ "sample", sample },
	{ "callbacks-mod-first", callbacks_mod_first },
	{ "callbacks-demo-first", callbacks_demo_first },
	{ "callbacks-refused", callbacks_refused },
	{ "callbacks-busy", callbacks_busy },
	{ "shadow", shadow },
};

/* The log handler also counts the lines of the shadow demo it waits for. */
static void kmsg_counting(int level, const char *line, void *data)
{
	int i;

	kmsg(level, line, data);
	pthread_mutex_lock(&log_lock);
	for (i = 0; i < 8; i++)
		if (counted[i] && strstr(line, counted[i]))
			counts[i]++;
	pthread_mutex_unlock(&log_lock);
}

int main(int argc, char **argv)
{
	pthread_t t;
	unsigned int i;

	if (argc != 3) {
		fprintf(stderr, "usage: %s <scenario> <module dir>\n", argv[0]);
		return 2;
	}
	module_dir = argv[2];
	count_line("dummy_alloc: dummy @", 0);
	count_line("livepatch_fix1_dummy_free: dummy @", 1);
	count_line("check counter =", 2);
	CHECK(klp_set_log_handler(kmsg_counting, NULL) == 0);
	CHECK(pthread_create(&t, NULL, worker_thread, NULL) == 0);
	CHECK(pthread_detach(t) == 0);
	for (i = 0; i < sizeof(scenarios) / sizeof(scenarios[0]); i++) {
		if (strcmp(scenarios[i].name, argv[1]) == 0) {
			scenarios[i].run();
			CHECK(klp_wait_transition(0) == 0);
			return 0;
		}
	}
	die("no scenario %s", argv[1]);
	return 1;
}
