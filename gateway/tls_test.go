package gateway_test

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"io"
	"math/big"
	"net"
	"testing"
	"time"

	"github.com/dockyard/dockyard/gateway"
)

// selfSigned is a certificate for 127.0.0.1.
func selfSigned(t *testing.T) tls.Certificate {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
}

// Over TLS the header timeout runs from the connection's opening too: the handshake
// and the first request's headers share it (a client taking nearly all of it to
// start the handshake got it once more for the headers).
func TestTLSHandshakeAndHeadersShareTheHeaderTimeout(t *testing.T) {
	const headerTimeout = 2 * time.Second
	o := gateway.Options{HeaderTimeout: headerTimeout, ReadTimeout: time.Hour}
	gw := gateway.New(o)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() {
		done <- gw.Serve(tls.NewListener(ln, &tls.Config{Certificates: []tls.Certificate{selfSigned(t)}}))
	}()
	t.Cleanup(func() { gw.Shutdown(t.Context()); <-done })

	start := time.Now()
	raw := dialFrom(t, "127.0.0.1", ln.Addr().String())
	time.Sleep(headerTimeout * 3 / 4)
	c := tls.Client(raw, &tls.Config{InsecureSkipVerify: true})
	c.SetDeadline(time.Now().Add(10 * time.Second))
	if err := c.Handshake(); err != nil {
		t.Fatal(err)
	}
	io.WriteString(c, "GET /v2/ HTTP/1.1\r\nHost: x\r\n") // the headers never end
	io.Copy(io.Discard, c)
	if took := time.Since(start); took > headerTimeout+headerTimeout/3 {
		t.Errorf("the connection was closed %s after it opened; the header timeout is %s", took.Round(time.Millisecond), headerTimeout)
	}
	// A request in time is served, and its connection kept past the header timeout.
	c = tls.Client(dialFrom(t, "127.0.0.1", ln.Addr().String()), &tls.Config{InsecureSkipVerify: true})
	for range 2 {
		if resp, body := exchange(t, c, getBase); resp.StatusCode != 200 {
			t.Fatalf("a request over TLS: %d %s", resp.StatusCode, body)
		}
		time.Sleep(headerTimeout + headerTimeout/4)
	}
}
