package gateway

import (
	"encoding/json"
	"net/url"
	"strconv"

	"github.com/valyala/fasthttp"

	"github.com/dockyard/dockyard/auth"
	"github.com/dockyard/dockyard/oci"
)

// maxPage bounds a listing answered without n; a Link header leads to the rest.
const maxPage = 10000

// page reads the n and last query parameters.
func page(ctx *fasthttp.RequestCtx) (last string, n int, err error) {
	args := ctx.QueryArgs()
	last = string(args.Peek("last"))
	n = maxPage
	if raw := args.Peek("n"); len(raw) > 0 {
		v, perr := strconv.Atoi(string(raw))
		if perr != nil || v < 0 {
			return "", 0, oci.ErrPaginationInvalid.Withf("n must be a non-negative integer, got %q", raw)
		}
		n = min(v, maxPage)
	}
	return last, n, nil
}

// nextLink sets the RFC 5988 Link header pointing at the page after last.
func nextLink(ctx *fasthttp.RequestCtx, path, last string, n int) {
	q := url.Values{"last": {last}, "n": {strconv.Itoa(n)}}
	ctx.Response.Header.Set("Link", "<"+path+"?"+q.Encode()+`>; rel="next"`)
}

func writeJSON(ctx *fasthttp.RequestCtx, contentType string, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	ctx.SetContentType(contentType)
	ctx.SetBody(b)
	return nil
}

func (g *Gateway) tags(r *request) error {
	last, n, err := page(r.ctx)
	if err != nil {
		return err
	}
	tags, more := []string{}, false
	if n > 0 {
		if tags, more, err = r.reg.Tags(r.c, r.repo, last, n); err != nil {
			return err
		}
	} else if _, _, err = r.reg.Tags(r.c, r.repo, "", 0); err != nil {
		return err // n=0 still reports an unknown repository
	}
	if more {
		nextLink(r.ctx, "/v2/"+string(r.route.Repo)+"/tags/list", tags[len(tags)-1], n)
	}
	if tags == nil {
		tags = []string{}
	}
	return writeJSON(r.ctx, "application/json", map[string]any{"name": string(r.route.Repo), "tags": tags})
}

// catalog lists the repositories of the host's registry that the caller may pull,
// paging over the filtered list. A bearer token must carry registry:catalog:* for
// this registry.
func (g *Gateway) catalog(r *request) error {
	ctx, reg := r.ctx, r.reg
	visible := func(string) bool { return true }
	if g.live(r.ctx).Auth != nil {
		if c := r.who.claims; c != nil && !tokenAllows(c, "registry", "catalog", reg.Name(), "", "*") {
			return g.challenge(ctx, "registry:catalog:*", "insufficient_scope", "the catalog needs a registry:catalog:* token")
		}
		id := r.who.identity()
		visible = func(repo string) bool { return g.live(r.ctx).Auth.Decide(id, reg.Name(), repo, auth.Pull) }
	}
	last, n, err := page(ctx)
	if err != nil {
		return err
	}
	repos, more := []string{}, false
	for n > 0 {
		batch, batchMore, err := reg.Catalog(ctx, last, maxPage)
		if err != nil {
			return err
		}
		for _, name := range batch {
			if len(repos) == n {
				more = true
				break
			}
			if visible(name) {
				repos = append(repos, name)
			}
		}
		if more || !batchMore || len(batch) == 0 {
			break
		}
		last = batch[len(batch)-1]
	}
	if more {
		nextLink(ctx, "/v2/_catalog", repos[len(repos)-1], n)
	}
	return writeJSON(ctx, "application/json", map[string]any{"repositories": repos})
}

func (g *Gateway) referrers(r *request) error {
	descs, err := r.reg.Referrers(r.c, r.repo, r.route.Digest)
	if err != nil {
		return err
	}
	if at := string(r.ctx.QueryArgs().Peek("artifactType")); at != "" {
		kept := descs[:0]
		for _, d := range descs {
			if d.ArtifactType == at {
				kept = append(kept, d)
			}
		}
		descs = kept
		r.ctx.Response.Header.Set("OCI-Filters-Applied", "artifactType")
	}
	return writeJSON(r.ctx, oci.MediaTypeOCIIndex, map[string]any{
		"schemaVersion": 2, "mediaType": oci.MediaTypeOCIIndex, "manifests": descs,
	})
}
