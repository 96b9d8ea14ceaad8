package main

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	"github.com/dockyard/dockyard/notify"
)

// The restart made real: dockyard in a process of its own is killed (-9) right after
// its last acknowledged push and delete, started again, takes a push and a pull, is
// stopped cleanly, and started a third time once the receiver is back: every
// acknowledged push and delete arrives, and the pull too (written at the clean stop),
// each signed.
func TestWebhooksSurviveAKilledProcess(t *testing.T) {
	dir := t.TempDir()
	secret := []byte("crash-secret")
	os.WriteFile(filepath.Join(dir, "secret"), secret, 0o600)
	hook, addr := freeAddr(t), freeAddr(t)
	cfg := filepath.Join(dir, "dockyard.yaml")
	os.WriteFile(cfg, []byte(fmt.Sprintf(`
log: {access: false, level: error}
notifications:
  - {name: ci, url: "http://%s/", events: [push, delete, pull], secret_file: secret, backoff_initial: 20ms, backoff_max: 200ms}
`, hook)), 0o600)
	start := func() *exec.Cmd {
		cmd := dockyardCommand(t, "serve", "--config", cfg, "--data", filepath.Join(dir, "data"), "--listen", addr)
		cmd.Stderr = os.Stderr
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
		for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(20 * time.Millisecond) {
			if resp, err := http.Get("http://" + addr + "/v2/"); err == nil {
				resp.Body.Close()
				return cmd
			}
			if time.Now().After(deadline) {
				t.Fatal("dockyard did not start")
			}
		}
	}
	ref := func(s string) name.Reference {
		r, _ := name.ParseReference(addr+"/"+s, name.Insecure)
		return r
	}
	push := func(s string) {
		img, _ := random.Image(256, 1)
		if err := remote.Write(ref(s), img); err != nil {
			t.Fatalf("push %s: %v", s, err)
		}
	}

	cmd := start()
	push("team/app:1")
	push("team/app:2")
	if err := remote.Delete(ref("team/app:1")); err != nil {
		t.Fatal(err)
	}
	cmd.Process.Signal(syscall.SIGKILL)
	cmd.Wait()

	cmd = start()
	push("team/app:3")
	if _, err := remote.Get(ref("team/app:2")); err != nil {
		t.Fatal(err)
	}
	cmd.Process.Signal(syscall.SIGTERM)
	if err := cmd.Wait(); err != nil {
		t.Fatalf("clean stop: %v", err)
	}

	var mu sync.Mutex
	seen := map[string]string{} // id → action repository tag
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		m := hmac.New(sha256.New, secret)
		m.Write(body)
		if r.Header.Get(notify.SignatureHeader) != "sha256="+hex.EncodeToString(m.Sum(nil)) {
			t.Errorf("bad signature on %s", body)
		}
		var e notify.Event
		json.Unmarshal(body, &e)
		mu.Lock()
		seen[e.ID] = fmt.Sprintf("%s %s %s", e.Action, e.Repository, e.Tag)
		mu.Unlock()
	})}
	l, err := net.Listen("tcp", hook)
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(l)
	defer srv.Close()
	start()

	want := []string{"delete team/app 1", "pull team/app 2", "push team/app 1", "push team/app 2", "push team/app 3"}
	var got []string
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		mu.Lock()
		got = got[:0]
		for _, s := range seen {
			got = append(got, s)
		}
		mu.Unlock()
		sort.Strings(got)
		if len(got) >= len(want) || time.Now().After(deadline) {
			break
		}
	}
	if !slices.Equal(got, want) {
		t.Errorf("received %v, want %v", got, want)
	}
}

// freeAddr is a loopback address nothing listens on (yet).
func freeAddr(t *testing.T) string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}
