/* libklp: kernel livepatch modules, unchanged. SPDX-License-Identifier: MIT OR Apache-2.0 */
/* <linux/list.h>: circular doubly linked lists with a head (struct list_head), as the
 * kernel's: an empty list's head points to itself. Not thread-safe: lock around them. */
#ifndef KLP_COMPAT_LINUX_LIST_H
#define KLP_COMPAT_LINUX_LIST_H

#include "kernel.h"

struct list_head {
	struct list_head *next, *prev;
};

#define LIST_HEAD_INIT(name) { &(name), &(name) }
#define LIST_HEAD(name) struct list_head name = LIST_HEAD_INIT(name)

static inline void INIT_LIST_HEAD(struct list_head *list)
{
	list->next = list;
	list->prev = list;
}

/* Link `item` between the adjacent `prev` and `next`. */
static inline void klp__list_link(struct list_head *item, struct list_head *prev,
				  struct list_head *next)
{
	next->prev = item;
	item->next = next;
	item->prev = prev;
	prev->next = item;
}

/* Add `item` right after `head` (a stack). */
static inline void list_add(struct list_head *item, struct list_head *head)
{
	klp__list_link(item, head, head->next);
}

/* Add `item` right before `head` (a queue). */
static inline void list_add_tail(struct list_head *item, struct list_head *head)
{
	klp__list_link(item, head->prev, head);
}

static inline void klp__list_unlink(struct list_head *entry)
{
	entry->next->prev = entry->prev;
	entry->prev->next = entry->next;
}

/* Take `entry` out of its list; it is not on any list afterwards (its links are
 * poisoned, as the kernel's). */
static inline void list_del(struct list_head *entry)
{
	klp__list_unlink(entry);
	entry->next = (struct list_head *)(void *)0x100;
	entry->prev = (struct list_head *)(void *)0x122;
}

/* Take `entry` out of its list and make it an empty list. */
static inline void list_del_init(struct list_head *entry)
{
	klp__list_unlink(entry);
	INIT_LIST_HEAD(entry);
}

static inline void list_replace(struct list_head *old, struct list_head *item)
{
	item->next = old->next;
	item->next->prev = item;
	item->prev = old->prev;
	item->prev->next = item;
}

static inline void list_move(struct list_head *entry, struct list_head *head)
{
	klp__list_unlink(entry);
	list_add(entry, head);
}

static inline void list_move_tail(struct list_head *entry, struct list_head *head)
{
	klp__list_unlink(entry);
	list_add_tail(entry, head);
}

static inline int list_empty(const struct list_head *head)
{
	return head->next == head;
}

static inline int list_is_last(const struct list_head *entry, const struct list_head *head)
{
	return entry->next == head;
}

static inline int list_is_singular(const struct list_head *head)
{
	return !list_empty(head) && head->next == head->prev;
}

/* The struct that holds the list_head `ptr` as its `member`. */
#define list_entry(ptr, type, member) container_of(ptr, type, member)
#define list_first_entry(head, type, member) list_entry((head)->next, type, member)
#define list_last_entry(head, type, member) list_entry((head)->prev, type, member)
#define list_first_entry_or_null(head, type, member)                                    \
	(list_empty(head) ? NULL : list_first_entry(head, type, member))
#define list_next_entry(pos, member)                                                    \
	list_entry((pos)->member.next, __typeof__(*(pos)), member)
#define list_prev_entry(pos, member)                                                    \
	list_entry((pos)->member.prev, __typeof__(*(pos)), member)
#define list_entry_is_head(pos, head, member) (&(pos)->member == (head))

#define list_for_each(pos, head) for ((pos) = (head)->next; (pos) != (head); (pos) = (pos)->next)
#define list_for_each_safe(pos, n, head)                                                \
	for ((pos) = (head)->next, (n) = (pos)->next; (pos) != (head);                  \
	     (pos) = (n), (n) = (pos)->next)

/* Every entry of the list, in order. */
#define list_for_each_entry(pos, head, member)                                          \
	for ((pos) = list_first_entry(head, __typeof__(*(pos)), member);                \
	     !list_entry_is_head(pos, head, member); (pos) = list_next_entry(pos, member))

/* Every entry, in reverse order. */
#define list_for_each_entry_reverse(pos, head, member)                                  \
	for ((pos) = list_last_entry(head, __typeof__(*(pos)), member);                 \
	     !list_entry_is_head(pos, head, member); (pos) = list_prev_entry(pos, member))

/* Every entry, which the loop may take out of the list (n holds the next one). */
#define list_for_each_entry_safe(pos, n, head, member)                                  \
	for ((pos) = list_first_entry(head, __typeof__(*(pos)), member),                \
	    (n) = list_next_entry(pos, member);                                         \
	     !list_entry_is_head(pos, head, member); (pos) = (n), (n) = list_next_entry(n, member))

#endif /* KLP_COMPAT_LINUX_LIST_H */
