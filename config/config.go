// Package config owns dockyard's configuration: the typed structure, loading it with
// viper from a YAML file and DOCKYARD_* environment variables over built-in defaults,
// and one validation pass that reports every problem with its key path.
package config

import (
	"errors"
	"fmt"
	"maps"
	"math"
	"net/netip"
	"net/url"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/dustin/go-humanize"
	"github.com/go-viper/mapstructure/v2"
	"github.com/spf13/viper"
)

// Config is the whole configuration.
type Config struct {
	Listen     string     `mapstructure:"listen"`
	Data       string     `mapstructure:"data"`
	Log        Log        `mapstructure:"log"`
	Metrics    Metrics    `mapstructure:"metrics"`
	HTTP       HTTP       `mapstructure:"http"`
	Storage    Storage    `mapstructure:"storage"`
	Index      Index      `mapstructure:"index"`
	Limits     Limits     `mapstructure:"limits"`
	Registries []Registry `mapstructure:"registries"`
	Routes     []Route    `mapstructure:"routes"`
	Auth       Auth       `mapstructure:"auth"`
	TLS        TLS        `mapstructure:"tls"`
	Lifecycle  Lifecycle  `mapstructure:"lifecycle"`
	// Notifications are the webhook endpoints events are sent to.
	Notifications []Notification `mapstructure:"notifications"`
}

// Notification is one webhook endpoint: events of some actions, registries and
// repositories, POSTed as JSON one at a time, in order, retried until a 2xx answer.
type Notification struct {
	// Name names the endpoint's queue (in the index) and its delivery lock: keep it
	// when the URL changes, or what was queued is abandoned.
	Name string `mapstructure:"name"`
	URL  string `mapstructure:"url"`
	// Events: push, delete, pull, retention (a tag deleted by a retention policy).
	Events []string `mapstructure:"events"`
	// Registries (names or "*") and Repositories (globs, as auth rules write them)
	// narrow the events; empty means all.
	Registries   []string `mapstructure:"registries"`
	Repositories []string `mapstructure:"repositories"`
	// Headers sent with every delivery: a value, or a file holding it (read at each
	// delivery). A plain string is a value. Header names are case-insensitive (the
	// configuration reader lowers them; they are sent canonicalised: X-Source).
	Headers map[string]HeaderValue `mapstructure:"headers"`
	// SecretFile holds the key of the X-Dockyard-Signature header (HMAC-SHA256 of the
	// body); empty: deliveries are not signed.
	SecretFile string `mapstructure:"secret_file"`
	// Timeout bounds one delivery.
	Timeout time.Duration `mapstructure:"timeout"`
	// A failed delivery is retried after backoff_initial, doubling to backoff_max.
	BackoffInitial time.Duration `mapstructure:"backoff_initial"`
	BackoffMax     time.Duration `mapstructure:"backoff_max"`
	// MaxAge: an event still undelivered this long after it happened is dropped.
	MaxAge time.Duration `mapstructure:"max_age"`
	// MaxEvents bounds the endpoint's queue; beyond it the oldest events are dropped.
	MaxEvents int `mapstructure:"max_events"`
}

// HeaderValue is a header's value, or the file that holds it.
type HeaderValue struct {
	Value string `mapstructure:"value"`
	File  string `mapstructure:"file"`
}

// NotificationEvents are the events an endpoint may subscribe to.
var NotificationEvents = []string{"push", "delete", "pull", "retention"}

// Defaults of an endpoint's settings.
const (
	DefaultNotificationTimeout    = 5 * time.Second
	DefaultNotificationBackoff    = time.Second
	DefaultNotificationBackoffMax = 5 * time.Minute
	DefaultNotificationMaxAge     = 24 * time.Hour
	DefaultNotificationMaxEvents  = 100000
)

// Lifecycle configures tag classes, immutability, retention and the cleanup jobs.
type Lifecycle struct {
	Classes   TagClasses  `mapstructure:"classes"`
	Immutable []Immutable `mapstructure:"immutable"`
	Retention []Retention `mapstructure:"retention"`
	GC        GC          `mapstructure:"gc"`
	Uploads   Uploads     `mapstructure:"uploads"`
	// Accessories: tags naming another manifest by digest (signatures, attestations,
	// SBOMs, the referrers tag) and referrers follow that manifest.
	Accessories Accessories `mapstructure:"accessories"`
	// Admins may call /-/admin/ when authentication is on ("user:NAME", "group:NAME").
	Admins []string `mapstructure:"admins"`
}

// Accessories configures how accessories (cosign's sha256-<hex>.sig/.att/.sbom tags, the
// referrers tag sha256-<hex>, referrers) follow their subject.
type Accessories struct {
	// Tags are patterns of accessory tags for in-house tools, besides the built-in
	// schemes: regular expressions naming the subject digest's algorithm and hex as the
	// groups alg and hex.
	Tags []string `mapstructure:"tags"`
	// DeleteWithSubject: when a manifest is deleted, its accessory tags and referrers
	// go too, after the GC grace (default true).
	DeleteWithSubject bool `mapstructure:"delete_with_subject"`
}

// TagClasses override the patterns of tag classes (regular expressions).
type TagClasses struct {
	Release  string `mapstructure:"release"`
	RC       string `mapstructure:"rc"`
	Snapshot string `mapstructure:"snapshot"`
}

// Immutable protects release tags of some repositories.
type Immutable struct {
	Registries   []string `mapstructure:"registries"`
	Repositories []string `mapstructure:"repositories"`
	RCs          bool     `mapstructure:"rcs"`          // protect release candidates too
	AllowDelete  bool     `mapstructure:"allow_delete"` // deleting a protected tag is allowed
}

// Retention is one retention policy: a tag is kept when any of its rules keeps it.
type Retention struct {
	Name          string        `mapstructure:"name"`
	Registries    []string      `mapstructure:"registries"`
	Repositories  []string      `mapstructure:"repositories"`
	Schedule      time.Duration `mapstructure:"schedule"` // run every; 0: only on demand
	Semver        *SemverRule   `mapstructure:"semver"`
	PulledWithin  time.Duration `mapstructure:"pulled_within"`
	PushedWithin  time.Duration `mapstructure:"pushed_within"`
	KeepLast      int           `mapstructure:"keep_last"`
	Keep          []string      `mapstructure:"keep"` // tag patterns (regular expressions)
	Snapshots     *SnapshotRule `mapstructure:"snapshots"`
	RCs           *RCRule       `mapstructure:"rcs"`
	UntaggedGrace time.Duration `mapstructure:"untagged_grace"`
}

// SemverRule keeps the newest N majors, M minors of the newest, P patches each.
type SemverRule struct {
	Majors  int    `mapstructure:"majors"`
	Minors  int    `mapstructure:"minors"`
	Patches string `mapstructure:"patches"` // a number or "all"
}

