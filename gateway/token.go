package gateway

import (
	"encoding/json"
	"errors"
	"io"
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/valyala/fasthttp"

	"github.com/dockyard/dockyard/auth"
	"github.com/dockyard/dockyard/oci"
)

// maxTokenForm bounds the token endpoint's POST form (a user name, a password or
// refresh token, a service and scopes): nothing legitimate comes near it.
const maxTokenForm = 64 << 10

// token is the Docker token endpoint: GET with optional Basic credentials and scope
// parameters, and the OAuth2 POST form (grant_type password or refresh_token) that
// docker login uses. The access granted is what was asked for, cut down to what the
// rules allow the caller.
func (g *Gateway) token(ctx *fasthttp.RequestCtx) error {
	if g.live(ctx).Auth.Mode() != auth.ModeToken {
		return oci.ErrNotFound.Withf("token auth is not enabled")
	}
	var (
		id      *auth.Identity
		scopes  []string
		service string
		offline bool
		err     error
	)
	switch string(ctx.Method()) {
	case "GET":
		args := ctx.QueryArgs()
		service = string(args.Peek("service"))
		for _, s := range args.PeekMulti("scope") {
			scopes = append(scopes, strings.Fields(string(s))...)
		}
		offline = string(args.Peek("offline_token")) == "true"
		if h := string(ctx.Request.Header.Peek("Authorization")); h != "" {
			user, password, ok := basicCredentials(h)
			if !ok {
				return g.tokenError(ctx, errors.New("malformed credentials"))
			}
			if id, err = g.live(ctx).Auth.Login(g.life, user, password, g.clientKey(ctx)); err != nil {
				return g.tokenError(ctx, err)
			}
		}
	case "POST":
		body, rerr := io.ReadAll(io.LimitReader(ctx.RequestBodyStream(), maxTokenForm+1))
		if rerr != nil {
			return rerr
		}
		if len(body) > maxTokenForm {
			return oci.ErrBodyTooLarge.Withf("the token request form is over %d bytes", maxTokenForm)
		}
		form, perr := url.ParseQuery(string(body))
		if perr != nil {
			return oci.ErrUnsupported.Withf("malformed form")
		}
		service = form.Get("service")
		scopes = strings.Fields(form.Get("scope"))
		switch form.Get("grant_type") {
		case "password":
			if id, err = g.live(ctx).Auth.Login(g.life, form.Get("username"), form.Get("password"), g.clientKey(ctx)); err != nil {
				return g.tokenError(ctx, err)
			}
			offline = form.Get("access_type") == "offline"
		case "refresh_token":
			c, verr := g.live(ctx).Auth.Signer().Verify(form.Get("refresh_token"), service)
			if verr != nil || c.Kind != "refresh" {
				return g.tokenError(ctx, errors.New("invalid refresh token"))
			}
			if id, err = g.live(ctx).Auth.Refresh(g.life, c); err != nil {
				return g.tokenError(ctx, err)
			}
		default:
			return oci.ErrUnsupported.Withf("grant_type must be password or refresh_token")
		}
	default:
		return oci.ErrUnsupported.Withf("use GET or POST")
	}
	host, ok := g.hostForService(ctx, service)
	if !ok {
		return oci.ErrDenied.Withf("this token endpoint does not issue tokens for service %q", service)
	}
	if service == "" {
		service = g.service(ctx)
	}
	access := g.grant(ctx, host, id, scopes)
	claims := auth.Claims{Access: access}
	subject := ""
	if id != nil {
		subject, claims.Groups, claims.Source = id.Name, id.Groups, id.Source
		if id.Limit != nil {
			limit := id.Limit
			claims.Limit = &limit
		}
		claims.CI = id.TokenID
	}
	signed, exp, err := g.live(ctx).Auth.Signer().Sign(claims, subject, service, g.live(ctx).Auth.TokenTTL())
	if err != nil {
		return err
	}
	body := map[string]any{
		"token": signed, "access_token": signed,
		"expires_in": int(time.Until(exp).Seconds()), "issued_at": time.Now().UTC().Format(time.RFC3339),
	}
	if offline && id != nil && id.Source != "token" {
		refresh, _, err := g.live(ctx).Auth.Signer().Sign(auth.Claims{Kind: "refresh", Groups: id.Groups, Source: id.Source}, id.Name, service, g.live(ctx).Auth.RefreshTTL())
		if err != nil {
			return err
		}
		body["refresh_token"] = refresh
	}
	b, _ := json.Marshal(body)
	ctx.SetContentType("application/json")
	ctx.Response.Header.Set("Cache-Control", "no-store")
	ctx.SetBody(b)
	return nil
}

