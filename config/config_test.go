package config

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestEveryExampleConfigLoads(t *testing.T) {
	files, _ := filepath.Glob("../configs/*.yaml")
	if len(files) == 0 {
		t.Fatal("no example configurations found")
	}
	for _, f := range files {
		c, err := Load(f)
		if err != nil {
			t.Errorf("%s: %v", f, err)
			continue
		}
		if len(c.Registries) == 0 || len(c.Routes) == 0 {
			t.Errorf("%s: no registries or routes", f)
		}
	}
}

func TestEmbeddedDefault(t *testing.T) {
	c, err := Load("")
	if err != nil {
		t.Fatal(err)
	}
	if c.Listen != ":5000" || c.Data != "./data" || int64(c.HTTP.MaxManifestSize) != 4<<20 {
		t.Errorf("defaults: listen %q data %q max manifest %d", c.Listen, c.Data, c.HTTP.MaxManifestSize)
	}
	if len(c.Registries) != 1 || c.Registries[0].Name != DefaultRegistry || c.Registries[0].Type != "hosted" {
		t.Errorf("default registries: %+v", c.Registries)
	}
	if len(c.Routes) != 1 || c.Routes[0].Host != "*" || c.Routes[0].Registry != DefaultRegistry {
		t.Errorf("default routes: %+v", c.Routes)
	}
}

func TestEnvironmentOverridesFile(t *testing.T) {
	t.Setenv("DOCKYARD_LISTEN", "127.0.0.1:6000")
	t.Setenv("DOCKYARD_HTTP_IDLE_TIMEOUT", "7s")
	c, err := Load("../configs/dockyard.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if c.Listen != "127.0.0.1:6000" || c.HTTP.IdleTimeout != 7*time.Second {
		t.Errorf("env overrides not applied: listen %q idle %v", c.Listen, c.HTTP.IdleTimeout)
	}
}

func TestInvalidConfigReportsEveryProblemWithItsPath(t *testing.T) {
	path := filepath.Join(t.TempDir(), "bad.yaml")
	os.WriteFile(path, []byte(`
listen: ""
lgo: {level: info}
log: {level: loud}
http: {max_manifest_size: huge, idle_timeout: -1s}
storage: {driver: tape}
registries:
  - {name: a, type: hosted}
  - {name: a, type: warehouse}
routes:
  - {host: "*", registry: nowhere}
`), 0o644)
	_, err := Load(path)
	if err == nil {
		t.Fatal("invalid configuration accepted")
	}
	for _, want := range []string{"lgo", "listen", "log.level", "max_manifest_size", "http.idle_timeout", "storage.driver",
		"registries[1].name", "registries[1].type", "routes[0].registry"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error does not mention %s:\n%v", want, err)
		}
	}
}

func TestInvalidFederationIsReported(t *testing.T) {
	path := filepath.Join(t.TempDir(), "bad.yaml")
	os.WriteFile(path, []byte(`
registries:
  - {name: dev, type: hosted, upstream: {url: "https://x"}}
  - {name: cache, type: proxy, upstream: {url: "ftp://nowhere", password_file: /no/such/file}}
  - {name: all, type: group, members: [dev, ghost, inner], push_to: cache}
  - {name: inner, type: group, members: [dev]}
routes:
  - {host: "*", registry: all, namespaces: {"a/b": dev, hub: nothing}}
`), 0o644)
	_, err := Load(path)
	if err == nil {
		t.Fatal("invalid federation accepted")
	}
	for _, want := range []string{"registries[0].upstream", "registries[1].upstream.url", "registries[1].upstream.password_file",
		"registries[2].members[1]", "registries[2].members[2]", "registries[2].push_to", "routes[0].namespaces.a/b", "routes[0].namespaces.hub"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error does not mention %s:\n%v", want, err)
		}
	}
}

func TestProxyDefaults(t *testing.T) {
	c, err := Load("../configs/docker-hub-mirror.yaml")
	if err != nil {
		t.Fatal(err)
	}
	u := c.Registries[0].Upstream
	if u.TagTTL != time.Hour || u.Timeout != 30*time.Second || u.NegativeTTL != time.Minute {
		t.Errorf("configured values: %+v", u)
	}
	n, err := Load("../configs/nexus.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if g := n.Registries[1].Upstream; g != (Upstream{}) {
		t.Errorf("a hosted registry got upstream settings: %+v", g)
	}
	if gh := n.Registries[2].Upstream; gh.NegativeTTL != 30*time.Second || gh.TagTTL != 10*time.Minute {
		t.Errorf("ghcr: %+v", gh)
	}
}

