package auth

import (
	"context"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/go-ldap/ldap/v3"
)

// LDAPConfig configures authentication against a directory.
type LDAPConfig struct {
	URL                string // ldap://host:389 or ldaps://host:636
	StartTLS           bool
	InsecureSkipVerify bool
	CAFile             string
	BindDN             string // service account used to find users and groups
	BindPassword       string
	UserBase           string
	UserFilter         string // "(uid={username})"; {username} is escaped
	// UsernameAttr is the attribute holding the user's canonical name ("uid"): the
	// name tokens, rules, lockouts and revocations see, however the login spelled it
	// (directories match names without regard to case or extra spaces).
	UsernameAttr  string
	GroupBase     string
	GroupFilter   string // "(|(member={dn})(uniqueMember={dn}))"; {dn} is escaped
	GroupNameAttr string // "cn"
	MemberOfAttr  string // "memberOf": take groups from the user entry instead of searching
	Nested        bool   // follow groups that are members of groups
	Timeout       time.Duration
	PoolSize      int
	CacheTTL      time.Duration // successful logins remembered this long
}

// ErrDirectoryUnavailable means LDAP could not be asked; users from other sources
// still work.
var ErrDirectoryUnavailable = errors.New("directory unavailable")

// LDAP checks passwords by binding as the user and reads the user's groups.
type LDAP struct {
	cfg  LDAPConfig
	tls  *tls.Config
	log  *slog.Logger
	pool chan *ldap.Conn
	// groupBase is GroupBase parsed: memberOf values outside it are not groups of ours.
	groupBase *ldap.DN

	mu    sync.Mutex
	cache map[string]cachedLogin // user → last successful login

	closed atomic.Bool // Close was called: connections are no longer pooled
}

// Close closes the pooled connections (a configuration reload replaced this
// directory). Logins still running finish; their connections are closed after them.
func (l *LDAP) Close() {
	l.closed.Store(true)
	for {
		select {
		case c := <-l.pool:
			c.Close()
		default:
			return
		}
	}
}

type cachedLogin struct {
	secret  [32]byte // sha256 of the password
	id      *Identity
	expires time.Time
}

// NewLDAP prepares an LDAP checker; it does not connect until the first login.
func NewLDAP(cfg LDAPConfig, log *slog.Logger) (*LDAP, error) {
	if cfg.Timeout <= 0 {
		cfg.Timeout = 5 * time.Second
	}
	if cfg.PoolSize <= 0 {
		cfg.PoolSize = 4
	}
	if cfg.UserFilter == "" {
		cfg.UserFilter = "(uid={username})"
	}
	if cfg.UsernameAttr == "" {
		cfg.UsernameAttr = "uid"
	}
	if cfg.GroupFilter == "" {
		cfg.GroupFilter = "(|(member={dn})(uniqueMember={dn}))"
	}
	if cfg.GroupNameAttr == "" {
		cfg.GroupNameAttr = "cn"
	}
	tc := &tls.Config{InsecureSkipVerify: cfg.InsecureSkipVerify}
	if cfg.CAFile != "" {
		pem, err := os.ReadFile(cfg.CAFile)
		if err != nil {
			return nil, err
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("LDAP CA file %s holds no certificate", cfg.CAFile)
		}
		tc.RootCAs = pool
	}
	if u, err := parseHost(cfg.URL); err == nil {
		tc.ServerName = u
	}
	base, err := ldap.ParseDN(cfg.GroupBase)
	if err != nil || cfg.GroupBase == "" {
		return nil, fmt.Errorf("LDAP group_base %q: a DN is required: %v", cfg.GroupBase, err)
	}
	return &LDAP{cfg: cfg, tls: tc, log: log, pool: make(chan *ldap.Conn, cfg.PoolSize), groupBase: base, cache: map[string]cachedLogin{}}, nil
}

func parseHost(url string) (string, error) {
	rest := url[strings.Index(url, "://")+3:]
	host, _, err := net.SplitHostPort(rest)
	if err != nil {
		return rest, nil
	}
	return host, nil
}

func (l *LDAP) dial() (*ldap.Conn, error) {
	conn, err := ldap.DialURL(l.cfg.URL, ldap.DialWithDialer(&net.Dialer{Timeout: l.cfg.Timeout}), ldap.DialWithTLSConfig(l.tls))
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrDirectoryUnavailable, err)
	}
	conn.SetTimeout(l.cfg.Timeout)
	if l.cfg.StartTLS {
		if err := conn.StartTLS(l.tls); err != nil {
			conn.Close()
			return nil, fmt.Errorf("%w: StartTLS: %v", ErrDirectoryUnavailable, err)
		}
	}
	return conn, nil
}

