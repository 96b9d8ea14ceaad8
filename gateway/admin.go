package gateway

import (
	"context"
	"encoding/json"
	"errors"
	"slices"
	"strings"

	"github.com/valyala/fasthttp"

	"github.com/dockyard/dockyard/oci"
)

// Admin runs lifecycle jobs on demand (the lifecycle package's Jobs implements it
// through cmd's adapter).
type Admin interface {
	// Run starts job ("gc", "purge", "retention", "plan") with query parameters and
	// returns a JSON-encodable result.
	Run(ctx context.Context, job string, params map[string]string) (any, error)
}

// ErrAdminBusy is returned by Admin.Run when the job is already running.
var ErrAdminBusy = errors.New("already running")

// admin answers /-/admin/<job>: POST runs a job (GET for the read-only ones: plan,
// jobs). Without authentication only loopback clients may call it; with it, only the
// subjects the configuration names as admins.
func (g *Gateway) admin(ctx *fasthttp.RequestCtx) error {
	if g.live(ctx).Admin == nil {
		return oci.ErrNotFound.Withf("no admin endpoint")
	}
	if err := g.adminAllowed(ctx); err != nil {
		return err
	}
	job := strings.TrimPrefix(string(ctx.Path()), "/-/admin/")
	readOnly := job == "plan" || job == "jobs"
	if !ctx.IsPost() && !(readOnly && ctx.IsGet()) {
		return oci.ErrUnsupported.Withf("use POST to run %s", job)
	}
	params := map[string]string{}
	for k, v := range ctx.QueryArgs().All() {
		params[string(k)] = string(v)
	}
	res, err := g.live(ctx).Admin.Run(context.Background(), job, params)
	if errors.Is(err, ErrAdminBusy) {
		return oci.ErrTooManyRequests.Withf("job %s is already running", job)
	}
	if err != nil {
		return err
	}
	b, err := json.Marshal(res)
	if err != nil {
		return err
	}
	ctx.SetContentType("application/json")
	ctx.SetBody(b)
	return nil
}

func (g *Gateway) adminAllowed(ctx *fasthttp.RequestCtx) error {
	if g.live(ctx).Auth == nil {
		if g.clientIP(ctx).IsLoopback() && !g.forwardedByUntrusted(ctx) {
			return nil
		}
		return oci.ErrDenied.Withf("the admin endpoint answers loopback clients only when authentication is off")
	}
	who, err := g.authenticate(ctx)
	if err != nil {
		return err
	}
	id := who.identity()
	if id.Anonymous() {
		return g.challenge(ctx, "", "", "the admin endpoint needs credentials")
	}
	if id.Limit != nil {
		// A CI token (or a bearer token it was exchanged for) carries the scopes it
		// was made for, and administration is none of them.
		return oci.ErrDenied.Withf("a CI token cannot use the admin endpoint; use the administrator's own credentials")
	}
	for _, s := range g.live(ctx).Admins {
		if s == "user:"+id.Name || (strings.HasPrefix(s, "group:") && slices.Contains(id.Groups, s[len("group:"):])) {
			return nil
		}
	}
	return oci.ErrDenied.Withf("%s is not an administrator", id)
}