// SnapshotRule keeps the newest snapshots of each version.
type SnapshotRule struct {
	KeepPerVersion int  `mapstructure:"keep_per_version"`
	DropReleased   bool `mapstructure:"drop_released"`
}

// RCRule keeps release candidates until their release exists.
type RCRule struct {
	DropReleased bool `mapstructure:"drop_released"`
}

// GC configures garbage collection.
type GC struct {
	Interval time.Duration `mapstructure:"interval"` // 0: only on demand
	Grace    time.Duration `mapstructure:"grace"`
}

// Uploads configures the purge of abandoned uploads.
type Uploads struct {
	PurgeAfter time.Duration `mapstructure:"purge_after"`
	Interval   time.Duration `mapstructure:"interval"`
}

// TLS serves the listener over HTTPS; the files are re-read when they change.
type TLS struct {
	CertFile string `mapstructure:"cert_file"`
	KeyFile  string `mapstructure:"key_file"`
}

// Auth configures authentication and authorisation.
type Auth struct {
	Mode      string     `mapstructure:"mode"` // none, basic, token
	UsersFile string     `mapstructure:"users_file"`
	LDAP      LDAP       `mapstructure:"ldap"`
	Token     Token      `mapstructure:"token"`
	Rules     []AuthRule `mapstructure:"rules"`
	RateLimit RateLimit  `mapstructure:"rate_limit"`
}

// LDAP configures a directory (enabled when url is set).
type LDAP struct {
	URL                string        `mapstructure:"url"`
	StartTLS           bool          `mapstructure:"start_tls"`
	InsecureSkipVerify bool          `mapstructure:"insecure_skip_verify"`
	CAFile             string        `mapstructure:"ca_file"`
	BindDN             string        `mapstructure:"bind_dn"`
	BindPasswordFile   string        `mapstructure:"bind_password_file"`
	BindPasswordEnv    string        `mapstructure:"bind_password_env"`
	UserBase           string        `mapstructure:"user_base"`
	UserFilter         string        `mapstructure:"user_filter"`
	UsernameAttr       string        `mapstructure:"username_attr"`
	GroupBase          string        `mapstructure:"group_base"`
	GroupFilter        string        `mapstructure:"group_filter"`
	GroupNameAttr      string        `mapstructure:"group_name_attr"`
	MemberOfAttr       string        `mapstructure:"member_of_attr"`
	Nested             bool          `mapstructure:"nested"`
	Timeout            time.Duration `mapstructure:"timeout"`
	PoolSize           int           `mapstructure:"pool_size"`
	CacheTTL           time.Duration `mapstructure:"cache_ttl"`
}

// Token configures the Docker token service.
type Token struct {
	Issuer     string        `mapstructure:"issuer"`
	KeyFile    string        `mapstructure:"key_file"` // PEM EC P-256 or RSA; default data/auth/token-key.pem, created
	TTL        time.Duration `mapstructure:"ttl"`
	RefreshTTL time.Duration `mapstructure:"refresh_ttl"`
	Hosts      []TokenHost   `mapstructure:"hosts"`
}

// TokenHost overrides the realm and service for one Host.
type TokenHost struct {
	Host    string `mapstructure:"host"`
	Realm   string `mapstructure:"realm"`
	Service string `mapstructure:"service"`
}

// AuthRule gives subjects actions on repositories of registries.
type AuthRule struct {
	Subjects     []string `mapstructure:"subjects"`
	Registries   []string `mapstructure:"registries"`
	Repositories []string `mapstructure:"repositories"`
	Actions      []string `mapstructure:"actions"`
}

// RateLimit locks out a user or address after repeated failed logins.
type RateLimit struct {
	Failures int           `mapstructure:"failures"`
	Window   time.Duration `mapstructure:"window"`
	Lockout  time.Duration `mapstructure:"lockout"`
}

// Log configures logging.
type Log struct {
	Level  string `mapstructure:"level"`  // debug, info, warn, error
	Format string `mapstructure:"format"` // text or json
	// Access: one line per request (msg=access), whatever the level.
	Access bool `mapstructure:"access"`
}

// Metrics configures the Prometheus metrics: at /metrics on the main listener (for
// loopback clients, or admins with authentication on), or on Listen, an address of
// their own (no authentication: bind it to an internal network).
type Metrics struct {
	Enabled bool   `mapstructure:"enabled"`
	Listen  string `mapstructure:"listen"`
}

// HTTP configures the listener.
type HTTP struct {
	// HeaderTimeout bounds the wait for a request's line and headers (a new
	// connection's first request from the moment it opens); ReadTimeout then bounds a
	// body that is not blob data, and any pause within blob data; UploadTimeout bounds
	// a blob upload's body as a whole. WriteTimeout bounds each write of a response
	// (a client taking nothing of it for so long is cut off), not a response as a
	// whole; 0: ReadTimeout.
	HeaderTimeout   time.Duration `mapstructure:"header_timeout"`
	ReadTimeout     time.Duration `mapstructure:"read_timeout"`
	UploadTimeout   time.Duration `mapstructure:"upload_timeout"`
	IdleTimeout     time.Duration `mapstructure:"idle_timeout"`
	WriteTimeout    time.Duration `mapstructure:"write_timeout"`
	MaxManifestSize ByteSize      `mapstructure:"max_manifest_size"`
	// MaxHeaderSize bounds a request's line and headers together; MaxBodySize the
	// body of any request but a blob upload or a manifest.
	MaxHeaderSize ByteSize `mapstructure:"max_header_size"`
	MaxBodySize   ByteSize `mapstructure:"max_body_size"`
	// MaxConns bounds the open connections, MaxConnsPerIP those from one address
	// (an IPv6 /64); trusted proxies are exempt from the latter. 0: no limit.
	MaxConns      int `mapstructure:"max_conns"`
	MaxConnsPerIP int `mapstructure:"max_conns_per_ip"`
	// RateLimit bounds each client's requests to the costly endpoints: the catalog,
	// search and the token endpoint.
	RateLimit HTTPRateLimit `mapstructure:"rate_limit"`
	// ShutdownTimeout bounds how long a stopping server (SIGTERM) lets requests in
	// flight finish before it closes their connections.
	ShutdownTimeout time.Duration `mapstructure:"shutdown_timeout"`
	CORS            CORS          `mapstructure:"cors"`
	// TrustedProxies are addresses or CIDR ranges of load balancers and TLS
	// terminators whose X-Forwarded-For header names the real client.
	TrustedProxies []string `mapstructure:"trusted_proxies"`
}

// HTTPRateLimit is a token bucket per client address: PerSecond requests a second on
// average, Burst at once. PerSecond 0 turns it off.
type HTTPRateLimit struct {
	PerSecond float64 `mapstructure:"per_second"`
	Burst     int     `mapstructure:"burst"`
}