// The resource limits default to bounded values, and a limit that would bound nothing
// (a negative size, or a zero-sized buffer pool or cache, which the store would
// quietly replace with its default) is refused.
func TestResourceLimits(t *testing.T) {
	c, err := Load("")
	if err != nil {
		t.Fatal(err)
	}
	if c.Limits.UploadBuffers != 64<<20 || c.Limits.ManifestCache != 32<<20 || c.Limits.UploadSessionsPerClient != 256 || c.Storage.MinFreeSpace != 1<<30 {
		t.Errorf("defaults: %+v, min_free_space %d", c.Limits, c.Storage.MinFreeSpace)
	}
	path := filepath.Join(t.TempDir(), "bad.yaml")
	os.WriteFile(path, []byte(`
storage: {min_free_space: -1}
limits: {upload_buffers: 0, manifest_cache: -5, upload_sessions_per_client: -1}
`), 0o644)
	_, err = Load(path)
	if err == nil {
		t.Fatal("invalid limits accepted")
	}
	for _, want := range []string{"storage.min_free_space", "limits.upload_buffers", "limits.manifest_cache", "limits.upload_sessions_per_client"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error does not mention %s:\n%v", want, err)
		}
	}
}

// The client limits default to values a registry serving a CI farm behind one NAT
// address can live with, and values that bound nothing or everything are refused.
func TestClientLimits(t *testing.T) {
	c, err := Load("")
	if err != nil {
		t.Fatal(err)
	}
	h := c.HTTP
	if h.HeaderTimeout != 30*time.Second || h.MaxHeaderSize != 16<<10 || h.MaxBodySize != 1<<20 || h.MaxConns != 8192 ||
		h.MaxConnsPerIP != 1024 || h.RateLimit != (HTTPRateLimit{PerSecond: 50, Burst: 500}) {
		t.Errorf("defaults: %+v", h)
	}
	for _, bad := range []struct{ yaml, want string }{
		{"{header_timeout: -1s, max_header_size: 1KiB, max_body_size: 0, max_conns: -1, max_conns_per_ip: -1, rate_limit: {per_second: -1}}",
			"http.header_timeout http.max_header_size http.max_body_size http.max_conns: http.max_conns_per_ip http.rate_limit.per_second"},
		{"{max_header_size: 2MiB, rate_limit: {per_second: 5, burst: 0}}", "http.max_header_size http.rate_limit.burst"},
	} {
		path := filepath.Join(t.TempDir(), "bad.yaml")
		os.WriteFile(path, []byte("http: "+bad.yaml+"\n"), 0o644)
		_, err := Load(path)
		if err == nil {
			t.Fatalf("%s accepted", bad.yaml)
		}
		for _, want := range strings.Fields(bad.want) {
			if !strings.Contains(err.Error(), want) {
				t.Errorf("%s: error does not mention %s:\n%v", bad.yaml, want, err)
			}
		}
	}
}

// Retention policies are run, locked and scheduled by name: two with one name would
// share a lock and one schedule.
func TestRetentionPolicyNamesAreUnique(t *testing.T) {
	path := filepath.Join(t.TempDir(), "dup.yaml")
	os.WriteFile(path, []byte(`
registries: [{name: dev, type: hosted}]
routes: [{host: "*", registry: dev}]
lifecycle:
  retention:
    - {name: nightly, registries: [dev], repositories: ["a/**"], keep_last: 3}
    - {name: nightly, registries: [dev], repositories: ["b/**"], keep_last: 5}
`), 0o644)
	_, err := Load(path)
	if err == nil || !strings.Contains(err.Error(), "lifecycle.retention[1].name") {
		t.Errorf("a policy name used twice: %v", err)
	}
}

func TestS3Settings(t *testing.T) {
	c, err := Load("../configs/s3.yaml")
	if err != nil {
		t.Fatal(err)
	}
	s := c.Storage.S3
	if c.Storage.Driver != "s3" || s.Bucket != "dockyard" || !s.PathStyle || s.PartSize != 16<<20 ||
		s.RedirectExpiry != 20*time.Minute || s.Region != "us-east-1" || s.SecretAccessKeyEnv != "DOCKYARD_S3_SECRET" {
		t.Fatalf("configs/s3.yaml read as %+v", s)
	}
	path := filepath.Join(t.TempDir(), "bad.yaml")
	os.WriteFile(path, []byte(`
storage:
  driver: s3
  s3:
    endpoint: "ftp://x"
    region: ""
    part_size: 1MiB
    redirect: true
    redirect_expiry: 200h
    access_key_id: AKIA
    ca_file: /no/such/ca.pem
    bucket_name: typo
`), 0o644)
	_, err = Load(path)
	if err == nil {
		t.Fatal("invalid s3 settings accepted")
	}
	for _, want := range []string{"storage.s3.endpoint", "storage.s3.bucket", "storage.s3.region", "storage.s3.part_size",
		"storage.s3.redirect_expiry", "access_key_id and a secret", "storage.s3.ca_file", "bucket_name"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error does not mention %s:\n%v", want, err)
		}
	}
}