// serviceConn returns a connection bound as the service account, from the pool when
// one is idle.
func (l *LDAP) serviceConn() (*ldap.Conn, error) {
	select {
	case c := <-l.pool:
		if !c.IsClosing() {
			return c, nil
		}
		c.Close()
	default:
	}
	c, err := l.dial()
	if err != nil {
		return nil, err
	}
	if l.cfg.BindDN != "" {
		if err := c.Bind(l.cfg.BindDN, l.cfg.BindPassword); err != nil {
			c.Close()
			return nil, fmt.Errorf("%w: service bind: %v", ErrDirectoryUnavailable, err)
		}
	}
	return c, nil
}

func (l *LDAP) release(c *ldap.Conn, healthy bool) {
	if healthy && !c.IsClosing() && !l.closed.Load() {
		select {
		case l.pool <- c:
			return
		default:
		}
	}
	c.Close()
}

// Check finds the user, verifies the password by binding as them and collects their
// groups. Successful logins are remembered for CacheTTL.
func (l *LDAP) Check(ctx context.Context, user, password string) (*Identity, error) {
	if user == "" || password == "" {
		return nil, ErrBadCredentials // an empty password would be an unauthenticated bind
	}
	secret := sha256.Sum256([]byte(password))
	l.mu.Lock()
	if c, ok := l.cache[user]; ok && time.Now().Before(c.expires) && constantTimeEqual(string(c.secret[:]), string(secret[:])) {
		l.mu.Unlock()
		return c.id, nil
	}
	l.mu.Unlock()

	svc, err := l.serviceConn()
	if err != nil {
		return nil, err
	}
	id, dn, err := l.findUser(svc, user)
	if err != nil {
		l.release(svc, !errors.Is(err, ErrDirectoryUnavailable))
		return nil, err
	}
	// The password is checked on a connection of its own: binding changes who a
	// connection is, and pooled connections must stay the service account.
	uc, err := l.dial()
	if err != nil {
		l.release(svc, true)
		return nil, err
	}
	err = uc.Bind(dn, password)
	uc.Close()
	if err != nil {
		l.release(svc, true)
		if ldap.IsErrorWithCode(err, ldap.LDAPResultInvalidCredentials) {
			return nil, ErrBadCredentials
		}
		return nil, fmt.Errorf("%w: bind as user: %v", ErrDirectoryUnavailable, err)
	}
	if l.cfg.MemberOfAttr == "" {
		if id.Groups, err = l.groups(svc, dn); err != nil {
			l.release(svc, false)
			return nil, err
		}
	}
	l.release(svc, true)
	if l.cfg.CacheTTL > 0 {
		l.mu.Lock()
		l.cache[user] = cachedLogin{secret: secret, id: id, expires: time.Now().Add(l.cfg.CacheTTL)}
		l.mu.Unlock()
	}
	return id, nil
}

func (l *LDAP) search(c *ldap.Conn, base, filter string, attrs []string) ([]*ldap.Entry, error) {
	req := ldap.NewSearchRequest(base, ldap.ScopeWholeSubtree, ldap.NeverDerefAliases, 0,
		int(l.cfg.Timeout.Seconds()), false, filter, attrs, nil)
	res, err := c.Search(req)
	if err != nil {
		if ldap.IsErrorWithCode(err, ldap.LDAPResultNoSuchObject) {
			return nil, nil
		}
		return nil, fmt.Errorf("%w: search %s: %v", ErrDirectoryUnavailable, filter, err)
	}
	return res.Entries, nil
}

func (l *LDAP) findUser(c *ldap.Conn, user string) (*Identity, string, error) {
	filter := strings.ReplaceAll(l.cfg.UserFilter, "{username}", ldap.EscapeFilter(user))
	attrs := []string{"dn", l.cfg.UsernameAttr}
	if l.cfg.MemberOfAttr != "" {
		attrs = append(attrs, l.cfg.MemberOfAttr)
	}
	entries, err := l.search(c, l.cfg.UserBase, filter, attrs)
	if err != nil {
		return nil, "", err
	}
	if len(entries) != 1 {
		return nil, "", ErrUnknownUser // none, or an ambiguous filter: never guess
	}
	name := firstOf(entries[0].GetEqualFoldAttributeValues(l.cfg.UsernameAttr))
	if name == "" {
		l.log.Warn("LDAP user has no username attribute; refusing the login", "dn", entries[0].DN, "attr", l.cfg.UsernameAttr)
		return nil, "", ErrUnknownUser
	}
	id := &Identity{Name: name, Source: "ldap"}
	if l.cfg.MemberOfAttr != "" {
		groups, err := l.memberOf(c, entries[0].GetAttributeValues(l.cfg.MemberOfAttr))
		if err != nil {
			return nil, "", err
		}
		id.Groups = groups
	}
	return id, entries[0].DN, nil
}

