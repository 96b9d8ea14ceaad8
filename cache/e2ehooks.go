//go:build e2ehooks

package cache

import (
	"os"
	"time"
)

// The end-to-end tests build dockyard with -tags e2ehooks to slow what they need to
// interrupt at a known point; release builds have none of this.
func init() {
	if d, err := time.ParseDuration(os.Getenv("DOCKYARD_E2E_GC_FILE_DELAY")); err == nil {
		fileDeleteDelay = d
	}
}