func TestIndexSettings(t *testing.T) {
	c, err := Load("../configs/cluster.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if p := c.Index.Postgres; c.Index.Driver != "postgres" || p.DSNEnv != "DOCKYARD_PG_DSN" || p.MaxConns != 16 || p.Timeout != 30*time.Second {
		t.Fatalf("configs/cluster.yaml read as %+v", c.Index)
	}
	if c, err := Load(""); err != nil || c.Index.Driver != "badger" {
		t.Fatalf("the embedded default's index: %+v %v", c.Index, err)
	}
	path := filepath.Join(t.TempDir(), "bad.yaml")
	os.WriteFile(path, []byte(`
index:
  driver: postgres
  postgres: {dsn: "mysql://x", dsn_env: ALSO, max_conns: 0, password_file: /no/such/file}
`), 0o644)
	_, err = Load(path)
	if err == nil {
		t.Fatal("invalid index settings accepted")
	}
	for _, want := range []string{"index.postgres: set dsn or dsn_env", "index.postgres.dsn", "index.postgres.max_conns", "index.postgres.password_file"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error does not mention %s:\n%v", want, err)
		}
	}
	os.WriteFile(path, []byte("index: {driver: etcd}\n"), 0o644)
	if _, err := Load(path); err == nil || !strings.Contains(err.Error(), "index.driver") {
		t.Errorf("driver etcd: %v", err)
	}
}

// docker-compose.yml runs every replica with configs/compose-cluster.yaml: the shared
// index and bucket, and the jobs' schedules (elected among the replicas); the
// environment overrides the file.
func TestComposeClusterConfiguration(t *testing.T) {
	c, err := Load("../configs/compose-cluster.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if c.Index.Driver != "postgres" || c.Storage.Driver != "s3" || c.Lifecycle.GC.Interval != time.Hour || c.Lifecycle.Uploads.Interval != time.Hour {
		t.Fatalf("replicas: index %s, storage %s, gc every %v, purge every %v",
			c.Index.Driver, c.Storage.Driver, c.Lifecycle.GC.Interval, c.Lifecycle.Uploads.Interval)
	}
	t.Setenv("DOCKYARD_LIFECYCLE_GC_INTERVAL", "30m")
	if c, err = Load("../configs/compose-cluster.yaml"); err != nil {
		t.Fatal(err)
	}
	if c.Lifecycle.GC.Interval != 30*time.Minute {
		t.Errorf("gc every %v with DOCKYARD_LIFECYCLE_GC_INTERVAL=30m", c.Lifecycle.GC.Interval)
	}
}

// The webhooks example: defaults filled in, paths relative to the file, a plain
// header string as a value (header names as viper reads them: lowered).
func TestNotificationsExample(t *testing.T) {
	c, err := Load("../configs/notifications.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if len(c.Notifications) != 2 {
		t.Fatalf("notifications: %+v", c.Notifications)
	}
	ci, audit := c.Notifications[0], c.Notifications[1]
	if ci.Name != "ci" || ci.URL != "https://ci.example.com/hooks/dockyard" || len(ci.Events) != 3 ||
		ci.SecretFile != filepath.Join("..", "configs", "webhook-secret.example") || ci.MaxEvents != 100000 {
		t.Errorf("ci: %+v", ci)
	}
	if h := ci.Headers["x-source"]; h.Value != "dockyard-prod" {
		t.Errorf("headers: %+v", ci.Headers)
	}
	if h := ci.Headers["authorization"]; h.File != filepath.Join("..", "configs", "webhook-token.example") {
		t.Errorf("headers: %+v", ci.Headers)
	}
	if audit.Timeout != DefaultNotificationTimeout || audit.BackoffInitial != time.Second || audit.BackoffMax != 5*time.Minute ||
		audit.MaxAge != 24*time.Hour || audit.MaxEvents != DefaultNotificationMaxEvents || len(audit.Registries) != 0 {
		t.Errorf("audit defaults: %+v", audit)
	}
}