// CORS configures cross-origin access for browser clients.
type CORS struct {
	AllowedOrigins   []string      `mapstructure:"allowed_origins"`
	AllowedMethods   []string      `mapstructure:"allowed_methods"`
	AllowedHeaders   []string      `mapstructure:"allowed_headers"`
	ExposedHeaders   []string      `mapstructure:"exposed_headers"`
	AllowCredentials bool          `mapstructure:"allow_credentials"`
	MaxAge           time.Duration `mapstructure:"max_age"`
}

// Storage configures where blobs live.
type Storage struct {
	Driver string `mapstructure:"driver"` // filesystem or s3
	// MinFreeSpace is the free space of the data directory's filesystem under which
	// uploads are refused (507); 0 disables the reserve.
	MinFreeSpace ByteSize `mapstructure:"min_free_space"`
	S3           S3       `mapstructure:"s3"`
}

// Index configures where the index lives: Badger under the data directory (one
// machine) or a PostgreSQL database several instances share.
type Index struct {
	Driver   string   `mapstructure:"driver"` // badger or postgres
	Postgres Postgres `mapstructure:"postgres"`
}

// Postgres configures the PostgreSQL index (index.driver: postgres).
type Postgres struct {
	// DSN, or DSNEnv naming an environment variable holding it:
	// postgres://user@host:5432/dockyard?sslmode=verify-full.
	DSN    string `mapstructure:"dsn"`
	DSNEnv string `mapstructure:"dsn_env"`
	// PasswordFile holds the password, when the DSN has none.
	PasswordFile string        `mapstructure:"password_file"`
	MaxConns     int           `mapstructure:"max_conns"`
	Timeout      time.Duration `mapstructure:"timeout"` // bounds one transaction
}

// S3 configures the S3 blob store (storage.driver: s3).
type S3 struct {
	// Endpoint is the server's URL; empty means AWS.
	Endpoint  string `mapstructure:"endpoint"`
	Region    string `mapstructure:"region"`
	Bucket    string `mapstructure:"bucket"`
	Prefix    string `mapstructure:"prefix"`
	PathStyle bool   `mapstructure:"path_style"`
	// Redirect answers blob GETs with 307 to a presigned URL valid RedirectExpiry.
	Redirect       bool          `mapstructure:"redirect"`
	RedirectExpiry time.Duration `mapstructure:"redirect_expiry"`
	PartSize       ByteSize      `mapstructure:"part_size"`
	CAFile         string        `mapstructure:"ca_file"`
	// AccessKeyID with a secret from a file or an environment variable; empty means
	// the AWS default credential chain.
	AccessKeyID         string `mapstructure:"access_key_id"`
	SecretAccessKeyFile string `mapstructure:"secret_access_key_file"`
	SecretAccessKeyEnv  string `mapstructure:"secret_access_key_env"`
}

// Limits bound what one instance spends on its clients.
type Limits struct {
	// UploadBuffers is the memory of copy buffers shared by uploads and proxy fills.
	UploadBuffers ByteSize `mapstructure:"upload_buffers"`
	// ManifestCache is the manifest bytes kept in memory.
	ManifestCache ByteSize `mapstructure:"manifest_cache"`
	// UploadSessionsPerClient bounds the open uploads of one user (or anonymous
	// address); 0: no limit.
	UploadSessionsPerClient int `mapstructure:"upload_sessions_per_client"`
}

// Registry is one virtual registry.
type Registry struct {
	Name string `mapstructure:"name"`
	Type string `mapstructure:"type"` // hosted, proxy or group
	// SparseIndex (hosted) accepts manifests whose child manifests or layers were not
	// pushed.
	SparseIndex bool `mapstructure:"sparse_index"`
	// Upstream (proxy) is the registry this one caches.
	Upstream Upstream `mapstructure:"upstream"`
	// Members (group) are walked in order; PushTo names the hosted member that
	// receives pushes (none: pushes are denied).
	Members []string `mapstructure:"members"`
	PushTo  string   `mapstructure:"push_to"`
	// Cache (proxy) limits what the proxy keeps: least recently pulled content goes
	// first when over max_size, and content not pulled within pulled_within goes.
	Cache ProxyCache `mapstructure:"cache"`
}

// ProxyCache limits a proxy's cache; the GC job enforces it.
type ProxyCache struct {
	MaxSize      ByteSize      `mapstructure:"max_size"`
	PulledWithin time.Duration `mapstructure:"pulled_within"`
}

// Upstream configures a proxy's upstream registry.
type Upstream struct {
	URL string `mapstructure:"url"` // https://ghcr.io, http://127.0.0.1:5001
	// Credentials: a username with a password read from a file or an environment
	// variable; none means anonymous (with the Bearer token flow where the upstream
	// asks for it).
	Username     string `mapstructure:"username"`
	PasswordFile string `mapstructure:"password_file"`
	PasswordEnv  string `mapstructure:"password_env"`
	CAFile       string `mapstructure:"ca_file"`  // extra CA certificates for the upstream's TLS
	Insecure     bool   `mapstructure:"insecure"` // skip TLS verification
	// Timeout bounds connecting, waiting for response headers, and a manifest's body
	// (not whole blob downloads, which only fail when the upstream stops sending for
	// this long).
	Timeout time.Duration `mapstructure:"timeout"`
	// TagTTL is how long a tag fetched from upstream is served before it is
	// revalidated; NegativeTTL how long an upstream 404 is remembered.
	TagTTL      time.Duration `mapstructure:"tag_ttl"`
	NegativeTTL time.Duration `mapstructure:"negative_ttl"`
	// MaxSize refuses to cache blobs larger than this (0: no limit).
	MaxSize ByteSize `mapstructure:"max_size"`
}

// Route maps a Host pattern to a registry. Namespaces route a leading repository
// component inside the host to another registry: {ghcr: ghcr} sends /v2/ghcr/org/img/…
// to registry ghcr as repository org/img.
type Route struct {
	Host       string            `mapstructure:"host"`
	Registry   string            `mapstructure:"registry"`
	Namespaces map[string]string `mapstructure:"namespaces"`
}

// ByteSize is a size written as "4MiB", "512KB" or a plain number of bytes.
type ByteSize int64

// DefaultRegistry is the registry of the embedded default configuration.
const DefaultRegistry = "default"

