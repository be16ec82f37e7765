// SPDX-License-Identifier: MIT OR Apache-2.0
/*
 * mod-kernel-api: the kernel facilities of the compatibility headers, from a module
 * built without KBUILD_MODNAME (its name is its file's: mod_kernel_api). Its init prints
 * with every level and the %p forms; the program calls the functions below (dlsym).
 */

#define pr_fmt(fmt) KBUILD_MODNAME ": " fmt

#include <linux/module.h>
#include <linux/kernel.h>
#include <linux/delay.h>
#include <linux/jiffies.h>
#include <linux/list.h>
#include <linux/mutex.h>
#include <linux/sched.h>
#include <linux/slab.h>
#include <linux/completion.h>

static DEFINE_MUTEX(api_mutex);
static DECLARE_COMPLETION(api_done);

struct item {
	struct list_head list;
	int value;
};

static LIST_HEAD(items);

/* Lock the module's mutex (the program holds it from another thread meanwhile). */
void api_lock(void)
{
	mutex_lock(&api_mutex);
}

void api_unlock(void)
{
	mutex_unlock(&api_mutex);
}

/* Wait for api_complete (parked). */
void api_wait(void)
{
	wait_for_completion(&api_done);
}

void api_complete(void)
{
	complete(&api_done);
}

/* The jiffies that pass while the module sleeps `ms` milliseconds. */
unsigned long api_sleep_jiffies(unsigned int ms)
{
	unsigned long start = jiffies;

	msleep(ms);
	return jiffies - start;
}

/* A function whose parameter is named jiffies, as the kernel's modules name them. */
int api_expired(unsigned long expire, unsigned long jiffies)
{
	return time_after(jiffies, expire);
}

static int mod_kernel_api_init(void)
{
	gfp_t gfp = GFP_KERNEL | __GFP_ZERO;
	gfp_t none = GFP_NOWAIT;
	struct item *it, *tmp;
	int *p = kzalloc(sizeof(*p), GFP_KERNEL);
	int sum = 0, i;

	for (i = 1; i <= 3; i++) {
		it = kmalloc(sizeof(*it), GFP_ATOMIC);
		if (!it)
			return -ENOMEM;
		it->value = i;
		list_add_tail(&it->list, &items);
	}
	list_for_each_entry(it, &items, list)
		sum = sum * 10 + it->value;
	list_for_each_entry_safe(it, tmp, &items, list) {
		list_del(&it->list);
		kfree(it);
	}

	pr_emerg("emerg\n");
	pr_alert("alert\n");
	pr_crit("crit\n");
	pr_err("err %d\n", -EINVAL);
	pr_warn("warn %s\n", "text");
	pr_notice("notice %5.2f|%-4d|%04x|%c|%lld\n", 3.14159, 7, 0xab, 'z', -5LL);
	pr_info("info %*d|%.*s|%zu|%%\n", 4, 42, 3, "abcdef", sizeof(int));
	pr_debug("debug\n");
	printk("no level\n");
	printk(KERN_INFO "two\nlines\n");
	pr_info("list %d zeroed %d modname %s current %d\n", sum, *p, THIS_MODULE->name,
		current->pid == current->tgid || current->pid > 0);
	pr_info("null %p err %p x %px\n", NULL, ERR_PTR(-ENOMEM), (void *)0x1234);
	pr_info("gfp %pGg %pGg\n", &gfp, &none);
	pr_info("errname %pe\n", ERR_PTR(-ENODEV));
	pr_info("symbol %ps %pS\n", api_lock, (char *)api_lock + 1);
	pr_info("hashed %p same %p\n", p, p);
	pr_info("HZ %d msecs %lu secs %lu after %d %d\n", HZ, msecs_to_jiffies(1000),
		secs_to_jiffies(2), time_after(2UL, 1UL), time_after(1UL, 2UL));
	WARN_ON(sum != 123);
	WARN_ON(sum == 123);
	kfree(p);
	return 0;
}

static void mod_kernel_api_exit(void)
{
	pr_info("exit\n");
}

module_init(mod_kernel_api_init);
module_exit(mod_kernel_api_exit);
MODULE_LICENSE("MIT OR Apache-2.0");
MODULE_AUTHOR("The libklp authors");
MODULE_DESCRIPTION("libklp test: the kernel facilities of the compatibility headers");
