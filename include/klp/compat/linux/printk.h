/* libklp: kernel livepatch modules, unchanged. SPDX-License-Identifier: MIT OR Apache-2.0 */
/*
 * <linux/printk.h>: printk and pr_emerg ... pr_debug, with the module's pr_fmt.
 *
 * A message goes to libklp's log (klp_log_write), so that a module's lines and
 * libklp's own arrive at the log handler in the order they were printed, each line with
 * its level: KERN_EMERG, KERN_ALERT and KERN_CRIT count as KLP_LOG_ERR, a message
 * without a level as KERN_WARNING (the kernel's default). A message of several lines is
 * several lines of the log; pr_cont (KERN_CONT) prints its text as a line of its own.
 * pr_debug always reaches the log, at KLP_LOG_DEBUG, which the log handler may drop
 * (the default handler prints debug lines when KLP_DEBUG=1), as dynamic debug would.
 * A message is cut at 1023 bytes.
 *
 * The format is the kernel's: the C conversions, and the kernel's %p forms (the
 * letters and digits after %p are its extension, as in the kernel): %p and %pK hashed
 * (NULL and error pointers as they are), %px the address, %ps/%pS the symbol (with its
 * offset and size), %pGg the GFP_* flags at the pointer, %pe the name of an error
 * pointer's errno; others print as %p (klp_format_pointer). %n is ignored.
 *
 * console_loglevel is the program's (the kernel's variable): it defines it.
 */
#ifndef KLP_COMPAT_LINUX_PRINTK_H
#define KLP_COMPAT_LINUX_PRINTK_H

#include "../klp_compat.h"

#define KERN_SOH "\001"
#define KERN_EMERG KERN_SOH "0"
#define KERN_ALERT KERN_SOH "1"
#define KERN_CRIT KERN_SOH "2"
#define KERN_ERR KERN_SOH "3"
#define KERN_WARNING KERN_SOH "4"
#define KERN_NOTICE KERN_SOH "5"
#define KERN_INFO KERN_SOH "6"
#define KERN_DEBUG KERN_SOH "7"
#define KERN_DEFAULT ""
#define KERN_CONT KERN_SOH "c"

#define LOGLEVEL_EMERG 0
#define LOGLEVEL_ALERT 1
#define LOGLEVEL_CRIT 2
#define LOGLEVEL_ERR 3
#define LOGLEVEL_WARNING 4
#define LOGLEVEL_NOTICE 5
#define LOGLEVEL_INFO 6
#define LOGLEVEL_DEBUG 7

#define MESSAGE_LOGLEVEL_DEFAULT LOGLEVEL_WARNING
#define CONSOLE_LOGLEVEL_SILENT 0
#define CONSOLE_LOGLEVEL_MIN 1
#define CONSOLE_LOGLEVEL_DEBUG 10
#define CONSOLE_LOGLEVEL_MOTORMOUTH 15
#define CONSOLE_LOGLEVEL_DEFAULT 7
#define CONSOLE_LOGLEVEL_QUIET 4

KLP__C_BEGIN

/* The kernel's console log level: the program's variable. */
extern int console_loglevel;

/* The module that prints (<linux/module.h> defines it; NULL elsewhere). */
extern struct klp_module __this_module __attribute__((weak, visibility("hidden")));

KLP__C_END

#define KLP__PRINTK_MAX 1024

/* Where the formatted text goes. */
struct klp__out {
	char *buf;
	size_t size;
	size_t len;
};

static inline void klp__out_put(struct klp__out *o, const char *s, size_t n)
{
	if (o->size > 0 && o->len < o->size - 1) {
		size_t room = o->size - 1 - o->len;
		size_t k = n < room ? n : room;

		memcpy(o->buf + o->len, s, k);
		o->buf[o->len + k] = '\0';
	}
	o->len += n;
}

static inline int klp__is_digit(char c)
{
	return c >= '0' && c <= '9';
}

static inline int klp__is_alnum(char c)
{
	return klp__is_digit(c) || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
}

/* The length modifiers of a conversion. */
enum klp__len { KLP__L_NONE, KLP__L_HH, KLP__L_H, KLP__L_L, KLP__L_LL, KLP__L_Z, KLP__L_T,
		KLP__L_J, KLP__L_BIG };