func setDefaults(v *viper.Viper) {
	v.SetDefault("listen", ":5000")
	v.SetDefault("data", "./data")
	v.SetDefault("log.level", "info")
	v.SetDefault("log.format", "text")
	v.SetDefault("log.access", true)
	v.SetDefault("metrics.enabled", true)
	v.SetDefault("metrics.listen", "")
	v.SetDefault("http.header_timeout", "30s")
	v.SetDefault("http.read_timeout", "1m")
	v.SetDefault("http.upload_timeout", "1h")
	v.SetDefault("http.idle_timeout", "2m")
	v.SetDefault("http.write_timeout", "1m")
	v.SetDefault("http.shutdown_timeout", "30s")
	v.SetDefault("http.max_manifest_size", "4MiB")
	v.SetDefault("http.max_header_size", "16KiB")
	v.SetDefault("http.max_body_size", "1MiB")
	v.SetDefault("http.max_conns", 8192)
	v.SetDefault("http.max_conns_per_ip", 1024)
	v.SetDefault("http.rate_limit.per_second", 50)
	v.SetDefault("http.rate_limit.burst", 500)
	v.SetDefault("http.trusted_proxies", []string{})
	v.SetDefault("http.cors.allowed_origins", []string{})
	v.SetDefault("http.cors.allowed_methods", []string{"GET", "HEAD", "OPTIONS"})
	v.SetDefault("http.cors.allowed_headers", []string{"Authorization", "Accept", "Content-Type", "Range"})
	v.SetDefault("http.cors.exposed_headers", []string{"Docker-Content-Digest", "Content-Length", "Link", "Location", "Range"})
	v.SetDefault("http.cors.allow_credentials", false)
	v.SetDefault("http.cors.max_age", "10m")
	v.SetDefault("storage.driver", "filesystem")
	v.SetDefault("storage.min_free_space", "1GiB")
	v.SetDefault("index.driver", "badger")
	v.SetDefault("index.postgres.dsn", "")
	v.SetDefault("index.postgres.dsn_env", "")
	v.SetDefault("index.postgres.password_file", "")
	v.SetDefault("index.postgres.max_conns", 16)
	v.SetDefault("index.postgres.timeout", "30s")
	v.SetDefault("storage.s3.endpoint", "")
	v.SetDefault("storage.s3.region", "us-east-1")
	v.SetDefault("storage.s3.bucket", "")
	v.SetDefault("storage.s3.prefix", "")
	v.SetDefault("storage.s3.path_style", false)
	v.SetDefault("storage.s3.redirect", false)
	v.SetDefault("storage.s3.redirect_expiry", "20m")
	v.SetDefault("storage.s3.part_size", "16MiB")
	v.SetDefault("storage.s3.ca_file", "")
	v.SetDefault("storage.s3.access_key_id", "")
	v.SetDefault("storage.s3.secret_access_key_file", "")
	v.SetDefault("storage.s3.secret_access_key_env", "")
	v.SetDefault("limits.upload_buffers", "64MiB")
	v.SetDefault("limits.manifest_cache", "32MiB")
	v.SetDefault("limits.upload_sessions_per_client", 256)
	v.SetDefault("auth.mode", "none")
	v.SetDefault("auth.users_file", "")
	v.SetDefault("auth.token.issuer", "dockyard")
	v.SetDefault("auth.token.key_file", "")
	v.SetDefault("auth.token.ttl", "5m")
	v.SetDefault("auth.token.refresh_ttl", "720h")
	v.SetDefault("auth.ldap.url", "")
	v.SetDefault("auth.ldap.timeout", "5s")
	v.SetDefault("auth.ldap.pool_size", 4)
	v.SetDefault("auth.ldap.cache_ttl", "1m")
	v.SetDefault("auth.ldap.user_filter", "(uid={username})")
	v.SetDefault("auth.ldap.username_attr", "uid")
	v.SetDefault("auth.ldap.group_filter", "(|(member={dn})(uniqueMember={dn}))")
	v.SetDefault("auth.ldap.group_name_attr", "cn")
	v.SetDefault("auth.rate_limit.failures", 10)
	v.SetDefault("auth.rate_limit.window", "1m")
	v.SetDefault("auth.rate_limit.lockout", "5m")
	v.SetDefault("tls.cert_file", "")
	v.SetDefault("lifecycle.gc.interval", "1h")
	v.SetDefault("lifecycle.gc.grace", "1h")
	v.SetDefault("lifecycle.uploads.purge_after", "24h")
	v.SetDefault("lifecycle.uploads.interval", "1h")
	v.SetDefault("lifecycle.classes.release", "")
	v.SetDefault("lifecycle.accessories.delete_with_subject", true)
	v.SetDefault("lifecycle.accessories.tags", []string{})
	v.SetDefault("lifecycle.classes.rc", "")
	v.SetDefault("lifecycle.classes.snapshot", "")
	v.SetDefault("tls.key_file", "")
}

// Load reads the configuration: built-in defaults, then the YAML file at path (if
// path is not empty), then DOCKYARD_* environment variables (DOCKYARD_HTTP_IDLE_TIMEOUT
// sets http.idle_timeout). The result is validated; every problem is reported at once.
func Load(path string) (*Config, error) {
	v := viper.New()
	setDefaults(v)
	v.SetEnvPrefix("DOCKYARD")
	v.SetEnvKeyReplacer(strings.NewReplacer(".", "_"))
	v.AutomaticEnv()
	if path != "" {
		v.SetConfigFile(path)
		v.SetConfigType("yaml")
		if err := v.ReadInConfig(); err != nil {
			return nil, fmt.Errorf("read config %s: %w", path, err)
		}
	}
	var c Config
	var problems []string
	decodeErr := v.Unmarshal(&c, func(dc *mapstructure.DecoderConfig) {
		dc.ErrorUnused = true
		dc.DecodeHook = mapstructure.ComposeDecodeHookFunc(
			durationHook,
			headerValueHook,
			mapstructure.StringToSliceHookFunc(","),
			byteSizeHook,
		)
	})
	if decodeErr != nil {
		problems = append(problems, unwrapAll(decodeErr)...)
	}
	c.applyDefaults()
	if path != "" {
		c.resolvePaths(filepath.Dir(path))
	}
	if err := c.Validate(); err != nil {
		problems = append(problems, unwrapAll(err)...)
	}
	if len(problems) > 0 {
		return nil, &Error{File: path, Problems: problems}
	}
	return &c, nil
}

// Error lists every problem found in a configuration.
type Error struct {
	File     string
	Problems []string
}

func (e *Error) Error() string {
	src := e.File
	if src == "" {
		src = "built-in configuration"
	}
	return fmt.Sprintf("invalid configuration (%s):\n  - %s", src, strings.Join(e.Problems, "\n  - "))
}

