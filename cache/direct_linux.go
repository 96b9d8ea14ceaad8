package cache

import (
	"os"
	"syscall"
)

// openDirect opens path for writing with O_DIRECT, or returns nil where the
// filesystem refuses it (tmpfs, some network filesystems).
func openDirect(path string) *os.File {
	f, err := os.OpenFile(path, os.O_WRONLY|syscall.O_DIRECT, 0)
	if err != nil {
		return nil
	}
	return f
}

// statfsFree measures the space available to unprivileged writers on dir's filesystem.
func statfsFree(dir string) func() (int64, error) {
	return func() (int64, error) {
		var st syscall.Statfs_t
		if err := syscall.Statfs(dir, &st); err != nil {
			return 0, err
		}
		return int64(st.Bavail) * int64(st.Bsize), nil
	}
}
