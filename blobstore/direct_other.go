//go:build !linux

package blobstore

import "os"

// openDirect returns nil: uploads use the page cache where O_DIRECT is not available.
func openDirect(path string) *os.File { return nil }