func unwrapAll(err error) []string {
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		var out []string
		for _, e := range j.Unwrap() {
			out = append(out, unwrapAll(e)...)
		}
		return out
	}
	var out []string
	for _, line := range strings.Split(err.Error(), "\n") {
		line = strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(line), "*"))
		if line == "" || strings.HasPrefix(line, "decoding failed due to the following error") || strings.HasSuffix(line, "error(s) decoding:") {
			continue
		}
		// mapstructure says "'a.b' has invalid keys: x"; say it like the other problems.
		if m := quotedKey.FindStringSubmatch(line); m != nil {
			key, rest := m[1], strings.TrimSpace(m[2])
			if r, ok := strings.CutPrefix(rest, "has invalid keys:"); ok {
				rest = "unknown keys:" + r
			}
			if key == "" {
				line = rest
			} else {
				line = key + ": " + rest
			}
		}
		out = append(out, line)
	}
	return out
}

// resolvePaths makes the file paths of a configuration file relative to its directory.
func (c *Config) resolvePaths(dir string) {
	fix := func(p *string) {
		if *p != "" && !filepath.IsAbs(*p) {
			*p = filepath.Join(dir, *p)
		}
	}
	for i := range c.Registries {
		fix(&c.Registries[i].Upstream.PasswordFile)
		fix(&c.Registries[i].Upstream.CAFile)
	}
	fix(&c.Auth.UsersFile)
	fix(&c.Storage.S3.CAFile)
	fix(&c.Index.Postgres.PasswordFile)
	fix(&c.Storage.S3.SecretAccessKeyFile)
	fix(&c.Auth.LDAP.CAFile)
	fix(&c.Auth.LDAP.BindPasswordFile)
	fix(&c.Auth.Token.KeyFile)
	fix(&c.TLS.CertFile)
	fix(&c.TLS.KeyFile)
	for i := range c.Notifications {
		n := &c.Notifications[i]
		fix(&n.SecretFile)
		for name, h := range n.Headers {
			fix(&h.File)
			n.Headers[name] = h
		}
	}
}

// ParsePrefix reads an address ("10.0.0.1", "::1") or a CIDR range ("10.0.0.0/8").
func ParsePrefix(s string) (netip.Prefix, error) {
	if p, err := netip.ParsePrefix(s); err == nil {
		return p.Masked(), nil
	}
	a, err := netip.ParseAddr(s)
	if err != nil {
		return netip.Prefix{}, fmt.Errorf("%q is neither an address nor a CIDR range", s)
	}
	a = a.Unmap()
	return netip.PrefixFrom(a, a.BitLen()), nil
}

// The bounds of http.max_header_size: below 4 KiB a bearer token with a few scopes
// does not fit; past 1 MiB each slow connection would hold that much.
const (
	MinHeaderSize = 4 << 10
	MaxHeaderSize = 1 << 20
)

// Defaults of a proxy's upstream settings.
const (
	DefaultUpstreamTimeout = 30 * time.Second
	DefaultTagTTL          = 10 * time.Minute
	DefaultNegativeTTL     = 30 * time.Second
)

// applyDefaults fills what viper cannot default inside lists, and gives a
// configuration without registries the embedded default: one hosted registry
// answering every host.
func (c *Config) applyDefaults() {
	for i := range c.Registries {
		u := &c.Registries[i].Upstream
		if c.Registries[i].Type != "proxy" {
			continue
		}
		if u.Timeout == 0 {
			u.Timeout = DefaultUpstreamTimeout
		}
		if u.TagTTL == 0 {
			u.TagTTL = DefaultTagTTL
		}
		if u.NegativeTTL == 0 {
			u.NegativeTTL = DefaultNegativeTTL
		}
	}
	for i := range c.Notifications {
		n := &c.Notifications[i]
		for _, d := range []struct {
			v   *time.Duration
			def time.Duration
		}{{&n.Timeout, DefaultNotificationTimeout}, {&n.BackoffInitial, DefaultNotificationBackoff},
			{&n.BackoffMax, DefaultNotificationBackoffMax}, {&n.MaxAge, DefaultNotificationMaxAge}} {
			if *d.v == 0 {
				*d.v = d.def
			}
		}
		if n.MaxEvents == 0 {
			n.MaxEvents = DefaultNotificationMaxEvents
		}
	}
	if len(c.Registries) == 0 {
		c.Registries = []Registry{{Name: DefaultRegistry, Type: "hosted"}}
		if len(c.Routes) == 0 {
			c.Routes = []Route{{Host: "*", Registry: DefaultRegistry}}
		}
	}
}