/* The kernel's vsnprintf: the C conversions through the C library, one at a time, and
 * the %p forms through libklp. Returns the length of the whole text. */
static inline int klp__vsnprintf(char *buf, size_t size, const char *fmt, va_list ap)
{
	struct klp__out o;
	const char *f = fmt;

	o.buf = buf;
	o.size = size;
	o.len = 0;
	if (size > 0)
		buf[0] = '\0';
	while (*f) {
		char spec[64], tmp[KLP__PRINTK_MAX];
		size_t sl = 0;
		const char *start = f, *flags, *ext;
		size_t nflags, next;
		int width = 0, prec = -1, left = 0, n = 0;
		enum klp__len len = KLP__L_NONE;
		char conv;

		if (*f != '%') {
			const char *pct = strchr(f, '%');
			size_t k = pct ? (size_t)(pct - f) : strlen(f);

			klp__out_put(&o, f, k);
			f += k;
			continue;
		}
		f++;
		if (*f == '%') {
			klp__out_put(&o, "%", 1);
			f++;
			continue;
		}
		flags = f;
		while (*f == '-' || *f == '+' || *f == ' ' || *f == '#' || *f == '0') {
			if (*f == '-')
				left = 1;
			f++;
		}
		nflags = (size_t)(f - flags);
		if (*f == '*') {
			width = va_arg(ap, int);
			if (width < 0) {
				left = 1;
				width = -width;
			}
			f++;
		} else {
			while (klp__is_digit(*f))
				width = width * 10 + (*f++ - '0');
		}
		if (*f == '.') {
			f++;
			prec = 0;
			if (*f == '*') {
				prec = va_arg(ap, int);
				f++;
			} else {
				while (klp__is_digit(*f))
					prec = prec * 10 + (*f++ - '0');
			}
		}
		if (f[0] == 'h' && f[1] == 'h') {
			len = KLP__L_HH;
			f += 2;
		} else if (f[0] == 'l' && f[1] == 'l') {
			len = KLP__L_LL;
			f += 2;
		} else if (*f == 'h' || *f == 'l' || *f == 'z' || *f == 'Z' || *f == 't' ||
			   *f == 'j' || *f == 'L' || *f == 'q') {
			len = *f == 'h'	  ? KLP__L_H
			      : *f == 'l' ? KLP__L_L
			      : *f == 't' ? KLP__L_T
			      : *f == 'j' ? KLP__L_J
			      : *f == 'L' ? KLP__L_BIG
			      : *f == 'q' ? KLP__L_LL
					  : KLP__L_Z;
			f++;
		}
		conv = *f;
		if (!conv) {
			klp__out_put(&o, start, (size_t)(f - start));
			break;
		}
		f++;
		if (conv == 'p') {
			const void *ptr = va_arg(ap, void *);
			int k;

			ext = f;
			while (klp__is_alnum(*f))
				f++;
			next = (size_t)(f - ext);
			k = klp_format_pointer(tmp, sizeof(tmp), ext, next, ptr);
			if (k < 0)
				k = 0;
			if ((size_t)k >= sizeof(tmp))
				k = (int)sizeof(tmp) - 1;
			while (!left && width > k) {
				klp__out_put(&o, " ", 1);
				width--;
			}
			klp__out_put(&o, tmp, (size_t)k);
			while (left && width > k) {
				klp__out_put(&o, " ", 1);
				width--;
			}
			continue;
		}
		if (conv == 'n') {
			(void)va_arg(ap, int *);
			continue;
		}
		/* The conversion again, with '*' replaced by its value. */
		spec[sl++] = '%';
		if (nflags > 16)
			nflags = 16;
		memcpy(spec + sl, flags, nflags);
		sl += nflags;
		if (left && !memchr(flags, '-', nflags))
			spec[sl++] = '-';
		if (width > 0)
			sl += (size_t)snprintf(spec + sl, sizeof(spec) - sl, "%d", width);
		if (prec >= 0)
			sl += (size_t)snprintf(spec + sl, sizeof(spec) - sl, ".%d", prec);
		switch (len) {
		case KLP__L_HH: spec[sl++] = 'h'; spec[sl++] = 'h'; break;
		case KLP__L_H: spec[sl++] = 'h'; break;
		case KLP__L_L: spec[sl++] = 'l'; break;
		case KLP__L_LL: spec[sl++] = 'l'; spec[sl++] = 'l'; break;
		case KLP__L_Z: spec[sl++] = 'z'; break;
		case KLP__L_T: spec[sl++] = 't'; break;
		case KLP__L_J: spec[sl++] = 'j'; break;
		case KLP__L_BIG: spec[sl++] = 'L'; break;
		case KLP__L_NONE: break;
		}
		spec[sl++] = conv;
		spec[sl] = '\0';
		switch (conv) {
		case 'd':
		case 'i':
			switch (len) {
			case KLP__L_L: n = snprintf(tmp, sizeof(tmp), spec, va_arg(ap, long)); break;
			case KLP__L_LL: n = snprintf(tmp, sizeof(tmp), spec, va_arg(ap, long long)); break;
			case KLP__L_Z:
			case KLP__L_T: n = snprintf(tmp, sizeof(tmp), spec, va_arg(ap, ptrdiff_t)); break;
			case KLP__L_J: n = snprintf(tmp, sizeof(tmp), spec, va_arg(ap, intmax_t)); break;
			default: n = snprintf(tmp, sizeof(tmp), spec, va_arg(ap, int)); break;
			}
			break;
		case 'u':
		case 'o':
		case 'x':
		case 'X':
			switch (len) {
			case KLP__L_L: n = snprintf(tmp, sizeof(tmp), spec, va_arg(ap, unsigned long)); break;
			case KLP__L_LL: n = snprintf(tmp, sizeof(tmp), spec, va_arg(ap, unsigned long long)); break;
			case KLP__L_Z: n = snprintf(tmp, sizeof(tmp), spec, va_arg(ap, size_t)); break;
			case KLP__L_T: n = snprintf(tmp, sizeof(tmp), spec, va_arg(ap, ptrdiff_t)); break;
			case KLP__L_J: n = snprintf(tmp, sizeof(tmp), spec, va_arg(ap, uintmax_t)); break;
			default: n = snprintf(tmp, sizeof(tmp), spec, va_arg(ap, unsigned int)); break;
			}
			break;
		case 'c':
			n = snprintf(tmp, sizeof(tmp), spec, va_arg(ap, int));
			break;
		case 's':
			n = snprintf(tmp, sizeof(tmp), spec, va_arg(ap, const char *));
			break;
		case 'e':
		case 'E':
		case 'f':
		case 'F':
		case 'g':
		case 'G':
		case 'a':
		case 'A':
			if (len == KLP__L_BIG)
				n = snprintf(tmp, sizeof(tmp), spec, va_arg(ap, long double));
			else
				n = snprintf(tmp, sizeof(tmp), spec, va_arg(ap, double));
			break;
		default:
			/* Not a conversion: the text as it is. */
			klp__out_put(&o, start, (size_t)(f - start));
			continue;
		}
		if (n < 0)
			n = 0;
		if ((size_t)n >= sizeof(tmp))
			n = (int)sizeof(tmp) - 1;
		klp__out_put(&o, tmp, (size_t)n);
	}
	return o.len > (size_t)INT_MAX ? INT_MAX : (int)o.len;
}

