/* Static state that survives between calls in one process, as in leaky C extensions. */
static long calls = 0;

long counter_next(void) { return ++calls; }