// Validate checks the whole configuration and returns every problem found, each
// naming its key path.
func (c *Config) Validate() error {
	var errs []error
	bad := func(path, format string, args ...any) {
		errs = append(errs, fmt.Errorf("%s: %s", path, fmt.Sprintf(format, args...)))
	}
	if c.Listen == "" {
		bad("listen", "must be an address such as :5000")
	}
	if c.Data == "" {
		bad("data", "must be a directory")
	}
	if !slices.Contains([]string{"debug", "info", "warn", "error"}, c.Log.Level) {
		bad("log.level", "must be debug, info, warn or error, not %q", c.Log.Level)
	}
	if !slices.Contains([]string{"text", "json"}, c.Log.Format) {
		bad("log.format", "must be text or json, not %q", c.Log.Format)
	}
	// Every duration and size, wherever it is: a setting added later cannot forget it.
	negatives(reflect.ValueOf(*c), "", bad)
	for i, p := range c.HTTP.TrustedProxies {
		if _, err := ParsePrefix(p); err != nil {
			bad(fmt.Sprintf("http.trusted_proxies[%d]", i), "%v", err)
		}
	}
	if c.HTTP.MaxManifestSize == 0 {
		bad("http.max_manifest_size", "must be positive")
	}
	if h := c.HTTP.MaxHeaderSize; h < MinHeaderSize || h > MaxHeaderSize {
		bad("http.max_header_size", "must be between %s and %s (long Authorization headers need several KiB)",
			humanize.IBytes(MinHeaderSize), humanize.IBytes(MaxHeaderSize))
	}
	if c.HTTP.MaxBodySize == 0 {
		bad("http.max_body_size", "must be positive")
	}
	if c.HTTP.MaxConns < 0 {
		bad("http.max_conns", "must not be negative (0: no limit)")
	}
	if c.HTTP.MaxConnsPerIP < 0 {
		bad("http.max_conns_per_ip", "must not be negative (0: no limit)")
	}
	if r := c.HTTP.RateLimit; r.PerSecond < 0 {
		bad("http.rate_limit.per_second", "must not be negative (0: no limit)")
	} else if r.PerSecond > 0 && r.Burst < 1 {
		bad("http.rate_limit.burst", "must be at least 1 while per_second is set")
	}
	switch c.Index.Driver {
	case "badger":
	case "postgres":
		p := c.Index.Postgres
		if (p.DSN == "") == (p.DSNEnv == "") {
			bad("index.postgres", "set dsn or dsn_env (one of them)")
		}
		if p.DSN != "" && !strings.HasPrefix(p.DSN, "postgres://") && !strings.HasPrefix(p.DSN, "postgresql://") {
			bad("index.postgres.dsn", "must be a postgres:// URL")
		}
		if p.PasswordFile != "" {
			if _, err := os.Stat(p.PasswordFile); err != nil {
				bad("index.postgres.password_file", "cannot be read: %v", err)
			}
		}
		if p.MaxConns <= 0 {
			bad("index.postgres.max_conns", "must be positive")
		}
		if p.Timeout == 0 {
			bad("index.postgres.timeout", "must be positive")
		}
	default:
		bad("index.driver", "must be badger or postgres, not %q", c.Index.Driver)
	}
	switch c.Storage.Driver {
	case "filesystem":
	case "s3":
		c.validateS3(bad)
	default:
		bad("storage.driver", "must be filesystem or s3, not %q", c.Storage.Driver)
	}
	if c.Limits.UploadBuffers == 0 {
		bad("limits.upload_buffers", "must be positive")
	}
	if c.Limits.ManifestCache == 0 {
		bad("limits.manifest_cache", "must be positive")
	}
	if c.Limits.UploadSessionsPerClient < 0 {
		bad("limits.upload_sessions_per_client", "must not be negative (0: no limit)")
	}
	types := map[string]string{}
	for i, r := range c.Registries {
		p := fmt.Sprintf("registries[%d]", i)
		switch {
		case r.Name == "":
			bad(p+".name", "is required")
		case types[r.Name] != "":
			bad(p+".name", "%q is used twice", r.Name)
		}
		types[r.Name] = r.Type
		if r.Type != "hosted" && r.Type != "proxy" && r.Type != "group" {
			bad(p+".type", "must be hosted, proxy or group, not %q", r.Type)
			types[r.Name] = "?"
		}
		if r.Type == "proxy" {
			c.validateUpstream(p+".upstream", r.Upstream, bad)
		} else if r.Upstream != (Upstream{}) {
			bad(p+".upstream", "only proxy registries have an upstream")
		}
		if r.Type != "proxy" && r.Cache != (ProxyCache{}) {
			bad(p+".cache", "only proxy registries have cache limits")
		}
		if r.Type != "group" && (len(r.Members) > 0 || r.PushTo != "") {
			bad(p, "only group registries have members and push_to")
		}
	}
	for i, r := range c.Registries {
		if r.Type != "group" {
			continue
		}
		p := fmt.Sprintf("registries[%d]", i)
		if len(r.Members) == 0 {
			bad(p+".members", "a group needs at least one member")
		}
		for j, m := range r.Members {
			switch t := types[m]; {
			case t == "":
				bad(fmt.Sprintf("%s.members[%d]", p, j), "names no configured registry: %q", m)
			case t == "group":
				bad(fmt.Sprintf("%s.members[%d]", p, j), "%q is a group; groups cannot be nested", m)
			}
		}
		if r.PushTo != "" {
			if types[r.PushTo] != "hosted" || !slices.Contains(r.Members, r.PushTo) {
				bad(p+".push_to", "must name a hosted member of the group, not %q", r.PushTo)
			}
		}
	}
	hosts := map[string]bool{}
	for i, r := range c.Routes {
		p := fmt.Sprintf("routes[%d]", i)
		if r.Host == "" {
			bad(p+".host", "is required (an exact name, *.domain or *)")
		} else if hosts[strings.ToLower(r.Host)] {
			bad(p+".host", "%q is routed twice", r.Host)
		}
		hosts[strings.ToLower(r.Host)] = true
		if types[r.Registry] == "" {
			bad(p+".registry", "names no configured registry: %q", r.Registry)
		}
		for ns, reg := range r.Namespaces {
			if strings.Contains(ns, "/") || ns == "" {
				bad(p+".namespaces."+ns, "a namespace is one repository component")
			}
			if types[reg] == "" {
				bad(p+".namespaces."+ns, "names no configured registry: %q", reg)
			}
		}
	}
	c.validateAuth(types, bad)
	c.validateLifecycle(types, bad)
	c.validateNotifications(types, bad)
	if (c.TLS.CertFile == "") != (c.TLS.KeyFile == "") {
		bad("tls", "set both cert_file and key_file, or neither")
	}
	for _, f := range []struct{ path, file string }{{"tls.cert_file", c.TLS.CertFile}, {"tls.key_file", c.TLS.KeyFile}} {
		if f.file != "" {
			if _, err := os.Stat(f.file); err != nil {
				bad(f.path, "cannot be read: %v", err)
			}
		}
	}
	return errors.Join(errs...)
}

func (c *Config) validateAuth(types map[string]string, bad func(path, format string, args ...any)) {
	a := c.Auth
	switch a.Mode {
	case "none", "basic", "token":
	default:
		bad("auth.mode", "must be none, basic or token, not %q", a.Mode)
	}
	if a.Mode != "none" && a.UsersFile == "" && a.LDAP.URL == "" && len(a.Rules) == 0 {
		bad("auth", "mode %s needs users_file, ldap or rules", a.Mode)
	}
	if a.UsersFile != "" {
		if _, err := os.Stat(a.UsersFile); err != nil {
			bad("auth.users_file", "cannot be read: %v", err)
		}
	}
	if l := a.LDAP; l.URL != "" {
		if !strings.HasPrefix(l.URL, "ldap://") && !strings.HasPrefix(l.URL, "ldaps://") {
			bad("auth.ldap.url", "must start with ldap:// or ldaps://")
		}
		if l.UserBase == "" {
			bad("auth.ldap.user_base", "is required")
		}
		if !strings.Contains(l.UserFilter, "{username}") {
			bad("auth.ldap.user_filter", "must contain {username}")
		}
		if l.GroupBase == "" {
			// With member_of_attr too: only groups under group_base count, or any
			// group a user can create elsewhere would grant rights.
			bad("auth.ldap.group_base", "is required (groups are searched there, and with member_of_attr only groups under it count)")
		}
		if l.MemberOfAttr == "" && !strings.Contains(l.GroupFilter, "{dn}") {
			bad("auth.ldap.group_filter", "must contain {dn}")
		}
	}
	for i, r := range a.Rules {
		p := fmt.Sprintf("auth.rules[%d]", i)
		if len(r.Subjects) == 0 || len(r.Registries) == 0 || len(r.Repositories) == 0 || len(r.Actions) == 0 {
			bad(p, "subjects, registries, repositories and actions are all required")
		}
		for _, s := range r.Subjects {
			if s != "anonymous" && s != "authenticated" && !strings.HasPrefix(s, "user:") && !strings.HasPrefix(s, "group:") {
				bad(p+".subjects", "%q must be user:NAME, group:NAME, anonymous or authenticated", s)
			}
		}
		for _, reg := range r.Registries {
			if reg != "*" && types[reg] == "" {
				bad(p+".registries", "names no configured registry: %q", reg)
			}
		}
		for _, act := range r.Actions {
			if act != "pull" && act != "push" && act != "delete" {
				bad(p+".actions", "%q must be pull, push or delete", act)
			}
		}
	}
}