/* KBUILD_MODNAME's placeholder, replaced by the module's name (see klp_compat.h). */
static inline void klp__modname(char *buf, size_t size)
{
	const char *name = &__this_module != NULL ? __this_module.name : "";
	const char *ph = KLP__MODNAME_PLACEHOLDER;
	size_t phl = strlen(ph), nl = strlen(name);
	char *at;

	while ((at = strstr(buf, ph)) != NULL) {
		size_t tail = strlen(at + phl) + 1;

		if ((size_t)(at - buf) + nl + tail > size)
			tail = size - (size_t)(at - buf) - nl;
		memmove(at + nl, at + phl, tail);
		memcpy(at, name, nl);
		buf[size - 1] = '\0';
	}
}

/* printk with a va_list: its level, the formatted text, the log. */
static inline int vprintk(const char *fmt, va_list ap)
{
	static int last_level = MESSAGE_LOGLEVEL_DEFAULT;
	char buf[KLP__PRINTK_MAX];
	int level = MESSAGE_LOGLEVEL_DEFAULT, n;

	while (fmt[0] == KERN_SOH[0] && fmt[1]) {
		if (fmt[1] >= '0' && fmt[1] <= '7')
			level = fmt[1] - '0';
		else if (fmt[1] == 'c')
			level = last_level;
		fmt += 2;
	}
	last_level = level;
	n = klp__vsnprintf(buf, sizeof(buf), fmt, ap);
	klp__modname(buf, sizeof(buf));
	(void)klp_log_write(level, buf);
	return n;
}

