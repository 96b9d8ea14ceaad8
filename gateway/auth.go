package gateway

import (
	"encoding/base64"
	"errors"
	"slices"
	"strconv"
	"strings"

	"github.com/valyala/fasthttp"

	"github.com/dockyard/dockyard/auth"
	"github.com/dockyard/dockyard/oci"
	"github.com/dockyard/dockyard/vhost"
)

// TokenHost overrides the token realm and service name for one Host.
type TokenHost struct {
	Host    string
	Realm   string
	Service string
}

// principal is who sent a request: an identity (nil: anonymous) and, with token auth,
// what its bearer token grants.
type principal struct {
	id     *auth.Identity
	claims *auth.Claims
}

// anonymous reports whether nobody is known: no credentials, or a token issued to
// nobody.
func (p *principal) anonymous() bool { return p.identity().Anonymous() }

// presented reports whether the request carried valid credentials of any kind.
func (p *principal) presented() bool { return p.claims != nil || !p.id.Anonymous() }

// identity is who the principal is, for rules: a bearer token's subject, groups and
// CI-token limit, or the identity a password or CI token proved.
func (p *principal) identity() *auth.Identity {
	if p.claims != nil {
		return p.claims.Identity()
	}
	return p.id
}

// authenticate reads the request's credentials. Bad credentials are an error (401);
// no credentials is the anonymous principal.
func (g *Gateway) authenticate(ctx *fasthttp.RequestCtx) (*principal, error) {
	h := string(ctx.Request.Header.Peek("Authorization"))
	switch {
	case h == "":
		return &principal{}, nil
	case strings.HasPrefix(h, "Bearer ") && g.live(ctx).Auth.Mode() == auth.ModeToken:
		c, err := g.live(ctx).Auth.Signer().Verify(strings.TrimSpace(h[len("Bearer "):]), g.service(ctx))
		if err != nil || c.Kind != "" || g.live(ctx).Auth.ClaimsRevoked(c) {
			g.metrics.authFailed("token")
			return nil, g.challenge(ctx, "", "invalid_token", "the bearer token is invalid, expired or revoked")
		}
		return &principal{claims: c}, nil
	case strings.HasPrefix(h, "Basic "):
		user, password, ok := basicCredentials(h)
		if !ok {
			return nil, g.challenge(ctx, "", "", "malformed Basic credentials")
		}
		if user == "" && password == "" {
			// What the Docker daemon sends to search a standalone registry without a
			// login: no credentials, said in a header.
			return &principal{}, nil
		}
		// A password check costs (bcrypt, an LDAP bind): under the rate limit of the
		// token endpoint, unless the login is remembered.
		if g.live(ctx).Auth.ChecksPassword(user, password) {
			if err := g.limitRate(ctx, "login"); err != nil {
				return nil, err
			}
		}
		id, err := g.live(ctx).Auth.Login(g.life, user, password, g.clientKey(ctx))
		if err != nil {
			return nil, g.loginError(ctx, err)
		}
		return &principal{id: id}, nil
	}
	return nil, g.challenge(ctx, "", "", "unsupported Authorization scheme")
}

// basicCredentials reads a Basic Authorization value; ok is false for anything else.
func basicCredentials(h string) (user, password string, ok bool) {
	b64, ok := strings.CutPrefix(h, "Basic ")
	if !ok {
		return "", "", false
	}
	raw, err := base64.StdEncoding.DecodeString(strings.TrimSpace(b64))
	if err != nil {
		return "", "", false
	}
	return strings.Cut(string(raw), ":")
}

// loginError answers a failed login: rate limited (429), directory down (401 with the
// reason), or bad credentials (401).
func (g *Gateway) loginError(ctx *fasthttp.RequestCtx, err error) error {
	g.metrics.loginFailed(err)
	var rl *auth.ErrRateLimited
	if errors.As(err, &rl) {
		e := oci.ErrTooManyRequests.Withf("%v", rl)
		e.RetryAfter = strconv.Itoa(int(rl.RetryAfter.Seconds()) + 1)
		return e
	}
	if errors.Is(err, auth.ErrDirectoryUnavailable) {
		return g.challenge(ctx, "", "", "login failed: the LDAP directory is unavailable")
	}
	return g.challenge(ctx, "", "", "invalid username or password")
}

