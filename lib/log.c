#include "log.h"

#include <errno.h>
#include <pthread.h>
#include <stdarg.h>
#include <string.h>
#include <time.h>

int lib_log_min_level = LIB_LOG_INFO;
static int log_format = LIB_LOG_TEXT;
static FILE *log_sink;
static pthread_mutex_t log_mu = PTHREAD_MUTEX_INITIALIZER;

static const char *const level_names[] = {"debug", "info", "warn", "error"};

void lib_log_configure(int level, int format, FILE *sink)
{
	lib_log_min_level = level;
	log_format = format;
	log_sink = sink;
}

int lib_log_parse_level(const char *s, int *out_level)
{
	for (int i = 0; i < 4; i++) {
		if (strcmp(s, level_names[i]) == 0) {
			*out_level = i;
			return 0;
		}
	}
	return -EINVAL;
}

int lib_log_parse_format(const char *s, int *out_format)
{
	if (strcmp(s, "text") == 0)
		*out_format = LIB_LOG_TEXT;
	else if (strcmp(s, "json") == 0)
		*out_format = LIB_LOG_JSON;
	else
		return -EINVAL;
	return 0;
}

static void json_escape(FILE *f, const char *s)
{
	for (; *s; s++) {
		unsigned char c = (unsigned char)*s;
		if (c == '"' || c == '\\')
			fprintf(f, "\\%c", c);
		else if (c < 0x20)
			fprintf(f, "\\u%04x", c);
		else
			fputc(c, f);
	}
}

void lib_log_emit(int level, const char *file, int line, const char *fmt, ...)
{
	char msg[1024];
	char ts[64];
	struct timespec now;
	struct tm tm;
	va_list ap;
	int saverr = errno;
	FILE *f = log_sink ? log_sink : stderr;
	const char *base = strrchr(file, '/');

	base = base ? base + 1 : file;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	clock_gettime(CLOCK_REALTIME, &now);
	gmtime_r(&now.tv_sec, &tm);
	snprintf(ts, sizeof(ts), "%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ",
		 tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour,
		 tm.tm_min, tm.tm_sec, now.tv_nsec / 1000000);
	if (level < 0 || level > 3)
		level = 3;
	pthread_mutex_lock(&log_mu);
	if (log_format == LIB_LOG_JSON) {
		fprintf(f, "{\"time\":\"%s\",\"level\":\"%s\",\"src\":\"%s:%d\","
			   "\"msg\":\"",
			ts, level_names[level], base, line);
		json_escape(f, msg);
		fputs("\"}\n", f);
	} else {
		fprintf(f, "%s %-5s %s (%s:%d)\n", ts, level_names[level], msg,
			base, line);
	}
	fflush(f);
	pthread_mutex_unlock(&log_mu);
	errno = saverr;
}
