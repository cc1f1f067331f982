/* Clocks. CLOCK_BOOTTIME for lease deadlines (it keeps counting through a
 * suspend), CLOCK_MONOTONIC for intervals, wall time for LTX timestamps. */
#ifndef LIB_CLOCK_H
#define LIB_CLOCK_H

#include <stdint.h>

int64_t lib_clock_boottime_ns(void);
int64_t lib_clock_monotonic_ns(void);
int64_t lib_clock_wall_ms(void);

#endif