func (c *Config) validateLifecycle(types map[string]string, bad func(path, format string, args ...any)) {
	l := c.Lifecycle
	for _, p := range []struct{ path, re string }{{"lifecycle.classes.release", l.Classes.Release}, {"lifecycle.classes.rc", l.Classes.RC}, {"lifecycle.classes.snapshot", l.Classes.Snapshot}} {
		if _, err := regexp.Compile(p.re); err != nil {
			bad(p.path, "invalid regular expression: %v", err)
		}
	}
	for i, p := range l.Accessories.Tags {
		path := fmt.Sprintf("lifecycle.accessories.tags[%d]", i)
		re, err := regexp.Compile(p)
		if err != nil {
			bad(path, "invalid regular expression: %v", err)
		} else if re.SubexpIndex("alg") < 0 || re.SubexpIndex("hex") < 0 {
			bad(path, "must name the subject digest's algorithm and hex as (?P<alg>…) and (?P<hex>…)")
		}
	}
	checkRegs := func(path string, regs []string) {
		for _, r := range regs {
			if r != "*" && types[r] == "" {
				bad(path, "names no configured registry: %q", r)
			}
		}
	}
	for i, im := range l.Immutable {
		p := fmt.Sprintf("lifecycle.immutable[%d]", i)
		if len(im.Registries) == 0 || len(im.Repositories) == 0 {
			bad(p, "registries and repositories are required")
		}
		checkRegs(p+".registries", im.Registries)
	}
	policyNames := map[string]bool{}
	for i, r := range l.Retention {
		p := fmt.Sprintf("lifecycle.retention[%d]", i)
		if r.Name != "" && policyNames[r.Name] {
			bad(p+".name", "%q is used twice; a policy is run, locked and scheduled by its name", r.Name)
		}
		policyNames[r.Name] = true
		if len(r.Registries) == 0 || len(r.Repositories) == 0 {
			bad(p, "registries and repositories are required")
		}
		checkRegs(p+".registries", r.Registries)
		for _, reg := range r.Registries {
			if t := types[reg]; t != "" && t != "hosted" {
				bad(p+".registries", "retention applies to hosted registries; %q is a %s", reg, t)
			}
		}
		if s := r.Semver; s != nil && s.Patches != "all" && s.Patches != "" {
			if _, err := strconv.Atoi(s.Patches); err != nil {
				bad(p+".semver.patches", "must be a number or all")
			}
		}
		for _, k := range r.Keep {
			if _, err := regexp.Compile("^(?:" + k + ")$"); err != nil {
				bad(p+".keep", "invalid pattern %q", k)
			}
		}
	}
}

