"""Experiment (issue 13, point 4): does backing a zygote-like process's anonymous memory with huge
pages make fork() and a forked child cheaper? Not used by modelops; kept to reproduce the numbers
in bench/README.md.

    OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 .venv/bin/python bench/fork_thp_experiment.py thp    # 4 KiB, then collapsed
    OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 .venv/bin/python bench/fork_thp_experiment.py twice  # control: 4 KiB twice

Imports numpy + scipy.stats + pandas, gc.freeze()s like the zygote, then forks 40 children that
each do a little Python work and exit; prints fork()'s p50 in the parent and the child's CPU p50.
`thp` then asks the kernel (Linux >= 6.1, MADV_COLLAPSE) to back every unnamed anonymous
read-write mapping of >= 2 MiB with huge pages and measures again.
"""
import os, gc, time, ctypes, resource, sys
import numpy, scipy.stats, pandas, pickle, json
gc.collect(); gc.freeze()
libc = ctypes.CDLL(None, use_errno=True)
libc.madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
MADV_HUGEPAGE, MADV_COLLAPSE = 14, 25
def status():
    d = {}
    for l in open("/proc/self/status"):
        if l.startswith(("RssAnon", "VmPTE")): d[l.split(":")[0]] = l.split(":")[1].strip()
    ah = sum(int(l.split()[1]) for l in open("/proc/self/smaps") if l.startswith("AnonHugePages:"))
    d["AnonHuge kB"] = ah
    return d
def child_work():
    # what a child does: touch Python objects (refcounts), allocate
    x = [json.dumps({"a": i}) for i in range(200)]
    pickle.dumps(x); numpy.random.seed(1); numpy.random.random(10)
def bench(label, n=40):
    fk = []; tot = []
    for _ in range(n):
        c0 = resource.getrusage(resource.RUSAGE_CHILDREN); t = time.perf_counter()
        pid = os.fork()
        if pid == 0:
            child_work(); os._exit(0)
        t1 = time.perf_counter(); os.waitpid(pid, 0); t2 = time.perf_counter()
        c1 = resource.getrusage(resource.RUSAGE_CHILDREN)
        fk.append((t1 - t) * 1000); tot.append((c1.ru_utime + c1.ru_stime - c0.ru_utime - c0.ru_stime) * 1000)
    fk.sort(); tot.sort()
    print(f"{label}: fork() p50 {fk[n//2]:.2f} ms, child CPU p50 {tot[n//2]:.2f} ms", status())
bench("4k pages")
if sys.argv[1:] == ["twice"]:
    bench("4k again")
if sys.argv[1:] == ["thp"]:
    ok = 0
    for line in open("/proc/self/maps").read().splitlines():
        parts = line.split()
        if len(parts) >= 5 and parts[1].startswith("rw") and (len(parts) == 5 or parts[5] in ("[heap]",)):
            lo, hi = (int(x, 16) for x in parts[0].split("-"))
            if hi - lo >= 2 << 20:
                r1 = libc.madvise(lo, hi - lo, MADV_HUGEPAGE)
                r2 = libc.madvise(lo, hi - lo, MADV_COLLAPSE)
                ok += (r2 == 0)
    print("collapsed regions", ok)
    bench("after MADV_COLLAPSE")
