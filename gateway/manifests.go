package gateway

import (
	"io"
	"mime"
	"strings"

	"github.com/valyala/fasthttp"

	"github.com/dockyard/dockyard/oci"
	"github.com/dockyard/dockyard/vhost"
)

func manifestLocation(repo oci.Repository, d oci.Digest) string {
	return "/v2/" + string(repo) + "/manifests/" + string(d)
}

func (g *Gateway) getManifest(r *request) error {
	ctx := r.ctx
	get := r.reg.GetManifest
	if ctx.IsHead() {
		get = r.reg.HeadManifest // a HEAD is not a pull
	}
	m, err := get(r.c, r.repo, r.route.Reference)
	if err != nil {
		return err
	}
	if !accepts(ctx.Request.Header.PeekAll("Accept"), m.MediaType) {
		return oci.ErrManifestUnknown.Withf("manifest %s is %s, which the Accept header does not list", r.route.Reference, m.MediaType)
	}
	h := &ctx.Response.Header
	etag := `"` + string(m.Digest) + `"`
	h.Set("Docker-Content-Digest", string(m.Digest))
	h.Set("Content-Type", m.MediaType)
	h.Set("ETag", etag)
	if m.Warning != "" {
		h.Set("Warning", `299 - "`+strings.ReplaceAll(m.Warning, `"`, `'`)+`"`)
	}
	if notModified(ctx, etag) {
		return nil
	}
	if ctx.IsHead() {
		setContentLength(ctx, int64(len(m.Content)))
		ctx.Response.SkipBody = true
		return nil
	}
	ctx.SetBody(m.Content)
	if err := g.event(r, EventPull, r.route.Reference.Tag, m.Digest, m.MediaType, int64(len(m.Content))); err != nil {
		g.log.Warn("pull event not recorded", "request_id", accessOf(ctx).id, "err", err)
	}
	return nil
}

// accepts reports whether the Accept headers allow media type mt. No header, or a
// wildcard, accepts anything.
func accepts(headers [][]byte, mt string) bool {
	var accept []string
	for _, h := range headers {
		for _, part := range strings.Split(string(h), ",") {
			if part = strings.TrimSpace(part); part != "" {
				accept = append(accept, part)
			}
		}
	}
	if len(accept) == 0 {
		return true
	}
	for _, part := range accept {
		t, _, err := mime.ParseMediaType(part)
		if err != nil {
			continue
		}
		if t == mt || t == "*/*" || t == "application/*" {
			return true
		}
	}
	return false
}

// checkManifestSize refuses a manifest that declares more than the manifest size
// limit (other requests pass).
func (g *Gateway) checkManifestSize(ctx *fasthttp.RequestCtx) error {
	n := int64(ctx.Request.Header.ContentLength())
	if n <= g.opts.MaxManifestSize {
		return nil
	}
	if r, err := ParseRoute(string(ctx.URI().PathOriginal())); err != nil || r.Kind != KindManifest || !ctx.IsPut() {
		return nil
	}
	return oci.ErrManifestTooLarge.Withf("manifest is %d bytes, the limit is %d", n, g.opts.MaxManifestSize)
}

func (g *Gateway) putManifest(r *request) error {
	ctx := r.ctx
	if err := g.checkManifestSize(ctx); err != nil {
		return err
	}
	limit := g.opts.MaxManifestSize
	body, err := io.ReadAll(io.LimitReader(ctx.RequestBodyStream(), limit+1))
	if err != nil {
		return err
	}
	if int64(len(body)) > limit {
		return oci.ErrManifestTooLarge.Withf("manifest is over the %d-byte limit", limit)
	}
	var tags []oci.Tag
	for _, t := range ctx.QueryArgs().PeekMulti("tag") {
		tag, err := oci.ParseTag(string(t))
		if err != nil {
			return err
		}
		tags = append(tags, tag)
	}
	res, err := r.w.PutManifest(r.c, vhost.ManifestPush{
		Repo: r.repo, Reference: r.route.Reference,
		ContentType: string(ctx.Request.Header.ContentType()), Content: body, Tags: tags,
	})
	if err != nil {
		return err
	}
	if err := g.pushed(r, pushOutcome{res.Digest, res.Tags, res.MediaType, int64(len(body))}); err != nil {
		return err
	}
	if res.Subject != "" {
		ctx.Response.Header.Set("OCI-Subject", string(res.Subject))
	}
	if len(tags) > 0 {
		names := make([]string, len(tags))
		for i, t := range tags {
			names[i] = string(t)
		}
		ctx.Response.Header.Set("OCI-Tag", strings.Join(names, ", "))
	}
	return created(ctx, manifestLocation(r.route.Repo, res.Digest), res.Digest)
}

func (g *Gateway) deleteManifest(r *request) error {
	if err := r.w.DeleteManifest(r.c, r.repo, r.route.Reference); err != nil {
		return err
	}
	if err := g.event(r, EventDelete, r.route.Reference.Tag, r.route.Reference.Digest, "", 0); err != nil {
		return err
	}
	r.ctx.SetStatusCode(fasthttp.StatusAccepted)
	return nil
}
