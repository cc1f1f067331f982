#include "clock.h"

#include <time.h>

static int64_t read_clock(clockid_t id)
{
	struct timespec ts;

	clock_gettime(id, &ts);
	return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

int64_t lib_clock_boottime_ns(void)
{
	return read_clock(CLOCK_BOOTTIME);
}

int64_t lib_clock_monotonic_ns(void)
{
	return read_clock(CLOCK_MONOTONIC);
}

int64_t lib_clock_wall_ms(void)
{
	return read_clock(CLOCK_REALTIME) / 1000000;
}
