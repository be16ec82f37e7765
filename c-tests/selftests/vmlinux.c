/* The "kernel" of the C selftests: the main program is vmlinux. Its patchable functions
 * (the /proc show functions, the getpid syscall) register under the object NULL; what
 * the test modules use of it is exported (-rdynamic): console_loglevel, seq_printf, the
 * system workqueue, the insmod arguments. The kernel log is standard output: libklp's
 * lines come through klp_set_log_handler (see main in functions.c). */
#include "harness.h"

#include <unistd.h>

int console_loglevel = CONSOLE_LOGLEVEL_DEFAULT;
const char *klp_insmod_args = "";

void seq_printf(struct seq_file *m, const char *fmt, ...)
{
	va_list ap;
	int n;

	if (m->count >= sizeof(m->buf))
		return;
	va_start(ap, fmt);
	n = vsnprintf(m->buf + m->count, sizeof(m->buf) - m->count, fmt, ap);
	va_end(ap);
	if (n > 0)
		m->count += (size_t)n;
	if (m->count > sizeof(m->buf) - 1)
		m->count = sizeof(m->buf) - 1;
}

KLP_PATCHABLE(int, cmdline_proc_show, (struct seq_file *m, void *v), (m, v))
{
	(void)v;
	seq_printf(m, "%s", CMDLINE);
	return 0;
}

KLP_PATCHABLE(int, meminfo_proc_show, (struct seq_file *m, void *v), (m, v))
{
	(void)v;
	seq_printf(m, "%s", MEMINFO);
	return 0;
}

/* The getpid system call, named as the architecture's syscall wrapper (as
 * test_klp_syscall names it). */
#if defined(__x86_64__)
#define SYS_GETPID __x64_sys_getpid
#elif defined(__s390x__)
#define SYS_GETPID __s390x_sys_getpid
#elif defined(__aarch64__)
#define SYS_GETPID __arm64_sys_getpid
#else
#define SYS_GETPID sys_getpid
#endif

KLP_PATCHABLE(long, SYS_GETPID, (void), ())
{
	return (long)getpid();
}

const char *proc_read(int (*show)(struct seq_file *m, void *v))
{
	static struct seq_file m;

	m.count = 0;
	m.buf[0] = '\0';
	CHECK_INT(show(&m, NULL), 0);
	return m.buf;
}

const char *proc_read_mod_target(void)
{
	int (*show)(struct seq_file *, void *);

	*(void **)&show = module_sym("test_klp_mod_target", "test_klp_mod_target_show");
	return proc_read(show);
}

/* ---- the system workqueue: one kworker thread ----------------------------------- */

static pthread_mutex_t wq_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t wq_queued = PTHREAD_COND_INITIALIZER;
static pthread_cond_t wq_done = PTHREAD_COND_INITIALIZER;
static struct work_struct *wq_head, *wq_tail;

void schedule_work(struct work_struct *work)
{
	pthread_mutex_lock(&wq_lock);
	if (!work->pending) {
		work->pending = 1;
		work->next = NULL;
		if (wq_tail)
			wq_tail->next = work;
		else
			wq_head = work;
		wq_tail = work;
		pthread_cond_broadcast(&wq_queued);
	}
	pthread_mutex_unlock(&wq_lock);
}

void flush_work(struct work_struct *work)
{
	klp_park();
	pthread_mutex_lock(&wq_lock);
	while (work->pending || work->running)
		pthread_cond_wait(&wq_done, &wq_lock);
	pthread_mutex_unlock(&wq_lock);
	klp_unpark();
}

/* The kernel function that runs a work item (never patched by the tests). */
KLP_PATCHABLE_STATIC_VOID(process_one_work, (struct work_struct *work), (work))
{
	work->func(work);
}

static void *worker_thread(void *arg)
{
	(void)arg;
	for (;;) {
		struct work_struct *work;

		/* An idle kworker sleeps: parked. */
		klp_park();
		pthread_mutex_lock(&wq_lock);
		while (!wq_head)
			pthread_cond_wait(&wq_queued, &wq_lock);
		work = wq_head;
		wq_head = work->next;
		if (!wq_head)
			wq_tail = NULL;
		work->next = NULL;
		work->pending = 0;
		work->running = 1;
		pthread_mutex_unlock(&wq_lock);
		klp_unpark();

		process_one_work(work);

		/* The work may be unmapped once flush_work returns: not touched after. */
		pthread_mutex_lock(&wq_lock);
		work->running = 0;
		pthread_cond_broadcast(&wq_done);
		pthread_mutex_unlock(&wq_lock);
	}
	return NULL;
}

void workqueue_init(void)
{
	pthread_t t;

	/* The kworker's first call into libklp may come while a module's init, run under
	 * the loader's lock, waits for its work: libklp registers threads without that
	 * lock, so this is no deadlock. */
	CHECK_INT(pthread_create(&t, NULL, worker_thread, NULL), 0);
	CHECK_INT(pthread_detach(t), 0);
}
