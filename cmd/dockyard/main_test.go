package main

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"io"
	"log/slog"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/bcrypt"

	"github.com/dockyard/dockyard/blobstore/s3test"
	"github.com/dockyard/dockyard/cache"
	"github.com/dockyard/dockyard/config"
	"github.com/dockyard/dockyard/index/pgtest"
	"github.com/dockyard/dockyard/oci"
	"github.com/dockyard/dockyard/test/mountns"
)

var s3server *s3test.Server

// pgserver is a PostgreSQL cluster for the cluster tests (nil: skipped).
var pgserver *pgtest.Server

func TestMain(m *testing.M) {
	runAsCommand() // a test running the dockyard command in a process of its own
	if mountns.Inside() {
		os.Exit(m.Run()) // one test again, in a mount namespace (fulldisk_test.go): no shared servers
	}
	var err error
	if pgserver, err = pgtest.Shared(); err == nil {
		s3server, err = s3test.Shared()
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	code := m.Run()
	if pgserver != nil {
		pgserver.Stop()
	}
	if s3server != nil {
		s3server.Stop()
	}
	os.Exit(code)
}

// Every example configuration builds a working gateway.
func TestExampleConfigurationsBuild(t *testing.T) {
	files, _ := filepath.Glob("../../configs/*.yaml")
	if len(files) < 6 {
		t.Fatalf("found %d example configurations: %v", len(files), files)
	}
	for _, f := range files {
		cfg, err := config.Load(f)
		if err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		cfg.Data = t.TempDir()
		if cfg.Storage.Driver == "s3" {
			// The example's bucket, on the test's own S3 server.
			srv := s3test.Need(t, s3server)
			bucket, err := srv.NewBucket(t.Context())
			if err != nil {
				t.Fatal(err)
			}
			c := &cfg.Storage.S3
			c.Endpoint, c.Bucket, c.AccessKeyID = srv.Endpoint, bucket, srv.Access
			t.Setenv(c.SecretAccessKeyEnv, srv.Secret)
		}
		if cfg.Index.Driver == "postgres" {
			t.Setenv(cfg.Index.Postgres.DSNEnv, pgtest.Need(t, pgserver).NewDatabase(t))
		}
		store, err := openStore(cfg, slog.New(slog.NewTextHandler(io.Discard, nil)))
		if err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		if _, err := build(t.Context(), cfg, store, slog.New(slog.NewTextHandler(io.Discard, nil))); err != nil {
			t.Errorf("%s: %v", f, err)
		}
		store.Close()
	}
}

func writeCert(t *testing.T, dir, cn string) (string, string) {
	t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(time.Now().UnixNano()), Subject: pkix.Name{CommonName: cn},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), DNSNames: []string{cn}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kder, _ := x509.MarshalPKCS8PrivateKey(key)
	certFile, keyFile := filepath.Join(dir, "tls.crt"), filepath.Join(dir, "tls.key")
	os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600)
	os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kder}), 0o600)
	return certFile, keyFile
}

func TestRenewedCertificateIsServedWithoutRestart(t *testing.T) {
	dir := t.TempDir()
	certFile, keyFile := writeCert(t, dir, "first.example.com")
	rc, err := newReloadingCert(certFile, keyFile, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	name := func() string {
		c, err := rc.GetCertificate(&tls.ClientHelloInfo{})
		if err != nil {
			t.Fatal(err)
		}
		leaf, _ := x509.ParseCertificate(c.Certificate[0])
		return leaf.Subject.CommonName
	}
	if got := name(); got != "first.example.com" {
		t.Fatalf("served %s", got)
	}
	writeCert(t, dir, "second.example.com")
	future := time.Now().Add(time.Minute)
	os.Chtimes(certFile, future, future)
	rc.checked = time.Time{}
	if got := name(); got != "second.example.com" {
		t.Errorf("after renewal served %s", got)
	}
}

func TestTokenCommands(t *testing.T) {
	data := t.TempDir()
	var out bytes.Buffer
	if err := run([]string{"token", "create", "--data", data, "--user", "ci", "--scope", "default/team/*:pull,push", "--expires", "30d"}, &out, io.Discard); err != nil {
		t.Fatal(err)
	}
	secret := strings.SplitN(out.String(), "\n", 2)[0]
	if !strings.HasPrefix(secret, "dyt_") {
		t.Fatalf("token: %q", out.String())
	}
	out.Reset()
	if err := run([]string{"token", "list", "--data", data}, &out, io.Discard); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out.String(), "default/team/*:pull,push") || !strings.Contains(out.String(), "active") || strings.Contains(out.String(), secret) {
		t.Errorf("list: %s", out.String())
	}
	id := strings.Fields(strings.Split(out.String(), "\n")[1])[0]
	if err := run([]string{"token", "revoke", "--data", data, id}, io.Discard, io.Discard); err != nil {
		t.Fatal(err)
	}
	out.Reset()
	run([]string{"token", "list", "--data", data}, &out, io.Discard)
	if !strings.Contains(out.String(), "revoked") {
		t.Errorf("after revoke: %s", out.String())
	}
	if err := run([]string{"token", "create", "--data", data, "--user", "ci", "--scope", "bad"}, io.Discard, io.Discard); err == nil {
		t.Error("a malformed scope was accepted")
	}
}

