package blobstore

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