var (
	endpointName = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]*$`)
	headerName   = regexp.MustCompile("^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")
)

// reservedHeaders are set by dockyard on every delivery.
var reservedHeaders = []string{"content-type", "content-length", "host", "x-dockyard-signature", "x-dockyard-event-id"}

func (c *Config) validateNotifications(types map[string]string, bad func(path, format string, args ...any)) {
	names := map[string]bool{}
	for i, n := range c.Notifications {
		p := fmt.Sprintf("notifications[%d]", i)
		switch {
		case !endpointName.MatchString(n.Name):
			bad(p+".name", "is required: letters, digits, '.', '_' and '-' (it names the endpoint's queue), not %q", n.Name)
		case names[n.Name]:
			bad(p+".name", "%q is used twice; an endpoint's queue is kept by its name", n.Name)
		}
		names[n.Name] = true
		u, err := url.Parse(n.URL)
		if n.URL == "" || err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			bad(p+".url", "must be an http:// or https:// URL, not %q", n.URL)
		}
		if len(n.Events) == 0 {
			bad(p+".events", "list the events to send: %s", strings.Join(NotificationEvents, ", "))
		}
		for _, e := range n.Events {
			if !slices.Contains(NotificationEvents, e) {
				bad(p+".events", "%q must be one of %s", e, strings.Join(NotificationEvents, ", "))
			}
		}
		for _, r := range n.Registries {
			if r != "*" && types[r] == "" {
				bad(p+".registries", "names no configured registry: %q", r)
			}
		}
		for _, g := range n.Repositories {
			if g == "" {
				bad(p+".repositories", "a glob must not be empty")
			}
		}
		for _, name := range slices.Sorted(maps.Keys(n.Headers)) {
			h, hp := n.Headers[name], p+".headers."+name
			switch {
			case !headerName.MatchString(name):
				bad(hp, "is not a valid header name")
			case slices.Contains(reservedHeaders, strings.ToLower(name)):
				bad(hp, "is set by dockyard itself")
			}
			if (h.Value == "") == (h.File == "") {
				bad(hp, "set value or file (one of them)")
			}
			if strings.ContainsAny(h.Value, "\r\n\x00") {
				bad(hp, "a header value must not hold line breaks or NUL")
			}
			if h.File != "" {
				if _, err := os.Stat(h.File); err != nil {
					bad(hp+".file", "cannot be read: %v", err)
				}
			}
		}
		if n.SecretFile != "" {
			if _, err := os.Stat(n.SecretFile); err != nil {
				bad(p+".secret_file", "cannot be read: %v", err)
			}
		}
		if n.MaxEvents < 0 {
			bad(p+".max_events", "must not be negative")
		}
		if n.BackoffInitial > n.BackoffMax {
			bad(p+".backoff_initial", "must not exceed backoff_max (%s)", n.BackoffMax)
		}
	}
}

func (c *Config) validateS3(bad func(path, format string, args ...any)) {
	s := c.Storage.S3
	const p = "storage.s3"
	if s.Endpoint != "" {
		u, err := url.Parse(s.Endpoint)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			bad(p+".endpoint", "must be an http:// or https:// URL (or empty for AWS), not %q", s.Endpoint)
		}
	}
	if s.Bucket == "" {
		bad(p+".bucket", "must be set")
	}
	if s.Region == "" {
		bad(p+".region", "must be set (us-east-1 for most S3-compatible servers)")
	}
	if s.PartSize < 5<<20 {
		bad(p+".part_size", "must be at least 5MiB (S3's smallest multipart part), not %d bytes", int64(s.PartSize))
	}
	if s.PartSize > 5<<30 {
		bad(p+".part_size", "must be at most 5GiB (S3's largest part)")
	}
	if s.Redirect && (s.RedirectExpiry < time.Second || s.RedirectExpiry > 7*24*time.Hour) {
		bad(p+".redirect_expiry", "must be between 1s and 168h (presigned URLs last at most a week)")
	}
	if s.SecretAccessKeyFile != "" && s.SecretAccessKeyEnv != "" {
		bad(p, "set secret_access_key_file or secret_access_key_env, not both")
	}
	hasSecret := s.SecretAccessKeyFile != "" || s.SecretAccessKeyEnv != ""
	if (s.AccessKeyID != "") != hasSecret {
		bad(p, "access_key_id and a secret (secret_access_key_file or _env) go together; leave all empty for the AWS default credential chain")
	}
	for key, f := range map[string]string{"ca_file": s.CAFile, "secret_access_key_file": s.SecretAccessKeyFile} {
		if f != "" {
			if _, err := os.Stat(f); err != nil {
				bad(p+"."+key, "cannot be read: %v", err)
			}
		}
	}
}

func (c *Config) validateUpstream(p string, u Upstream, bad func(path, format string, args ...any)) {
	parsed, err := url.Parse(u.URL)
	if u.URL == "" || err != nil || (parsed.Scheme != "http" && parsed.Scheme != "https") || parsed.Host == "" {
		bad(p+".url", "must be an http:// or https:// URL, not %q", u.URL)
	}
	if u.PasswordFile != "" && u.PasswordEnv != "" {
		bad(p, "set password_file or password_env, not both")
	}
	if u.PasswordFile != "" {
		if _, err := os.Stat(u.PasswordFile); err != nil {
			bad(p+".password_file", "cannot be read: %v", err)
		}
	}
	if u.CAFile != "" {
		if _, err := os.Stat(u.CAFile); err != nil {
			bad(p+".ca_file", "cannot be read: %v", err)
		}
	}
}

var headerValueType = reflect.TypeOf(HeaderValue{})

// headerValueHook reads a header given as a plain string as its value.
func headerValueHook(from, to reflect.Type, data any) (any, error) {
	if to != headerValueType {
		return data, nil
	}
	if str, ok := data.(string); ok {
		return HeaderValue{Value: str}, nil
	}
	return data, nil
}

// durationHook reads durations with ParseDuration.
func durationHook(from, to reflect.Type, data any) (any, error) {
	if to != durationType {
		return data, nil
	}
	if str, ok := data.(string); ok {
		return ParseDuration(str)
	}
	return data, nil
}

// ParseDuration reads a Go duration or a number of days ("30d"), as retention rules
// and token lifetimes are written.
func ParseDuration(str string) (time.Duration, error) {
	if days, found := strings.CutSuffix(str, "d"); found {
		n, err := strconv.Atoi(days)
		if err != nil || n < 0 || n > math.MaxInt64/int(24*time.Hour) {
			return 0, fmt.Errorf("invalid duration %q (0 to 106751 days)", str)
		}
		return time.Duration(n) * 24 * time.Hour, nil
	}
	return time.ParseDuration(str)
}

var (
	durationType = reflect.TypeOf(time.Duration(0))
	byteSizeType = reflect.TypeOf(ByteSize(0))
)

// negatives reports every duration and size below zero in v, by its key path.
func negatives(v reflect.Value, path string, bad func(path, format string, args ...any)) {
	join := func(key string) string {
		if path == "" {
			return key
		}
		return path + "." + key
	}
	switch v.Kind() {
	case reflect.Pointer:
		if !v.IsNil() {
			negatives(v.Elem(), path, bad)
		}
	case reflect.Struct:
		for i := 0; i < v.NumField(); i++ {
			key, _, _ := strings.Cut(v.Type().Field(i).Tag.Get("mapstructure"), ",")
			negatives(v.Field(i), join(key), bad)
		}
	case reflect.Slice:
		for i := 0; i < v.Len(); i++ {
			negatives(v.Index(i), fmt.Sprintf("%s[%d]", path, i), bad)
		}
	case reflect.Map:
		keys := v.MapKeys()
		slices.SortFunc(keys, func(a, b reflect.Value) int { return strings.Compare(fmt.Sprint(a), fmt.Sprint(b)) })
		for _, k := range keys {
			negatives(v.MapIndex(k), join(fmt.Sprint(k)), bad)
		}
	case reflect.Int64:
		if (v.Type() == durationType || v.Type() == byteSizeType) && v.Int() < 0 {
			bad(path, "must not be negative")
		}
	}
}

var quotedKey = regexp.MustCompile(`^'([^']*)' (.*)$`)

func byteSizeHook(from, to reflect.Type, data any) (any, error) {
	if to != byteSizeType {
		return data, nil
	}
	switch v := data.(type) {
	case string:
		n, err := humanize.ParseBytes(v)
		if err != nil {
			return nil, fmt.Errorf("invalid size %q (use e.g. 4MiB)", v)
		}
		return ByteSize(n), nil
	case int:
		return ByteSize(v), nil
	}
	return data, nil
}

// SecretFile is a configured file holding a secret, with its key path.
type SecretFile struct{ Key, Path string }

// DefaultTokenKeyFile is where the token signing key is made and kept when
// auth.token.key_file is empty (and the index is not shared: then the index keeps it).
func (c *Config) DefaultTokenKeyFile() string {
	return filepath.Join(c.Data, "auth", "token-key.pem")
}

// SecretFiles lists the files that hold secrets (keys, passwords, the users
// file's hashes; the token signing key made in the data directory too), for the
// warning about files others may read.
func (c *Config) SecretFiles() []SecretFile {
	var out []SecretFile
	add := func(key, path string) {
		if path != "" {
			out = append(out, SecretFile{key, path})
		}
	}
	add("tls.key_file", c.TLS.KeyFile)
	add("auth.users_file", c.Auth.UsersFile)
	add("auth.ldap.bind_password_file", c.Auth.LDAP.BindPasswordFile)
	add("auth.token.key_file", c.Auth.Token.KeyFile)
	if c.Auth.Mode == "token" && c.Auth.Token.KeyFile == "" {
		add("auth.token.key_file", c.DefaultTokenKeyFile())
	}
	add("storage.s3.secret_access_key_file", c.Storage.S3.SecretAccessKeyFile)
	add("index.postgres.password_file", c.Index.Postgres.PasswordFile)
	for i, r := range c.Registries {
		add(fmt.Sprintf("registries[%d].upstream.password_file", i), r.Upstream.PasswordFile)
	}
	for i, n := range c.Notifications {
		add(fmt.Sprintf("notifications[%d].secret_file", i), n.SecretFile)
		for _, name := range slices.Sorted(maps.Keys(n.Headers)) {
			add(fmt.Sprintf("notifications[%d].headers.%s.file", i, name), n.Headers[name].File)
		}
	}
	return out
}
