//go:build !linux

package cache

import "os"

// openDirect returns nil: uploads use the page cache where O_DIRECT is not available.
func openDirect(path string) *os.File { return nil }

// statfsFree returns nil: free space is not measured here, so no reserve is kept.
func statfsFree(dir string) func() (int64, error) { return nil }
