package pgtest

import (
	"os/exec"
	"strconv"
	"strings"
	"testing"
)

// The cluster answers SQL on its port, survives a crash-stop and comes back.
func TestAThrowawayClusterAnswersAndComesBack(t *testing.T) {
	s, err := Shared()
	if err != nil {
		t.Fatal(err)
	}
	if s == nil {
		t.Skip("PostgreSQL is not installed")
	}
	defer s.Stop()
	query := func() (string, error) {
		out, err := exec.Command(s.bin+"/psql", "-h", "127.0.0.1", "-p", strconv.Itoa(s.Port), "-U", "postgres",
			"-d", "dockyard", "-tAc", "select 40 + 2").CombinedOutput()
		return strings.TrimSpace(string(out)), err
	}
	if got, err := query(); err != nil || got != "42" {
		t.Fatalf("select: %q %v", got, err)
	}
	if err := s.Pause(); err != nil {
		t.Fatal(err)
	}
	if _, err := query(); err == nil {
		t.Fatal("a paused cluster answered")
	}
	if err := s.Resume(); err != nil {
		t.Fatal(err)
	}
	if got, err := query(); err != nil || got != "42" {
		t.Fatalf("after resuming: %q %v", got, err)
	}
}