// memberOf names the groups a user's memberOf values point at and, with Nested, the
// groups those groups are members of (read from each group entry's memberOf). Only
// groups under group_base count: a directory may let users create groups elsewhere,
// and one named like a privileged group must not grant its rights.
func (l *LDAP) memberOf(c *ldap.Conn, dns []string) ([]string, error) {
	var names []string
	seen := map[string]bool{}
	queue := dns
	for depth := 0; len(queue) > 0 && depth < 8; depth++ {
		var next []string
		for _, dn := range queue {
			if seen[strings.ToLower(dn)] {
				continue
			}
			seen[strings.ToLower(dn)] = true
			name, ok := l.groupName(dn)
			if !ok {
				l.log.Debug("LDAP memberOf outside group_base ignored", "group", dn)
				continue
			}
			names = append(names, name)
			if !l.cfg.Nested {
				continue
			}
			req := ldap.NewSearchRequest(dn, ldap.ScopeBaseObject, ldap.NeverDerefAliases, 1,
				int(l.cfg.Timeout.Seconds()), false, "(objectClass=*)", []string{l.cfg.MemberOfAttr}, nil)
			res, err := c.Search(req)
			if err != nil {
				if ldap.IsErrorWithCode(err, ldap.LDAPResultNoSuchObject) {
					continue
				}
				return nil, fmt.Errorf("%w: read group %s: %v", ErrDirectoryUnavailable, dn, err)
			}
			for _, e := range res.Entries {
				next = append(next, e.GetAttributeValues(l.cfg.MemberOfAttr)...)
			}
		}
		queue = next
	}
	return names, nil
}

// Lookup finds a user and their current groups without a password (refreshing a
// token): ErrUnknownUser when the directory no longer has them.
func (l *LDAP) Lookup(ctx context.Context, user string) (*Identity, error) {
	svc, err := l.serviceConn()
	if err != nil {
		return nil, err
	}
	id, dn, err := l.findUser(svc, user)
	if err == nil && l.cfg.MemberOfAttr == "" {
		id.Groups, err = l.groups(svc, dn)
	}
	l.release(svc, err == nil || errors.Is(err, ErrUnknownUser))
	return id, err
}

// groups finds the groups listing dn as a member, and with Nested the groups
// listing those, breadth first.
func (l *LDAP) groups(c *ldap.Conn, dn string) ([]string, error) {
	var names []string
	seen := map[string]bool{}
	queue := []string{dn}
	for depth := 0; len(queue) > 0 && depth < 8; depth++ {
		var next []string
		for _, member := range queue {
			filter := strings.ReplaceAll(l.cfg.GroupFilter, "{dn}", ldap.EscapeFilter(member))
			entries, err := l.search(c, l.cfg.GroupBase, filter, []string{l.cfg.GroupNameAttr})
			if err != nil {
				return nil, err
			}
			for _, e := range entries {
				if seen[e.DN] {
					continue
				}
				seen[e.DN] = true
				if name := e.GetAttributeValue(l.cfg.GroupNameAttr); name != "" {
					names = append(names, name)
				}
				next = append(next, e.DN)
			}
		}
		if !l.cfg.Nested {
			break
		}
		queue = next
	}
	return names, nil
}

// groupName is the first RDN value of a group DN under group_base ("cn=dev,ou=groups,…"
// → "dev"); ok is false for DNs elsewhere or unreadable.
func (l *LDAP) groupName(dn string) (name string, ok bool) {
	parsed, err := ldap.ParseDN(dn)
	if err != nil || len(parsed.RDNs) == 0 || len(parsed.RDNs[0].Attributes) == 0 || !l.groupBase.AncestorOfFold(parsed) {
		return "", false
	}
	return parsed.RDNs[0].Attributes[0].Value, true
}

func firstOf(values []string) string {
	if len(values) == 0 {
		return ""
	}
	return values[0]
}
