package cache

import (
	"os"
	"os/exec"
	"testing"
)

// The store builds wherever Go does: what a platform may lack (O_DIRECT, statfs)
// lives in per-platform files.
func TestTheStoreBuildsOnOtherPlatforms(t *testing.T) {
	if testing.Short() {
		t.Skip("cross-compiles the package")
	}
	gobin, err := exec.LookPath("go")
	if err != nil {
		t.Skip("no go command")
	}
	for _, goos := range []string{"windows", "openbsd", "darwin"} {
		cmd := exec.Command(gobin, "build", ".")
		cmd.Env = append(os.Environ(), "GOOS="+goos, "GOARCH=amd64", "CGO_ENABLED=0")
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Errorf("GOOS=%s: %v\n%s", goos, err, out)
		}
	}
}
