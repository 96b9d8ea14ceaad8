package main

import (
	"crypto/tls"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"time"
)

// healthCommand asks a running dockyard whether it is ready: GET on its /-/ready
// endpoint (200 when the index and the blob store answer), or on another URL, such as
// /v2/; healthy when the answer is 200, or 401 (a registry with authentication asks
// for credentials at /v2/). It is the image's HEALTHCHECK, so it needs nothing but
// the binary: a scratch image has no curl or wget.
func healthCommand(args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("healthcheck", flag.ContinueOnError)
	url := fs.String("url", "http://127.0.0.1:5000/-/ready", "what to ask: the readiness endpoint, or /v2/")
	timeout := fs.Duration("timeout", 3*time.Second, "bound on the whole request")
	insecure := fs.Bool("insecure", false, "skip TLS certificate verification (an https URL on loopback)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("healthcheck: unexpected argument %q", fs.Arg(0))
	}
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.Proxy = nil // a loopback probe must not go through HTTP(S)_PROXY
	if *insecure {
		tr.TLSClientConfig = &tls.Config{InsecureSkipVerify: true}
	}
	client := &http.Client{
		Transport: tr,
		Timeout:   *timeout,
		// The endpoint answers itself; a redirect is not a registry's answer.
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
	defer tr.CloseIdleConnections()
	resp, err := client.Get(*url)
	if err != nil {
		return fmt.Errorf("unhealthy: %w", err)
	}
	defer resp.Body.Close()
	io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	switch resp.StatusCode {
	case http.StatusOK, http.StatusUnauthorized:
		fmt.Fprintf(stdout, "healthy: GET %s: %s\n", *url, resp.Status)
		return nil
	}
	return errors.New("unhealthy: GET " + *url + ": " + resp.Status)
}
