/*
 * ryu.h -- the shortest decimal digits of a double (Ryu, by Ulf Adams),
 * for the JSON writer (docjson.c).  Internal to the library.
 */
#ifndef FC_RYU_H
#define FC_RYU_H

#include <stdint.h>

/* For a finite, non-zero v: the shortest digits d (no trailing zeros unless
 * d is one digit) and exponent e with |v| == d * 10^e after rounding to the
 * nearest double, the closest such d when there are several (what Python's
 * repr prints).  Returns the number of digits of d (1..17). */
int fc_ryu_shortest(double v, uint64_t *digits, int32_t *exponent);

#endif /* FC_RYU_H */