// hostForService finds the virtual host whose registry a token for service is for:
// the requesting host by default, or the host configured with that service. Rights
// are always computed for that host's registries, never another's.
func (g *Gateway) hostForService(ctx *fasthttp.RequestCtx, service string) (string, bool) {
	if service == "" || service == g.service(ctx) {
		return string(ctx.Host()), true
	}
	for _, th := range g.live(ctx).TokenHosts {
		if th.Service == service {
			return th.Host, true
		}
	}
	return "", false
}

func (g *Gateway) tokenError(ctx *fasthttp.RequestCtx, err error) error {
	var rl *auth.ErrRateLimited
	if errors.As(err, &rl) {
		return g.loginError(ctx, err)
	}
	g.metrics.loginFailed(err)
	// A 401 carries a challenge (RFC 9110): the token endpoint's is Basic.
	ctx.Response.Header.Set("WWW-Authenticate", `Basic realm="dockyard"`)
	if errors.Is(err, auth.ErrDirectoryUnavailable) {
		return oci.ErrUnauthorized.Withf("login failed: the LDAP directory is unavailable")
	}
	return oci.ErrUnauthorized.Withf("invalid username or password")
}

// grant intersects the requested scopes ("repository:NAME:pull,push",
// "registry:catalog:*") with what the rules give id on host, each access bound to the
// registry it was decided for.
func (g *Gateway) grant(ctx *fasthttp.RequestCtx, host string, id *auth.Identity, scopes []string) []auth.Access {
	out := []auth.Access{}
	for _, scope := range scopes {
		typ, rest, ok := strings.Cut(scope, ":")
		i := strings.LastIndexByte(rest, ':')
		if !ok || i < 0 {
			continue
		}
		name, actions := rest[:i], strings.Split(rest[i+1:], ",")
		switch typ {
		case "registry":
			// The catalog (*) or search only (what the Docker daemon asks to search).
			granted := slices.DeleteFunc(slices.Clone(actions), func(a string) bool { return a != "*" && a != "search" })
			if name != "catalog" || len(granted) == 0 {
				continue
			}
			if reg, err := g.live(ctx).Router.ResolveHost(host); err == nil {
				out = append(out, auth.Access{Type: "registry", Name: "catalog", Actions: granted, Registry: reg.Name()})
			}
		case "repository":
			repo, err := oci.ParseRepository(name)
			if err != nil {
				continue
			}
			res, err := g.live(ctx).Router.Resolve(host, repo, "")
			if err != nil {
				continue
			}
			var want []auth.Action
			for _, a := range actions {
				if a == "*" {
					want = append(want, auth.Pull, auth.Push, auth.Delete)
				} else if act, err := auth.ParseAction(a); err == nil {
					want = append(want, act)
				}
			}
			allowed := g.live(ctx).Auth.Allowed(id, res.Registry.Name(), string(res.Repo), want)
			if len(allowed) == 0 {
				continue
			}
			names := make([]string, len(allowed))
			for i, a := range allowed {
				names[i] = string(a)
			}
			out = append(out, auth.Access{Type: "repository", Name: name, Actions: names, Registry: res.Registry.Name(), Repository: string(res.Repo)})
		}
	}
	return out
}
