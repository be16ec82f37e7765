/* libklp: kernel livepatch modules, unchanged. SPDX-License-Identifier: MIT OR Apache-2.0 */
/* <linux/stat.h>: the system's <linux/stat.h> (this header only adds to it) and the
 * permission bits (module_param, sysfs attributes). */
#ifndef KLP_COMPAT_LINUX_STAT_H
#define KLP_COMPAT_LINUX_STAT_H

#if defined(__has_include_next)
#if __has_include_next(<linux/stat.h>)
#include_next <linux/stat.h>
#endif
#endif

#ifndef S_IRUSR
#define S_IRWXU 00700
#define S_IRUSR 00400
#define S_IWUSR 00200
#define S_IXUSR 00100
#define S_IRWXG 00070
#define S_IRGRP 00040
#define S_IWGRP 00020
#define S_IXGRP 00010
#define S_IRWXO 00007
#define S_IROTH 00004
#define S_IWOTH 00002
#define S_IXOTH 00001
#endif
#define S_IRWXUGO (S_IRWXU | S_IRWXG | S_IRWXO)
#define S_IALLUGO (S_IRWXUGO | 07000)
#define S_IRUGO (S_IRUSR | S_IRGRP | S_IROTH)
#define S_IWUGO (S_IWUSR | S_IWGRP | S_IWOTH)
#define S_IXUGO (S_IXUSR | S_IXGRP | S_IXOTH)

#endif /* KLP_COMPAT_LINUX_STAT_H */
