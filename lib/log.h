/*
 * Logging: one event per line, text or JSON, to stderr (or a sink set once
 * at start-up). The level is checked before the arguments are evaluated.
 */
#ifndef LIB_LOG_H
#define LIB_LOG_H

#include <stdio.h>

enum lib_log_level {
	LIB_LOG_DEBUG = 0,
	LIB_LOG_INFO = 1,
	LIB_LOG_WARN = 2,
	LIB_LOG_ERROR = 3,
	LIB_LOG_OFF = 4,
};

enum lib_log_format {
	LIB_LOG_TEXT = 0,
	LIB_LOG_JSON = 1,
};

/* The only mutable global besides the fault table: the sink's settings. */
extern int lib_log_min_level;

void lib_log_configure(int level, int format, FILE *sink);
/* Parses "debug", "info", "warn", "error"; returns -EINVAL otherwise. */
int lib_log_parse_level(const char *s, int *out_level);
int lib_log_parse_format(const char *s, int *out_format);

void lib_log_emit(int level, const char *file, int line, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));

#define LIB_LOG(level, ...)                                                \
	do {                                                               \
		if ((level) >= lib_log_min_level)                          \
			lib_log_emit((level), __FILE__, __LINE__,          \
				     __VA_ARGS__);                         \
	} while (0)

#define log_debug(...) LIB_LOG(LIB_LOG_DEBUG, __VA_ARGS__)
#define log_info(...) LIB_LOG(LIB_LOG_INFO, __VA_ARGS__)
#define log_warn(...) LIB_LOG(LIB_LOG_WARN, __VA_ARGS__)
#define log_error(...) LIB_LOG(LIB_LOG_ERROR, __VA_ARGS__)

#endif