static inline __attribute__((format(printf, 1, 2))) int printk(const char *fmt, ...)
{
	va_list ap;
	int n;

	va_start(ap, fmt);
	n = vprintk(fmt, ap);
	va_end(ap);
	return n;
}

#ifndef pr_fmt
#define pr_fmt(fmt) fmt
#endif

#define pr_emerg(fmt, ...) printk(KERN_EMERG pr_fmt(fmt), ##__VA_ARGS__)
#define pr_alert(fmt, ...) printk(KERN_ALERT pr_fmt(fmt), ##__VA_ARGS__)
#define pr_crit(fmt, ...) printk(KERN_CRIT pr_fmt(fmt), ##__VA_ARGS__)
#define pr_err(fmt, ...) printk(KERN_ERR pr_fmt(fmt), ##__VA_ARGS__)
#define pr_warn(fmt, ...) printk(KERN_WARNING pr_fmt(fmt), ##__VA_ARGS__)
#define pr_warning pr_warn
#define pr_notice(fmt, ...) printk(KERN_NOTICE pr_fmt(fmt), ##__VA_ARGS__)
#define pr_info(fmt, ...) printk(KERN_INFO pr_fmt(fmt), ##__VA_ARGS__)
#define pr_cont(fmt, ...) printk(KERN_CONT fmt, ##__VA_ARGS__)
#define pr_debug(fmt, ...) printk(KERN_DEBUG pr_fmt(fmt), ##__VA_ARGS__)
/* Checks the format, prints nothing. */
#define no_printk(fmt, ...)                                                             \
	({                                                                              \
		if (0)                                                                  \
			printk(fmt, ##__VA_ARGS__);                                     \
		0;                                                                      \
	})
#ifdef DEBUG
#define pr_devel(fmt, ...) printk(KERN_DEBUG pr_fmt(fmt), ##__VA_ARGS__)
#else
#define pr_devel(fmt, ...) no_printk(KERN_DEBUG pr_fmt(fmt), ##__VA_ARGS__)
#endif

/* Once per call site. */
#define printk_once(fmt, ...)                                                           \
	({                                                                              \
		static bool klp__printed;                                               \
		bool klp__first = !klp__printed;                                        \
		if (klp__first) {                                                       \
			klp__printed = true;                                            \
			printk(fmt, ##__VA_ARGS__);                                     \
		}                                                                       \
		klp__first;                                                             \
	})
#define pr_emerg_once(fmt, ...) printk_once(KERN_EMERG pr_fmt(fmt), ##__VA_ARGS__)
#define pr_alert_once(fmt, ...) printk_once(KERN_ALERT pr_fmt(fmt), ##__VA_ARGS__)
#define pr_crit_once(fmt, ...) printk_once(KERN_CRIT pr_fmt(fmt), ##__VA_ARGS__)
#define pr_err_once(fmt, ...) printk_once(KERN_ERR pr_fmt(fmt), ##__VA_ARGS__)
#define pr_warn_once(fmt, ...) printk_once(KERN_WARNING pr_fmt(fmt), ##__VA_ARGS__)
#define pr_notice_once(fmt, ...) printk_once(KERN_NOTICE pr_fmt(fmt), ##__VA_ARGS__)
#define pr_info_once(fmt, ...) printk_once(KERN_INFO pr_fmt(fmt), ##__VA_ARGS__)
#define pr_debug_once(fmt, ...) printk_once(KERN_DEBUG pr_fmt(fmt), ##__VA_ARGS__)

/* Not rate limited here. */
#define pr_err_ratelimited pr_err
#define pr_warn_ratelimited pr_warn
#define pr_notice_ratelimited pr_notice
#define pr_info_ratelimited pr_info
#define pr_debug_ratelimited pr_debug
#define printk_ratelimited printk

#endif /* KLP_COMPAT_LINUX_PRINTK_H */
