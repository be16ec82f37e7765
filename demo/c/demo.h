/* Shared by the demo server and its livepatch modules. Needs GNU C (-std=gnu11). */
#ifndef KLP_DEMO_H
#define KLP_DEMO_H

#include <klp.h>

/* One connection of a worker. The reply buffer is one of the bugs: too small for
 * five-digit sums, and a live patch cannot change the struct's layout. */
struct conn {
	int worker;
	char reply[5];
};

/* The system state both patches declare (the parser fix), and the shadow variable
 * demo_v2 hangs off a connection (a reply buffer large enough). */
#define DEMO_STATE_PARSER 1UL
#define DEMO_SHADOW_REPLY 0x646d6f1UL
#define DEMO_REPLY_BYTES 24

/* Exported by the server (linked with -rdynamic) for the patches. */

/* Print one line of the demo, timestamped, unless the server is measuring quietly. */
void demo_say(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* A slow request body arrives: blocks (parked) for a while. */
void demo_read_slow_body(void);

#endif /* KLP_DEMO_H */