// challenge answers 401 with the WWW-Authenticate header of the auth mode. scope is
// the token scope the client should ask for.
func (g *Gateway) challenge(ctx *fasthttp.RequestCtx, scope, tokenErr, msg string) error {
	if g.live(ctx).Auth.Mode() == auth.ModeToken {
		v := `Bearer realm="` + g.realm(ctx) + `",service="` + g.service(ctx) + `"`
		if scope != "" {
			v += `,scope="` + scope + `"`
		}
		if tokenErr != "" {
			v += `,error="` + tokenErr + `"`
		}
		ctx.Response.Header.Set("WWW-Authenticate", v)
	} else {
		ctx.Response.Header.Set("WWW-Authenticate", `Basic realm="dockyard"`)
	}
	return oci.ErrUnauthorized.Withf("%s", msg)
}

func (g *Gateway) tokenHost(ctx *fasthttp.RequestCtx) TokenHost {
	host := string(ctx.Host())
	for _, th := range g.live(ctx).TokenHosts {
		if strings.EqualFold(th.Host, host) {
			return th
		}
	}
	h, _, _ := strings.Cut(host, ":")
	for _, th := range g.live(ctx).TokenHosts {
		if strings.EqualFold(th.Host, h) {
			return th
		}
	}
	return TokenHost{}
}

// realm is the token endpoint's URL for the request's host.
func (g *Gateway) realm(ctx *fasthttp.RequestCtx) string {
	if r := g.tokenHost(ctx).Realm; r != "" {
		return r
	}
	scheme := "http"
	if g.opts.TLS || string(ctx.Request.Header.Peek("X-Forwarded-Proto")) == "https" {
		scheme = "https"
	}
	return scheme + "://" + string(ctx.Host()) + "/token"
}

// service names the registry in tokens (their audience): per host, by default the
// Host header itself, so a token for one virtual host is useless on another.
func (g *Gateway) service(ctx *fasthttp.RequestCtx) string {
	if s := g.tokenHost(ctx).Service; s != "" {
		return s
	}
	return string(ctx.Host())
}

// may reports whether p may do action on a repository (named as the client sees it,
// and as it is inside its registry). A bearer token's access counts only for the
// registry it was granted for.
func (g *Gateway) may(ctx *fasthttp.RequestCtx, p *principal, clientRepo string, reg vhost.Registry, repo string, action auth.Action) bool {
	if p.claims != nil {
		return tokenAllows(p.claims, "repository", clientRepo, reg.Name(), repo, string(action))
	}
	return g.live(ctx).Auth.Decide(p.id, reg.Name(), repo, action)
}

// tokenAllows reports whether the token grants action on the named resource, which
// is repo inside registry reg (repo is empty for the catalog).
func tokenAllows(c *auth.Claims, typ, name, reg, repo, action string) bool {
	for _, a := range c.Access {
		if a.Type == typ && a.Name == name && a.Registry == reg && a.Repository == repo &&
			(slices.Contains(a.Actions, action) || slices.Contains(a.Actions, "*")) {
			return true
		}
	}
	return false
}

// tokenBound reports whether the token grants anything on client name, being repo of
// registry reg.
func tokenBound(c *auth.Claims, name, reg, repo string) bool {
	for _, a := range c.Access {
		if a.Type == "repository" && a.Name == name && a.Registry == reg && a.Repository == repo {
			return true
		}
	}
	return false
}

// authorize lets a request through or answers 401 (who are you / get a token with this
// scope) or 403 DENIED (you may not).
func (g *Gateway) authorize(r *request, action auth.Action) error {
	client := string(r.route.Repo)
	if g.may(r.ctx, r.who, client, r.reg, string(r.repo), action) {
		return nil
	}
	scope := "repository:" + client + ":" + string(action)
	if action == auth.Push {
		scope = "repository:" + client + ":pull,push"
		// A mount reads its source: ask for that too, as registries do.
		if from := string(r.ctx.QueryArgs().Peek("from")); from != "" && len(r.ctx.QueryArgs().Peek("mount")) > 0 {
			if _, err := oci.ParseRepository(from); err == nil {
				scope += " repository:" + from + ":pull"
			}
		}
	}
	// Anonymous, or a token lacking a scope its subject has: ask for (a better) token.
	if r.who.anonymous() || (r.who.claims != nil && g.live(r.ctx).Auth.Decide(r.who.identity(), r.reg.Name(), string(r.repo), action)) {
		tokenErr := ""
		if r.who.claims != nil {
			tokenErr = "insufficient_scope"
		}
		return g.challenge(r.ctx, scope, tokenErr, "authentication required to "+string(action)+" "+client)
	}
	return oci.ErrDenied.Withf("%s may not %s %s", r.who.identity(), action, client)
}