// Every problem of a notifications list is reported, with its key path.
func TestNotificationProblemsAreAllReported(t *testing.T) {
	dir := t.TempDir()
	f := filepath.Join(dir, "c.yaml")
	os.WriteFile(f, []byte(`
registries: [{name: dev, type: hosted}]
routes: [{host: "*", registry: dev}]
notifications:
  - {name: a, url: "ftp://x", events: [push, upload], registries: [nope]}
  - name: a
    url: http://ok
    events: []
    headers: {X-Dockyard-Signature: x, "bad name": y, X-Both: {value: v, file: f}, X-File: {file: missing}, X-Crlf: "v1\r\nX-Injected: yes"}
    secret_file: missing-secret
    backoff_initial: 10m
    backoff_max: 1m
    max_events: -1
`), 0o600)
	_, err := Load(f)
	if err == nil {
		t.Fatal("loaded")
	}
	for _, want := range []string{
		"notifications[0].url", "notifications[0].events: \"upload\"", "notifications[0].registries",
		"notifications[1].name: \"a\" is used twice", "notifications[1].events: list the events",
		"notifications[1].headers.x-dockyard-signature: is set by dockyard", "notifications[1].headers.bad name: is not a valid header name",
		"notifications[1].headers.x-both: set value or file", "notifications[1].headers.x-file.file: cannot be read",
		"notifications[1].headers.x-crlf: a header value must not hold line breaks",
		"notifications[1].secret_file: cannot be read", "notifications[1].backoff_initial: must not exceed",
		"notifications[1].max_events: must not be negative",
	} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("missing %q in:\n%v", want, err)
		}
	}
}

// A negative duration or size is refused wherever it is, with its key path: settings
// the server would quietly replace (a token lifetime) or that wrapped around (days
// past int64) included.
func TestNegativeDurationsAndSizesAreRefusedEverywhere(t *testing.T) {
	path := filepath.Join(t.TempDir(), "neg.yaml")
	os.WriteFile(path, []byte(`
http: {read_timeout: -1s, cors: {max_age: -1m}}
auth: {mode: none, token: {ttl: -5m}, rate_limit: {lockout: -1h}}
registries:
  - {name: hub, type: proxy, upstream: {url: "https://r.example", tag_ttl: -1h}, cache: {max_size: -1}}
routes: [{host: "*", registry: hub}]
lifecycle: {gc: {grace: -1h}}
`), 0o600)
	_, err := Load(path)
	if err == nil {
		t.Fatal("loaded")
	}
	for _, key := range []string{"http.read_timeout", "http.cors.max_age", "auth.token.ttl", "auth.rate_limit.lockout",
		"registries[0].upstream.tag_ttl", "registries[0].cache.max_size", "lifecycle.gc.grace"} {
		if !strings.Contains(err.Error(), key+": must not be negative") {
			t.Errorf("missing %s in:\n%v", key, err)
		}
	}
	if _, err := ParseDuration("106752d"); err == nil {
		t.Error("106752 days (past int64 nanoseconds) accepted")
	}
}

func TestAccessorySettings(t *testing.T) {
	dir := t.TempDir()
	load := func(lifecycle string) (*Config, error) {
		path := filepath.Join(dir, "acc.yaml")
		os.WriteFile(path, []byte("registries: [{name: dev, type: hosted}]\nroutes: [{host: \"*\", registry: dev}]\n"+lifecycle), 0o644)
		return Load(path)
	}
	c, err := load("")
	if err != nil {
		t.Fatal(err)
	}
	if !c.Lifecycle.Accessories.DeleteWithSubject || len(c.Lifecycle.Accessories.Tags) != 0 {
		t.Errorf("defaults: %+v, want delete_with_subject and no patterns", c.Lifecycle.Accessories)
	}
	c, err = load("lifecycle: {accessories: {delete_with_subject: false, tags: ['^(?P<alg>sha256)-(?P<hex>[0-9a-f]{64})\\.vex$']}}\n")
	if err != nil {
		t.Fatal(err)
	}
	if c.Lifecycle.Accessories.DeleteWithSubject || len(c.Lifecycle.Accessories.Tags) != 1 {
		t.Errorf("set: %+v", c.Lifecycle.Accessories)
	}
	_, err = load("lifecycle: {accessories: {tags: ['^sha256-[0-9a-f]{64}\\.vex$', '(']}}\n")
	for _, want := range []string{"lifecycle.accessories.tags[0]", "lifecycle.accessories.tags[1]"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("a bad pattern not reported at %s: %v", want, err)
		}
	}
}
