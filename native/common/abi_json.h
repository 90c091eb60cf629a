/* SPDX-License-Identifier: MIT
 * The ABI probes' JSON writer, shared by the native libraries (hs_abi.c of
 * the shim, hh_abi.c of the host library): each lists the size and field
 * offsets of its structs, so a test can check the koffi declarations
 * against the compiler. Header-only: each library keeps its own copy of
 * these static functions, and neither exports them.
 */
#ifndef ABI_JSON_H
#define ABI_JSON_H

#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>

struct out {
	char *buf;
	size_t len;
	size_t used;
};

static inline void put(struct out *o, const char *fmt, ...)
{
	va_list ap;
	char *dst = o->used < o->len ? o->buf + o->used : NULL;
	size_t room = o->used < o->len ? o->len - o->used : 0;
	va_start(ap, fmt);
	int n = vsnprintf(dst, room, fmt, ap);
	va_end(ap);
	if (n > 0)
		o->used += (size_t)n;
}

#define STRUCT(o, first, T, FIELDS)                                                     \
	do {                                                                            \
		typedef struct T S_;                                                    \
		put(o, "%s\"" #T "\":{\"size\":%zu,\"fields\":{", first ? "" : ",",    \
		    sizeof(S_));                                                        \
		int f_ = 0;                                                             \
		FIELDS                                                                  \
		put(o, "}}");                                                           \
	} while (0)
#define F(name) put(o_, "%s\"" #name "\":%zu", f_++ ? "," : "", offsetof(S_, name));


#endif