func TestAdminEndpointRunsJobsForAdminsOnly(t *testing.T) {
	dir := t.TempDir()
	users := filepath.Join(dir, "htpasswd")
	var lines string
	for _, u := range []string{"root", "dev"} {
		h, _ := bcrypt.GenerateFromPassword([]byte(u+"-pw"), 10)
		lines += u + ":" + string(h) + "\n"
	}
	os.WriteFile(users, []byte(lines), 0o600)
	cfgFile := filepath.Join(dir, "c.yaml")
	os.WriteFile(cfgFile, []byte(`
auth:
  mode: basic
  users_file: htpasswd
  rules:
    - {subjects: [authenticated], registries: ["*"], repositories: ["**"], actions: [pull]}
lifecycle:
  admins: [user:root]
`), 0o600)
	cfg, err := config.Load(cfgFile)
	if err != nil {
		t.Fatal(err)
	}
	cfg.Data = filepath.Join(dir, "data")
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	store, err := cache.Open(cache.Options{Dir: cfg.Data, Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	a, err := build(t.Context(), cfg, store, log)
	if err != nil {
		t.Fatal(err)
	}
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	go a.gw.Serve(ln)
	defer a.gw.Shutdown(context.Background())
	post := func(user string) (int, string) {
		req, _ := http.NewRequest("POST", "http://"+ln.Addr().String()+"/-/admin/gc?dry_run=true", nil)
		if user != "" {
			req.SetBasicAuth(user, user+"-pw")
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	if st, _ := post(""); st != 401 {
		t.Errorf("anonymous: %d", st)
	}
	if st, body := post("dev"); st != 403 || !strings.Contains(body, "DENIED") {
		t.Errorf("non-admin: %d %s", st, body)
	}
	if st, body := post("root"); st != 200 || !strings.Contains(body, `"blobs":0`) {
		t.Errorf("admin: %d %s", st, body)
	}
}

// paused is the real store with TagInfos held until released: a retention run that
// takes its time.
type paused struct {
	*cache.Store
	entered, release chan struct{}
}

func (p *paused) TagInfos(ctx context.Context, reg, repo string) ([]cache.TagInfo, error) {
	close(p.entered)
	<-p.release
	return p.Store.TagInfos(ctx, reg, repo)
}

// A job started through the admin endpoint outlives its request; the server waits for
// it before the store is closed.
func TestShutdownWaitsForAdminStartedJobs(t *testing.T) {
	dir := t.TempDir()
	cfgFile := filepath.Join(dir, "dockyard.yaml")
	os.WriteFile(cfgFile, []byte(`
lifecycle:
  retention:
    - {name: p, registries: [default], repositories: ["**"], keep_last: 1}
`), 0o600)
	cfg, err := config.Load(cfgFile)
	if err != nil {
		t.Fatal(err)
	}
	cfg.Data = filepath.Join(dir, "data")
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	store, err := cache.Open(cache.Options{Dir: cfg.Data, Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	ctx, cancel := context.WithCancel(context.Background())
	a, err := build(ctx, cfg, store, log)
	if err != nil {
		t.Fatal(err)
	}
	putImage(t, store, "default", "app", "1.0")
	p := &paused{Store: store, entered: make(chan struct{}), release: make(chan struct{})}
	a.jobs.Engine.Store = p
	ran := make(chan error, 1)
	go func() {
		_, err := a.admin.Run(context.Background(), "retention", map[string]string{"policy": "p"})
		ran <- err
	}()
	<-p.entered
	cancel() // the server is shutting down
	closed := make(chan struct{})
	go func() { a.close(); close(closed) }()
	select {
	case <-closed:
		t.Fatal("the server closed while an admin-started job was running")
	case <-time.After(300 * time.Millisecond):
	}
	close(p.release)
	<-ran
	<-closed
}

// putImage stores a tiny image in reg/repo under tag.
func putImage(t *testing.T, s *cache.Store, reg, repo, tag string) {
	t.Helper()
	ctx := context.Background()
	config := []byte("{}")
	d := oci.FromBytes(oci.SHA256, config)
	if _, err := s.PutBlob(ctx, reg, repo, d, bytes.NewReader(config), int64(len(config))); err != nil {
		t.Fatal(err)
	}
	m := []byte(`{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"` + string(d) + `","size":2},"layers":[]}`)
	parsed, err := oci.ParseManifest("", m)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.PutManifest(ctx, cache.PutManifestRequest{Registry: reg, Repo: repo, Digest: oci.FromBytes(oci.SHA256, m),
		Content: m, Manifest: parsed, Tags: []oci.Tag{oci.Tag(tag)}}); err != nil {
		t.Fatal(err)
	}
}

// A secret file's line end is not part of the secret; its spaces are.
func TestSecretFileKeepsItsSpaces(t *testing.T) {
	f := filepath.Join(t.TempDir(), "pw")
	os.WriteFile(f, []byte(" pass word \r\n"), 0o600)
	if got, err := secret(f, ""); err != nil || got != " pass word " {
		t.Errorf("secret: %q %v", got, err)
	}
}
