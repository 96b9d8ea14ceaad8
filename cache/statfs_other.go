//go:build !linux

package cache

// statfsFree returns nil: free space is not measured here, so no reserve is kept.
func statfsFree(dir string) func() (int64, error) { return nil }
