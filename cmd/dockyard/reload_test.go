package main

import (
	"bytes"
	"crypto/sha256"
	"encoding/base64"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"
	"weak"

	"golang.org/x/crypto/bcrypt"

	"github.com/dockyard/dockyard/auth"
)

// A running server takes a new configuration on SIGHUP and on POST /-/admin/reload:
// a user gains push, a registry is added and routed, an upload started before the
// reload completes after it; a broken file changes nothing (and says why, with the
// key path); then the user loses push again.
func TestReloadAppliesRulesAndRegistriesAndKeepsUploads(t *testing.T) {
	dir := t.TempDir()
	var users bytes.Buffer
	for _, u := range []string{"alice", "bob"} {
		h, _ := bcrypt.GenerateFromPassword([]byte(u+"-pw"), auth.MinBcryptCost)
		fmt.Fprintf(&users, "%s:%s\n", u, h)
	}
	os.WriteFile(filepath.Join(dir, "users"), users.Bytes(), 0o600)
	cfgFile := filepath.Join(dir, "c.yaml")
	write := func(bobPush bool, prod bool, extra string) {
		t.Helper()
		bob := "[pull]"
		if bobPush {
			bob = "[pull, push]"
		}
		regs, routes := "  - {name: dev, type: hosted}\n", ""
		if prod {
			regs += "  - {name: prod, type: hosted}\n"
			routes = "  - {host: prod.test, registry: prod}\n"
		}
		body := fmt.Sprintf(`log: {access: false}
registries:
%sroutes:
%s  - {host: "*", registry: dev}
auth:
  mode: basic
  users_file: %s
  rules:
    - {subjects: [user:alice], registries: ["*"], repositories: ["**"], actions: [pull, push, delete]}
    - {subjects: [user:bob], registries: ["*"], repositories: ["**"], actions: %s}
lifecycle: {admins: [user:alice]}
%s`, regs, routes, filepath.Join(dir, "users"), bob, extra)
		if err := os.WriteFile(cfgFile, []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	write(false, false, "")
	addr, errb := serveUntilTerm(t, cfgFile, filepath.Join(dir, "data"))
	basicAuth := func(u string) string { return "Basic " + base64.StdEncoding.EncodeToString([]byte(u+":"+u+"-pw")) }
	do := func(method, path, user, host string, body []byte) *http.Response {
		t.Helper()
		req, _ := http.NewRequest(method, "http://"+addr+path, bytes.NewReader(body))
		req.Header.Set("Authorization", basicAuth(user))
		if host != "" {
			req.Host = host
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp
	}
	bobPushes := func() int { return do("POST", "/v2/bob/app/blobs/uploads/", "bob", "", nil).StatusCode }
	if got := bobPushes(); got != 403 {
		t.Fatalf("bob's push before any reload: %d, want 403", got)
	}

	// alice's upload, first half.
	blob := bytes.Repeat([]byte("dockyard reload "), 4096)
	digest := fmt.Sprintf("sha256:%x", sha256.Sum256(blob))
	start := do("POST", "/v2/alice/app/blobs/uploads/", "alice", "", nil)
	loc := start.Header.Get("Location")
	if start.StatusCode != 202 || loc == "" {
		t.Fatalf("start upload: %d", start.StatusCode)
	}
	half := len(blob) / 2
	patch := func(loc string, from, to int) string {
		t.Helper()
		req, _ := http.NewRequest("PATCH", "http://"+addr+loc, bytes.NewReader(blob[from:to]))
		req.Header.Set("Authorization", basicAuth("alice"))
		req.Header.Set("Content-Range", fmt.Sprintf("%d-%d", from, to-1))
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != 202 {
			t.Fatalf("patch %d-%d: %d", from, to, resp.StatusCode)
		}
		return resp.Header.Get("Location")
	}
	loc = patch(loc, 0, half)

	// SIGHUP: bob may push; prod exists and prod.test routes to it.
	write(true, true, "")
	syscall.Kill(os.Getpid(), syscall.SIGHUP)
	for i := 0; bobPushes() != 202; i++ {
		if i == 200 {
			t.Fatalf("bob still may not push after SIGHUP: %s", errb.String())
		}
		time.Sleep(25 * time.Millisecond)
	}
	loc = patch(loc, half, len(blob))
	sep := "?"
	if strings.Contains(loc, "?") {
		sep = "&"
	}
	if resp := do("PUT", loc+sep+"digest="+digest, "alice", "", nil); resp.StatusCode != 201 {
		t.Fatalf("the upload started before the reload: finishing it answered %d", resp.StatusCode)
	}
	if resp := do("HEAD", "/v2/alice/app/blobs/"+digest, "alice", "", nil); resp.StatusCode != 200 || resp.ContentLength != int64(len(blob)) {
		t.Errorf("the blob uploaded across the reload: %d, %d bytes", resp.StatusCode, resp.ContentLength)
	}
	if resp := do("POST", "/v2/prod/app/blobs/uploads/?digest="+digest, "alice", "prod.test", blob); resp.StatusCode != 201 {
		t.Errorf("push to the added registry through its host: %d", resp.StatusCode)
	}
	if resp := do("HEAD", "/v2/prod/app/blobs/"+digest, "alice", "", nil); resp.StatusCode != 404 {
		t.Errorf("the blob pushed to prod is visible through dev: %d", resp.StatusCode)
	}

	// A broken file: refused with the key path, nothing changes.
	write(false, true, "registries_typo: 1\nlimits: {upload_sessions_per_client: -1}\n")
	req, _ := http.NewRequest("POST", "http://"+addr+"/-/admin/reload", nil)
	req.Header.Set("Authorization", basicAuth("alice"))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	msg, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 422 || !strings.Contains(string(msg), "limits.upload_sessions_per_client") {
		t.Errorf("reload of a broken file: %d %s, want 422 naming the key", resp.StatusCode, msg)
	}
	if got := bobPushes(); got != 202 {
		t.Errorf("after a refused reload bob's push answers %d, want 202 (the running configuration)", got)
	}
	// bob may only pull again: the admin endpoint reloads.
	write(false, true, "")
	if resp := do("POST", "/-/admin/reload", "alice", "", nil); resp.StatusCode != 200 {
		t.Fatalf("reload: %d", resp.StatusCode)
	}
	if got := bobPushes(); got != 403 {
		t.Errorf("bob's push after losing it: %d, want 403", got)
	}
	if resp := do("POST", "/-/admin/reload", "bob", "", nil); resp.StatusCode != 403 {
		t.Errorf("bob (no admin) reloads: %d, want 403", resp.StatusCode)
	}
}

// What the red team found in reloads: a replaced configuration is let go (memory stays
// flat however often one reloads), failed-login counts survive a reload, and reloads
// more frequent than a job's interval do not keep the job from ever running.
func TestReloadsLetGoKeepLimitsAndKeepJobsDue(t *testing.T) {
	dir := t.TempDir()
	h, _ := bcrypt.GenerateFromPassword([]byte("alice-pw"), auth.MinBcryptCost)
	os.WriteFile(filepath.Join(dir, "users"), []byte("alice:"+string(h)+"\n"), 0o600)
	cfgFile := filepath.Join(dir, "c.yaml")
	os.WriteFile(cfgFile, []byte(`log: {access: false}
registries:
  - {name: dev, type: hosted}
  - {name: up, type: proxy, upstream: {url: "http://127.0.0.1:9"}}
auth:
  mode: basic
  users_file: users
  rate_limit: {failures: 2, window: 1m, lockout: 1m}
  rules:
    - {subjects: [user:alice], registries: ["*"], repositories: ["**"], actions: [pull, push]}
lifecycle:
  gc: {interval: 600ms, grace: 0s}
`), 0o600)
	addr, a, stop := serveApp(t, cfgFile, filepath.Join(dir, "data"))
	t.Cleanup(stop)

	// Two failed logins: the third attempt is refused by the limit, before and after a reload.
	login := func(pw string) int {
		req, _ := http.NewRequest("GET", "http://"+addr+"/v2/", nil)
		req.SetBasicAuth("alice", pw)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	login("wrong")
	login("wrong")
	if got := login("wrong"); got != 429 {
		t.Fatalf("the third failed login: %d, want 429", got)
	}
	oldAuth := weak.Make(a.gw.Live().Auth)
	oldProxy := weak.Make(a.proxies[0])
	if _, err := a.reload(); err != nil {
		t.Fatal(err)
	}
	if got := login("wrong"); got != 429 {
		t.Errorf("a failed login after a reload: %d, want 429 (the lockout carried on)", got)
	}

	// Reloads every 200 ms for longer than the GC interval (600 ms): GC still runs.
	runs := func() int64 { return a.current.Load().Counters().GCRuns.Load() }
	before := runs()
	for range 10 {
		if _, err := a.reload(); err != nil {
			t.Fatal(err)
		}
		time.Sleep(200 * time.Millisecond)
	}
	if runs() == before {
		t.Errorf("no garbage collection in 2 s of reloads every 200 ms with a 600 ms interval")
	}

	// The replaced auth service is let go (a reload used to keep each one until exit);
	// the proxy, unchanged, is kept.
	for range 5 {
		runtime.GC()
	}
	if oldAuth.Value() != nil {
		t.Errorf("the auth service replaced by a reload is still reachable")
	}
	if oldProxy.Value() != a.proxies[0] {
		t.Errorf("an unchanged proxy was replaced by a reload")
	}
}

// serveUntilTerm runs serve (signals and all) on a free loopback port until the test
// ends (SIGTERM), waits until it accepts connections, and returns its address and log.
func serveUntilTerm(t *testing.T, cfgFile, data string) (string, *syncWriter) {
	t.Helper()
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	addr := ln.Addr().String()
	ln.Close()
	errb := &syncWriter{w: &bytes.Buffer{}}
	done := make(chan error, 1)
	go func() {
		done <- serve([]string{"--config", cfgFile, "--data", data, "--listen", addr}, errb)
	}()
	t.Cleanup(func() {
		syscall.Kill(os.Getpid(), syscall.SIGTERM)
		select {
		case <-done:
		case <-time.After(30 * time.Second):
			t.Error("serve did not stop")
		}
	})
	for i := 0; ; i++ {
		if c, err := net.Dial("tcp", addr); err == nil {
			c.Close()
			return addr, errb
		}
		if i == 200 {
			t.Fatalf("no server: %s", errb.String())
		}
		time.Sleep(25 * time.Millisecond)
	}
}
