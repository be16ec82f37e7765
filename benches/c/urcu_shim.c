/*
 * liburcu-memb, the peer of klp-sync's rcu flavor, for the benchmarks and klp-compare.
 *
 * Built by build.rs only where liburcu's headers and library are found (Debian:
 * liburcu-dev). The read sections of klp_urcu_read_loop are liburcu's inline ones
 * (_LGPL_SOURCE), as a program using liburcu-memb would write them; the other entry
 * points are plain calls, for the benchmark harness's threads.
 */
#define _LGPL_SOURCE
#include <urcu/urcu-memb.h>
#include <urcu/call-rcu.h>
#include <urcu/compiler.h>

#include <stdint.h>
#include <stdlib.h>

void klp_urcu_register(void)
{
	urcu_memb_register_thread();
}

void klp_urcu_unregister(void)
{
	urcu_memb_unregister_thread();
}

void klp_urcu_read_lock(void)
{
	urcu_memb_read_lock();
}

void klp_urcu_read_unlock(void)
{
	urcu_memb_read_unlock();
}

void klp_urcu_synchronize(void)
{
	urcu_memb_synchronize_rcu();
}

/* n read sections, inlined; the caller is registered. */
uint64_t klp_urcu_read_loop(uint64_t n)
{
	uint64_t i;

	for (i = 0; i < n; i++) {
		urcu_memb_read_lock();
		cmm_barrier();
		urcu_memb_read_unlock();
	}
	return i;
}

struct klp_urcu_cb {
	struct rcu_head head;
	void (*fn)(void *);
	void *arg;
};

static void klp_urcu_run(struct rcu_head *head)
{
	struct klp_urcu_cb *cb = caa_container_of(head, struct klp_urcu_cb, head);

	cb->fn(cb->arg);
	free(cb);
}

/* call_rcu: fn(arg) after a grace period, on liburcu's call_rcu worker. Returns -1 when
 * out of memory (nothing queued). The caller is registered. */
int klp_urcu_call(void (*fn)(void *), void *arg)
{
	struct klp_urcu_cb *cb = malloc(sizeof(*cb));

	if (!cb)
		return -1;
	cb->fn = fn;
	cb->arg = arg;
	urcu_memb_call_rcu(&cb->head, klp_urcu_run);
	return 0;
}

/* rcu_barrier: every callback queued before has run. */
void klp_urcu_barrier(void)
{
	urcu_memb_barrier();
}
