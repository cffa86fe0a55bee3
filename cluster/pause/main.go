// pause is the one process of every pod sandbox: it holds the pod's namespaces open, reaps orphaned
// children (it is PID 1 when the pod shares its process namespace) and exits on SIGTERM or SIGINT.
// Built static by cluster/build.sh, so the sandbox image is this file alone (no registry needed).
package main

import (
	"os"
	"os/signal"
	"syscall"
)

func main() {
	signals := make(chan os.Signal, 8)
	signal.Notify(signals, syscall.SIGTERM, syscall.SIGINT, syscall.SIGCHLD)
	for sig := range signals {
		if sig != syscall.SIGCHLD {
			os.Exit(0)
		}
		reap()
	}
}

// reap collects every child that has exited, without blocking.
func reap() {
	for {
		var status syscall.WaitStatus
		pid, err := syscall.Wait4(-1, &status, syscall.WNOHANG, nil)
		if pid <= 0 || err != nil {
			return
		}
	}
}
