/* libklp: kernel livepatch modules, unchanged. SPDX-License-Identifier: MIT OR Apache-2.0 */
/* <linux/seq_file.h>: a /proc file's text. struct seq_file and seq_printf are the
 * kernel's, so here the program's: it defines them (exported, -rdynamic). */
#ifndef KLP_COMPAT_LINUX_SEQ_FILE_H
#define KLP_COMPAT_LINUX_SEQ_FILE_H

#include "../klp_compat.h"

struct seq_file;

KLP__C_BEGIN
__attribute__((format(printf, 2, 3))) void seq_printf(struct seq_file *m, const char *fmt, ...);
KLP__C_END

#endif /* KLP_COMPAT_LINUX_SEQ_FILE_H */
